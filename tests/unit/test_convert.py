"""Weight interchange: every format is built here at random, converted, and must give the same
encoder features and the same loss for a given mask; mim -> X -> mim round trips are exact.

Sizes: 32x32 RGB images (or 4-frame clips) in 8x8 patches (2x8x8 cubes): 16 (32) tokens, 12
(24) of them masked; encoder 2 x 48 wide, decoder 1 x 32.
"""
from __future__ import annotations

import argparse
import functools
import re
from pathlib import Path

import mim
import numpy as np
import pytest
import timm
import torch
from timm.models.vision_transformer import Block
from torch import nn
from transformers import (VideoMAEConfig, VideoMAEForPreTraining,  # the test extra has it
                          ViTMAEConfig, ViTMAEForPreTraining)

from mim.convert import ConvertError, convert, load_pretrained, read_weights
from mim.engine.checkpoint import CheckpointError, load_weights_only

SIZE, PATCH, DIM, HEADS, DEC, DEC_HEADS = 32, 8, 48, 3, 32, 2
L = (SIZE // PATCH) ** 2
ATOL = 2e-5  # fp32: same maths in a different order (fused vs separate q/k/v, conv vs linear)
IMAGENET = (torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225]))


def masks(batch: int, length: int, masked: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(batch, length, dtype=torch.bool)
    for row in range(batch):
        out[row, torch.randperm(length, generator=g)[:masked]] = True
    return out


def perturb(model: nn.Module, scale: float = 0.05) -> None:
    """Make every trainable tensor (norms and biases too) non-trivial, reproducibly."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * scale)


def mae_table(dim: int, side: int) -> torch.Tensor:
    """MAE's get_2d_sincos_pos_embed (numpy, w-then-h) with the zero cls row -> [1, 1 + L, D]."""
    def one_d(d: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid = np.stack(np.meshgrid(np.arange(side, dtype=np.float32),
                                np.arange(side, dtype=np.float32)))  # w first
    emb = np.concatenate([one_d(dim // 2, grid[0]), one_d(dim // 2, grid[1])], axis=1)
    emb = np.concatenate([np.zeros([1, dim]), emb])
    return torch.from_numpy(emb).float().unsqueeze(0)


def assert_same_state(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def tiny_mim(**overrides) -> nn.Module:
    torch.manual_seed(3)
    model = mim.create_model("mae_vit_base_patch16", embed_dim=DIM, depth=2, num_heads=HEADS,
                             patch_size=PATCH, decoder_embed_dim=DEC, decoder_depth=1,
                             decoder_num_heads=DEC_HEADS, **overrides)
    perturb(model)
    return model.eval()


# ----------------------------------------------------------------- facebookresearch/mae layout
class ReferenceMAE(nn.Module):
    """MAE's pretraining model (He et al. 2021) with the module names of its released code, so
    that its state dict is a real MAE checkpoint; the forward follows that code's steps."""

    def __init__(self, norm_pix: bool = True):
        super().__init__()
        norm = functools.partial(nn.LayerNorm, eps=1e-6)
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, DIM, PATCH, PATCH)
        self.cls_token = nn.Parameter(torch.randn(1, 1, DIM) * 0.02)
        self.pos_embed = nn.Parameter(mae_table(DIM, SIZE // PATCH), requires_grad=False)
        self.blocks = nn.ModuleList(Block(DIM, HEADS, 4.0, qkv_bias=True, norm_layer=norm)
                                    for _ in range(2))
        self.norm = norm(DIM)
        self.decoder_embed = nn.Linear(DIM, DEC)
        self.mask_token = nn.Parameter(torch.randn(1, 1, DEC) * 0.02)
        self.decoder_pos_embed = nn.Parameter(mae_table(DEC, SIZE // PATCH), requires_grad=False)
        self.decoder_blocks = nn.ModuleList([Block(DEC, DEC_HEADS, 4.0, qkv_bias=True,
                                                   norm_layer=norm)])
        self.decoder_norm = norm(DEC)
        self.decoder_pred = nn.Linear(DEC, PATCH * PATCH * 3)
        self.norm_pix = norm_pix

    def encoder(self, x: torch.Tensor, noise: torch.Tensor, keep: int):
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2) + self.pos_embed[:, 1:]
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :keep]
        x = torch.gather(x, 1, ids_keep.unsqueeze(-1).repeat(1, 1, DIM))
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x), ids_restore

    def forward(self, imgs: torch.Tensor, noise: torch.Tensor, keep: int):
        latent, ids_restore = self.encoder(imgs, noise, keep)
        x = self.decoder_embed(latent)
        tokens = self.mask_token.repeat(x.shape[0], ids_restore.shape[1] + 1 - x.shape[1], 1)
        x_ = torch.cat([x[:, 1:], tokens], dim=1)
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
        x = torch.cat([x[:, :1], x_], dim=1) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            x = block(x)
        pred = self.decoder_pred(self.decoder_norm(x))[:, 1:]
        h = imgs.shape[2] // PATCH
        target = imgs.reshape(imgs.shape[0], 3, h, PATCH, h, PATCH)
        target = torch.einsum("nchpwq->nhwpqc", target).reshape(imgs.shape[0], h * h, -1)
        if self.norm_pix:
            target = (target - target.mean(-1, keepdim=True)) / (
                target.var(-1, keepdim=True) + 1e-6) ** 0.5
        mask = torch.ones_like(noise)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        loss = (((pred - target) ** 2).mean(-1) * mask).sum() / mask.sum()
        return loss, latent


def grid_order_noise(mask: torch.Tensor) -> torch.Tensor:
    """MAE / HF shuffle noise that keeps the visible tokens in grid order (as mim does)."""
    return torch.arange(mask.shape[1]).float() / mask.shape[1] + mask.float()


def test_mae_checkpoint_with_args_loads_and_matches(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ref = ReferenceMAE().eval()
    perturb(ref)
    args = argparse.Namespace(model="mae_vit_base_patch16", norm_pix_loss=True, input_size=SIZE)
    path = tmp_path / "checkpoint-799.pth"
    torch.save({"model": ref.state_dict(), "epoch": 799, "args": args}, path)

    converted = read_weights(path, num_heads=HEADS, decoder_num_heads=DEC_HEADS)
    assert converted.format == "mae" and converted.config.pos_embed == "joint"
    model = converted.build().eval()
    x, mask = torch.randn(2, 3, SIZE, SIZE), masks(2, L, 12)
    with torch.no_grad():
        loss, latent = ref(x, grid_order_noise(mask), keep=4)
        ours = model(x, mask)
        torch.testing.assert_close(model.encode(x, mask).tokens, latent, atol=ATOL, rtol=0)
        torch.testing.assert_close(ours.loss, loss, atol=0, rtol=1e-5)

    back = convert(path, tmp_path / "mae_again" / "ckpt.pth", to="mae", num_heads=HEADS,
                   decoder_num_heads=DEC_HEADS)
    assert_same_state(read_weights(back, num_heads=HEADS,
                                   decoder_num_heads=DEC_HEADS).state, converted.state)


def test_mim_to_mae_round_trip_is_exact(tmp_path: Path) -> None:
    model = tiny_mim()
    conv = mim.convert.Converted(_config(), 3, model.state_dict(), "mim", (SIZE, SIZE))
    path = mim.convert.WRITERS["mae"](conv, tmp_path / "mae.pth")
    again = read_weights(path, num_heads=HEADS, decoder_num_heads=DEC_HEADS)
    assert_same_state(again.state, model.state_dict())
    assert torch.equal(torch.load(path, weights_only=True)["model"]["pos_embed"],
                       mae_table(DIM, SIZE // PATCH))  # MAE's own table, zero cls row


def _config(**overrides):
    return mim.models.factory.model_config("mae_vit_base_patch16", embed_dim=DIM, depth=2,
                                   num_heads=HEADS, patch_size=PATCH, decoder_embed_dim=DEC,
                                   decoder_depth=1, decoder_num_heads=DEC_HEADS, **overrides)


# ------------------------------------------------------------------------------------- timm
@pytest.mark.parametrize("class_token", [True, False])
def test_timm_vit_weights_load_with_identical_features(tmp_path: Path, class_token) -> None:
    torch.manual_seed(0)
    vit = timm.models.vision_transformer.VisionTransformer(
        img_size=SIZE, patch_size=PATCH, embed_dim=DIM, depth=2, num_heads=HEADS, num_classes=5,
        class_token=class_token, global_pool="token" if class_token else "avg",
        fc_norm=False).eval()  # (with fc_norm the norm follows pooling: see the notes)
    perturb(vit)  # the learned pos_embed and the cls token too
    path = tmp_path / "vit.pth"
    torch.save(vit.state_dict(), path)
    with pytest.raises(ConvertError, match="pass num_heads=N"):  # 48 wide: heads unknowable
        read_weights(path)
    converted = read_weights(path, num_heads=HEADS)
    assert converted.format == "timm" and converted.config.pos_embed == "learned"
    assert any("head.weight" in note for note in converted.notes)
    model = load_pretrained(path, num_heads=HEADS)
    assert not any(m.training for m in model.modules())  # eval mode, as timm's and HF's loads
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(model.encode(x).tokens, vit.forward_features(x),
                                   atol=ATOL, rtol=0)


def test_mim_encoder_exports_to_timm_with_identical_features(tmp_path: Path) -> None:
    model = tiny_mim()
    run = tmp_path / "export"
    conv = mim.convert.Converted(_config(), 3, model.state_dict(), "mim", (SIZE, SIZE))
    mim.convert.WRITERS["mim"](conv, run)
    folder = convert(run, tmp_path / "timm", to="timm")
    args = mim.convert.vit.timm_arguments(read_weights(run), (SIZE // PATCH,) * 2)
    by_file = timm.create_model("vit_base_patch16_224", pretrained=True, **args,
                                pretrained_cfg_overlay=dict(file=str(folder / "model.safetensors")))
    by_folder = timm.create_model(f"local-dir:{folder}", pretrained=True)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        ours = model.encode(x).tokens
        for vit in (by_file.eval(), by_folder.eval()):
            torch.testing.assert_close(vit.forward_features(x), ours, atol=ATOL, rtol=0)
    back = read_weights(folder)  # mim -> timm -> mim: the encoder comes back bit for bit
    assert not back.has_decoder
    encoder = {k: v for k, v in model.state_dict().items()
               if not k.startswith(("decoder", "mask_token"))}
    assert_same_state(back.state, encoder)


def test_a_timm_export_logs_its_input_size_and_takes_another(tmp_path: Path, caplog) -> None:
    run = tmp_path / "export"
    mim.convert.WRITERS["mim"](mim.convert.Converted(_config(), 3, tiny_mim().state_dict(),
                                                     "mim", (SIZE, SIZE)), run)
    with caplog.at_level("INFO", logger="mim"):
        own = convert(run, tmp_path / "own", to="timm")
        bigger = convert(run, tmp_path / "big", to="timm", input_size=(2 * SIZE, 2 * SIZE))
    assert f"to=timm export for inputs of {SIZE}x{SIZE} (the size the weights were made " \
        "for; input_size=[...] exports another)" in caplog.text
    assert f"{bigger}: to=timm export for inputs of {2 * SIZE}x{2 * SIZE}\n" in caplog.text + "\n"
    for folder, size in ((own, SIZE), (bigger, 2 * SIZE)):
        vit = timm.create_model(f"local-dir:{folder}", pretrained=True)
        assert vit.forward_features(torch.zeros(1, 3, size, size)).shape[1] == \
            1 + (size // PATCH) ** 2


# ------------------------------------------------------------------------- Hugging Face ViTMAE
def vitmae(tmp_path: Path, norm_pix: bool) -> tuple[ViTMAEForPreTraining, Path]:
    torch.manual_seed(0)
    hf = ViTMAEForPreTraining(ViTMAEConfig(
        hidden_size=DIM, num_hidden_layers=2, num_attention_heads=HEADS, intermediate_size=4 * DIM,
        image_size=SIZE, patch_size=PATCH, decoder_hidden_size=DEC, decoder_num_hidden_layers=1,
        decoder_num_attention_heads=DEC_HEADS, decoder_intermediate_size=4 * DEC,
        norm_pix_loss=norm_pix)).eval()
    with torch.no_grad():  # transformers 5 leaves the fixed tables at zero until loading
        hf.vit.embeddings.position_embeddings.copy_(mae_table(DIM, SIZE // PATCH))
        hf.decoder.decoder_pos_embed.copy_(mae_table(DEC, SIZE // PATCH))
    perturb(hf)
    hf.save_pretrained(tmp_path / "hf")
    return hf, tmp_path / "hf"


@pytest.mark.parametrize("norm_pix", [True, False])
def test_hf_vitmae_folder_matches_loss_and_features(tmp_path: Path, norm_pix) -> None:
    hf, folder = vitmae(tmp_path, norm_pix)
    converted = read_weights(folder)
    assert converted.format == "hf-vit-mae" and converted.config.norm_eps == 1e-12
    model = converted.build().eval()
    x, mask = torch.randn(2, 3, SIZE, SIZE), masks(2, L, 12)
    noise = grid_order_noise(mask)  # HF's random_masking made deterministic
    with torch.no_grad():
        out = hf(pixel_values=x, noise=noise)
        assert torch.equal(out.mask.bool(), mask)
        ours = model(x, mask)
        torch.testing.assert_close(model.encode(x, mask).tokens,
                                   hf.vit(x, noise=noise).last_hidden_state, atol=ATOL, rtol=0)
        torch.testing.assert_close(ours.pred, out.logits, atol=ATOL, rtol=0)
        torch.testing.assert_close(ours.loss, out.loss, atol=0, rtol=1e-5)

    exported = convert(folder, tmp_path / "again", to="hf")  # HF -> mim -> HF -> mim: exact
    assert_same_state(read_weights(exported).state, converted.state)
    reloaded, info = ViTMAEForPreTraining.from_pretrained(exported, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(pixel_values=x, noise=noise).loss, out.loss,
                                   atol=0, rtol=1e-6)


# ----------------------------------------------------------------------- Hugging Face VideoMAE
FRAMES, TUBELET = 4, 2
LV = (FRAMES // TUBELET) * L


def tube_masks(batch: int) -> torch.Tensor:
    return masks(batch, L, 12).repeat(1, FRAMES // TUBELET)  # the same spatial mask each step


def test_hf_videomae_folder_matches_loss_and_features(tmp_path: Path) -> None:
    torch.manual_seed(0)
    hf = VideoMAEForPreTraining(VideoMAEConfig(
        hidden_size=DIM, num_hidden_layers=2, num_attention_heads=HEADS, intermediate_size=4 * DIM,
        image_size=SIZE, patch_size=PATCH, num_frames=FRAMES, tubelet_size=TUBELET,
        decoder_hidden_size=DEC, decoder_num_hidden_layers=1, decoder_num_attention_heads=DEC_HEADS,
        decoder_intermediate_size=4 * DEC, use_mean_pooling=False, norm_pix_loss=False)).eval()
    perturb(hf)
    hf.save_pretrained(tmp_path / "hf")
    converted = read_weights(tmp_path / "hf")
    assert converted.format == "hf-videomae" and converted.config.pos_embed == "flat"
    model = converted.build().eval()
    x, mask = torch.randn(2, 3, FRAMES, SIZE, SIZE), tube_masks(2)  # mim: [B, C, T, H, W]
    mean, std = (t.view(1, 3, 1, 1, 1) for t in IMAGENET)
    with torch.no_grad():
        out = hf(pixel_values=x.transpose(1, 2), bool_masked_pos=mask)  # HF: [B, T, C, H, W]
        ours = model(x, mask)
        torch.testing.assert_close(
            model.encode(x, mask).tokens,
            hf.videomae(x.transpose(1, 2), bool_masked_pos=mask).last_hidden_state,
            atol=ATOL, rtol=0)
        masked_pred = ours.pred[mask].reshape(2, -1, ours.pred.shape[-1])  # grid order, as HF
        # VideoMAE's decoder norm keeps nn.LayerNorm's eps 1e-5 (mim: layer_norm_eps, 1e-12)
        torch.testing.assert_close(masked_pred, out.logits, atol=1e-4, rtol=0)
        # HF's target is the un-normalised clip; the same target through mim's loss:
        torch.testing.assert_close(model.loss(x * std + mean, ours.pred, mask), out.loss,
                                   atol=0, rtol=1e-4)

    exported = convert(tmp_path / "hf", tmp_path / "again", to="hf")
    assert_same_state(read_weights(exported).state, converted.state)
    reloaded, info = VideoMAEForPreTraining.from_pretrained(exported, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))


def test_mim_video_model_exports_to_videomae(tmp_path: Path) -> None:
    """A mim model trained with VideoMAE's positions exports; only the key bias (a no-op under
    softmax) and the decoder-embedding bias (VideoMAE has none; zero here) are not carried."""
    torch.manual_seed(3)
    model = mim.create_model("videomae_vit_small_patch16_16x224", embed_dim=DIM, depth=2,
                             num_heads=HEADS, patch_size=PATCH, tubelet_size=TUBELET,
                             decoder_embed_dim=DEC, decoder_depth=1, decoder_num_heads=DEC_HEADS,
                             pos_embed="flat")
    perturb(model)
    with torch.no_grad():
        model.decoder_embed.bias.zero_()
    config = mim.models.factory.model_config("videomae_vit_small_patch16_16x224", embed_dim=DIM,
                                     depth=2, num_heads=HEADS, patch_size=PATCH,
                                     tubelet_size=TUBELET, decoder_embed_dim=DEC,
                                     decoder_depth=1, decoder_num_heads=DEC_HEADS,
                                     pos_embed="flat", norm_pix_loss=False)
    conv = mim.convert.Converted(config, 3, model.state_dict(), "mim", (FRAMES, SIZE, SIZE))
    folder = mim.convert.WRITERS["hf"](conv, tmp_path / "videomae")
    hf = VideoMAEForPreTraining.from_pretrained(folder).eval()
    x, mask = torch.randn(2, 3, FRAMES, SIZE, SIZE), tube_masks(2)
    with torch.no_grad():
        torch.testing.assert_close(
            hf.videomae(x.transpose(1, 2), bool_masked_pos=mask).last_hidden_state,
            model.eval().encode(x, mask).tokens, atol=ATOL, rtol=0)
    back = read_weights(folder).state
    for key, value in model.state_dict().items():
        if key.endswith("attn.qkv.bias"):
            q, k, v = value.chunk(3)
            assert torch.equal(back[key], torch.cat([q, torch.zeros_like(k), v])), key
        else:
            assert torch.equal(back[key], value), key


# ------------------------------------------------------------------------------------- safety
class Payload:
    """Unpickling this would call open(path, "w"): a stand-in for any code execution."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_pickle_with_code_is_refused_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"cls_token": torch.zeros(1)}, "extra": Payload(marker)}, path)
    with pytest.raises(ConvertError, match="refused to unpickle") as convert_error:
        load_pretrained(path)
    with pytest.raises(CheckpointError, match="refused to load") as checkpoint_error:
        load_weights_only(path)  # a run's own checkpoint, read on resume
    assert not marker.exists()
    for error in (convert_error, checkpoint_error):  # what was refused, not how to force it
        text = str(error.value)
        assert "\n" not in text and re.search(r"GLOBAL (io|builtins)\.open", text), text
        assert "weights_only" not in text and "trust" not in text, text


def test_random_bytes_are_not_a_torch_file(tmp_path: Path) -> None:
    path = tmp_path / "weights.pth"
    path.write_bytes(np.random.default_rng(1).bytes(4096))  # begins with 0xff
    with pytest.raises(ConvertError, match=r"weights.pth: not a torch file \(it begins as "
                                           r"neither the zip archive nor the pickle"):
        read_weights(path)
    with pytest.raises(CheckpointError, match="not a file torch.save writes"):
        load_weights_only(path)
    path.write_text("hello")  # text: torch itself raised a KeyError here
    with pytest.raises(ConvertError, match="not a torch file"):
        read_weights(path)


def test_unreadable_inputs_say_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(ConvertError, match="no such file"):
        read_weights(tmp_path / "missing.pth")
    (tmp_path / "weights.npz").write_bytes(b"x")
    with pytest.raises(ConvertError, match="unknown weight file type"):
        read_weights(tmp_path / "weights.npz")
    torch.save({"something": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(ConvertError, match="unrecognised layout"):
        read_weights(tmp_path / "other.pth")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConvertError, match="not a mim run"):
        read_weights(tmp_path / "empty")
    with pytest.raises(ConvertError, match="valid: mim, mae, timm, hf"):
        convert(tmp_path / "other.pth", tmp_path / "out", to="onnx")


def test_a_head_count_the_width_does_not_take_is_one_line(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": ReferenceMAE().state_dict()}, path)
    with pytest.raises(ConvertError, match=r"^model.decoder_num_heads: 3 does not divide the "
                                           r"width 32$"):
        read_weights(path, num_heads=HEADS, decoder_num_heads=3)


@pytest.mark.parametrize("given", ["abc", "-32", "true", "[32,0]", "[]", "[32,x]"])
def test_convert_refuses_an_input_size_that_is_not_one(given) -> None:
    from mim.cli import _convert_config
    from mim.config.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^input_size: .* is not a size; give positive "
                                          r"integers: input_size=224 or input_size=\[224,224\]"):
        _convert_config(["input=a", "output=b", "to=hf", f"input_size={given}"])
    assert _convert_config(["input=a", "output=b", "to=hf", "input_size=64"])[
        "input_size"] == [64, 64]


def test_a_13_band_encoder_exports_to_timm_with_identical_features(tmp_path: Path) -> None:
    """A multispectral run's encoder: timm takes it with in_chans=13, by file and by folder."""
    torch.manual_seed(0)
    model = mim.create_model("mae_vit_tiny_patch16", in_chans=13, patch_size=PATCH,
                             embed_dim=DIM, depth=2, num_heads=HEADS, decoder_embed_dim=32,
                             decoder_depth=1, decoder_num_heads=2).eval()
    run = tmp_path / "export"
    conv = mim.convert.Converted(_config(), 13, model.state_dict(), "mim", (SIZE, SIZE))
    mim.convert.WRITERS["mim"](conv, run)
    folder = convert(run, tmp_path / "timm", to="timm")
    args = mim.convert.vit.timm_arguments(read_weights(run), (SIZE // PATCH,) * 2)
    assert args["in_chans"] == 13
    by_file = timm.create_model("vit_base_patch16_224", pretrained=True, **args,
                                pretrained_cfg_overlay=dict(file=str(folder / "model.safetensors")))
    by_folder = timm.create_model(f"local-dir:{folder}", pretrained=True)
    x = torch.randn(2, 13, SIZE, SIZE)
    with torch.no_grad():
        ours = model.encode(x).tokens
        for vit in (by_file.eval(), by_folder.eval()):
            torch.testing.assert_close(vit.forward_features(x), ours, atol=ATOL, rtol=0)
