"""``launcher=slurm``: submit the run as a Slurm job through submitit.

``mim train launcher=slurm launcher.nodes=2 launcher.tasks_per_node=4 launcher.gpus_per_node=4 ...``
submits one job of ``nodes * tasks_per_node`` tasks; each task is one rank. Inside the job every
task gets the torchrun environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``) from ``submitit.helpers.TorchDistributedEnvironment`` and runs ``train``, which
joins the process group from it.

The run directory is resolved here, before submitting, and pinned as ``run.dir=<absolute path>``
so that the job, and any requeue of it, trains in the same directory. On preemption or time-out
submitit calls ``Job.checkpoint``, which requeues the same job; ``train`` then resumes from the
run's newest checkpoint (``run.resume`` permitting). A job restarted with ``scontrol requeue``
resumes the same way.

By default the launcher prints the job id and its log files and returns; ``launcher.wait=true``
waits for the job and fails if any task failed. Importing this module needs no Slurm installation.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from mim.config.run_spec import RunSpec
from mim.config.errors import ConfigError
from mim.launching import Launcher
from mim.registry import LAUNCHERS
from mim.rundir import check_run_dir, claim_run_dir
from mim.rundir import run_dir


def _without(overrides: tuple[str, ...] | list[str], key: str) -> list[str]:
    """``overrides`` without any ``key=...`` (also ``+key=``/``++key=``)."""
    return [o for o in overrides if o.split("=", 1)[0].lstrip("+") != key]


class Job:
    """What the Slurm job runs: picklable (a plain list of overrides), checkpointable."""

    def __init__(self, overrides: list[str]):
        self.overrides = list(overrides)

    def __call__(self) -> str:
        import submitit

        env = submitit.helpers.TorchDistributedEnvironment()
        env.export(set_cuda_visible_devices=False)
        os.environ.setdefault("LOCAL_WORLD_SIZE", str(env.local_world_size))
        # a task's threads: the cores Slurm gave it, not every core of the node
        os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("SLURM_CPUS_PER_TASK", "1"))
        import mim  # noqa: F401  (torchvision compatibility before anything imports timm)
        from mim.config.compose import load
        from mim.plugins import load_plugins
        from mim.train import train

        for error in load_plugins():
            print(f"mim: warning: {error}", file=sys.stderr)
        return str(train(load(self.overrides)))

    def checkpoint(self, *args, **kwargs):
        """Preemption or time-out: requeue the same job; ``train`` resumes from run.dir."""
        import submitit

        return submitit.helpers.DelayedSubmission(Job(self.overrides))


@LAUNCHERS.register("slurm")
class SlurmLauncher(Launcher):
    @dataclass
    class Config:
        nodes: int = 1  # nodes of the job
        tasks_per_node: int = 1  # one rank per task (one per GPU)
        gpus_per_node: int = 0  # GPUs requested per node
        cpus_per_task: int = 2  # CPUs per task (data loading)
        mem_gb: Optional[int] = None  # memory per node in GB; None: the partition's default
        partition: Optional[str] = None  # Slurm partition; None: the cluster's default
        account: Optional[str] = None  # Slurm account to charge
        qos: Optional[str] = None  # Slurm quality of service
        constraint: Optional[str] = None  # Slurm node constraint (e.g. a GPU type)
        timeout_min: int = 60  # time limit of the job, in minutes
        job_name: str = "mim"  # the job's name in the queue
        folder: Optional[str] = None  # submitit's logs and pickles; default <run dir>/slurm
        wait: bool = False  # wait for the job and fail if it fails
        max_requeues: int = 3  # preemptions / time-outs submitit requeues the job for

        def __post_init__(self) -> None:
            for key in ("nodes", "tasks_per_node", "cpus_per_task", "timeout_min"):
                if getattr(self, key) < 1:
                    raise ValueError(f"launcher.{key}: must be >= 1, got {getattr(self, key)}")
            for key in ("gpus_per_node", "max_requeues"):
                if getattr(self, key) < 0:
                    raise ValueError(f"launcher.{key}: must be >= 0, got {getattr(self, key)}")
            if self.mem_gb is not None and self.mem_gb < 1:
                raise ValueError(f"launcher.mem_gb: must be >= 1, got {self.mem_gb}")
            if not self.job_name:
                raise ValueError("launcher.job_name: must not be empty")

    @classmethod
    def world_size(cls, config: SlurmLauncher.Config) -> int:
        return config.nodes * config.tasks_per_node  # one rank per task

    def _config(self, spec: RunSpec) -> "SlurmLauncher.Config":
        if spec.overrides is None:  # a spec built in Python, not by compose.load
            raise ConfigError("launcher=slurm: needs the spec of "
                              "mim.config.compose.load(overrides), which the job re-runs")
        return spec.launcher.config

    @staticmethod
    def _pinned(spec: RunSpec) -> tuple[Path, list[str]]:
        """The run directory and the overrides that pin it: the job and every requeue of it
        train in this directory."""
        directory = run_dir(spec)
        return directory, [*_without(spec.overrides, "run.dir"), f"run.dir={directory}"]

    def _executor(self, cfg: "SlurmLauncher.Config", folder: Path):
        import submitit

        folder.mkdir(parents=True, exist_ok=True)
        executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm",
                                         slurm_max_num_timeout=cfg.max_requeues)
        params = dict(nodes=cfg.nodes, tasks_per_node=cfg.tasks_per_node,
                      cpus_per_task=cfg.cpus_per_task, timeout_min=cfg.timeout_min,
                      name=cfg.job_name)
        if cfg.gpus_per_node:
            params["gpus_per_node"] = cfg.gpus_per_node
        if cfg.mem_gb is not None:
            params["mem_gb"] = cfg.mem_gb
        for key in ("partition", "account", "qos", "constraint"):
            value = getattr(cfg, key)
            if value:
                params[f"slurm_{key}"] = value
        executor.update_parameters(**params)
        return executor

    @staticmethod
    def _wait(jobs: list) -> None:
        for job in jobs:
            try:
                job.results()
            except Exception as exc:  # submitit's UncompletedJobError / FailedJobError
                print(f"mim: error: Slurm job {job.job_id} failed: {exc}", file=sys.stderr)
                raise SystemExit(1) from None
            print(f"mim: Slurm job {job.job_id} finished", flush=True)

    def launch(self, spec: RunSpec) -> Path:
        cfg = self._config(spec)
        directory, overrides = self._pinned(spec)
        folder = Path(cfg.folder).expanduser().resolve() if cfg.folder else directory / "slurm"
        check_run_dir(directory)
        claim_run_dir(directory)  # marked as mim's before slurm/ goes inside
        job = self._executor(cfg, folder).submit(Job(overrides))
        print(f"mim: submitted Slurm job {job.job_id} "
              f"({cfg.nodes} node(s) x {cfg.tasks_per_node} task(s)); run directory {directory}")
        print(f"mim: stdout {job.paths.stdout}")
        print(f"mim: stderr {job.paths.stderr}", flush=True)
        if cfg.wait:
            self._wait([job])
        return directory

    def launch_sweep(self, specs: list[RunSpec]) -> list[Path]:
        """A Hydra multirun sweep as one Slurm job array (one task per point)."""
        cfgs = [self._config(spec) for spec in specs]
        if any(c != cfgs[0] for c in cfgs):
            raise ConfigError("launcher: a swept job array needs the same launcher.* settings "
                              "for every point; sweep other keys, or submit separately")
        cfg = cfgs[0]
        pinned = [self._pinned(spec) for spec in specs]
        folder = (Path(cfg.folder).expanduser().resolve() if cfg.folder
                  else pinned[0][0].parent / "slurm")
        executor = self._executor(cfg, folder)
        with executor.batch():  # submitit submits the batch as one job array
            jobs = [executor.submit(Job(overrides)) for _, overrides in pinned]
        for job, (directory, _) in zip(jobs, pinned):
            print(f"mim: submitted Slurm job {job.job_id}; run directory {directory}")
        print(f"mim: logs under {folder}", flush=True)
        if cfg.wait:
            self._wait(jobs)
        return [directory for directory, _ in pinned]
