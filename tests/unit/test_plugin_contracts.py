"""The contracts a plugin implements (``MaskPolicy``, ``DecoderMasking``, ``Launcher``), held by
mim's own and with the defaults a plugin inherits."""
from __future__ import annotations

from pathlib import Path

import mim  # noqa: F401
from mim.config.compose import load, world_size
from mim.launching import Launcher
from mim.masking import DecoderMasking, MaskPolicy, build_mask
from mim.registry import LAUNCHERS, MASKS


def test_every_mask_policy_holds_the_contract_and_only_decoder_masking_scores_a_part():
    for name in MASKS.names():
        policy = build_mask(name)
        assert isinstance(policy, MaskPolicy), name
        assert isinstance(policy, DecoderMasking) == (name == "running_cell"), name


def test_a_launcher_says_its_own_world_size():
    assert all(issubclass(LAUNCHERS.get(n), Launcher) for n in LAUNCHERS.names())
    assert world_size(load([])) == 1
    assert world_size(load(["launcher=local", "launcher.nprocs=3"])) == 3
    assert world_size(load(["launcher=slurm", "launcher.nodes=2",
                            "launcher.tasks_per_node=4"])) == 8


def test_a_launcher_without_a_sweep_of_its_own_starts_each_point_in_turn():
    class Recording(Launcher):
        def __init__(self):
            self.started = []

        def launch(self, spec):
            self.started.append(spec)
            return Path(spec)

    launcher = Recording()
    assert launcher.launch_sweep(["a", "b"]) == [Path("a"), Path("b")]
    assert launcher.started == ["a", "b"] and Recording.world_size(None) == 1
