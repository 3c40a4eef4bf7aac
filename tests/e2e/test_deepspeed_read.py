"""Every mim command reads a ``backend=deepspeed`` run, for real: 2-process gloo runs of
ZeRO-0, 1, 2 (with optimizer offload) and 3, and a 2-process DDP run of ``backend=torch``,
each trained once for 2 steps and shared by the tests of this module.

Every run here has 2 processes on the same data and averages the gradients alike, so all end
with the same weights up to float32 rounding (measured: within 1.2e-10 of each other); a shard
put back in the wrong place or order is off by the size of a weight. (A 1-process run is not
compared: Adam divides a near-zero gradient by its own size, so the rounding of another
reduction order grows to a learning rate's step.)
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import pytest
import torch

pytestmark = pytest.mark.e2e

COMMON = ["train.max_steps=2", "train.ckpt_every=2", "train.vis_every=100"]
TWO = ["launcher.nprocs=2", "train.batch_size=4"]
DS_TIMEOUT = 300  # a 2-process run takes 5-25 s on 2 busy cores
ATOL = 1e-8  # the runs' weights differ by float32 rounding only (see the docstring)


def zero(stage: int) -> list[str]:
    return ["backend=deepspeed", f"backend.zero_stage={stage}"]


@pytest.fixture(scope="module")
def runs(module_cli, tmp_path_factory) -> Callable[..., Path]:
    """``runs(name, *overrides)``: the directory of a 2-step run, trained once per module."""
    root = tmp_path_factory.mktemp("runs")
    done: set[str] = set()

    def run(name: str, *overrides: str) -> Path:
        if name not in done:
            module_cli.train(root / name, *COMMON, *overrides, timeout=DS_TIMEOUT)
            done.add(name)
        return root / name

    return run


def ddp(runs) -> Path:
    return runs("ddp", *TWO)


def zero3(runs) -> Path:
    return runs("zero3", *zero(3), *TWO)


def assert_same_weights(got: Path, want: Path) -> None:
    from mim.convert import read_weights

    ours, theirs = read_weights(got), read_weights(want)
    assert ours.config == theirs.config
    assert ours.state.keys() == theirs.state.keys()
    for name, tensor in ours.state.items():
        assert tensor.dtype == torch.float32 or not tensor.is_floating_point(), name
        torch.testing.assert_close(tensor, theirs.state[name], atol=ATOL, rtol=0, msg=name)


def hf_features_match(module_cli, run: Path, out: Path) -> None:
    """``mim convert to=hf`` of ``run``: ViTMAEModel's features are mim's encoder's."""
    import mim
    from transformers import ViTMAEModel

    result = module_cli.run("convert", f"input={run}", f"output={out}", "to=hf")
    assert result.returncode == 0, module_cli.describe(result)
    hf = ViTMAEModel.from_pretrained(out, mask_ratio=0.0).eval()
    ours = mim.load_pretrained(run).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens = ours.encode(x).tokens  # [B, 1 + L, D]: every token, none masked
        noise = torch.arange(tokens.shape[1] - 1).expand(2, -1).float()  # the grid's order
        torch.testing.assert_close(hf(x, noise=noise).last_hidden_state, tokens,
                                   atol=2e-5, rtol=0)


def test_ddp_checkpoint_of_two_ranks_reads(runs) -> None:
    from mim.convert import read_weights

    run = ddp(runs)
    assert (run / "checkpoints" / "last" / "state.pt").is_file()
    assert read_weights(run).format == "mim"


def test_zero3_run_is_evaluated_visualised_and_exported(module_cli, runs, tmp_path) -> None:
    from PIL import Image

    run = zero3(runs)
    assert (run / "checkpoints" / "last" / "ds").is_dir()
    assert_same_weights(run, ddp(runs))

    result = module_cli.run("eval", "knn", f"run.dir={run}", "knn.k=3", "eval.num_workers=0")
    assert result.returncode == 0, module_cli.describe(result)
    assert result.stdout.strip().splitlines()[-1].startswith("knn (")
    assert (run / "eval" / "knn-pretrained.json").is_file()

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (40, 40), "red").save(photos / "0.png")
    result = module_cli.run("visualize", f"run.dir={run}", f"input={photos}",
                            f"out={tmp_path / 'pics'}")
    assert result.returncode == 0, module_cli.describe(result)
    assert (tmp_path / "pics" / "reconstruction_000.png").is_file()

    hf_features_match(module_cli, run, tmp_path / "hf")


def test_zero2_with_optimizer_offload_reads(module_cli, runs, tmp_path) -> None:
    run = runs("zero2-offload", *zero(2), "backend.offload_optimizer=true", *TWO)
    assert_same_weights(run, ddp(runs))
    # the step folder and DeepSpeed's own folder inside it read as the run does
    step = run / "checkpoints" / "step_00000002"
    assert_same_weights(step, run)
    assert_same_weights(step / "ds", run)
    hf_features_match(module_cli, step / "ds", tmp_path / "hf")


@pytest.mark.parametrize("stage", [0, 1])
def test_zero0_and_zero1_read(runs, stage: int) -> None:
    assert_same_weights(runs(f"zero{stage}", *zero(stage), *TWO), ddp(runs))


def test_a_missing_rank_file_is_named(module_cli, runs, tmp_path) -> None:
    from mim.convert import ConvertError, read_weights

    step = tmp_path / "step_00000002"
    shutil.copytree(zero3(runs) / "checkpoints" / "step_00000002", step)
    gone = step / "ds" / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    gone.unlink()
    said = (f"{step / 'ds'}: a DeepSpeed ZeRO-3 checkpoint written by 2 ranks; "
            f"the optimizer states file of rank 1 is missing ({gone})")
    with pytest.raises(ConvertError) as err:
        read_weights(step)
    assert str(err.value) == said
    # the command's one line for weights it cannot read (exit 1: not a config error)
    result = module_cli.run("convert", f"input={step}", f"output={tmp_path / 'out'}", "to=hf")
    assert result.returncode == 1, module_cli.describe(result)
    assert result.stderr.strip() == f"mim: error: {said}"
    assert not (tmp_path / "out").exists()
