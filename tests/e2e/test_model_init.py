"""``mim train model.init=PATH`` through the real command line: a Hugging Face ViTMAE folder built
at random (the converters' fixture) starts a run, which moves by at most one AdamW step in its
one step; a checkpoint of the run wins over the weights; a misfit is one line and exit 2."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mim.convert import read_weights
from tests.unit.test_convert import vitmae

pytestmark = pytest.mark.e2e

LR, WD = 1e-3, 0.05  # FAST's optim.lr, the default optim.weight_decay


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return vitmae(tmp_path_factory.mktemp("weights"), norm_pix=True)[1]  # FAST's sizes


@pytest.fixture(scope="module")
def init_run(module_cli, hf_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "init"
    module_cli.train(run, f"model.init={hf_folder}", "train.max_steps=1")
    return run


def test_one_step_from_hf_weights_stays_within_one_step(init_run, hf_folder, load_state,
                                                        module_cli) -> None:
    log = (init_run / "train.log").read_text()
    assert f"model.init: {hf_folder} (hf-vit-mae) loaded: cls_token, tokenizer, blocks, " \
           "norm, decoder; not loaded: nothing" in log
    assert "resumed from" not in log  # a fresh run: step, optimiser and schedule start anew
    assert [r["step"] for r in module_cli.metrics(init_run)] == [1]
    source = read_weights(hf_folder).state
    trained = load_state(init_run / "checkpoints" / "last")["model"]
    assert sorted(trained) == sorted(source)
    moved = 0.0
    for key, value in trained.items():  # AdamW's first step: |dw| <= lr (1 + wd |w|)
        delta = (value - source[key]).abs()
        assert (delta <= LR * (1 + WD * source[key].abs()) * 1.001 + 1e-7).all(), key
        moved = max(moved, delta.max().item())
    assert moved > 0  # it trained


def test_a_checkpoint_of_the_run_wins_over_model_init(module_cli, init_run, hf_folder) -> None:
    result = module_cli.train(init_run, f"model.init={hf_folder}", "train.max_steps=1")
    assert "model.init: not loaded: the run resumes from its checkpoint" in result.stderr, \
        module_cli.describe(result)
    assert "resumed from" in result.stderr


def test_a_misfit_stops_with_one_line_and_exit_2(cli, hf_folder, tmp_path) -> None:
    result = cli.train(tmp_path / "run", f"model.init={hf_folder}", "model.embed_dim=96",
                       check=False)
    assert result.returncode == 2, cli.describe(result)
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"mim: config error: model.init: {hf_folder} (hf-vit-mae) does "
                           "not fit"), line
    assert "tokenizer.proj.weight [48, 3, 8, 8] vs the model's [96, 3, 8, 8]" in line
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing trained
