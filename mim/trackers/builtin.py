"""The built-in trackers: TensorBoard (the default), MLflow and Weights & Biases."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from mim.config.history import flatten
from mim.registry import TRACKERS
from mim.trackers.base import Tracker

EXPERIMENT = "mim"


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

    def close(self) -> None:
        self._writer.close()


@TRACKERS.register("mlflow")
class MLflowTracker(Tracker):
    """An MLflow run in experiment ``mim``: ``MLFLOW_TRACKING_URI`` when set (any server or
    store), else a file store in ``<run dir>/mlruns``. The resolved config is its params, the
    run dir its tag ``mim.run_dir``, the pictures its artifacts under ``<tag>/``."""

    def start(self, run_dir: Path, config: dict[str, Any], run_id: str | None,
              start_step: int) -> str | None:
        # MLflow retries an unreachable server for minutes by default: fail fast instead
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # a file store needs no server or database; MLflow 3 asks to opt in to it
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (run_dir / "mlruns").resolve().as_uri()
        self._client = client = MlflowClient(tracking_uri=uri)
        if run_id is not None:
            self._run = client.get_run(run_id).info.run_id
            return self._run
        found = client.get_experiment_by_name(EXPERIMENT)
        experiment = found.experiment_id if found else client.create_experiment(EXPERIMENT)
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

    def close(self) -> None:
        self._run.finish()
