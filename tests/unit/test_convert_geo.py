"""Geospatial checkpoints: Prithvi-EO 1.0 / 2.0 in and out (``to=prithvi``), SatMAE's
group-channel model in. There is no hub here, so each format is built at random in its
documented layout (``mim/convert/prithvi.py``, ``satmae.py`` name the sources) by reference
modules written from that layout, whose forward follows the published code's steps; the mim
model read from a file must give their features (an independent check, not a round trip).

Sizes: 6 bands, 2 frames, 32x32 in 8x8 patches (1x8x8 cubes: grid 2x4x4, 32 tokens), encoder
2 x 48, decoder 1 x 32.
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import re
from pathlib import Path

import mim  # noqa: I001  (before timm: mim's torchvision shim)
import numpy as np
import pytest
import torch
from einops import rearrange
from timm.models.vision_transformer import Block
from torch import nn

from mim.convert import ConvertError, Converted, WRITERS, convert, read_weights
from mim.convert.card import PLACEHOLDER
from mim.convert.prithvi import HLS_IDS, HLS_NAMES, prithvi_sincos
from mim.convert.provenance import run_facts
from mim.convert.satmae import DEFAULT_GROUPS
from mim.models.factory import build_model, model_config
from mim.models.pos_embed import sincos_pos_embed

BANDS, FRAMES, SIZE, PATCH = 6, 2, 32, 8
DIM, HEADS, DEC, DEC_HEADS = 48, 3, 32, 2
HEADS_GIVEN = dict(num_heads=HEADS, decoder_num_heads=DEC_HEADS)
ATOL = 2e-5  # fp32, the same maths in another order (conv vs linear, fused attention)
MEAN = [1087.0, 1342.0, 1433.0, 2734.0, 1958.0, 1363.0]  # Prithvi-EO-2.0's published ones
STD = [2248.0, 2179.0, 2178.0, 1850.0, 1242.0, 1049.0]


def perturb(model: nn.Module, scale: float = 0.05) -> None:
    """Every parameter non-trivial (norms and biases too), reproducibly."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


def masks(batch: int, length: int, masked: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(batch, length, dtype=torch.bool)
    for row in range(batch):
        out[row, torch.randperm(length, generator=g)[:masked]] = True
    return out


def visible(mask: torch.Tensor) -> torch.Tensor:
    """[B, Lv] visible positions in grid order (the order mim keeps them in)."""
    return torch.stack([torch.nonzero(~row)[:, 0] for row in mask])


def one_d(dim: int, pos: np.ndarray) -> np.ndarray:
    """MAE's 1D sin-cos (sin half, cos half), numpy."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def prithvi_table(dim: int, grid: tuple[int, int, int]) -> torch.Tensor:
    """Prithvi's 3D table as its papers' code lays it out: column on 6/16 of the channels, row
    on 6/16, time on 4/16, tokens (t, h, w), a zero cls row -> [1, 1 + L, dim]."""
    t, h, w = np.meshgrid(*[np.arange(n) for n in grid], indexing="ij")
    emb = np.concatenate([one_d(dim // 16 * 6, w), one_d(dim // 16 * 6, h),
                          one_d(dim // 16 * 4, t)], axis=1)
    return torch.from_numpy(np.concatenate([np.zeros([1, dim]), emb])).float()[None]


def mae_2d_table(dim: int, side: int) -> torch.Tensor:
    """MAE's 2D table (w on the first half, h on the second), zero cls row -> [1, 1 + L, dim]."""
    h, w = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    emb = np.concatenate([one_d(dim // 2, w), one_d(dim // 2, h)], axis=1)
    return torch.from_numpy(np.concatenate([np.zeros([1, dim]), emb])).float()[None]


def blocks(dim: int, heads: int, depth: int, eps: float) -> nn.ModuleList:
    return nn.ModuleList(Block(dim, heads, 4.0, qkv_bias=True,
                               norm_layer=functools.partial(nn.LayerNorm, eps=eps))
                         for _ in range(depth))


def assert_same_state(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def one_line(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text, text
    return text


# ----------------------------------------------------------------------------------- Prithvi
class Scale(nn.Module):
    """A TL variant's TemporalEncoder / LocationEncoder as its state holds it: one weight."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.full((1,), 0.1))


class PrithviEncoder(nn.Module):
    """Prithvi-EO-2.0's PrithviViT, its parameter names and forward steps (patch cubes, the
    fixed table without its cls row, the cls token plus that row, timm blocks, LayerNorm eps
    1e-5, the default of torch that Prithvi keeps)."""

    def __init__(self, tubelet: int, frames: int, coords: bool = False):
        super().__init__()
        self.grid = (frames // tubelet, SIZE // PATCH, SIZE // PATCH)
        self.patch_embed = nn.Module()
        kernel = (tubelet, PATCH, PATCH)
        self.patch_embed.proj = nn.Conv3d(BANDS, DIM, kernel, kernel)
        self.cls_token = nn.Parameter(torch.randn(1, 1, DIM) * 0.02)
        self.register_buffer("pos_embed", prithvi_table(DIM, self.grid))
        self.blocks = blocks(DIM, HEADS, 2, 1e-5)
        self.norm = nn.LayerNorm(DIM)
        if coords:
            self.temporal_embed_enc, self.location_embed_enc = Scale(), Scale()

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2) + self.pos_embed[:, 1:]
        if keep is not None:
            x = torch.gather(x, 1, keep.unsqueeze(-1).expand(-1, -1, DIM))
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class PrithviDecoder(nn.Module):
    """Prithvi's MAEDecoder: mask tokens put back by ids_restore, the fixed decoder table."""

    def __init__(self, tubelet: int, grid: tuple[int, int, int], coords: bool = False):
        super().__init__()
        self.decoder_embed = nn.Linear(DIM, DEC)
        self.mask_token = nn.Parameter(torch.randn(1, 1, DEC) * 0.02)
        self.register_buffer("decoder_pos_embed", prithvi_table(DEC, grid))
        self.decoder_blocks = blocks(DEC, DEC_HEADS, 1, 1e-5)
        self.decoder_norm = nn.LayerNorm(DEC)
        self.decoder_pred = nn.Linear(DEC, tubelet * PATCH * PATCH * BANDS)
        if coords:
            self.temporal_embed_dec, self.location_embed_dec = Scale(), Scale()

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        x = self.decoder_embed(latent)
        tokens = self.mask_token.repeat(x.shape[0], ids_restore.shape[1] + 1 - x.shape[1], 1)
        rest = torch.cat([x[:, 1:], tokens], dim=1)
        rest = torch.gather(rest, 1, ids_restore.unsqueeze(-1).expand(-1, -1, DEC))
        x = torch.cat([x[:, :1], rest], dim=1) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]


class PrithviMAE(nn.Module):
    def __init__(self, tubelet: int = 1, frames: int = FRAMES, coords: bool = False,
                 norm_pix: bool = False):
        super().__init__()
        self.tubelet, self.norm_pix = tubelet, norm_pix
        self.encoder = PrithviEncoder(tubelet, frames, coords)
        self.decoder = PrithviDecoder(tubelet, self.encoder.grid, coords)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x [B, C, T, H, W], mask [B, L] (True: masked) -> (loss, pred, latent)."""
        keep = visible(mask)
        shuffle = torch.cat([keep, torch.stack([torch.nonzero(r)[:, 0] for r in mask])], 1)
        latent = self.encoder(x, keep)
        pred = self.decoder(latent, torch.argsort(shuffle, dim=1))
        target = rearrange(x, "b c (t s) (h p) (w q) -> b (t h w) (s p q c)", s=self.tubelet,
                           p=PATCH, q=PATCH)
        if self.norm_pix:
            target = (target - target.mean(-1, keepdim=True)) / (
                target.var(-1, keepdim=True) + 1e-6) ** 0.5
        loss = (((pred - target) ** 2).mean(-1) * mask).sum() / mask.sum()
        return loss, pred, latent


def prithvi(tubelet: int = 1, frames: int = FRAMES, coords: bool = False,
            norm_pix: bool = False) -> PrithviMAE:
    torch.manual_seed(0)
    ref = PrithviMAE(tubelet, frames, coords, norm_pix).eval()
    perturb(ref)  # the fixed tables are buffers: untouched
    return ref


def v1_names(state: dict) -> dict:
    """Prithvi-EO-1.0's names: 2.0's without the encoder. / decoder. prefixes."""
    return {k.split(".", 1)[1]: v for k, v in state.items()}


def hf_config(**changes) -> dict:
    """config.json as ibm-nasa-geospatial/Prithvi-EO-2.0-300M has it, at this test's sizes."""
    cfg = {"img_size": SIZE, "num_frames": FRAMES, "patch_size": [1, PATCH, PATCH],
           "in_chans": BANDS, "embed_dim": DIM, "depth": 2, "num_heads": HEADS,
           "decoder_embed_dim": DEC, "decoder_depth": 1, "decoder_num_heads": DEC_HEADS,
           "mlp_ratio": 4, "coords_encoding": [], "coords_scale_learn": False,
           "mask_ratio": 0.75, "norm_pix_loss": False, "bands": list(HLS_IDS), "mean": MEAN,
           "std": STD, "origin_url": "https://example.invalid", "paper_ids": "arXiv:2412.02732"}
    return {"architecture": "prithvi_eo_v2_tiny", "num_features": DIM,
            "pretrained_cfg": {**cfg, **changes}}


L = FRAMES * (SIZE // PATCH) ** 2


def test_mims_prithvi_table_is_the_reference_one() -> None:
    for dim, grid in ((DIM, (2, 4, 4)), (1024, (4, 14, 14)), (DEC, (1, 3, 5))):
        torch.testing.assert_close(prithvi_sincos(dim, grid), prithvi_table(dim, grid)[0, 1:],
                                   atol=1e-6, rtol=0)
    assert not torch.allclose(prithvi_sincos(DIM, (2, 4, 4)), sincos_pos_embed(DIM, (2, 4, 4)))


def test_prithvi_2_file_gives_prithvis_features(tmp_path: Path) -> None:
    ref = prithvi()
    path = tmp_path / "Prithvi_EO_V2_tiny.pt"
    torch.save(ref.state_dict(), path)
    conv = read_weights(path, **HEADS_GIVEN)
    cfg = conv.config
    assert conv.format == "prithvi" and conv.in_chans == BANDS and conv.has_decoder
    assert (cfg.tokenizer_name, cfg.tubelet_size, cfg.patch_size) == ("cube", 1, PATCH)
    assert (cfg.pos_embed, cfg.pos_grid, cfg.norm_eps) == ("learned", [2, 4, 4], 1e-5)
    assert conv.input_size == (FRAMES, SIZE, SIZE) and conv.run == {}  # no config: only C
    assert any("Prithvi's fixed 3D sin-cos" in n for n in conv.notes)
    assert any(n.startswith("decoder positions") for n in conv.notes)
    model = conv.build().eval()
    x, mask = torch.randn(2, BANDS, FRAMES, SIZE, SIZE), masks(2, L, 24)
    with torch.no_grad():
        torch.testing.assert_close(model.encode(x).tokens, ref.encoder(x), atol=ATOL, rtol=0)
        torch.testing.assert_close(model.encode(x, mask).tokens, ref.encoder(x, visible(mask)),
                                   atol=ATOL, rtol=0)
        # the decoder's weights are Prithvi's: with mim's decoder positions the two agree
        ref.decoder.decoder_pos_embed.copy_(sincos_pos_embed(DEC, (2, 4, 4), 1)[None])
        loss, pred, _ = ref(x, mask)
        ours = model(x, mask)
        torch.testing.assert_close(ours.pred, pred, atol=ATOL, rtol=0)
        torch.testing.assert_close(ours.loss, loss, atol=0, rtol=1e-5)


def test_prithvi_folder_and_file_with_config_record_bands_and_statistics(tmp_path) -> None:
    ref = prithvi()
    folder = tmp_path / "Prithvi-EO-2.0-tiny"
    folder.mkdir()
    torch.save(ref.state_dict(), folder / "Prithvi_EO_V2_tiny.pt")
    (folder / "config.json").write_text(json.dumps(hf_config()))
    for source in (folder, folder / "Prithvi_EO_V2_tiny.pt"):  # the heads come from config.json
        conv = read_weights(source)
        assert (conv.config.num_heads, conv.config.decoder_num_heads) == (HEADS, DEC_HEADS)
        assert conv.config.name == "prithvi_eo_v2_tiny"
        data = conv.run["config"]["data"]
        assert data["band_names"] == HLS_NAMES == ["Blue", "Green", "Red", "Narrow NIR",
                                                   "SWIR 1", "SWIR 2"]
        assert (data["mean"], data["std"], data["time_steps"]) == (MEAN, STD, FRAMES)
        assert conv.run["config"]["mask"]["ratio"] == 0.75
        facts = run_facts(conv)  # the image modality's data config takes them
        assert (facts.mean, facts.std) == (MEAN, STD)
    x = torch.randn(1, BANDS, FRAMES, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(conv.build().eval().encode(x).tokens, ref.encoder(x),
                                   atol=ATOL, rtol=0)


def test_prithvi_1_layout_with_a_tubelet_and_no_config(tmp_path: Path) -> None:
    """1.0's names, a 2x8x8 cube: one time step of tokens; the grid is the one on which the
    stored table is Prithvi's (16 positions are also 4x2x2 or 16x1x1)."""
    ref = prithvi(tubelet=2)
    path = tmp_path / "Prithvi_100M.pt"
    torch.save({"model": v1_names(ref.state_dict())}, path)
    conv = read_weights(path, **HEADS_GIVEN)
    assert conv.config.pos_grid == [1, 4, 4] and conv.config.tubelet_size == 2
    assert conv.notes[0].startswith("Prithvi-EO-1.0 layout")
    model = conv.build().eval()
    x, mask = torch.randn(2, BANDS, FRAMES, SIZE, SIZE), masks(2, 16, 12)
    with torch.no_grad():
        torch.testing.assert_close(model.encode(x, mask).tokens, ref.encoder(x, visible(mask)),
                                   atol=ATOL, rtol=0)


def test_to_prithvi_writes_prithvis_layout_and_reads_back_identically(tmp_path: Path) -> None:
    ref = prithvi()
    source = tmp_path / "prithvi.pt"
    torch.save(ref.state_dict(), source)
    conv = read_weights(source, **HEADS_GIVEN)
    out = convert(source, tmp_path / "export", to="prithvi", **HEADS_GIVEN)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json",
                                                     "mim-export.json", "model.pt"]
    back = read_weights(out)  # heads from the config.json written
    assert_same_state(back.state, conv.state)
    assert back.config == conv.config and back.input_size == conv.input_size
    written = torch.load(out / "model.pt", weights_only=True)
    original = ref.state_dict()
    assert sorted(written) == sorted(original)
    for key, value in original.items():  # the tensors Prithvi trained, bit for bit
        if key != "decoder.decoder_pos_embed":
            assert torch.equal(written[key], value), key
    # ... and the decoder table mim's decoder uses: strict loading computes mim's model
    model = conv.build().eval()
    again = PrithviMAE().eval()
    again.load_state_dict(written, strict=True)
    x, mask = torch.randn(2, BANDS, FRAMES, SIZE, SIZE), masks(2, L, 24)
    with torch.no_grad():
        loss, pred, latent = again(x, mask)
        ours = model(x, mask)
        torch.testing.assert_close(model.encode(x, mask).tokens, latent, atol=ATOL, rtol=0)
        torch.testing.assert_close(ours.pred, pred, atol=ATOL, rtol=0)
    pretrained = json.loads((out / "config.json").read_text())["pretrained_cfg"]
    assert {k: pretrained[k] for k in ("img_size", "num_frames", "patch_size", "in_chans",
                                       "embed_dim", "depth", "num_heads", "decoder_embed_dim",
                                       "decoder_depth", "decoder_num_heads")} == {
        "img_size": SIZE, "num_frames": FRAMES, "patch_size": [1, PATCH, PATCH],
        "in_chans": BANDS, "embed_dim": DIM, "depth": 2, "num_heads": HEADS,
        "decoder_embed_dim": DEC, "decoder_depth": 1, "decoder_num_heads": DEC_HEADS}
    text = (out / "README.md").read_text()
    assert "library_name: terratorch" in text and "decoder_pos_embed holds mim's" in text
    scope: dict = {}
    code = "\n".join(re.findall(r"```python\n(.*?)```", text, flags=re.S))
    exec(code.replace(PLACEHOLDER, str(out)), scope)  # the card's code runs as written
    assert sorted(scope["state"]) == sorted(written) and scope["config"] == pretrained
    assert isinstance(scope["model"], mim.models.model.MaskedAutoencoder)


def test_a_2d_mim_model_exports_with_a_one_frame_kernel(tmp_path: Path, caplog) -> None:
    config = model_config("mae_vit_base_patch16", embed_dim=DIM, depth=2, num_heads=HEADS,
                          patch_size=PATCH, decoder_embed_dim=DEC, decoder_depth=1,
                          decoder_num_heads=DEC_HEADS)
    torch.manual_seed(3)
    model = build_model(config, BANDS).eval()
    perturb(model)
    run = {"config": {"modality": {"name": "image"}, "mask": {"name": "random", "ratio": 0.6},
                      "data": {"reader": "raster", "band_names": HLS_NAMES, "mean": MEAN,
                               "std": STD, "input_size": SIZE}}}
    conv = Converted(config, BANDS, model.state_dict(), "mim", (SIZE, SIZE), run=run)
    with caplog.at_level(logging.WARNING, logger="mim"):
        folder = WRITERS["prithvi"](conv, tmp_path / "prithvi")
    assert "position table is mim's, not Prithvi's" in caplog.text  # Prithvi's loaders differ
    assert "eps 1e-05; these weights were trained with 1e-06" in caplog.text
    written = torch.load(folder / "model.pt", weights_only=True)
    kernel = written["encoder.patch_embed.proj.weight"]
    assert kernel.shape == (DIM, BANDS, 1, PATCH, PATCH)
    assert torch.equal(kernel[:, :, 0], model.tokenizer.proj.weight)
    pretrained = json.loads((folder / "config.json").read_text())["pretrained_cfg"]
    assert (pretrained["num_frames"], pretrained["patch_size"]) == (1, [1, PATCH, PATCH])
    assert (pretrained["bands"], pretrained["mean"], pretrained["std"]) == (HLS_IDS, MEAN, STD)
    assert (pretrained["mask_ratio"], pretrained["norm_pix_loss"]) == (0.6, True)
    ref = PrithviMAE(frames=1, norm_pix=True)
    for module in ref.modules():  # trained with mim's eps
        if isinstance(module, nn.LayerNorm):
            module.eps = 1e-6
    ref.load_state_dict(written, strict=True)
    x, mask = torch.randn(2, BANDS, SIZE, SIZE), masks(2, 16, 12)
    with torch.no_grad():
        loss, pred, latent = ref.eval()(x[:, :, None], mask)
        ours = model(x, mask)
        torch.testing.assert_close(model.encode(x, mask).tokens, latent, atol=ATOL, rtol=0)
        torch.testing.assert_close(ours.pred, pred, atol=ATOL, rtol=0)
        torch.testing.assert_close(ours.loss, loss, atol=0, rtol=1e-5)
        back = read_weights(folder)  # a one-frame cube model, the same features
        assert back.config.tokenizer_name == "cube" and back.input_size == (1, SIZE, SIZE)
        assert back.run["config"]["data"]["band_names"] == HLS_NAMES
        assert any("mim's 2D sin-cos (a 2D model's export)" in n for n in back.notes)
        cube = back.build().eval()
        torch.testing.assert_close(cube.encode(x[:, :, None]).tokens, model.encode(x).tokens,
                                   atol=ATOL, rtol=0)


def tl_codes(dim: int, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """terratorch's TemporalEncoder / LocationEncoder code, written from its formula: the
    sin-cos of ``first`` on dim // 2 and of ``second`` on the rest, float32 as Prithvi's."""
    def sincos(width: int, pos: torch.Tensor) -> torch.Tensor:
        omega = 1.0 / 10000 ** (torch.arange(width // 2, dtype=torch.float32) / (width / 2.0))
        out = pos.float().reshape(-1)[:, None] * omega[None]  # [M, width/2]
        return torch.cat([out.sin(), out.cos()], dim=1)  # [M, width]

    return torch.cat([sincos(dim // 2, first), sincos(dim - dim // 2, second)], dim=-1)


def test_tl_weights_are_read_as_date_and_location_embeddings(tmp_path: Path) -> None:
    ref = prithvi(coords=True)
    with torch.no_grad():
        ref.encoder.temporal_embed_enc.scale.fill_(0.7)
        ref.encoder.location_embed_enc.scale.fill_(1.3)
    path = tmp_path / "Prithvi_EO_V2_tiny_TL.pt"
    torch.save(ref.state_dict(), path)
    conv = read_weights(path, **HEADS_GIVEN)
    assert conv.config.coords == "both"
    assert any("model.coords=both" in n for n in conv.notes)
    years = torch.tensor([[2019.0, 2020.0]])[:, :FRAMES]  # [B, T]
    days = torch.tensor([[100.0, 250.0]])[:, :FRAMES]
    place = torch.tensor([[45.9, 7.7]])  # [B, 2]
    coords = torch.cat([years[..., None], days[..., None],
                        place[:, None].expand(-1, years.shape[1], -1)], dim=-1)  # [B, T, 4]
    x = torch.randn(1, BANDS, FRAMES, SIZE, SIZE)
    tokens = ref.encoder.grid[0] * ref.encoder.grid[1] * ref.encoder.grid[2]
    when = 0.7 * tl_codes(DIM, years.reshape(-1), days.reshape(-1))  # [T, D]
    where = 1.3 * tl_codes(DIM, place[:, 0], place[:, 1])  # [1, D]
    extra = when.repeat_interleave(tokens // years.shape[1], dim=0) + where  # [L, D]
    with torch.no_grad():  # Prithvi's forward with the codes added after the table
        enc = ref.encoder
        grid_tokens = enc.patch_embed.proj(x).flatten(2).transpose(1, 2) + enc.pos_embed[:, 1:]
        hidden = torch.cat([(enc.cls_token + enc.pos_embed[:, :1]), grid_tokens + extra], dim=1)
        for block in enc.blocks:
            hidden = block(hidden)
        expected = enc.norm(hidden)
        ours = conv.build().eval().encode(x, None, coords).tokens
    torch.testing.assert_close(ours, expected, atol=ATOL, rtol=0)
    back = read_weights(convert(path, tmp_path / "again", to="prithvi", **HEADS_GIVEN))
    assert back.config.coords == "both"  # to=prithvi writes them back in Prithvi's names
    assert torch.equal(back.state["coords_embed.time_scale"], torch.tensor([0.7]))


def test_tl_weights_are_dropped_on_request(tmp_path: Path) -> None:
    ref = prithvi(coords=True)
    path = tmp_path / "Prithvi_EO_V2_tiny_TL.pt"
    torch.save(ref.state_dict(), path)
    conv = read_weights(path, drop_coords=True, **HEADS_GIVEN)
    assert conv.config.coords == "none"
    assert any(n.startswith("dropped (drop_coords): decoder.location_embed_dec.scale")
               for n in conv.notes)
    x = torch.randn(1, BANDS, FRAMES, SIZE, SIZE)
    with torch.no_grad():  # Prithvi without date and location coordinates
        torch.testing.assert_close(conv.build().eval().encode(x).tokens, ref.encoder(x),
                                   atol=ATOL, rtol=0)
    out = convert(path, tmp_path / "mim", to="mim", drop_coords=True, **HEADS_GIVEN)
    assert any("drop_coords" in n for n in read_weights(out).notes)


# ------------------------------------------------------------------------------------ SatMAE
GROUPS = [[0, 1, 2], [3, 5], [4]]  # a 6-band grouping, bands out of order in one group
CODE, DEC_CODE = 16, 8  # widths of SatMAE's channel_embed and decoder_channel_embed


class SatMAE(nn.Module):
    """MaskedAutoencoderGroupChannelViT's names and encoder steps: a PatchEmbed per group, the
    fixed [2D sin-cos | group code] concatenated and added, the cls token without position."""

    def __init__(self, groups: list[list[int]]):
        super().__init__()
        self.groups, side = groups, SIZE // PATCH
        self.patch_embed = nn.ModuleList()
        for group in groups:
            embed = nn.Module()
            embed.proj = nn.Conv2d(len(group), DIM, PATCH, PATCH)
            self.patch_embed.append(embed)
        self.cls_token = nn.Parameter(torch.randn(1, 1, DIM) * 0.02)
        self.pos_embed = nn.Parameter(mae_2d_table(DIM - CODE, side), requires_grad=False)
        code = one_d(CODE, np.arange(len(groups)))
        self.channel_embed = nn.Parameter(torch.from_numpy(code).float()[None],
                                          requires_grad=False)
        self.blocks = blocks(DIM, HEADS, 2, 1e-6)
        self.norm = nn.LayerNorm(DIM, eps=1e-6)
        self.decoder_embed = nn.Linear(DIM, DEC)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, DEC))
        self.decoder_pos_embed = nn.Parameter(mae_2d_table(DEC - DEC_CODE, side),
                                              requires_grad=False)
        dec_code = one_d(DEC_CODE, np.arange(len(groups) + 1))
        self.decoder_channel_embed = nn.Parameter(torch.from_numpy(dec_code).float()[None],
                                                  requires_grad=False)
        self.decoder_blocks = blocks(DEC, DEC_HEADS, 1, 1e-6)
        self.decoder_norm = nn.LayerNorm(DEC, eps=1e-6)
        self.decoder_pred = nn.ModuleList(nn.Linear(DEC, len(g) * PATCH ** 2) for g in groups)

    def encode(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        tokens = torch.stack([embed.proj(x[:, group]).flatten(2).transpose(1, 2)
                              for embed, group in zip(self.patch_embed, self.groups)], 1)
        b, g, n, d = tokens.shape  # [B, G, L, D]
        pos = self.pos_embed[:, 1:].unsqueeze(1).expand(-1, g, -1, -1)
        code = self.channel_embed.unsqueeze(2).expand(-1, -1, n, -1)
        x = (tokens + torch.cat([pos, code], dim=-1)).reshape(b, g * n, d)
        if keep is not None:
            x = torch.gather(x, 1, keep.unsqueeze(-1).expand(-1, -1, d))
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


def satmae(groups: list[list[int]]) -> SatMAE:
    torch.manual_seed(0)
    ref = SatMAE(groups).eval()
    perturb(ref)
    with torch.no_grad():  # SatMAE's fixed tables stay what its code makes them
        ref.pos_embed.copy_(mae_2d_table(DIM - CODE, SIZE // PATCH))
        ref.channel_embed.copy_(torch.from_numpy(one_d(CODE, np.arange(len(groups))))[None])
    return ref


def satmae_args(**changes) -> argparse.Namespace:
    return argparse.Namespace(**{"model": "mae_vit_tiny", "model_type": "group_c",
                                 "input_size": SIZE, "patch_size": PATCH, "mask_ratio": 0.75,
                                 "spatial_mask": False, "norm_pix_loss": False,
                                 "grouped_bands": GROUPS, **changes})


def test_satmae_group_channels_read_onto_group2d_with_its_features(tmp_path: Path) -> None:
    ref = satmae(GROUPS)
    path = tmp_path / "checkpoint-199.pth"
    torch.save({"model": ref.state_dict(), "args": satmae_args(), "epoch": 199}, path)
    conv = read_weights(path, **HEADS_GIVEN)
    assert conv.format == "satmae" and conv.in_chans == BANDS and not conv.has_decoder
    assert conv.config.tokenizer == {"name": "group2d", "groups": GROUPS}
    assert (conv.config.pos_embed, conv.config.pos_grid) == ("learned", [4, 4])
    assert conv.run["config"]["mask"] == {"name": "random", "ratio": 0.75,
                                          "groups": "independent"}
    assert any("[position | 0]" in n for n in conv.notes)
    assert any(n.startswith("decoder left out") for n in conv.notes)
    model = conv.build().eval()
    tokens = len(GROUPS) * (SIZE // PATCH) ** 2
    x, mask = torch.randn(2, BANDS, SIZE, SIZE), masks(2, tokens, 36)
    with torch.no_grad():
        torch.testing.assert_close(model.encode(x).tokens, ref.encode(x), atol=ATOL, rtol=0)
        torch.testing.assert_close(model.encode(x, mask).tokens, ref.encode(x, visible(mask)),
                                   atol=ATOL, rtol=0)


def test_satmae_default_groups_and_what_does_not_fit(tmp_path: Path) -> None:
    ref = satmae(DEFAULT_GROUPS)  # 10 bands, no args: SatMAE's default grouping
    path = tmp_path / "satmae.pth"
    torch.save(ref.state_dict(), path)
    conv = read_weights(path, **HEADS_GIVEN)
    assert conv.config.tokenizer["groups"] == DEFAULT_GROUPS and conv.in_chans == 10
    x = torch.randn(1, 10, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(conv.build().eval().encode(x).tokens, ref.encode(x),
                                   atol=ATOL, rtol=0)
    wrong = tmp_path / "wrong.pth"  # grouped_bands that do not fit the kernels
    torch.save({"model": satmae(GROUPS).state_dict(),
                "args": satmae_args(grouped_bands=[[0, 1], [2, 3, 5], [4]])}, wrong)
    with pytest.raises(ConvertError) as error:
        read_weights(wrong, **HEADS_GIVEN)
    assert "take [3, 2, 1] bands per group" in one_line(error)
    fixed = read_weights(wrong, tokenizer={"groups": GROUPS}, **HEADS_GIVEN)  # the caller's
    assert fixed.config.tokenizer["groups"] == GROUPS


def test_satmae_temporal_model_is_refused_in_one_line(tmp_path: Path) -> None:
    state = {"patch_embed.proj.weight": torch.zeros(DIM, 3, PATCH, PATCH),
             "pos_embed": torch.zeros(1, 17, DIM - 24), "cls_token": torch.zeros(1, 1, DIM)}
    path = tmp_path / "temporal.pth"
    torch.save({"model": state}, path)
    with pytest.raises(ConvertError) as error:
        read_weights(path)
    assert "SatMAE's temporal model" in one_line(error)


# -------------------------------------------------------------------------- what is refused
def test_wrong_prithvi_files_and_exports_are_one_line(tmp_path: Path) -> None:
    state = prithvi().state_dict()
    extra = tmp_path / "vpt.pt"
    torch.save({**state, "encoder.vpt_prompt_embeddings.0": torch.zeros(1, 2, DIM)}, extra)
    with pytest.raises(ConvertError) as error:
        read_weights(extra, **HEADS_GIVEN)
    assert "encoder.vpt_prompt_embeddings.0" in one_line(error)
    torch.save({**v1_names(state), "vpt_prompt_embeddings.0": torch.zeros(1, 2, DIM)}, extra)
    with pytest.raises(ConvertError) as error:  # 1.0's names: as the file has them
        read_weights(extra, **HEADS_GIVEN)
    assert "counterpart for: vpt_prompt_embeddings.0" in one_line(error)
    folder = tmp_path / "no_weights"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(hf_config()))
    with pytest.raises(ConvertError) as error:
        read_weights(folder)
    assert "a Prithvi config.json with no weight file" in one_line(error)
    torch.save(state, folder / "w.pt")
    (folder / "config.json").write_text(json.dumps(hf_config(patch_size=[1, 16, 16])))
    with pytest.raises(ConvertError) as error:
        read_weights(folder)
    assert "patch_size [1, 16, 16] is not the kernel's [1, 8, 8]" in one_line(error)
    (folder / "config.json").write_text(json.dumps(hf_config(num_frames=4)))
    with pytest.raises(ConvertError) as error:
        read_weights(folder)
    assert "the grid [4, 4, 4] has 64" in one_line(error)
    group = read_weights(_satmae_file(tmp_path), **HEADS_GIVEN)
    with pytest.raises(ConvertError) as error:
        WRITERS["prithvi"](group, tmp_path / "out")
    assert "tokenizer is 'group2d'" in one_line(error)
    narrow = model_config("mae_vit_base_patch16", embed_dim=40, depth=1, num_heads=2,
                          patch_size=PATCH, decoder_embed_dim=DEC, decoder_depth=1,
                          decoder_num_heads=DEC_HEADS)
    conv = Converted(narrow, BANDS, build_model(narrow, BANDS).state_dict(), "mim", (SIZE, SIZE))
    with pytest.raises(ConvertError) as error:
        WRITERS["prithvi"](conv, tmp_path / "out")
    assert "model.embed_dim=40 is not a multiple of 16" in one_line(error)


def _satmae_file(tmp_path: Path) -> Path:
    path = tmp_path / "satmae_g.pth"
    torch.save({"model": satmae(GROUPS).state_dict(), "args": satmae_args()}, path)
    return path
