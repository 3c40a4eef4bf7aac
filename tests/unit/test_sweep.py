"""Multirun sweeps: Hydra's sweep syntax expands to the cartesian product, in order."""
import pytest

from mim.config import ConfigError
from mim.config.sweep import expand_sweep


def test_the_sweep_is_the_product_in_command_line_order():
    points = expand_sweep(["seed=0,1", "model=mae_vit_tiny_patch16", "mask.ratio=0.5,0.75,0.9"])
    assert len(points) == 6
    assert points[0] == ["seed=0", "model=mae_vit_tiny_patch16", "mask.ratio=0.5"]
    assert points[-1] == ["seed=1", "model=mae_vit_tiny_patch16", "mask.ratio=0.9"]


def test_hydra_range_and_choice_syntax():
    assert expand_sweep(["seed=range(0,3)"]) == [["seed=0"], ["seed=1"], ["seed=2"]]
    assert expand_sweep(["mask=choice(random,block)"]) == [["mask=random"], ["mask=block"]]


def test_no_sweep_is_one_point_and_a_bad_override_is_a_config_error():
    assert expand_sweep(["seed=3", "train.max_steps=2"]) == [["seed=3", "train.max_steps=2"]]
    with pytest.raises(ConfigError):
        expand_sweep(["seed=(("])
