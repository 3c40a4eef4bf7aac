"""Atomic checkpoints through the real torch backend: rotation, crash safety, exact round trip."""
from __future__ import annotations

import os
import signal
import pathlib
from pathlib import Path

import mim
import pytest
import torch

from mim.engine.backends.base import STATE_FILE
from mim.engine.backends.torch import TorchBackend
from mim.engine.checkpoint import LAST, CheckpointError, Checkpoints
from mim.engine.optim import build_adamw, cosine_schedule

TINY = dict(embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=32, decoder_depth=1,
            decoder_num_heads=2, patch_size=8)


def make_backend(seed: int = 0) -> TorchBackend:
    torch.manual_seed(seed)
    model = mim.create_model("mae_vit_tiny_patch16", **TINY)
    optimizer = build_adamw(model, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05)
    scheduler = cosine_schedule(optimizer, warmup_steps=2, total_steps=10)
    backend = TorchBackend()
    backend.setup(model, optimizer, scheduler)
    return backend


def train_step(backend: TorchBackend, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 32, 32, generator=g)
    mask = torch.stack([torch.randperm(16, generator=g) < 12 for _ in range(2)])
    backend.backward(backend.runner(x, mask).loss)
    before = backend.scheduler.last_epoch
    backend.step()
    assert backend.scheduler.last_epoch == before + 1  # the optimiser and the schedule stepped


def snapshot(backend: TorchBackend) -> dict:
    return {k: v.clone() if torch.is_tensor(v) else v for k, v in _flatten(
        backend.state_dict()).items()}


def _flatten(tree, prefix=""):
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}/"))
        return out
    if isinstance(tree, (list, tuple)):
        return _flatten(dict(enumerate(tree)), prefix)
    return {prefix: tree}


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if torch.is_tensor(a[key]):
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("."))


@pytest.fixture
def saved(tmp_path):
    """A backend with three checkpoints (steps 1, 2, 3) and keep_last=2."""
    backend = make_backend()
    ckpts = Checkpoints(tmp_path / "ckpt", keep_last=2)
    states = {}
    for step in (1, 2, 3):
        train_step(backend, step)
        states[step] = snapshot(backend)
        ckpts.save(step, backend, {"loop": {"step": step}})
    return backend, ckpts, states


def test_rotation_and_last_link(saved):
    _, ckpts, _ = saved
    root = ckpts.root
    assert [p.name for p in ckpts.complete()] == ["step_00000002", "step_00000003"]
    assert (root / LAST).is_symlink()
    assert os.readlink(root / LAST) == "step_00000003"  # relative: the folder can move
    assert ckpts.latest() == (root / "step_00000003").resolve()
    assert leftovers(root) == []  # no .tmp-*, no .last.tmp
    assert sorted(p.name for p in (root / "step_00000003").iterdir()) == [STATE_FILE]


def test_latest_ignores_a_half_written_checkpoint(saved):
    _, ckpts, _ = saved
    crashed = ckpts.root / ".tmp-step_00000004"
    crashed.mkdir()
    (crashed / STATE_FILE).write_bytes(b"\x80\x02partial")
    assert ckpts.latest().name == "step_00000003"
    (ckpts.root / LAST).unlink()  # even without the link, only published ones count
    assert ckpts.latest().name == "step_00000003"
    assert [p.name for p in ckpts.complete()] == ["step_00000002", "step_00000003"]


def test_latest_with_nothing_saved(tmp_path):
    assert Checkpoints(tmp_path / "none").latest() is None
    assert Checkpoints(tmp_path / "none").complete() == []


def test_load_round_trips_model_optimizer_scheduler(saved):
    backend, ckpts, states = saved
    train_step(backend, 99)  # move on, so loading has something to undo
    assert not torch.equal(backend.module.state_dict()["blocks.0.attn.qkv.weight"],
                           states[3]["model/blocks.0.attn.qkv.weight/"])
    client = backend.load(ckpts.latest())
    assert client == {"loop": {"step": 3}}
    assert_same_state(snapshot(backend), states[3])
    assert backend.micro_step == 3 and backend.scheduler.last_epoch == 3
    assert backend.optimizer.state_dict()["state"]  # Adam moments came back too

    fresh = make_backend(seed=1)  # a new process resuming: different init, same result
    fresh.load(ckpts.root / "step_00000002")
    assert_same_state(snapshot(fresh), states[2])
    backend.load(ckpts.root / "step_00000002")
    train_step(fresh, 3)
    train_step(backend, 3)
    assert_same_state(snapshot(fresh), snapshot(backend))  # resumed training is identical


def test_saving_the_same_step_again_replaces_it(saved):
    backend, ckpts, _ = saved
    train_step(backend, 7)
    ckpts.save(3, backend, {"loop": {"step": 33}})
    assert backend.load(ckpts.latest()) == {"loop": {"step": 33}}
    assert leftovers(ckpts.root) == []


def test_disk_full_keeps_previous_checkpoint(saved, monkeypatch):
    backend, ckpts, states = saved
    previous = ckpts.latest()

    def full_disk(directory: Path, client_state) -> None:
        (directory / STATE_FILE).write_bytes(b"\x80\x02half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(backend, "save", full_disk)
    train_step(backend, 4)
    with pytest.raises(CheckpointError) as err:
        ckpts.save(4, backend, {"loop": {"step": 4}})
    message = str(err.value)
    assert str(previous) in message and "No space left on device" in message
    assert "step_00000004" in message
    assert leftovers(ckpts.root) == []
    assert not (ckpts.root / "step_00000004").exists()
    assert ckpts.latest() == previous
    monkeypatch.undo()
    assert backend.load(ckpts.latest()) == {"loop": {"step": 3}}
    assert_same_state(snapshot(backend), states[3])


def test_permission_error_is_a_checkpoint_error(tmp_path, monkeypatch):
    backend = make_backend()
    ckpts = Checkpoints(tmp_path / "ckpt")

    def denied(directory, client_state):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(backend, "save", denied)
    with pytest.raises(CheckpointError, match=r"\(none\)"):
        ckpts.save(1, backend, {})
    assert ckpts.latest() is None and leftovers(ckpts.root) == []


class Payload:
    """Unpickling this would touch ``marker``: weights-only loading must refuse it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_load_refuses_arbitrary_pickles(tmp_path):
    backend = make_backend()
    evil = tmp_path / "step_00000001"
    evil.mkdir()
    marker = tmp_path / "code-ran"
    torch.save({"model": Payload(marker), "client": {}}, evil / STATE_FILE)
    with pytest.raises(CheckpointError, match="refused to load .*could run code.*os.system|"
                       "refused to load .*could run code"):
        backend.load(evil)
    assert not marker.exists()


class _SignalsMidWrite:
    """A checkpoint file that sends this process SIGCHLD once its first 64 KiB are written,
    as the kernel does when a loader worker dies during a save."""

    def __init__(self, file):
        self.file, self.written, self.sent = file, 0, False

    def write(self, data) -> int:
        written = self.file.write(data)
        self.written += written
        if not self.sent and self.written >= 1 << 16:
            self.sent = True
            os.kill(os.getpid(), signal.SIGCHLD)
        return written

    def flush(self) -> None:
        self.file.flush()


def test_a_worker_dying_during_a_save_is_reported_after_the_checkpoint_is_published(
        tmp_path, monkeypatch):
    """torch's DataLoader raises from its SIGCHLD handler wherever the main thread is; raised
    inside torch.save's writer it tore the file and replaced the worker's message with
    torch's 'unexpected pos'. The save now finishes and publishes, then the handler runs."""
    from mim import faults

    def dataloader_handler(signum, frame):  # what torch.utils.data installs in the main process
        raise RuntimeError("DataLoader worker (pid(s) 12345) exited unexpectedly")

    previous = signal.signal(signal.SIGCHLD, dataloader_handler)
    monkeypatch.setattr(faults, "cut_short", _SignalsMidWrite)
    try:
        backend, ckpts = make_backend(), Checkpoints(tmp_path / "ckpt")
        train_step(backend, 0)
        with pytest.raises(RuntimeError, match="DataLoader worker"):
            ckpts.save(1, backend, {"step": 1})
        assert signal.getsignal(signal.SIGCHLD) is dataloader_handler  # restored
    finally:
        signal.signal(signal.SIGCHLD, previous)
    assert ckpts.latest() == tmp_path / "ckpt" / "step_00000001"
    fresh = make_backend(seed=1)
    assert fresh.load(ckpts.latest()) == {"step": 1}
    assert_same_state(snapshot(fresh), snapshot(backend))


def test_the_loop_finds_a_loader_failure_behind_the_error_it_caused():
    from mim.data.failures import loader_failure as _loader_failure

    try:
        try:
            raise RuntimeError("DataLoader worker (pid 7) is killed by signal: Killed. ")
        except RuntimeError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")
    except RuntimeError as exc:
        assert _loader_failure(exc) == "DataLoader worker (pid 7) is killed by signal: Killed."
    assert _loader_failure(RuntimeError("CUDA out of memory")) is None
    assert _loader_failure(ValueError("DataLoader worker is a word here")) is None
