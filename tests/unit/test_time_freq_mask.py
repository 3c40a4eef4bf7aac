"""mask=time_freq (AudioMAE's fine-tuning masking): whole rows (time) and columns (frequency)
of the 2D token grid, an exact count, seeded draws, one-line refusals, and the collate and
config paths a run takes."""
from __future__ import annotations

import json
import math

import mim  # noqa: F401
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from mim.cli import main
from mim.data import MaskingCollate, Sample
from mim.data.dataset import sample_seed
from mim.masking import MaskConfigError, TimeFreqMask, build_mask
from mim.registry import MASKS

grids = st.tuples(st.integers(1, 64), st.integers(1, 16))
ratios = st.floats(0.0, 0.95)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def counts(grid: tuple[int, int], time_ratio: float, freq_ratio: float) -> tuple[int, int]:
    """Masked rows and columns: each axis keeps int(n * (1 - ratio)), as AudioMAE does."""
    return (grid[0] - int(grid[0] * (1 - time_ratio)), grid[1] - int(grid[1] * (1 - freq_ratio)))


def serves(grid: tuple[int, int], time_ratio: float, freq_ratio: float) -> bool:
    t, f = counts(grid, time_ratio, freq_ratio)
    return t < grid[0] and f < grid[1] and (t or f)


@given(grid=grids, time_ratio=ratios, freq_ratio=ratios, seed=st.integers(0, 2**31))
def test_whole_rows_and_columns_and_an_exact_count(grid, time_ratio, freq_ratio, seed):
    assume(serves(grid, time_ratio, freq_ratio))
    policy = TimeFreqMask(time_ratio, freq_ratio)
    mask = policy(grid, gen(seed))
    h, w = grid
    t, f = counts(grid, time_ratio, freq_ratio)
    assert mask.dtype == torch.bool and mask.shape == (h * w,)
    assert int(mask.sum()) == policy.num_masked(grid) == h * w - (h - t) * (w - f)
    plane = mask.reshape(h, w)
    rows, cols = plane.all(dim=1), plane.all(dim=0)  # [H], [W]: the masked ones are whole
    assert int(rows.sum()) == t and int(cols.sum()) == f
    assert torch.equal(plane, rows[:, None] | cols[None, :])  # nothing masked but those


def test_audiomaes_grid_and_ratios():
    policy = build_mask("time_freq", time_ratio=0.2, freq_ratio=0.2)
    assert isinstance(policy, TimeFreqMask) and MASKS.get("time_freq") is TimeFreqMask
    # 64 x 8: 13 time steps and 2 frequency bins (AudioMAE's random_masking_2d keeps 51 and 6)
    assert policy.num_masked((64, 8)) == 64 * 8 - 51 * 6
    assert TimeFreqMask(0.3, 0.0).num_masked((10, 8)) == 3 * 8  # time only: whole rows


@given(grid=grids, time_ratio=ratios, freq_ratio=ratios, seed=st.integers(0, 2**31))
def test_draws_are_seeded_and_differ_between_seeds(grid, time_ratio, freq_ratio, seed):
    assume(serves(grid, time_ratio, freq_ratio))
    policy = TimeFreqMask(time_ratio, freq_ratio)
    assert torch.equal(policy(grid, gen(seed)), policy(grid, gen(seed)))
    h, w = grid
    t, f = counts(grid, time_ratio, freq_ratio)
    assume(math.comb(h, t) * math.comb(w, f) > 20)  # enough distinct masks to tell apart
    draws = [policy(grid, gen(seed + k)) for k in range(20)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])


def test_every_row_and_column_is_sometimes_masked():
    policy = TimeFreqMask(0.25, 0.25)
    planes = torch.stack([policy((8, 8), gen(s)).reshape(8, 8) for s in range(200)])
    assert planes.all(dim=2).any(dim=0).all()  # every time step masked whole in some draw
    assert planes.all(dim=1).any(dim=0).all()  # every frequency bin too


@pytest.mark.parametrize("key, value", [("time_ratio", 1.0), ("time_ratio", -0.1),
                                        ("freq_ratio", 1.5)])
def test_ratios_outside_zero_one_are_refused(key, value):
    with pytest.raises(MaskConfigError, match=f"^mask.{key}: must be in \\[0, 1\\)"):
        build_mask("time_freq", **{key: value})


@pytest.mark.parametrize("grid, params, says", [
    ((16,), {}, "mask: time_freq masks rows (time) and columns (frequency) of a 2D"),
    ((4, 8, 8), {}, "got [4, 8, 8]; use mask=random"),
    ((1, 8), {"time_ratio": 0.5}, "mask.time_ratio: 0.5 of the 1 time steps"),
    ((8, 1), {"freq_ratio": 0.5}, "mask.freq_ratio: 0.5 of the 1 frequency bins"),
    ((8, 8), {"time_ratio": 0.0, "freq_ratio": 0.0}, "mask no token"),
])
def test_check_refuses_in_one_line(grid, params, says):
    policy = TimeFreqMask(**params)
    for call in (policy.check, policy.num_masked, lambda g: policy(g, gen(0))):
        with pytest.raises(MaskConfigError) as err:
            call(grid)
        message = str(err.value)
        assert says in message and "\n" not in message and message.startswith("mask")


def test_masking_collate_draws_equal_counts_from_the_seeds():
    policy = TimeFreqMask(0.25, 0.25)
    collate = MaskingCollate(policy, (8, 4))
    seeds = [sample_seed(0, 0, p) for p in range(4)]
    batch = collate([(Sample(torch.randn(1, 64, 32)), s) for s in seeds])
    again = collate([(Sample(torch.zeros(1, 64, 32)), s) for s in seeds])
    assert batch.mask.shape == (4, 32) and torch.equal(batch.mask, again.mask)
    assert policy.num_masked((8, 4)) == 32 - 6 * 3  # 2 of 8 time steps, 1 of 4 bins
    assert (batch.mask.sum(1) == policy.num_masked((8, 4))).all()
    assert len({tuple(m.tolist()) for m in batch.mask}) > 1  # each sample its own draw
    for row in batch.mask:
        plane = row.reshape(8, 4)
        assert torch.equal(plane, plane.all(1)[:, None] | plane.all(0)[None, :])


FAST = ["experiment=demo", "data.input_size=32", "model.patch_size=8", "model.embed_dim=48",
        "model.depth=2", "model.num_heads=3", "model.decoder_embed_dim=32",
        "model.decoder_depth=1", "model.decoder_num_heads=2", "train.batch_size=8",
        "train.num_workers=0", "train.precision=fp32"]


def test_selected_on_the_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *FAST, "mask=time_freq", "mask.time_ratio=0.5",
                 "mask.freq_ratio=0.25", f"run.dir={tmp_path / 'run'}", "--cfg"]) == 0
    out = capsys.readouterr().out
    derived = {key: json.loads(value) for key, value in
               (line.split(": ", 1) for line in out.split("# derived")[1].splitlines()[1:])}
    assert derived["masked_tokens"] == 16 - 2 * 3  # 2 of 4 rows, 1 of 4 columns
    assert main(["train", *FAST, "mask=time_freq", "mask.time_ratio=0.9", "--cfg"]) == 2
    assert "mask.time_ratio: 0.9 of the 4 time steps" in capsys.readouterr().err
