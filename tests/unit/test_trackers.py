"""The trackers' store and the history a resumed run gives them, without a training run."""
from __future__ import annotations

from pathlib import Path

import pytest

from mim.config.history import history_record
from mim.registry import TRACKERS
from mim.trackers import Tracker, Trackers
from mim.trackers.builtin import mlflow_store


def test_mlflow_defaults_to_a_sqlite_store_in_the_run_dir(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri, artifacts = mlflow_store(tmp_path)
    assert uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert artifacts == (tmp_path.resolve() / "mlartifacts").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert mlflow_store(tmp_path) == ("http://tracking.example:5000", None)


def test_a_run_begun_on_mlflows_file_store_keeps_it(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    (tmp_path / "mlruns" / "0").mkdir(parents=True)  # what earlier mim versions wrote
    assert mlflow_store(tmp_path) == ((tmp_path.resolve() / "mlruns").as_uri(), None)
    import os

    assert os.environ["MLFLOW_ALLOW_FILE_STORE"] == "true"  # MLflow opens it only so


class Recorder(Tracker):
    seen: list = []

    def start(self, run_dir: Path, config, run_id, start_step):
        return "id"

    def log_metrics(self, step, values):
        pass

    def log_image(self, tag, array_hwc, step):
        pass

    def log_history(self, history, config):
        Recorder.seen.append((history, config))


@pytest.fixture
def recorder():
    if "recorder-test" not in TRACKERS:
        TRACKERS.register("recorder-test", obj=Recorder)
    Recorder.seen = []
    return "recorder-test"


def test_a_resumed_run_gives_its_trackers_the_history(tmp_path, recorder) -> None:
    start = history_record("start", 0)
    Trackers([recorder], tmp_path, {"a": 1}, 0, [start]).close()
    assert Recorder.seen == []  # a first start has nothing to tell
    resume = history_record("resume", 4, {"train.max_steps": (4, 6)})
    Trackers([recorder], tmp_path, {"a": 2}, 4, [start, resume]).close()
    assert Recorder.seen == [([start, resume], {"a": 2})]
