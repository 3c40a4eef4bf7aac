"""Mask policies: exact counts, seeding, block structure, and configuration errors."""
from __future__ import annotations

import math

import mim  # noqa: F401
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from mim.masking import BlockMask, MaskConfigError, RandomMask, build_mask
from mim.registry import UnknownNameError

ratios = st.floats(0.05, 0.95)
grids = st.one_of(st.tuples(st.integers(1, 8), st.integers(1, 8)),
                  st.tuples(st.integers(1, 4), st.integers(1, 5), st.integers(1, 5)))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def valid_count(n: int, ratio: float) -> bool:
    return 1 <= int(n * (1 - ratio)) < n


@given(grid=grids, ratio=ratios, seed=st.integers(0, 2**31))
def test_random_mask_count_dtype_length(grid, ratio, seed):
    n = math.prod(grid)
    assume(valid_count(n, ratio))
    policy = RandomMask(ratio)
    mask = policy(grid, gen(seed))
    assert mask.dtype == torch.bool and mask.shape == (n,)
    assert int(mask.sum()) == policy.num_masked(grid) == n - int(n * (1 - ratio))


@given(grid=grids, ratio=ratios, seed=st.integers(0, 2**31))
def test_random_mask_seeding(grid, ratio, seed):
    assume(valid_count(math.prod(grid), ratio))
    policy = RandomMask(ratio)
    assert torch.equal(policy(grid, gen(seed)), policy(grid, gen(seed)))
    draws = [policy(grid, gen(seed + k)) for k in range(20)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])


def test_random_mask_covers_all_positions():
    """Over many seeds every position is sometimes masked and sometimes visible."""
    policy = RandomMask(0.5)
    hits = torch.stack([policy((4, 4), gen(s)) for s in range(200)]).float().mean(0)
    assert (hits > 0.2).all() and (hits < 0.8).all()


@st.composite
def block_cases(draw):
    """(grid, unit as configured, unit as applied to the grid)."""
    rank = draw(st.sampled_from([2, 3]))
    unit_rank = draw(st.integers(1, rank))
    unit = [draw(st.integers(1, 3)) for _ in range(unit_rank)]
    applied = (1,) * (rank - unit_rank) + tuple(unit)
    grid = tuple(u * draw(st.integers(1, 4)) for u in applied)
    return grid, unit, applied


def assert_unit_cells_uniform(mask: torch.Tensor, grid, unit) -> None:
    shape = []
    for g, u in zip(grid, unit):
        shape += [g // u, u]
    cells = mask.reshape(grid).reshape(shape)
    unit_axes = tuple(range(1, 2 * len(grid), 2))
    assert torch.equal(cells.all(dim=unit_axes), cells.any(dim=unit_axes))


@given(case=block_cases(), ratio=ratios, seed=st.integers(0, 2**31))
def test_block_mask_respects_unit(case, ratio, seed):
    grid, unit, applied = case
    coarse = math.prod(g // u for g, u in zip(grid, applied))
    assume(valid_count(coarse, ratio))
    policy = BlockMask(ratio, unit)
    policy.check(grid)
    mask = policy(grid, gen(seed))
    assert mask.dtype == torch.bool and mask.shape == (math.prod(grid),)
    expected = (coarse - int(coarse * (1 - ratio))) * math.prod(applied)
    assert int(mask.sum()) == policy.num_masked(grid) == expected
    assert_unit_cells_uniform(mask, grid, applied)
    assert torch.equal(mask, policy(grid, gen(seed)))


def test_2d_unit_on_3d_grid_is_1x2x2():
    policy = BlockMask(0.5, [2, 2])
    grid = (3, 4, 4)
    for seed in range(5):
        mask = policy(grid, gen(seed))
        assert_unit_cells_uniform(mask, grid, (1, 2, 2))
        frames = mask.reshape(grid)
        # masking is per frame (unit 1 in time), so frames generally differ
        if not torch.equal(frames[0], frames[1]):
            break
    else:
        pytest.fail("every frame got the same mask over 5 seeds")


def test_3d_unit_masks_tubes():
    policy = BlockMask(0.5, [2, 2, 2])
    grid = (4, 4, 6)
    mask = policy(grid, gen(3))
    assert_unit_cells_uniform(mask, grid, (2, 2, 2))
    assert int(mask.sum()) == policy.num_masked(grid) == 6 * 8


@given(grid=grids, ratio=ratios, seeds=st.tuples(st.integers(0, 99), st.integers(100, 199)))
def test_block_different_seeds_usually_differ(grid, ratio, seeds):
    policy = BlockMask(ratio, [1, 1])
    assume(valid_count(math.prod(grid), ratio))
    draws = [policy(grid, gen(s)) for s in range(seeds[0], seeds[0] + 20)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])


@pytest.mark.parametrize("ratio", [0.0, 1.0, 1.5, -0.25])
def test_ratio_outside_open_interval_raises(ratio):
    with pytest.raises(MaskConfigError, match="mask.ratio"):
        RandomMask(ratio)
    with pytest.raises(MaskConfigError, match="mask.ratio"):
        BlockMask(ratio)
    with pytest.raises(MaskConfigError):
        build_mask("random", ratio=ratio)


def test_mask_config_error_is_a_value_error():
    assert issubclass(MaskConfigError, ValueError)


def test_unit_not_dividing_grid_raises_in_check():
    policy = BlockMask(0.75, [3, 3])  # constructing is fine: the grid is not known yet
    with pytest.raises(MaskConfigError, match="mask.unit"):
        policy.check((14, 14))
    with pytest.raises(MaskConfigError, match="mask.unit"):
        policy((14, 14), gen(0))
    policy.check((12, 9))
    with pytest.raises(MaskConfigError, match="mask.unit"):
        BlockMask(0.5, [2, 2, 2]).check((4, 4))  # more unit axes than grid axes
    with pytest.raises(MaskConfigError, match="mask.unit"):
        BlockMask(0.5, [0, 2])


def test_too_few_tokens_for_ratio_raises():
    with pytest.raises(MaskConfigError, match="visible"):
        RandomMask(0.9).check((2, 2))  # keeps int(0.4) = 0 tokens
    with pytest.raises(MaskConfigError):
        BlockMask(0.5, [2, 2]).check((2, 2))  # a single unit: nothing left visible


def test_build_mask_unknown_param_and_name():
    with pytest.raises(MaskConfigError, match="foo") as err:
        build_mask("random", foo=1)
    assert "ratio" in str(err.value)  # lists the valid parameters
    assert build_mask("block", ratio=0.5, unit=[1, 2]) == BlockMask(0.5, [1, 2])
    with pytest.raises(UnknownNameError) as err:
        build_mask("checkerboard")
    message = str(err.value)
    assert "checkerboard" in message and "random" in message and "block" in message
