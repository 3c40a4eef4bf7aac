"""Guarantee: a bad config stops before any compute (no model, no run directory) with exit 2 and
ONE line naming the key (and the valid values where there is a set of them).

Run through ``mim.cli.main``, the function the ``mim`` command calls, in this process (a
subprocess per case would cost seconds each; ``tests/e2e/test_train_cli.py`` covers the same
path in a real subprocess).
"""
from __future__ import annotations

import pytest

from mim.cli import main

from .conftest import FAST, with_overrides

pytestmark = pytest.mark.e2e

# (overrides, texts the one error line must contain)
HOSTILE = [
    # unknown keys, at every level
    (["train.bogus=1"], ["train.bogus"]),
    (["bogus=1"], ["bogus"]),
    (["model.bogus=1"], ["model.bogus"]),
    (["data.bogus=1"], ["data.bogus"]),
    (["backend.bogus=1"], ["backend.bogus"]),
    # unknown choices: the valid ones are listed
    (["model=nope"], ["model: unknown option 'nope'", "mae_vit_base_patch16"]),
    (["modality=nope"], ["modality: unknown option 'nope'", "image"]),
    (["mask=nope"], ["mask", "nope", "random"]),
    (["backend=nope"], ["backend", "nope", "torch"]),
    (["train.precision=fp8"], ["train.precision", "auto, fp32, bf16"]),
    (["train.nonfinite=ignore"], ["train.nonfinite", "stop, skip"]),
    (["model.activation_checkpointing=some"],
     ["model.activation_checkpointing", "none, decoder, encoder, all"]),
    (["run.resume=maybe"], ["run.resume", "auto, never, must, force"]),
    (["backend=deepspeed", "backend.zero_stage=5"], ["backend.zero_stage", "0, 1, 2 or 3"]),
    # wrong types
    (["train.batch_size=abc"], ["train.batch_size"]),
    (["optim.lr=fast"], ["optim.lr"]),
    (["model.depth=2.5"], ["model.depth"]),
    (["seed=one"], ["seed"]),
    # negative and zero sizes
    (["train.batch_size=-8"], ["train.batch_size", ">= 1"]),
    (["train.max_steps=0"], ["train.max_steps", ">= 1"]),
    (["model.embed_dim=-48"], ["model.embed_dim"]),
    (["model.patch_size=0"], ["model.patch_size"]),
    (["data.input_size=-32"], ["data.input_size"]),
    (["train.num_workers=-1"], ["train.num_workers"]),
    (["train.timeout=-5"], ["train.timeout"]),
    # sizes that do not fit together
    (["model.num_heads=5"], ["model.num_heads", "48"]),
    (["data.input_size=36"], ["36"]),  # 36 px is not a multiple of the 8 px patch
    (["mask=block", "mask.unit=[3,3]"], ["mask.unit"]),  # a 4x4 grid in 3x3 units
    # ratios outside (0, 1)
    (["mask.ratio=1.5"], ["mask.ratio"]),
    (["mask.ratio=0"], ["mask.ratio"]),
    (["mask.ratio=-0.2"], ["mask.ratio"]),
    (["mask.ratio=1"], ["mask.ratio"]),
    (["train.max_unreadable=2"], ["train.max_unreadable", "[0, 1]"]),
    (["model.drop_path=1.5"], ["model.drop_path"]),
    # a batch larger than the dataset (26 demo photos)
    (["train.batch_size=1000"], ["train.batch_size", "1000"]),
]


@pytest.mark.parametrize("overrides, says", HOSTILE, ids=[" ".join(o) for o, _ in HOSTILE])
def test_hostile_config_exits_2_with_one_line(overrides, says, tmp_path, capsys):
    run = tmp_path / "run"
    status = main(["train", *with_overrides(["modality=image", *FAST, "train.max_steps=2"],
                                            *overrides, f"run.dir={run}")])
    out, err = capsys.readouterr()
    assert status == 2, err
    lines = [line for line in err.strip().splitlines() if line.startswith("mim: ")]
    assert len(lines) == 1 and lines[0].startswith("mim: config error: "), err
    assert "Traceback" not in err
    for text in says:
        assert text in lines[0], (text, lines[0])
    assert not run.exists(), "something was written before the config was checked"
