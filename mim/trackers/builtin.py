"""The built-in trackers: TensorBoard (the default), MLflow and Weights & Biases."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from mim.config.history import flatten, history_lines
from mim.registry import TRACKERS
from mim.trackers.base import Tracker

EXPERIMENT = "mim"
MLFLOW_TAG_CHARS = 8000  # MLflow's limit on a tag's value (the newest lines are kept)
log = logging.getLogger("mim")


@TRACKERS.register("tensorboard")
class TensorBoardTracker(Tracker):
    """Event files in ``<run dir>/tb``; a resume purges the replayed steps (``purge_step``)."""

    rewrites_replayed = True

    def start(self, run_dir: Path, config: dict[str, Any], run_id: str | None,
              start_step: int) -> str | None:
        from torch.utils.tensorboard import SummaryWriter
        self._writer = SummaryWriter(str(run_dir / "tb"), purge_step=start_step + 1)
        return None

    def log_metrics(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self._writer.add_scalar(f"train/{key}", value, step)

    def log_image(self, tag: str, array_hwc: Any, step: int) -> None:
        self._writer.add_image(tag, array_hwc, step, dataformats="HWC")

    def log_history(self, history: list[dict[str, Any]], config: dict[str, Any]) -> None:
        text = "\n".join(f"- {line}" for line in history_lines(history))  # Markdown
        self._writer.add_text("mim/history", text, history[-1]["step"])

    def close(self) -> None:
        self._writer.close()


MLFLOW_DB, MLFLOW_ARTIFACTS = "mlflow.db", "mlartifacts"  # the default store, in the run dir


def mlflow_store(run_dir: Path) -> tuple[str, str | None]:
    """(tracking URI, artifact location for a new experiment): ``MLFLOW_TRACKING_URI`` when set
    (any server or store: its own artifact root), else a SQLite store in the run directory,
    MLflow's recommended local store (its file store is in maintenance mode and refuses to open
    without ``MLFLOW_ALLOW_FILE_STORE``), with the artifacts beside it. A run that began on a
    file store (``mlruns/``, written by earlier mim versions) keeps it."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri, None
    run_dir = run_dir.resolve()
    legacy = run_dir / "mlruns"
    if legacy.is_dir() and not (run_dir / MLFLOW_DB).exists():
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        return legacy.as_uri(), None
    return f"sqlite:///{run_dir / MLFLOW_DB}", (run_dir / MLFLOW_ARTIFACTS).as_uri()


@TRACKERS.register("mlflow")
class MLflowTracker(Tracker):
    """An MLflow run in experiment ``mim``, in the store ``mlflow_store`` names. The resolved
    config is its params, the run dir its tag ``mim.run_dir``, the pictures its artifacts
    under ``<tag>/``; a resume adds the history as the tag ``mim.history`` and, as MLflow
    params cannot change, each changed key's value as a tag ``mim.config.<key>``."""

    def start(self, run_dir: Path, config: dict[str, Any], run_id: str | None,
              start_step: int) -> str | None:
        # MLflow retries an unreachable server for minutes by default: fail fast instead
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient
        uri, artifacts = mlflow_store(run_dir)
        self._client = client = MlflowClient(tracking_uri=uri)
        if uri.startswith("sqlite:") and run_id is None:
            log.info("mlflow: this run's store is %s; to browse it: mlflow ui "
                     "--backend-store-uri %s", uri.removeprefix("sqlite:///"), uri)
        if run_id is not None:
            self._run = client.get_run(run_id).info.run_id
            return self._run
        found = client.get_experiment_by_name(EXPERIMENT)
        experiment = (found.experiment_id if found else
                      client.create_experiment(EXPERIMENT, artifact_location=artifacts))
        self._run = client.create_run(experiment, run_name=run_dir.name,
                                      tags={"mim.run_dir": str(run_dir.resolve())}).info.run_id
        params = [Param(k, str(v)[:6000]) for k, v in flatten(config).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            client.log_batch(self._run, params=params[i:i + 100])
        return self._run

    def log_metrics(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        self._client.log_batch(self._run, metrics=[Metric(k.replace("/", "_"), v, now, step)
                                                   for k, v in values.items()])

    def log_image(self, tag: str, array_hwc: Any, step: int) -> None:
        self._client.log_image(self._run, array_hwc, artifact_file=f"{tag}/step_{step:08d}.png")

    def log_history(self, history: list[dict[str, Any]], config: dict[str, Any]) -> None:
        self._client.set_tag(self._run, "mim.history",
                             "\n".join(history_lines(history))[-MLFLOW_TAG_CHARS:])
        now = flatten(config)
        for key in sorted({k for record in history for k in record.get("changed", {})}):
            if key in now:
                self._client.set_tag(self._run, f"mim.config.{key}", str(now[key])[:6000])

    def close(self) -> None:
        self._client.set_terminated(self._run)


@TRACKERS.register("wandb")
class WandbTracker(Tracker):
    """A W&B run in project ``mim`` (``WANDB_PROJECT`` overrides) with its files in
    ``<run dir>/wandb``; ``WANDB_MODE=offline`` works without a network (``wandb sync`` later)."""

    def start(self, run_dir: Path, config: dict[str, Any], run_id: str | None,
              start_step: int) -> str | None:
        import wandb
        self._wandb = wandb
        self._run = wandb.init(project=os.environ.get("WANDB_PROJECT", EXPERIMENT),
                               dir=str(run_dir), id=run_id, resume="allow" if run_id else None,
                               name=run_dir.name, config=config,
                               notes=f"mim run dir: {run_dir.resolve()}",
                               settings=wandb.Settings(init_timeout=30, console="off"))
        self._run.config.update({"mim_run_dir": str(run_dir.resolve())}, allow_val_change=True)
        return self._run.id

    def log_metrics(self, step: int, values: dict[str, float]) -> None:
        self._run.log({f"train/{k}": v for k, v in values.items()}, step=step)

    def log_image(self, tag: str, array_hwc: Any, step: int) -> None:
        self._run.log({tag: self._wandb.Image(array_hwc)}, step=step)

    def log_history(self, history: list[dict[str, Any]], config: dict[str, Any]) -> None:
        self._run.config.update(config, allow_val_change=True)  # W&B's config may change
        self._run.summary["mim_history"] = "\n".join(history_lines(history))

    def close(self) -> None:
        self._run.finish()
