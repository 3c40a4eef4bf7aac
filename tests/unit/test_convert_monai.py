"""``to=monai``: mim's encoder as MONAI's ``ViT`` and ``UNETR.vit`` (``mim/convert/monai.py``),
and the timm export's layout against detectron2's ViTDet backbone (``card.py``'s lines).

MONAI 1.6 is installed in the test environment (the ``monai`` extra): the exports are loaded
with ``strict=True`` and their features compared with mim's encoder on random inputs, fp32,
``ATOL`` apart (the same maths in another order: MONAI's einsum attention against
``scaled_dot_product_attention``) once MONAI's LayerNorms take mim's eps; with MONAI's own
eps (1e-5 against 1e-6) the difference is measured in float64 (where matched eps leaves 1e-14)
and bounded. Sizes: width 48, 3 heads,
12 blocks where UNETR must take the weights (it fixes 12 blocks and 16^3 patches), else 2.

detectron2 cannot be installed here: ``VITDET_VIT`` is the parameter list detectron2's ViT
builds, written out by hand from its code at facebookresearch/detectron2@02b5c4e (files in
``VITDET_SOURCES``), and the timm export, turned into a file as the model card says, must fill
every tensor of it but ViTDet's own relative positions, with the same shapes.
"""
from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path

import mim  # noqa: I001  (before monai and timm: mim's torchvision shim)
import pytest
import torch
from safetensors.torch import load_file

monai_nets = pytest.importorskip("monai.networks.nets")

from mim.convert import WRITERS, ConvertError, Converted, convert  # noqa: E402
from mim.convert.card import PLACEHOLDER  # noqa: E402
from mim.convert.monai import MONAI_EPS, eps_note  # noqa: E402
from mim.models.factory import build_model, model_config  # noqa: E402

ATOL = 2e-5
DIM, HEADS = 48, 3
DECODER = dict(decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)
VOLUME = (32, 32, 48)  # D, H, W: a 2 x 2 x 3 grid of 16^3 cubes, not a cube itself


def perturb(model: torch.nn.Module, scale: float = 0.05) -> torch.nn.Module:
    """Every tensor (norms and biases too) non-trivial, reproducibly."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()


def volume_run() -> dict:
    return {"config": {"modality": {"name": "volume"},
                       "data": {"input_size": list(VOLUME), "channels": 1}}}


def built(preset: str, in_chans: int, size: tuple[int, ...], run: dict | None = None,
          **overrides) -> tuple[torch.nn.Module, Converted]:
    torch.manual_seed(3)
    config = model_config(preset, embed_dim=DIM, num_heads=HEADS, **DECODER, **overrides)
    model = perturb(build_model(config, in_chans))
    return model, Converted(config, in_chans, model.state_dict(), "mim", size, run=run or {})


def monai_vit(folder: Path) -> torch.nn.Module:
    args = json.loads((folder / "config.json").read_text())
    vit = monai_nets.ViT(**args).eval()
    vit.load_state_dict(torch.load(folder / "model.pt", weights_only=True), strict=True)
    return vit


def set_eps(module: torch.nn.Module, eps: float) -> None:
    for m in module.modules():
        if isinstance(m, torch.nn.LayerNorm):
            m.eps = eps


def card_code(folder: Path) -> str:
    blocks = re.findall(r"```python\n(.*?)```", (folder / "README.md").read_text(), flags=re.S)
    return "\n".join(blocks).replace(PLACEHOLDER, str(folder))


# --------------------------------------------------------------------------------------- MONAI
def test_a_volume_model_loads_into_unetr_and_vit_with_mims_features(tmp_path: Path,
                                                                    caplog) -> None:
    model, conv = built("mae3d_vit_tiny_patch16", 1, VOLUME, volume_run(), depth=12,
                        cls_token=False)
    source = WRITERS["mim"](conv, tmp_path / "mim")
    with caplog.at_level(logging.INFO, logger="mim"):
        folder = convert(source, tmp_path / "monai", to="monai")
    assert "to=monai export for inputs of 32x32x48" in caplog.text
    assert "cls token" not in caplog.text  # none to drop
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json",
                                                        "mim-export.json", "model.pt"]
    args = json.loads((folder / "config.json").read_text())
    assert args == {"in_channels": 1, "img_size": list(VOLUME), "patch_size": [16, 16, 16],
                    "hidden_size": DIM, "mlp_dim": 4 * DIM, "num_layers": 12,
                    "num_heads": HEADS, "spatial_dims": 3, "proj_type": "conv",
                    "qkv_bias": True}
    state = torch.load(folder / "model.pt", weights_only=True)
    table = state["patch_embedding.position_embeddings"]  # mim's joint 3D sin-cos
    torch.testing.assert_close(table[0], model.pos_embed((2, 2, 3), DIM, table), atol=0, rtol=0)
    unetr = monai_nets.UNETR(in_channels=1, out_channels=2, img_size=VOLUME, hidden_size=DIM,
                             mlp_dim=4 * DIM, num_heads=HEADS, spatial_dims=3,
                             proj_type="conv", qkv_bias=True).eval()
    unetr.vit.load_state_dict(state, strict=True)
    vit = monai_vit(folder)
    x = torch.randn(2, 1, *VOLUME)
    with torch.no_grad():
        ours = model.encode(x).tokens  # [2, 12, D]
        for net in (vit, unetr.vit):
            set_eps(net, conv.config.norm_eps)
            features, hidden = net(x)
            torch.testing.assert_close(features, ours, atol=ATOL, rtol=0)
            assert len(hidden) == 12 and hidden[-1].shape == ours.shape
        assert unetr(x).shape == (2, 2, *VOLUME)  # the segmentation network runs on them
    # MONAI's own eps (1e-5), measured in float64, where the arithmetic's own error is far
    # below it: 1.6e-6 here (features up to 3.2; the norms' inputs have variance ~8 to 10)
    x64 = x.double()
    with torch.no_grad():
        reference = model.double().encode(x64).tokens
        vit64 = monai_vit(folder).double()
        as_built = (vit64(x64)[0] - reference).abs().max().item()
        set_eps(vit64, conv.config.norm_eps)
        matched = (vit64(x64)[0] - reference).abs().max().item()
    model.float()
    assert matched < 1e-12 and 1e-7 < as_built < 1e-4, (matched, as_built)
    card = (folder / "README.md").read_text()
    assert "library_name: monai" in card and eps_note(1e-6) in card
    assert (f"UNETR(in_channels=1, out_channels=2, img_size=(32, 32, 48), hidden_size={DIM}, "
            f"mlp_dim={4 * DIM}, num_heads={HEADS}, spatial_dims=3, proj_type=\"conv\", "
            "qkv_bias=True)") in card
    assert "Transposed(keys, indices=(0, 3, 2, 1))" in card
    scope: dict = {}
    exec(card_code(folder), scope)  # the card's code runs as written: mim's features
    torch.testing.assert_close(scope["features"], model.encode(scope["x"]).tokens, atol=ATOL,
                               rtol=0)
    assert all(m.eps == 1e-6 for m in scope["unetr"].vit.modules()
               if isinstance(m, torch.nn.LayerNorm))


def test_mims_eps_is_all_that_differs_and_the_card_says_what_it_changes() -> None:
    note = eps_note(1e-6)
    assert "0.9999955 at v = 1" in note and "0.99955 at v = 0.01" in note
    assert "MONAI's 1e-05 is the one" in eps_note(MONAI_EPS)
    assert math.isclose(math.sqrt((1 + 1e-6) / (1 + 1e-5)), 0.9999955, abs_tol=1e-7)


@pytest.mark.parametrize("pos_embed", ["joint", "learned"])
def test_an_image_model_without_cls_token_loads_into_a_2d_vit(tmp_path: Path,
                                                             pos_embed) -> None:
    learned = {"pos_embed": "learned", "pos_grid": [4, 6]} if pos_embed == "learned" else {}
    model, conv = built("mae_vit_base_patch16", 3, (32, 48), depth=2, patch_size=8,
                        cls_token=False, **learned)
    folder = WRITERS["monai"](conv, tmp_path / "monai")
    vit = monai_vit(folder)
    assert isinstance(vit.patch_embedding.patch_embeddings, torch.nn.Conv2d)
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        set_eps(vit, 1e-6)
        torch.testing.assert_close(vit(x)[0], model.encode(x).tokens, atol=ATOL, rtol=0)
    card = (folder / "README.md").read_text()
    assert "load into `ViT` only" in card and "UNETR(" not in card  # 2 blocks, 8px patches
    scope: dict = {}
    exec(card_code(folder), scope)
    assert scope["features"].shape == (1, 24, DIM)


def test_a_cube_with_a_tubelet_keeps_mims_axis_order(tmp_path: Path) -> None:
    """Anisotropic cubes (8 deep, 4 wide) on a 2 x 3 x 4 grid: the kernel's axes are mim's."""
    model, conv = built("mae3d_vit_tiny_patch16", 2, (16, 12, 16), volume_run(), depth=2,
                        patch_size=4, tubelet_size=8, cls_token=False)
    vit = monai_vit(WRITERS["monai"](conv, tmp_path / "monai"))
    x = torch.randn(1, 2, 16, 12, 16)
    with torch.no_grad():
        set_eps(vit, 1e-6)
        torch.testing.assert_close(vit(x)[0], model.encode(x).tokens, atol=ATOL, rtol=0)
    assert json.loads((tmp_path / "monai" / "config.json").read_text())["patch_size"] == [8, 4, 4]


def test_a_cls_token_is_dropped_with_a_line_saying_so(tmp_path: Path, caplog) -> None:
    model, conv = built("mae_vit_base_patch16", 3, (32, 32), depth=2, patch_size=8)
    assert conv.config.cls_token
    with caplog.at_level(logging.WARNING, logger="mim"):
        folder = WRITERS["monai"](conv, tmp_path / "monai")
    said = [r.getMessage() for r in caplog.records if "cls token" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("to=monai: the cls token is dropped")
    assert "the cls token is dropped" in (folder / "README.md").read_text()
    state = torch.load(folder / "model.pt", weights_only=True)
    assert not any("cls" in k for k in state)
    assert state["patch_embedding.position_embeddings"].shape == (1, 16, DIM)  # no cls row
    monai_vit(folder)  # strict


def test_what_monai_cannot_take_is_refused_in_one_line(tmp_path: Path) -> None:
    def refused(config, run=None, in_chans=3) -> str:
        with pytest.raises(ConvertError) as info:
            WRITERS["monai"](Converted(config, in_chans, {}, "mim", None, run=run or {}),
                             tmp_path / "never")
        assert "\n" not in str(info.value)
        return str(info.value)

    assert "tokenizer is 'hybrid2d'" in refused(model_config("mcmae_small"))
    assert "tokenizer is 'hybrid3d'" in refused(model_config("mcmae3d_small_patch16"))
    assert "tokenizer is 'group2d'" in refused(model_config(
        "mae_vit_base_patch16", tokenizer={"name": "group2d", "groups": [[0, 1], [2]]}))
    assert "tokenizer is 'channel2d'" in refused(model_config("mae_vit_base_patch16",
                                                              tokenizer="channel2d"))
    video = model_config("videomae_vit_small_patch16_16x224")
    assert "the video modality's cubes run over time" in refused(
        video, {"config": {"modality": {"name": "video"}}})
    assert "do not record the volume modality" in refused(video)
    assert "whole mlp_dim" in refused(model_config("mae_vit_base_patch16", embed_dim=50,
                                                   num_heads=2, mlp_ratio=2.01))
    assert not (tmp_path / "never").exists()


# ------------------------------------------------------------------------------------ ViTDet
VITDET_SOURCES = {  # facebookresearch/detectron2 at 02b5c4e295e990042a714712c21dc79b731e8833
    "detectron2/modeling/backbone/vit.py": "ViT, Block, Attention (last changed 95a87b8d)",
    "detectron2/modeling/backbone/utils.py": "PatchEmbed, get_abs_pos (1fbb4b37)",
    "detectron2/checkpoint/detection_checkpoint.py": "DetectionCheckpointer (06f2892d)",
    "detectron2/checkpoint/c2_model_loading.py": "align_and_update_state_dicts (8f22855e)",
    "configs/common/models/mask_rcnn_vitdet.py": "model.backbone.net = L(ViT)(...) (333efcb6)",
}
# detectron2's ViT(img_size=64, patch_size=8, in_chans=3, embed_dim=48, depth=2, num_heads=3,
# mlp_ratio=4, qkv_bias=True, use_abs_pos=True, use_rel_pos=True, window_size=4,
# window_block_indexes=[0], pretrain_img_size=32, pretrain_use_cls_token=True) under
# SimpleFeaturePyramid's ``net``: every parameter with its shape. PatchEmbed: Conv2d ``proj``;
# pos_embed [1, 1 + (32/8)^2, D]; Block: norm1, attn.{qkv, proj, rel_pos_h, rel_pos_w}, norm2,
# timm's Mlp (fc1, fc2); rel_pos [2 * side - 1, head_dim]: side = window_size in window blocks,
# img_size / patch_size in the others; no final norm, no cls token.
VITDET_VIT = {
    "backbone.net.patch_embed.proj.weight": (48, 3, 8, 8),
    "backbone.net.patch_embed.proj.bias": (48,),
    "backbone.net.pos_embed": (1, 17, 48),
    **{f"backbone.net.blocks.{i}.{name}": shape for i, side in ((0, 4), (1, 8))
       for name, shape in (("norm1.weight", (48,)), ("norm1.bias", (48,)),
                           ("attn.qkv.weight", (144, 48)), ("attn.qkv.bias", (144,)),
                           ("attn.proj.weight", (48, 48)), ("attn.proj.bias", (48,)),
                           ("attn.rel_pos_h", (2 * side - 1, 16)),
                           ("attn.rel_pos_w", (2 * side - 1, 16)),
                           ("norm2.weight", (48,)), ("norm2.bias", (48,)),
                           ("mlp.fc1.weight", (192, 48)), ("mlp.fc1.bias", (192,)),
                           ("mlp.fc2.weight", (48, 192)), ("mlp.fc2.bias", (48,)))},
}
VITDET_OWN = ("rel_pos_h", "rel_pos_w")  # initialised by ViTDet (zeros), not pretrained


def vitdet_abs_pos(abs_pos: torch.Tensor, has_cls_token: bool, hw: tuple[int, int]
                   ) -> torch.Tensor:
    """What detectron2's ``get_abs_pos`` computes (utils.py): the cls row off, the square table
    [1, side * side, C] as (1, side, side, C), resized bicubically to ``hw``."""
    if has_cls_token:
        abs_pos = abs_pos[:, 1:]
    side = math.isqrt(abs_pos.shape[1])
    assert side * side == abs_pos.shape[1]
    grid = abs_pos.reshape(1, side, side, -1)
    if (side, side) == tuple(hw):
        return grid
    return torch.nn.functional.interpolate(grid.permute(0, 3, 1, 2), size=hw, mode="bicubic",
                                           align_corners=False).permute(0, 2, 3, 1)


def test_the_timm_export_fills_vitdets_backbone_as_the_card_says(tmp_path: Path) -> None:
    model, conv = built("mae_vit_base_patch16", 3, (32, 32), depth=2, patch_size=8)
    folder = WRITERS["timm"](conv, tmp_path / "timm")
    card = (folder / "README.md").read_text()
    for setting in ("embed_dim=48", "depth=2", "num_heads=3", "patch_size=8",
                    "pretrain_img_size=32", "pretrain_use_cls_token=True", "use_abs_pos=True",
                    "train.init_checkpoint", "in_chans=3", "mlp_ratio=4"):
        assert f"`{setting}" in card, setting
    code = re.findall(r"```python\n(.*?)```", card, flags=re.S)[1]  # the ViTDet block
    scope: dict = {}
    exec(code.replace(PLACEHOLDER, str(folder)), scope)  # as written: beside the export
    assert f'train.init_checkpoint = "{PLACEHOLDER}-vitdet.pth"' in card
    # fvcore's Checkpointer: torch.load, then tensors of the model's names and shapes load
    written = torch.load(tmp_path / "timm-vitdet.pth", weights_only=True)["model"]
    shapes = {k: tuple(v.shape) for k, v in written.items()}
    assert set(shapes) == {k for k in VITDET_VIT if not k.endswith(VITDET_OWN)}
    assert all(VITDET_VIT[k] == shape for k, shape in shapes.items()), shapes
    # the same tensors as the timm file's, under the detector's prefix
    timm_state = load_file(folder / "model.safetensors")
    assert set(timm_state) - {k[len("backbone.net."):] for k in written} == \
        {"cls_token", "norm.weight", "norm.bias"}
    # get_abs_pos: the table, cls row dropped, laid out row-major as ViTDet's (B, H, W, C) tokens
    pos = written["backbone.net.pos_embed"]
    grid = vitdet_abs_pos(pos, True, (4, 4))
    torch.testing.assert_close(grid.reshape(16, DIM), model.pos_embed((4, 4), DIM, pos))
    assert vitdet_abs_pos(pos, True, (8, 8)).shape == (1, 8, 8, DIM)  # a 64px detector


def test_vitdet_matching_heuristics_put_timm_names_under_the_backbone() -> None:
    """detectron2's ``align_and_update_state_dicts`` rule: a checkpoint name matches a model
    name it is a whole-dotted suffix of, the longest one winning; timm's names (the MAE file's
    route, ``?matching_heuristics=True``) fall on ``backbone.net.*`` and nowhere else."""
    timm_names = [k[len("backbone.net."):] for k in VITDET_VIT if not k.endswith(VITDET_OWN)]
    others = ["backbone.simfp_2.0.weight", "backbone.simfp_2.1.norm.weight",
              "roi_heads.box_head.conv1.norm.weight", "proposal_generator.rpn_head.conv.weight"]
    for name in timm_names:
        hits = [m for m in [*VITDET_VIT, *others] if m == name or m.endswith("." + name)]
        assert hits == [f"backbone.net.{name}"], (name, hits)
