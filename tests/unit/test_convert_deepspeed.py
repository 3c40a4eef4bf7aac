"""What the readers of weights say about a checkpoint they cannot read, before DeepSpeed is
called (the real ZeRO checkpoints are read in tests/e2e/test_deepspeed_read.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from mim.convert import ConvertError, read_weights


def test_a_ds_folder_without_deepspeeds_files_says_what_it_holds(tmp_path: Path) -> None:
    step = tmp_path / "run" / "checkpoints" / "step_00000002"
    (step / "ds").mkdir(parents=True)
    (step / "ds" / "notes.txt").write_text("x")
    with pytest.raises(ConvertError) as err:
        read_weights(tmp_path / "run")
    assert str(err.value) == (f"{step / 'ds'}: a DeepSpeed checkpoint folder without "
                              "mim_layout.json nor any *_model_states.pt file (found: notes.txt)")


def test_a_missing_rank_file_is_named_from_the_layout(tmp_path: Path) -> None:
    ds = tmp_path / "step_00000004" / "ds"
    ds.mkdir(parents=True)
    (ds / "mim_layout.json").write_text('{"zero_stage": 2, "world_size": 2}\n')
    for name in ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt"):
        (ds / name).write_bytes(b"")
    with pytest.raises(ConvertError) as err:
        read_weights(ds.parent)
    assert str(err.value) == (
        f"{ds}: a DeepSpeed ZeRO-2 checkpoint written by 2 ranks; the optimizer states file "
        f"of rank 1 is missing ({ds / 'zero_pp_rank_1_mp_rank_00_optim_states.pt'})")


def test_a_checkpoint_of_unknown_content_is_not_called_foreign(tmp_path: Path) -> None:
    step = tmp_path / "step_00000001"
    step.mkdir()
    (step / "weights.bin").write_bytes(b"")
    with pytest.raises(ConvertError) as err:
        read_weights(step)
    assert "a mim checkpoint holding neither state.pt" in str(err.value)
    assert "found: weights.bin" in str(err.value) and "not a mim run" not in str(err.value)
