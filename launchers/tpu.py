"""``launcher=tpu``: start ``mim train`` (``backend=xla``) on the hosts of a Cloud TPU VM via gcloud.

``mim train launcher=tpu launcher.tpu_name=my-tpu launcher.zone=us-central2-b run.dir=/mnt/shared/run1 ...``
builds and prints one command::

    gcloud compute tpus tpu-vm ssh my-tpu --zone us-central2-b [--project P] --worker=all \\
        --command 'cd ~/mim && [source VENV/bin/activate &&] PJRT_DEVICE=TPU [KEY=VALUE ...] \\
                   python3 -m mim train <your overrides> launcher=local backend=xla run.dir=<pinned>'

and, with ``launcher.run=true``, runs it (a non-zero exit status of gcloud fails the launch with
that status). Without ``launcher.run=true`` nothing is started: copy the command, or run it.

The remote command line is the local one with every ``launcher=...``/``launcher.*`` override and
any ``backend=``/``run.dir=`` removed, plus ``launcher=local backend=xla run.dir=<pinned>``; each
word is quoted with ``shlex.quote`` (the whole remote command once more for ``--command``).

Parameters: ``tpu_name`` (TPU VM name, required; ``launcher.name`` is the launcher's own
name, ``tpu``), ``zone`` (required), ``project`` (default: gcloud's
configured project), ``worker`` (``all`` or worker indices such as ``0`` or ``0,1``), ``run``
(false: only print), ``workdir`` (the mim checkout / working directory on the TPU hosts, default
``~/mim``; a leading ``~/`` is expanded by the remote shell), ``venv`` (a virtual environment on
the hosts to activate; relative paths are relative to ``workdir``), ``env`` (extra environment
variables: ``+launcher.env.XLA_FLAGS=...`` or ``launcher.env={KEY:VALUE}``).

Required on every TPU VM host (this launcher installs nothing):

* torch and torch_xla of matching versions (torch_xla X.Y.Z needs exactly torch X.Y.Z) with TPU
  support (``pip install torch==X.Y.Z 'torch_xla[tpu]==X.Y.Z'``);
* mim installed (``./install.sh`` in ``workdir``, or ``pip install`` into ``venv``) at the same
  version as here, so that the same overrides mean the same thing;
* ``PJRT_DEVICE=TPU`` in the environment; the launcher sets it on the command line;
* the run directory on storage that every host sees the same way: an NFS / Filestore mount, or a
  Cloud Storage bucket mounted with gcsfuse, given as ``run.dir=/mnt/...``. ``gs://`` URLs are
  refused: mim writes its run directory (logs, checkpoints) with local file I/O. Without
  ``run.dir`` the launcher pins the default ``<run.root>/<modality>/<model>/<config hash>``
  (a relative ``run.root`` is relative to ``workdir`` on each host) and warns: on a local disk
  every host would write its own copy.

Sharding: the hosts run ``backend=xla`` with SPMD over every chip of every host, one process
per host (``mim/engine/backends/xla/backend.py``): ``backend.sharding=data`` unless the command
line sets ``backend.sharding`` (``fsdp`` splits the weights too). ``train.batch_size`` is per host.
Importing this module needs no
gcloud; it is only needed to run the command.
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

from mim.config.run_spec import RunSpec
from mim.config.errors import ConfigError
from mim.launching import Launcher
from mim.registry import LAUNCHERS
from mim.rundir import default_run_dir

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
WORKER = re.compile(r"(all|\d+(,\d+)*)\Z")


def _key(override: str) -> str:
    """The key of a Hydra override (``+a.b=1``, ``++a.b=1``, ``~a.b`` -> ``a.b``)."""
    return override.split("=", 1)[0].lstrip("+~")


def _hydra_value(value: str) -> str:
    """``value`` as a Hydra override value: quoted where it is not a plain path."""
    if re.fullmatch(r"[\w./-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _remote_path(path: str) -> str:
    """``path`` quoted for the remote shell, keeping a leading ``~``/``~/`` expandable."""
    if path == "~":
        return "~"
    if path.startswith("~/"):
        rest = path[2:]
        return "~/" + shlex.quote(rest) if rest else "~/"
    return shlex.quote(path)


@LAUNCHERS.register("tpu")
class TpuLauncher(Launcher):
    """One process per host of the TPU VM; validation counts one (the hosts are the VM's,
    known there: each host's ``mim train`` checks its own run again)."""

    @dataclass
    class Config:
        # the TPU VM (required); not `name`: launcher.name is the launcher's own (tpu)
        tpu_name: Optional[str] = None
        zone: Optional[str] = None  # its zone (required)
        project: Optional[str] = None  # default: gcloud's configured project
        worker: str = "all"  # "all" or worker indices ("0", "0,1")
        run: bool = False  # false: only print the command
        workdir: str = "~/mim"  # the mim checkout / working directory on the TPU hosts
        venv: Optional[str] = None  # a virtual environment on the hosts to activate
        env: Dict[str, str] = field(default_factory=dict)  # extra environment variables

        def __post_init__(self) -> None:
            if not self.tpu_name:
                raise ValueError("launcher.tpu_name: set the TPU VM name "
                                 "(launcher.tpu_name=<TPU VM name>)")
            if not self.zone:
                raise ValueError("launcher.zone: set the TPU VM's zone "
                                 "(launcher.zone=<zone>, e.g. us-central2-b)")
            self.worker = str(self.worker)
            if not WORKER.match(self.worker):
                raise ValueError(f"launcher.worker: 'all' or worker indices such as 0 or 0,1; "
                                 f"got {self.worker!r}")
            if not self.workdir:
                raise ValueError("launcher.workdir: must not be empty")
            for key in self.env:
                if not ENV_NAME.match(str(key)):
                    raise ValueError(f"launcher.env: {key!r} is not an environment variable name")

    def command(self, spec: RunSpec) -> list[str]:
        """The gcloud argv that starts this run on the TPU hosts (warnings go to stderr)."""
        if spec.overrides is None:  # a spec built in Python, not by compose.load
            raise ConfigError("launcher=tpu: needs the spec of "
                              "mim.config.compose.load(overrides), which the hosts re-run")
        cfg = spec.launcher.config
        directory = _pinned_run_dir(spec, cfg)
        dropped = {"launcher", "backend", "run.dir"}
        kept = [o for o in spec.overrides
                if _key(o) not in dropped and not _key(o).startswith("launcher.")]
        train = ["python3", "-m", "mim", "train", *kept,
                 "launcher=local", "backend=xla", f"run.dir={_hydra_value(directory)}"]
        if not any(_key(o) == "backend.sharding" for o in kept):
            # SPMD over every chip of every host; a pod needs it (one process per host)
            train.append("backend.sharding=data")
        env = {"PJRT_DEVICE": "TPU", **{str(k): str(v) for k, v in cfg.env.items()}}
        steps = [f"cd {_remote_path(cfg.workdir)}"]
        if cfg.venv:
            steps.append(f"source {_remote_path(cfg.venv.rstrip('/') + '/bin/activate')}")
        steps.append(" ".join([*(f"{k}={shlex.quote(v)}" for k, v in env.items()),
                               shlex.join(train)]))
        remote = " && ".join(steps)
        argv = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", cfg.tpu_name, "--zone", cfg.zone]
        if cfg.project:
            argv += ["--project", cfg.project]
        argv += [f"--worker={cfg.worker}", f"--command={remote}"]
        return argv

    def launch(self, spec: RunSpec) -> Path | None:
        cfg = spec.launcher.config
        argv = self.command(spec)
        print(f"mim: TPU command:\n{shlex.join(argv)}", flush=True)
        if not cfg.run:
            print("mim: not started (launcher.run=false); run the command above, "
                  "or add launcher.run=true", flush=True)
            return None
        try:
            result = subprocess.run(argv)
        except FileNotFoundError:
            print("mim: error: launcher=tpu: gcloud not found; install the Google Cloud SDK",
                  file=sys.stderr)
            raise SystemExit(127) from None
        if result.returncode != 0:
            code = result.returncode if result.returncode > 0 else 128 - result.returncode
            print(f"mim: error: launcher=tpu: the run on TPU VM {cfg.tpu_name} failed: gcloud "
                  f"exited with status {result.returncode}", file=sys.stderr)
            raise SystemExit(code)
        return Path(_run_dir_value(spec, cfg))


def _run_dir_value(spec: RunSpec, cfg: "TpuLauncher.Config") -> str:
    """run.dir as the hosts will see it: the user's, or the default formula (not resolved here:
    a relative path is relative to launcher.workdir on each host)."""
    if spec.run.dir:
        return str(spec.run.dir)
    return str(default_run_dir(spec))


def _pinned_run_dir(spec: RunSpec, cfg: "TpuLauncher.Config") -> str:
    value = _run_dir_value(spec, cfg)
    if "://" in value:
        raise ConfigError(f"run.dir: {value!r}: URLs are not supported (mim writes the run "
                          "directory with local file I/O); mount the bucket with gcsfuse or use "
                          "NFS/Filestore on every TPU host and pass that path")
    if not spec.run.dir:
        print(f"mim: warning: launcher=tpu: run.dir not set; pinned the default {value} "
              f"(relative to {cfg.workdir} on each host). Every host must see the same run "
              "directory: pass run.dir=<NFS or gcsfuse path shared by all hosts>",
              file=sys.stderr)
    elif not (value.startswith("/") or value.startswith("~")):
        print(f"mim: warning: launcher=tpu: run.dir={value} is relative to {cfg.workdir} on "
              "each host; it must be shared storage that every host sees", file=sys.stderr)
    return value
