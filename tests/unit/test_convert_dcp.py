"""Checkpoints written with torch.distributed.checkpoint (``backend=xla``'s sharded layout:
``dcp/`` + ``client.pt``) are read back by ``read_weights`` in this process, in memory: written
here by one process, and by 2 gloo processes holding FSDP2 (DTensor) shards, as on a pod."""
from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor

from mim.convert import ConvertError, read_weights
from mim.models.factory import ModelConfig, build_model

CONFIG = ModelConfig(embed_dim=48, depth=2, num_heads=3, patch_size=8, decoder_embed_dim=32,
                     decoder_depth=1, decoder_num_heads=2)


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(3)
    model = build_model(CONFIG, in_chans=3)
    with torch.no_grad():  # every tensor non-trivial (norms and biases too)
        for p in model.parameters():
            p.add_(torch.randn(p.shape) * 0.05)
    return model


def write_client(checkpoint: Path) -> None:
    """``client.pt`` as XLABackend.save writes it: the run's config under client.config."""
    client = {"config": {"model": dataclasses.asdict(CONFIG)}, "step": 5}
    torch.save({"scheduler": {}, "micro_step": 5, "client": client}, checkpoint / "client.pt")


def with_optimizer(model: torch.nn.Module) -> dict:
    """The state XLABackend.save hands to dcp.save: model and AdamW (one step taken)."""
    optimizer = torch.optim.AdamW(model.parameters())
    sum(p.square().sum() for p in model.parameters()).backward()
    optimizer.step()
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict()}


def assert_same(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        assert got[name].device.type == "cpu" and not isinstance(got[name], DTensor)
        assert torch.equal(got[name], value), name


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")  # no_dist, on purpose
def test_one_process_dcp_checkpoint_reads_back(tmp_path: Path) -> None:
    model = tiny_model()
    state = with_optimizer(model)
    want = {k: v.clone() for k, v in model.state_dict().items()}
    checkpoint = tmp_path / "checkpoints" / "step_00000005"
    dcp.save(state, checkpoint_id=checkpoint / "dcp", no_dist=True)
    write_client(checkpoint)

    for path in (tmp_path, checkpoint, checkpoint / "dcp"):  # run, checkpoint, its dcp folder
        conv = read_weights(path)
        assert conv.format == "mim" and conv.in_chans == 3
        assert dataclasses.astuple(conv.config) == dataclasses.astuple(CONFIG)
        assert_same(conv.state, want)  # the model's tensors only, no optimizer entry
    conv.build()  # the names fit mim's model


def _sharded_writer(rank: int, port: int, folder: str) -> None:
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    try:
        model = tiny_model()
        fully_shard(model, mesh=init_device_mesh("cpu", (2,)))
        state = {"model": model.state_dict(), "optimizer": {}}
        local = state["model"]["blocks.0.attn.qkv.weight"].to_local()
        assert local.shape[0] == 3 * 48 // 2  # really split over the 2 processes
        dcp.save(state, checkpoint_id=folder)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> Path:
    """A checkpoint whose weights 2 gloo processes wrote as FSDP2 (DTensor) shards."""
    checkpoint = tmp_path_factory.mktemp("sharded") / "step_00000005"
    # fork: the children need no re-import of this module (a spawn costs ~10 s here)
    mp.start_processes(_sharded_writer, args=(_free_port(), str(checkpoint / "dcp")), nprocs=2,
                       start_method="fork")
    write_client(checkpoint)
    return checkpoint


def test_sharded_dcp_checkpoint_reads_back_whole(sharded: Path) -> None:
    assert sorted(p.name for p in (sharded / "dcp").glob("*.distcp")) == \
        ["__0_0.distcp", "__1_0.distcp"]
    assert_same(read_weights(sharded).state, tiny_model().state_dict())


def test_missing_or_cut_shard_file_is_named(sharded: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "step_00000005"
    shutil.copytree(sharded, copy)
    found = f"{copy / 'dcp'}: a torch.distributed.checkpoint folder written by 2 ranks " \
        "(2 shard files); "
    shard = copy / "dcp" / "__1_0.distcp"
    size = shard.stat().st_size
    shard.write_bytes(shard.read_bytes()[:size // 2])
    with pytest.raises(ConvertError) as err:
        read_weights(copy)
    assert str(err.value) == f"{found}cut short: __1_0.distcp ({size // 2} of {size} bytes)"

    shard.unlink()
    with pytest.raises(ConvertError) as err:
        read_weights(copy)
    assert str(err.value) == f"{found}missing: __1_0.distcp"

    (copy / "dcp" / ".metadata").unlink()
    with pytest.raises(ConvertError, match="without its .metadata file"):
        read_weights(copy)
