"""Exports tell the truth about their run: every format carries the run's mask ratio, norm-pix,
sizes and normalisation where its library reads them, a ``preprocessor_config.json`` that
transformers' ``AutoImageProcessor`` reads, and a model card whose loading code runs as written.

Models are built here at tiny sizes (32 px, 8 px patches, 2 x 48 encoder) with a run record
as a mim checkpoint carries it; the default video model exports to Hugging Face's VideoMAE.
"""
from __future__ import annotations

import re
from pathlib import Path

import mim  # noqa: I001  (before timm: mim's torchvision shim)
import numpy as np
import pytest
import timm
import torch
from transformers import (AutoImageProcessor, VideoMAEForPreTraining, VideoMAEModel,
                          ViTMAEForPreTraining, ViTMAEModel)

from mim.convert import ConvertError, Converted, WRITERS, read_weights
from mim.convert.card import PLACEHOLDER
from mim.convert.vit import timm_architecture
from mim.models.factory import model_config

TINY = dict(embed_dim=48, depth=2, num_heads=3, patch_size=8, decoder_embed_dim=32,
            decoder_depth=1, decoder_num_heads=2)
SIZE, FRAMES = 32, 4
MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]  # not ImageNet's: the run's own must show
STEPS, SAMPLES = 7, 56


def run_record(modality: str, mask: dict, **data) -> dict:
    """``Converted.run`` as a mim checkpoint gives it (the config tree and the loop state)."""
    return {"config": {"modality": {"name": modality}, "mask": mask, "seed": 3,
                       "data": {"input_size": SIZE, "mean": MEAN, "std": STD, **data},
                       "train": {"batch_size": 8, "max_steps": STEPS}},
            "loop": {"step": STEPS, "samples": SAMPLES, "skipped": 0}}


@pytest.fixture(scope="module")
def image() -> tuple[torch.nn.Module, Converted]:
    torch.manual_seed(0)
    config = model_config("mae_vit_base_patch16", **TINY, norm_pix_loss=False)
    model = mim.models.factory.build_model(config, 3).eval()
    conv = Converted(config, 3, model.state_dict(), "mim", (SIZE, SIZE),
                     run=run_record("image", {"name": "random", "ratio": 0.6}))
    return model, conv


def card_code(folder: Path, path: Path) -> str:
    """The python blocks of the model card in ``folder``, pointed at ``path``."""
    text = (folder / "README.md").read_text()
    assert f"steps: {STEPS}" in text and f"samples seen: {SAMPLES}" in text
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, text
    return "\n".join(blocks).replace(PLACEHOLDER, str(path))


def test_hf_image_export_carries_the_run(image, tmp_path: Path) -> None:
    model, conv = image
    folder = WRITERS["hf"](conv, tmp_path / "hf")
    pretraining = ViTMAEForPreTraining.from_pretrained(folder)
    assert pretraining.config.mask_ratio == 0.6 and pretraining.config.norm_pix_loss is False
    assert (pretraining.config.image_size, pretraining.config.patch_size) == (SIZE, 8)
    processor = AutoImageProcessor.from_pretrained(folder)
    assert type(processor).__name__.startswith("ViTImageProcessor")
    assert processor.size == {"height": SIZE, "width": SIZE}
    assert list(processor.image_mean) == MEAN and list(processor.image_std) == STD
    picture = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    pixels = processor(images=picture, return_tensors="pt")["pixel_values"]
    expected = (torch.from_numpy(picture).permute(2, 0, 1) / 255 - torch.tensor(MEAN)[:, None,
                None]) / torch.tensor(STD)[:, None, None]  # no resize at the run's own size
    torch.testing.assert_close(pixels[0], expected, atol=1e-5, rtol=0)
    encoder = ViTMAEModel.from_pretrained(folder, mask_ratio=0.0).eval()
    with torch.no_grad():
        ours = model.encode(pixels).tokens  # [1, 1 + L, D]
        in_order = torch.arange((SIZE // 8) ** 2.0)[None]  # no shuffle: mim's grid order
        theirs = encoder(pixel_values=pixels, noise=in_order).last_hidden_state
    torch.testing.assert_close(theirs, ours, atol=2e-5, rtol=0)
    scope: dict = {}
    exec(card_code(folder, folder), scope)  # the card's transformers code runs as written
    assert scope["features"].shape == ours.shape and torch.isfinite(scope["loss"])
    torch.testing.assert_close(scope["features"], encoder(**scope["inputs"], noise=in_order)
                               .last_hidden_state)
    assert "mask: name random, ratio 0.6" in (folder / "README.md").read_text()
    assert read_weights(folder).run["config"]["mask"]["ratio"] == 0.6  # read back


def test_timm_export_names_its_size_and_the_run_normalisation(image, tmp_path: Path) -> None:
    model, conv = image
    folder = WRITERS["timm"](conv, tmp_path / "timm")
    vit = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    # the ViT nearest in width (timm has no tiny patch-8 entry): model_args give the real one
    assert vit.pretrained_cfg["architecture"] == "vit_tiny_patch16_224"
    config = timm.data.resolve_data_config({}, model=vit)
    assert config["input_size"] == (3, SIZE, SIZE)
    assert list(config["mean"]) == MEAN and list(config["std"]) == STD
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(vit.forward_features(x), model.encode(x).tokens,
                                   atol=2e-5, rtol=0)
    scope: dict = {}
    exec(card_code(folder, folder), scope)
    assert scope["features"].shape == (1, 1 + (SIZE // 8) ** 2, 48)


@pytest.mark.parametrize("dims, patch, side, name", [
    ((384, 12, 6), 16, 224, "vit_small_patch16_224"),
    ((768, 12, 12), 16, 384, "vit_base_patch16_384"),
    ((1280, 32, 16), 14, 224, "vit_huge_patch14_224"),
    ((768, 12, 12), 16, 96, "vit_base_patch16_224"),  # no timm entry at 96: model_args say it
])
def test_timm_architecture_is_the_real_size(dims, patch, side, name) -> None:
    dim, depth, heads = dims
    config = model_config("mae_vit_base_patch16", embed_dim=dim, depth=depth, num_heads=heads,
                          patch_size=patch)
    grid = (side // patch, side // patch)
    assert timm_architecture(Converted(config, 3, {}, "mim"), grid) == name


def test_mae_export_records_the_run_in_its_args(image, tmp_path: Path) -> None:
    model, conv = image
    path = WRITERS["mae"](conv, tmp_path / "mae")
    saved = torch.load(path, weights_only=True)  # plain torch, no allow-list needed
    assert saved["args"] == {"model": "mae_vit_base_patch16", "input_size": SIZE,
                             "mask_ratio": 0.6, "norm_pix_loss": False, "num_heads": 3,
                             "decoder_num_heads": 2}
    back = read_weights(path)
    assert back.run["config"]["mask"]["ratio"] == 0.6 and back.config.norm_pix_loss is False
    scope: dict = {}
    exec(card_code(path.parent, path.parent), scope)  # timm builds the encoder from the card
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(scope["model"].eval().forward_features(x),
                                   model.encode(x).tokens, atol=2e-5, rtol=0)


def test_mim_export_keeps_the_run(image, tmp_path: Path) -> None:
    _, conv = image
    folder = WRITERS["mim"](conv, tmp_path / "mim")
    back = read_weights(folder)
    assert back.run == conv.run
    scope: dict = {}
    exec(card_code(folder, folder), scope)
    assert isinstance(scope["model"], mim.models.model.MaskedAutoencoder)
    again = WRITERS["hf"](back, tmp_path / "hf")  # the run travels on through a mim export
    assert ViTMAEForPreTraining.from_pretrained(again).config.mask_ratio == 0.6
    assert f"steps: {STEPS}" in (again / "README.md").read_text()


def test_default_video_model_exports_to_videomae(tmp_path: Path) -> None:
    config = model_config(mim.registry.MODALITIES.get("video").default_model, **TINY)
    assert (config.pos_embed, config.cls_token) == ("flat", False)  # VideoMAE's layout
    torch.manual_seed(1)
    model = mim.models.factory.build_model(config, 3).eval()
    conv = Converted(config, 3, model.state_dict(), "mim", (FRAMES, SIZE, SIZE),
                     run=run_record("video", {"name": "tube", "ratio": 0.9},
                                    num_frames=FRAMES))
    folder = WRITERS["hf"](conv, tmp_path / "videomae")
    assert VideoMAEForPreTraining.from_pretrained(folder).config.mask_ratio == 0.9
    encoder = VideoMAEModel.from_pretrained(folder).eval()
    assert (encoder.config.num_frames, encoder.config.image_size) == (FRAMES, SIZE)
    processor = AutoImageProcessor.from_pretrained(folder)
    assert type(processor).__name__.startswith("VideoMAEImageProcessor")
    assert processor.crop_size == {"height": SIZE, "width": SIZE}
    assert list(processor.image_mean) == MEAN and list(processor.image_std) == STD
    clip = torch.randn(2, 3, FRAMES, SIZE, SIZE)  # mim: [B, C, T, H, W]
    with torch.no_grad():
        torch.testing.assert_close(encoder(clip.transpose(1, 2)).last_hidden_state,
                                   model.encode(clip).tokens, atol=2e-5, rtol=0)
    scope: dict = {}
    exec(card_code(folder, folder), scope)
    assert scope["features"].shape == (1, (FRAMES // 2) * (SIZE // 8) ** 2, 48)


def test_videomae_refusal_names_only_what_differs() -> None:
    config = model_config("videomae_vit_small_patch16_16x224", **TINY, pos_embed="joint")
    model = mim.models.factory.build_model(config, 3)
    conv = Converted(config, 3, model.state_dict(), "mim", (FRAMES, SIZE, SIZE))
    with pytest.raises(ConvertError) as error:
        WRITERS["hf"](conv, Path("unused"))
    assert str(error.value) == (
        "VideoMAE holds the flattened 1D sin-cos table (model.pos_embed=flat); this model has "
        "model.pos_embed=joint (pretrain with model.pos_embed=flat to export to VideoMAE)")
