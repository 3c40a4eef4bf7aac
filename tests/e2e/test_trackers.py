"""tracker=mlflow / wandb: a run and its resume read back from the trackers' own files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

RUN = ["train.max_steps=4", "train.ckpt_every=2", "train.vis_every=2"]
RESUMED = ["train.max_steps=6", "train.ckpt_every=2", "train.vis_every=2"]


@pytest.fixture(scope="module")
def runs(module_cli, tmp_path_factory) -> dict[str, Path]:
    """One run with both trackers (W&B offline) plus its resume, and a run with a dead server."""
    root = tmp_path_factory.mktemp("trackers")
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    both = root / "both"
    module_cli.train(both, "tracker=[mlflow,wandb]", *RUN, env=env)
    first = json.loads((both / "trackers.json").read_text())
    resumed = module_cli.train(both, "tracker=[mlflow,wandb]", *RESUMED, env=env)
    assert "resumed from" in resumed.stderr, module_cli.describe(resumed)
    dead = root / "dead"
    result = module_cli.train(dead, "tracker=[tensorboard,mlflow]", "train.max_steps=3",
                              env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})
    return {"both": both, "first": first, "dead": dead, "dead_log": result.stderr}


def test_mlflow_run_resumed_without_duplicate_steps(runs, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # MLflow's retired file store
    run_dir = runs["both"]
    run_id = runs["first"]["mlflow"]["id"]
    assert json.loads((run_dir / "trackers.json").read_text())["mlflow"]["id"] == run_id
    uri = f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"  # MLflow's recommended local store
    assert f"mlflow ui --backend-store-uri {uri}" in (run_dir / "train.log").read_text()
    assert not (run_dir / "mlruns").exists()
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.data.params["train.max_steps"] == "4"  # the first start's; params cannot change
    # the resume's changes, where MLflow lets a run record them
    assert run.data.tags["mim.config.train.max_steps"] == "6"
    assert "step 4: resume (train.max_steps: 4 -> 6" in run.data.tags["mim.history"]
    assert run.data.params["model.embed_dim"] == "48"
    assert run.data.tags["mim.run_dir"] == str(run_dir.resolve())
    steps = [m.step for m in client.get_metric_history(run_id, "loss")]
    assert sorted(steps) == list(range(1, 7)), steps  # every step once, across the resume
    assert len(client.search_runs([run.info.experiment_id])) == 1
    pictures = [a.path for a in client.list_artifacts(run_id, "reconstruction")]
    assert any(p.endswith(".png") for p in pictures), pictures


def test_wandb_offline_run_resumed_with_same_id(runs) -> None:
    run_dir = runs["both"]
    run_id = runs["first"]["wandb"]["id"]
    assert json.loads((run_dir / "trackers.json").read_text())["wandb"]["id"] == run_id
    offline = sorted((run_dir / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(offline) == 2, offline  # the run, then its resume: one id
    # offline, W&B keeps config, history and summary in the run's .wandb log (protobuf records,
    # read by `wandb sync`); their keys and strings are stored as plain bytes
    for run in offline:
        record = (run / f"run-{run_id}.wandb").read_bytes()
        assert b"train/loss" in record and b"mim_run_dir" in record
        assert str(run_dir.resolve()).encode() in record
    assert b"mim_history" in (offline[1] / f"run-{run_id}.wandb").read_bytes()  # the resume
    images = [sorted(p.name.split("_")[1] for p in (run / "files/media/images").glob("*.png"))
              for run in offline]
    assert images == [["2", "4"], ["6"]], images  # the resume sends no picture twice


def test_unreachable_mlflow_warns_once_and_the_run_finishes(runs) -> None:
    log = runs["dead_log"]
    assert log.count("tracker mlflow off") == 1, log[-3000:]
    steps = [json.loads(line)["step"]
             for line in (runs["dead"] / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 3
    assert any((runs["dead"] / "tb").iterdir())  # the other tracker kept logging
