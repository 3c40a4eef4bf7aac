"""``mim convert`` on a real run's checkpoint: only JSON facts go into an export (the loop's RNG
state stays behind), a ``to=mim`` export keeps the run's record and reads back, and the model
card shows the run's history of starts and resumes where the checkpoint records one.

One 2-step run is trained once for the module; a test that edits its checkpoint works on a copy.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from mim.convert import convert, read_weights

pytestmark = pytest.mark.e2e

STEPS = 2
HISTORY = [  # the client state's "history", oldest first
    {"time": "2025-01-02T10:00:00+0000", "event": "start", "step": 0, "changed": {}},
    {"time": "2025-01-03T11:00:00+0000", "event": "resume", "step": 2,
     "changed": {"train.max_steps": [2, 4]}},
    {"time": "2025-01-04T12:00:00+0000", "event": "resume-force", "step": 4,
     "changed": {"mask.ratio": [0.75, 0.5], "model.init": ["mae.pth", None]}},
]


@pytest.fixture(scope="module")
def run(module_cli, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run") / "run"
    module_cli.train(run, f"train.max_steps={STEPS}", f"train.ckpt_every={STEPS}",
                     "train.vis_every=100")
    return run


def checkpoint_with_history(run: Path, folder: Path, history: list[dict]) -> Path:
    """A copy of the run's last checkpoint whose client state holds ``history``."""
    checkpoint = folder / "step_00000002"
    shutil.copytree(run / "checkpoints" / "last", checkpoint)
    state = torch.load(checkpoint / "state.pt", weights_only=True)
    state["client"]["history"] = history
    torch.save(state, checkpoint / "state.pt")
    return checkpoint


def test_a_run_converts_to_mim_with_json_facts_only(module_cli, run, tmp_path) -> None:
    state = torch.load(run / "checkpoints" / "last" / "state.pt", weights_only=True)
    assert torch.is_tensor(state["client"]["loop"]["rng"]["torch"])  # what broke config.json
    out = tmp_path / "mim"
    result = module_cli.run("convert", f"input={run}", f"output={out}", "to=mim")
    assert result.returncode == 0, module_cli.describe(result)
    recorded = json.loads((out / "config.json").read_text())["run"]
    assert recorded["loop"]["step"] == STEPS and recorded["loop"]["samples"] == STEPS * 8
    assert not {"rng", "drawn"} & set(recorded["loop"]), recorded["loop"]  # resume state stays
    assert recorded["config"]["train"]["max_steps"] == STEPS
    back = read_weights(out)
    assert back.run == recorded
    assert sorted(back.state) == sorted(state["model"])
    assert all(torch.equal(back.state[k], v) for k, v in state["model"].items())
    assert f"- steps: {STEPS}" in (out / "README.md").read_text()


def test_the_card_shows_the_runs_history(run, tmp_path) -> None:
    checkpoint = checkpoint_with_history(run, tmp_path / "ckpt", HISTORY)
    exported = convert(checkpoint, tmp_path / "mim", to="mim")
    assert json.loads((exported / "config.json").read_text())["run"]["history"] == HISTORY
    assert read_weights(exported).run["history"] == HISTORY
    for folder in (exported, convert(exported, tmp_path / "hf", to="hf")):  # and on from there
        card = (folder / "README.md").read_text()
        part = card.split("## History\n")[1].split("\n\n")[0].splitlines()
        assert part == [  # the lines of config_history.jsonl's records (history_lines)
            "- 2025-01-02T10:00:00+0000 step 0: start",
            "- 2025-01-03T11:00:00+0000 step 2: resume (train.max_steps: 2 -> 4)",
            "- 2025-01-04T12:00:00+0000 step 4: resume-force (mask.ratio: 0.75 -> 0.5, "
            "model.init: \"mae.pth\" -> null)"], card


def test_a_single_start_shows_no_history(run, tmp_path) -> None:
    checkpoint = checkpoint_with_history(run, tmp_path / "ckpt", HISTORY[:1])
    card = (convert(checkpoint, tmp_path / "timm", to="timm") / "README.md").read_text()
    assert "## History" not in card and "- steps: 2" in card
    assert "## History" not in (convert(run, tmp_path / "old", to="timm") / "README.md"
                                ).read_text()  # a checkpoint without a history: nothing shown
