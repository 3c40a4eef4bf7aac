"""``launcher=slurm`` against a real one-node Slurm cluster (started by the ``slurm_cluster``
fixture of ``tests/e2e/slurm.py``; installed with apt-get when missing). Not skipped: where the
cluster cannot be set up the tests fail and say why."""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

# the fixture module, loaded by path so that any pytest import mode finds it
_spec = importlib.util.spec_from_file_location("mim_e2e_slurm", Path(__file__).with_name("slurm.py"))
_slurm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_slurm)
slurm_cluster = _slurm.slurm_cluster

JOB_ID = re.compile(r"submitted Slurm job (\d+)")


def _steps(cli, run_dir: Path) -> list[int]:
    return [m["step"] for m in cli.metrics(run_dir) if "step" in m and "loss" in m]


def test_slurm_ddp_two_tasks(cli, tmp_path, slurm_cluster):
    run_dir = tmp_path / "run"
    result = cli.train(run_dir, "launcher=slurm", "launcher.tasks_per_node=2",
                       "launcher.cpus_per_task=1", "launcher.wait=true", "backend=torch",
                       "train.max_steps=6", "train.ckpt_every=3", timeout=180)
    assert JOB_ID.search(result.stdout), cli.describe(result)
    assert "stdout" in result.stdout and "stderr" in result.stdout
    derived = json.loads((run_dir / "derived.json").read_text())
    assert derived["world_size"] == 2
    assert _steps(cli, run_dir) == [1, 2, 3, 4, 5, 6]
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("step_*"))
    assert checkpoints[-1] == "step_00000006", checkpoints
    assert (run_dir / "slurm").is_dir()  # submitit's logs land in <run dir>/slurm


def _interrupt_then_finish(cli, run_dir: Path, interrupt: list[str]) -> None:
    """Submit a 40-step run, ``interrupt`` it (``{job}`` is its id) after its first
    checkpoint, and check it comes back, resumes, and runs every step exactly once."""
    max_steps = 40
    result = cli.train(run_dir, "launcher=slurm", "launcher.cpus_per_task=1",
                       f"train.max_steps={max_steps}", "train.ckpt_every=5", timeout=60)
    match = JOB_ID.search(result.stdout)
    assert match, cli.describe(result)
    job_id = match.group(1)
    checkpoints = run_dir / "checkpoints"

    deadline = time.monotonic() + 120
    while not any(checkpoints.glob("step_*")):
        assert time.monotonic() < deadline, f"no checkpoint within 120 s; {_logs(run_dir)}"
        time.sleep(0.2)
    first = sorted(p.name for p in checkpoints.glob("step_*"))
    sent = subprocess.run([a.format(job=job_id) for a in interrupt], capture_output=True,
                          text=True)
    assert sent.returncode == 0, sent.stderr
    # Slurm holds a requeued batch job back for 120 s (Reason=BeginTime); lift that
    deadline = time.monotonic() + 60
    while _state(job_id) != "PENDING":
        assert time.monotonic() < deadline, f"job {job_id} not pending; {_logs(run_dir)}"
        time.sleep(0.2)
    subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"], check=True,
                   capture_output=True)

    final = checkpoints / f"step_{max_steps:08d}"
    deadline = time.monotonic() + 200
    while not (final.is_dir() and _finished(job_id)):
        assert time.monotonic() < deadline, f"not finished within 200 s; {_logs(run_dir)}"
        time.sleep(1)
    assert f"step_{max_steps:08d}" not in first  # the interruption really cut the run
    log = (run_dir / "train.log").read_text()
    assert "resumed from" in log, log[-3000:]
    assert _steps(cli, run_dir) == list(range(1, max_steps + 1))


def test_slurm_requeue_resumes(cli, tmp_path, slurm_cluster):
    _interrupt_then_finish(cli, tmp_path / "run", ["scontrol", "requeue", "{job}"])


def test_slurm_time_out_signal_checkpoints_requeues_and_resumes(cli, tmp_path, slurm_cluster):
    # USR2 is the signal Slurm sends before a time-out (submitit asks for it); submitit then
    # calls Job.checkpoint(), which resubmits the same job into the same run directory
    _interrupt_then_finish(cli, tmp_path / "run", ["scancel", "--signal=USR2", "{job}"])


def test_slurm_config_checked_before_submitting(cli):
    result = cli.run("train", "modality=image", "launcher=slurm", "launcher.nodes=0")
    assert result.returncode == 2, cli.describe(result)
    assert "launcher.nodes" in result.stderr


def _state(job_id: str) -> str:
    """The job's state in squeue; '' once it has left the queue."""
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True,
                         text=True)
    return out.stdout.strip() if out.returncode == 0 else ""


def _finished(job_id: str) -> bool:
    return _state(job_id) == ""


def _logs(run_dir: Path) -> str:
    parts = []
    for path in sorted((run_dir / "slurm").rglob("*.err")) + [run_dir / "train.log"]:
        if path.is_file():
            parts.append(f"--- {path} ---\n{path.read_text()[-2000:]}")
    return "\n".join(parts)


def test_a_sweep_becomes_one_job_array(cli, tmp_path, slurm_cluster):
    from tests.e2e.conftest import FAST

    root = tmp_path / "runs"
    result = cli.run("train", "-m", "modality=image", *FAST, "seed=0,1", "launcher=slurm",
                     "launcher.cpus_per_task=1", "launcher.wait=true", "train.max_steps=2",
                     f"run.root={root}", timeout=240)
    assert result.returncode == 0, cli.describe(result)
    ids = re.findall(r"submitted Slurm job (\d+)_(\d+)", result.stdout)
    assert len(ids) == 2 and ids[0][0] == ids[1][0], result.stdout  # one array, two tasks
    runs = sorted(p.parent.parent for p in root.glob("**/checkpoints/last"))
    assert len(runs) == 2
    assert [_steps(cli, r) for r in runs] == [[1, 2], [1, 2]]
