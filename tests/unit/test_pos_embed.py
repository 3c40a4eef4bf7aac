"""Sin-cos position embeddings (MAE's layout) and their interpolation."""
from __future__ import annotations

import mim  # noqa: F401
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mim.models.pos_embed import interpolate_pos_embed, sincos_1d, sincos_pos_embed


# -- MAE's util/pos_embed.py, written out independently (numpy, non-square grids allowed) -----
def mae_1d(embed_dim: int, pos: np.ndarray) -> np.ndarray:
    assert embed_dim % 2 == 0
    omega = np.arange(embed_dim // 2, dtype=np.float64)
    omega /= embed_dim / 2.0
    omega = 1.0 / 10000**omega
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def mae_2d(embed_dim: int, grid_h: int, grid_w: int, cls_token: bool = False) -> np.ndarray:
    gh = np.arange(grid_h, dtype=np.float32)
    gw = np.arange(grid_w, dtype=np.float32)
    grid = np.meshgrid(gw, gh)  # here w goes first
    grid = np.stack(grid, axis=0).reshape(2, 1, grid_h, grid_w)
    emb_h = mae_1d(embed_dim // 2, grid[0])
    emb_w = mae_1d(embed_dim // 2, grid[1])
    emb = np.concatenate([emb_h, emb_w], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros([1, embed_dim]), emb], axis=0)
    return emb


dims4 = st.integers(1, 24).map(lambda k: 4 * k)  # MAE needs D/2 even


@given(dim=dims4, gh=st.integers(1, 7), gw=st.integers(1, 7))
def test_2d_matches_mae(dim, gh, gw):
    ours = sincos_pos_embed(dim, (gh, gw))
    assert ours.shape == (gh * gw, dim) and ours.dtype == torch.float32
    np.testing.assert_allclose(ours.numpy(), mae_2d(dim, gh, gw), atol=1e-6)


@given(dim=dims4, g=st.integers(1, 6))
def test_cls_prefix_row_is_zero(dim, g):
    with_cls = sincos_pos_embed(dim, (g, g), num_prefix=1)
    assert with_cls.shape == (1 + g * g, dim)
    assert torch.equal(with_cls[0], torch.zeros(dim))
    assert torch.equal(with_cls[1:], sincos_pos_embed(dim, (g, g)))
    np.testing.assert_allclose(with_cls.numpy(), mae_2d(dim, g, g, cls_token=True), atol=1e-6)


def test_1d_layout():
    pos = torch.arange(5)
    emb = sincos_1d(8, pos)
    assert emb.shape == (5, 8)
    torch.testing.assert_close(emb[:, 0], torch.sin(pos.double()))  # omega_0 = 1
    torch.testing.assert_close(emb[:, 4], torch.cos(pos.double()))


@given(dim=st.integers(3, 20).map(lambda k: 2 * k), t=st.integers(1, 4), h=st.integers(1, 4),
       w=st.integers(1, 4))
def test_3d_shape_and_distinct_rows(dim, t, h, w):
    emb = sincos_pos_embed(dim, (t, h, w))
    assert emb.shape == (t * h * w, dim)
    assert torch.isfinite(emb).all()
    assert torch.unique(emb, dim=0).shape[0] == t * h * w  # every position is distinguishable
    if t * h * w > 1:
        dist = torch.cdist(emb.double(), emb.double())
        dist.fill_diagonal_(float("inf"))
        assert dist.min() > 1e-3


@given(k=st.integers(2, 12), h=st.integers(1, 4), w=st.integers(1, 4))
def test_3d_is_time_channels_then_mae_2d(k, h, w):
    """With equal spatial widths, the space channels of a 3D table are MAE's 2D table."""
    dim = 3 * 2 * k  # widths split evenly: 2k each
    t = 3
    emb = sincos_pos_embed(dim, (t, h, w)).reshape(t, h * w, dim)
    time_part, space_part = emb[..., : 2 * k], emb[..., 2 * k:]
    space_2d = sincos_pos_embed(4 * k, (h, w))
    for i in range(t):
        torch.testing.assert_close(space_part[i], space_2d)
        assert torch.equal(time_part[i], time_part[i, :1].expand(h * w, -1))  # time only
    assert not torch.equal(time_part[0], time_part[1])


@pytest.mark.parametrize("dim, grid", [(33, (2, 2)), (7, (3, 3)), (31, (2, 2, 2)),
                                       (4, (2, 2, 2)), (2, (2, 2))])
def test_bad_widths_raise(dim, grid):
    with pytest.raises(ValueError):
        sincos_pos_embed(dim, grid)


def test_odd_1d_and_bad_grid_rank_raise():
    with pytest.raises(ValueError, match="even"):
        sincos_1d(7, torch.arange(3))
    with pytest.raises(ValueError):
        sincos_pos_embed(8, (4,))


grids = st.one_of(st.tuples(st.integers(1, 6), st.integers(1, 6)),
                  st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4)))


@given(grid=grids, prefix=st.integers(0, 2), dim=st.sampled_from([8, 12, 16]),
       seed=st.integers(0, 2**16), learned=st.booleans())
def test_interpolate_to_same_grid_is_identity(grid, prefix, dim, seed, learned):
    n = int(np.prod(grid))
    if learned:  # an arbitrary (learned) table, not just sin-cos
        table = torch.randn(prefix + n, dim, generator=torch.Generator().manual_seed(seed))
    else:
        table = torch.cat([torch.randn(prefix, dim), sincos_pos_embed(dim, grid)])
    out = interpolate_pos_embed(table, grid, grid, num_prefix=prefix)
    assert out.shape == table.shape
    torch.testing.assert_close(out, table, atol=1e-5, rtol=0)


@given(old=grids, data=st.data(), prefix=st.integers(0, 2), seed=st.integers(0, 2**16))
def test_interpolate_to_new_grid(old, data, prefix, seed):
    new = tuple(data.draw(st.integers(1, 7)) for _ in old)
    dim = 8
    table = torch.randn(prefix + int(np.prod(old)), dim,
                        generator=torch.Generator().manual_seed(seed))
    out = interpolate_pos_embed(table, old, new, num_prefix=prefix)
    assert out.shape == (prefix + int(np.prod(new)), dim)
    assert torch.equal(out[:prefix], table[:prefix])  # cls rows kept unchanged
    assert torch.isfinite(out).all()


def test_interpolate_constant_table_stays_constant():
    table = torch.full((1 + 16, 6), 0.25)
    table[0] = 7.0
    out = interpolate_pos_embed(table, (4, 4), (7, 5), num_prefix=1)
    assert out.shape == (1 + 35, 6)
    assert out[0].eq(7.0).all()
    torch.testing.assert_close(out[1:], torch.full((35, 6), 0.25))


def test_interpolate_rejects_mismatches():
    table = torch.zeros(1 + 16, 4)
    with pytest.raises(ValueError, match="rows"):
        interpolate_pos_embed(table, (4, 5), (4, 4), num_prefix=1)
    with pytest.raises(ValueError):
        interpolate_pos_embed(table[1:], (4, 4), (2, 2, 4))
