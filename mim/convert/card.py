"""The ``README.md`` model card every export carries: the model, the run's config, its steps,
samples seen and data, its history of starts and resumes (where a checkpoint records one with
more than a single start, or a change), and code that loads that export with timm and
transformers.

The snippets name the export as ``path/to/export`` (a folder may be moved after it is written);
each is written for the files of its own format and is run by the tests as written.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import yaml

from mim.models.keys import DECODER_PREFIXES
from mim.convert.common import ConvertError, Converted, export_grid
from mim.config.history import history_lines
from mim.convert.provenance import RunFacts, run_facts
from mim.rundir import EXPORT_MARKER, mim_wrote

log = logging.getLogger("mim")
PLACEHOLDER = "path/to/export"  # where the snippets expect the export
CARD = "README.md"
LIBRARY = {"hf": "transformers", "timm": "timm", "mae": "timm", "mim": "mim",
           "prithvi": "terratorch", "monai": "monai"}
MARK = ("- mim", "- masked-autoencoder")  # the front matter's tags


def _model_lines(conv: Converted, grid: tuple[int, ...] | None) -> list[str]:
    cfg = conv.config
    cube = cfg.tokenizer_name in ("cube", "hybrid3d")  # a leading time (or depth) axis
    patch = (f"{cfg.tubelet_size}x{cfg.patch_size}x{cfg.patch_size} cubes" if cube else
             f"{cfg.patch_size}x{cfg.patch_size} patches")
    size = "not recorded"
    if grid is not None:
        sides = ([grid[0] * cfg.tubelet_size] if cube else []) + [
            n * cfg.patch_size for n in grid[-2:]]
        size = (f"{'x'.join(map(str, sides))} ({'time or depth x ' if cube else ''}height x "
                f"width), token grid {list(grid)}")
    return [f"- architecture: `{cfg.name}`, tokenizer `{cfg.tokenizer_name}` on {patch}, "
            f"{conv.in_chans} input channels, input size {size}",
            f"- encoder: width {cfg.embed_dim}, depth {cfg.depth}, {cfg.num_heads} heads, MLP "
            f"ratio {cfg.mlp_ratio:g}, cls token {cfg.cls_token}, positions `{cfg.pos_embed}`, "
            f"LayerNorm eps {cfg.norm_eps:g}",
            (f"- decoder: width {cfg.decoder_embed_dim}, depth {cfg.decoder_depth}, "
             f"{cfg.decoder_num_heads} heads" if conv.has_decoder else
             "- decoder: none in these weights"),
            f"- loss: MSE on the {cfg.loss_on} patches, norm-pix target {cfg.norm_pix_loss}"]


def _unknown(what: str, conv: Converted) -> str:
    return f"{what}: not recorded by the source ({conv.format})"


def _training_lines(conv: Converted, facts: RunFacts) -> list[str]:
    mean, std = facts.normalisation()
    mask = ", ".join(f"{k} {v}" for k, v in facts.mask.items()) if facts.mask else None
    data = facts.sections.get("data")
    return [f"- steps: {facts.steps}" if facts.steps is not None else
            "- " + _unknown("steps", conv),
            f"- samples seen: {facts.samples}" if facts.samples is not None else
            "- " + _unknown("samples seen", conv),
            f"- mask: {mask}" if mask else "- " + _unknown("mask", conv),
            f"- data: modality `{facts.modality}`" + (
                f", {_data_source(data, conv)}" if isinstance(data, dict) else "")
            if facts.modality else "- " + _unknown("data", conv),
            f"- input normalisation: mean {mean}, std {std}" if facts.mean is not None else
            f"- input normalisation: {_unrecorded_norm(facts)}; the export's processor settings "
            f"assume ImageNet's mean {mean}, std {std}", *_band_lines(facts.data)]


def _band_lines(data: dict[str, Any]) -> list[str]:
    """The bands of a raster run, in the order the encoder takes them, with what a user must
    feed it alike (none for photos)."""
    if data.get("reader") != "raster" or not data.get("bands"):
        return []
    waves = data.get("wavelengths") or []
    named = ", ".join(f"{b} ({w:g} µm)" for b, w in zip(data["bands"], waves)) if waves \
        else ", ".join(map(str, data["bands"]))
    return [f"- bands, in input order: {named}",
            f"- values: the file's divided by {data.get('scale')} before the normalisation "
            f"above; nodata {data.get('nodata')} (such pixels were never scored)"
            + (f"; {data['time_steps']} dates per sample" if data.get("time_steps", 1) > 1
               else "")]


def _history_lines(history: list[dict[str, Any]]) -> list[str]:
    """One line per start or resume, with what it changed; none for a run started once and
    never changed."""
    if len(history) <= 1 and not any(entry.get("changed") for entry in history):
        return []
    return ["## History", *(f"- {line}" for line in history_lines(history)), ""]


def _unrecorded_norm(facts: RunFacts) -> str:
    if facts.modality:
        return f"the `{facts.modality}` modality's own (its data config holds no mean/std)"
    return "not recorded by the source"


def _data_source(data: dict[str, Any], conv: Converted) -> str:
    for key in ("list_file", "root"):
        if data.get(key):
            return f"`{key}`: `{data[key]}`"
    if conv.format != "mim":  # a foreign config's data settings name no files
        return f"its files not recorded by the source ({conv.format})"
    return "the built-in demo data"


def _snippets(export: str, conv: Converted, grid: tuple[int, ...] | None,
              details: dict[str, Any]) -> list[str]:
    """Markdown: how to load this export, per format (see the module docstring)."""
    if export == "hf" and len(grid) == 2:
        return _vitmae_snippet(conv, grid)
    if export == "hf":
        return _videomae_snippet(conv, grid)
    if export == "timm":
        return _timm_snippet() + _vitdet_lines(conv, grid)
    if export == "mae":
        return _mae_snippet(details)
    if export == "prithvi":
        return _prithvi_snippet(details)
    if export == "monai":
        return _monai_snippet(conv, details)
    return _mim_snippet(conv)


def _convert_hint(path: str, to: str, what: str) -> str:
    """The sentence that points to another format of the same weights."""
    return (f"`mim convert input={path} output=OUT to={to}` writes a copy that {what} loads "
            "(see its own README.md).")


def _vitmae_snippet(conv: Converted, grid: tuple[int, ...]) -> list[str]:
    return ["transformers (`ViTMAEModel` masks `mask_ratio` of the patches at random and "
            "shuffles the rest, as in pretraining; `mask_ratio=0.0` with ascending `noise` "
            "keeps every patch in grid order):", "```python",
            "import numpy as np, torch",
            "from transformers import AutoImageProcessor, ViTMAEForPreTraining, ViTMAEModel",
            f'processor = AutoImageProcessor.from_pretrained("{PLACEHOLDER}")',
            f'encoder = ViTMAEModel.from_pretrained("{PLACEHOLDER}", mask_ratio=0.0)',
            f'mae = ViTMAEForPreTraining.from_pretrained("{PLACEHOLDER}")',
            f"image = np.zeros(({grid[0] * conv.config.patch_size}, "
            f"{grid[1] * conv.config.patch_size}, {conv.in_chans}), dtype=np.uint8)",
            'inputs = processor(images=image, return_tensors="pt")',
            f"in_order = torch.arange({grid[0] * grid[1]}.0)[None]  # [1, L]",
            "features = encoder(**inputs, noise=in_order).last_hidden_state  # [1, 1 + L, D]",
            "loss = mae(**inputs).loss", "```", "",
            "timm: " + _convert_hint(PLACEHOLDER, "timm", "timm")]


def _videomae_snippet(conv: Converted, grid: tuple[int, ...]) -> list[str]:
    frames = grid[0] * conv.config.tubelet_size
    side = grid[1] * conv.config.patch_size
    return ["transformers (frames are `[T, H, W, C]` uint8 arrays or images):", "```python",
            "import numpy as np",
            "from transformers import AutoImageProcessor, VideoMAEModel",
            f'processor = AutoImageProcessor.from_pretrained("{PLACEHOLDER}")',
            f'encoder = VideoMAEModel.from_pretrained("{PLACEHOLDER}")',
            f"video = list(np.zeros(({frames}, {side}, {side}, {conv.in_chans}), "
            "dtype=np.uint8))",
            'inputs = processor(video, return_tensors="pt")  # pixel_values [1, T, C, H, W]',
            "features = encoder(**inputs).last_hidden_state  # [1, L, D]", "```", "",
            "timm has no space-time ViT; mim reads this folder: "
            f'`mim.load_pretrained("{PLACEHOLDER}")`.']


def _timm_snippet() -> list[str]:
    return ["timm (the architecture and `model_args` come from `config.json`):",
            "```python", "import timm, timm.data, torch",
            f'model = timm.create_model("local-dir:{PLACEHOLDER}", pretrained=True)',
            "config = timm.data.resolve_data_config({}, model=model)  # size, mean, std",
            'features = model.forward_features(torch.zeros(1, *config["input_size"]))',
            "```", "",
            "transformers: timm's own weights have no transformers class of their own "
            "here; " + _convert_hint(PLACEHOLDER, "hf", "transformers")]


def _vitdet_lines(conv: Converted, grid: tuple[int, ...]) -> list[str]:
    """How detectron2's ViTDet takes these weights, as its code does (detectron2 at 02b5c4e:
    ``modeling/backbone/vit.py`` ``ViT`` and ``utils.py`` ``get_abs_pos``,
    ``checkpoint/detection_checkpoint.py`` on fvcore's ``Checkpointer``, which ``torch.load``s
    the file and skips a tensor of another shape with a warning;
    ``configs/common/models/mask_rcnn_vitdet.py``)."""
    cfg = conv.config
    head = ("Detection, detectron2's ViTDet (`detectron2.modeling.ViT` inside "
            "`SimpleFeaturePyramid`): its backbone names the tensors as timm does, under "
            "`backbone.net.`, and has no final `norm` and no `cls_token`")
    if grid[0] != grid[1]:
        return ["", head + "; its position table is square (`pretrain_img_size`), so export "
                "a square size first: `input_size=[S,S]`."]
    side = grid[0] * cfg.patch_size
    mean, std = run_facts(conv).normalisation()
    eps = (f"`norm_layer=partial(nn.LayerNorm, eps={cfg.norm_eps:g})`"
           + (" as ViTDet's configs set it" if abs(cfg.norm_eps - 1e-6) <= 1e-12 else
              " (ViTDet's configs set 1e-6; these weights were trained with this one)"))
    pixels = (f" `model.pixel_mean` / `model.pixel_std` are in detectron2's 0-255 units: "
              f"{[round(m * 255, 3) for m in mean]} / {[round(v * 255, 3) for v in std]} for "
              "this run's normalisation of pictures." if conv.in_chans == 3 else "")
    return ["", head + ". detectron2 reads torch files (not safetensors); write one with those "
            "names:", "```python", "import torch", "from safetensors.torch import load_file",
            f'state = load_file("{PLACEHOLDER}/model.safetensors")',
            'vitdet = {f"backbone.net.{k}": v for k, v in state.items()',
            '          if not k.startswith(("norm.", "cls_token"))}  # ViTDet has neither',
            f'torch.save({{"model": vitdet}}, "{PLACEHOLDER}-vitdet.pth")', "```",
            "In a ViTDet LazyConfig (e.g. `projects/ViTDet/configs/COCO/"
            "mask_rcnn_vitdet_b_100ep.py`): "
            f"`train.init_checkpoint = \"{PLACEHOLDER}-vitdet.pth\"` (the names are "
            "already the detector's: no `?matching_heuristics=True`), and "
            f"`model.backbone.net`'s `embed_dim={cfg.embed_dim}`, `depth={cfg.depth}`, "
            f"`num_heads={cfg.num_heads}`, `patch_size={cfg.patch_size}`, "
            f"`in_chans={conv.in_chans}`, `mlp_ratio={cfg.mlp_ratio:g}`, `qkv_bias=True`, "
            f"`pretrain_img_size={side}`, `pretrain_use_cls_token={cfg.cls_token}`, "
            "`use_abs_pos=True` (the default): at every forward `get_abs_pos` "
            + ("drops the table's cls row and " if cfg.cls_token else "")
            + f"resizes its {grid[0]}x{grid[1]} grid bicubically to the detector's "
            "(`img_size / patch_size`) where they differ; a `pretrain_img_size` of another size "
            "gives `pos_embed` another shape, which the checkpointer skips with a warning. "
            f"{eps}. Window attention and the "
            "relative positions (`use_rel_pos`, `rel_pos_h` / `rel_pos_w`) are ViTDet's own, "
            "initialised by it; set `num_layers` of `optimizer.params.lr_factor_func` to "
            f"{cfg.depth}.{pixels}"]


def _monai_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(map(str, value)) + ")"
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _monai_call(name: str, args: dict[str, Any]) -> str:
    return f"{name}(" + ", ".join(f"{k}={_monai_value(v)}" for k, v in args.items()) + ")"


def _monai_snippet(conv: Converted, details: dict[str, Any]) -> list[str]:
    """``details``: the weight file's name, ``ViT``'s arguments (``config.json``), whether
    ``UNETR`` takes them and the LayerNorm eps the weights were trained with (``monai.py``)."""
    args, eps = details["args"], float(details["eps"])
    volume = args["spatial_dims"] == 3
    unetr = {k: v for k, v in args.items() if k not in ("patch_size", "num_layers")}
    unetr = {"in_channels": unetr.pop("in_channels"), "out_channels": 2, **unetr}
    sample = ", ".join(map(str, [1, args["in_channels"], *args["img_size"]]))
    lines = ["MONAI (`config.json` holds `ViT`'s arguments: `ViT(**config)`):", "```python",
             "import torch", "from monai.networks.nets import "
             + ("UNETR, ViT" if details["unetr"] else "ViT"),
             f'state = torch.load("{PLACEHOLDER}/{details["file"]}", weights_only=True)',
             f"vit = {_monai_call('ViT', args)}", "vit.load_state_dict(state, strict=True)"]
    encoders = ["vit"]
    if details["unetr"]:
        lines += [f"unetr = {_monai_call('UNETR', unetr)}  # out_channels: your classes",
                  "unetr.vit.load_state_dict(state, strict=True)"]
        encoders.append("unetr.vit")
    if abs(eps - 1e-5) > 1e-12:
        lines += [f"for module in [{', '.join(f'*{e}.modules()' for e in encoders)}]:  "
                  "# mim's LayerNorm eps (MONAI builds 1e-5)",
                  "    if isinstance(module, torch.nn.LayerNorm):", f"        module.eps = {eps!r}"]
    lines += [f"x = torch.zeros({sample})  # [B, C, {'D, H, W' if volume else 'H, W'}]",
              "features, hidden_states = vit(x)  # [B, L, D] after the final norm; each "
              "block's [B, L, D]", "```", "",
              "`strict=True` holds for MONAI 1.6 (the layout checked): MONAI 1.3 has no "
              "`norm_cross_attn` and 1.4-1.5 also build an unused `cross_attn` in every block; "
              "there load with `strict=False` and check that only those keys are reported."]
    if not details["unetr"]:
        lines.append("`UNETR` builds its ViT with 12 blocks and 16-wide patches on every axis: "
                     "these weights load into `ViT` only.")
    if volume:
        lines.append("Inputs are [B, C, D, H, W] in mim's volume axes: a NIfTI reoriented to RAS "
                     "and transposed to (S, A, R). From MONAI's `LoadImaged` + "
                     "`EnsureChannelFirstd` + `Orientationd(axcodes=\"RAS\")` ([C, R, A, S]) add "
                     "`Transposed(keys, indices=(0, 3, 2, 1))`; the run's spacing and intensity "
                     "settings are in its config above.")
    lines += ["", "mim does not read this folder back: keep a `to=mim` (or `to=timm`) export "
              "of the same weights for that."]
    return lines


def _mae_snippet(details: dict[str, Any]) -> list[str]:
    """``details``: the checkpoint's file name and the timm architecture and arguments that
    hold its encoder (see ``write_mae``)."""
    args = ", ".join(f"{k}={v!r}" for k, v in details["model_args"].items())
    return ["timm (the encoder; the decoder's tensors are MAE's and are left out):",
            "```python", "import timm, torch",
            f'state = torch.load("{PLACEHOLDER}/{details["file"]}", weights_only=True)',
            f'model = timm.create_model("{details["architecture"]}", pretrained=False, '
            f"{args})",
            'encoder = {k: v for k, v in state["model"].items()',
            f'           if not k.startswith({DECODER_PREFIXES!r})}}',
            "model.load_state_dict(encoder)", "```", "",
            "The checkpoint's `args` hold the run's settings (`mask_ratio`, "
            "`norm_pix_loss`, `input_size`), as facebookresearch/mae's do. transformers: "
            + _convert_hint(f"{PLACEHOLDER}/{details['file']}", "hf", "transformers")]


def _prithvi_snippet(details: dict[str, Any]) -> list[str]:
    """``details``: the weight file's name and terratorch's variant of these sizes, if any."""
    variant = details.get("architecture")
    terratorch = (f'`BACKBONE_REGISTRY.build("{variant}", pretrained=True, '
                  f'ckpt_path="{PLACEHOLDER}/{details["file"]}", num_frames=N)` builds it, '
                  "its loaders replacing the position tables with Prithvi's own sin-cos (see the "
                  "notes)." if variant else
                  "no registered variant has these sizes; build `PrithviMAE(**pretrained_cfg)` "
                  "(its prithvi_mae.py) and load the state dict.")
    return ["torch (a plain state dict in Prithvi-EO-2.0's names, and its config):",
            "```python", "import json, torch",
            f'state = torch.load("{PLACEHOLDER}/{details["file"]}", weights_only=True)',
            f'config = json.load(open("{PLACEHOLDER}/config.json"))["pretrained_cfg"]',
            "```", "", "terratorch: " + terratorch, "",
            "mim (reads the folder back):", "```python", "import mim",
            f'model = mim.load_pretrained("{PLACEHOLDER}")  # a MaskedAutoencoder', "```"]


def _mim_snippet(conv: Converted) -> list[str]:
    plain = conv.config.tokenizer_name in ("patch2d", "cube")  # the layouts timm and HF hold
    return ["mim (the weights in mim's own names):", "```python", "import mim",
            f'model = mim.load_pretrained("{PLACEHOLDER}")  # a MaskedAutoencoder', "```", "",
            *([_convert_hint(PLACEHOLDER, "timm", "timm")]
              if conv.config.tokenizer_name == "patch2d" else []),
            (_convert_hint(PLACEHOLDER, "hf", "transformers") +
             " (ViTMAE for 2D patches, VideoMAE for cubes, where the model has their layout)")
            if plain else "timm and transformers have no layout for this tokenizer."]


def model_card(conv: Converted, export: str, grid: tuple[int, ...] | None,
               details: dict[str, Any] | None = None) -> str:
    """The card's markdown for ``conv`` written as ``export`` (a key of ``WRITERS``)."""
    facts = run_facts(conv)
    lines = ["---", f"library_name: {LIBRARY[export]}", "tags:", *MARK, "---", "",
             f"# {conv.config.name} (encoder width {conv.config.embed_dim}, depth "
             f"{conv.config.depth})", "",
             f"Masked-autoencoder weights pretrained with mim, exported as `{export}` "
             f"(read from: {conv.format}).", "", "## Model", *_model_lines(conv, grid), "",
             "## Training", *_training_lines(conv, facts), ""]
    if facts.sections:
        lines += ["The run's config (the parts that made these weights):", "```yaml",
                  yaml.safe_dump(facts.sections, sort_keys=False,
                                 default_flow_style=None).rstrip(), "```", ""]
    lines += _history_lines(facts.history)
    lines += ["## Loading", *_snippets(export, conv, grid, details or {}), ""]
    if conv.notes:
        lines += ["## Notes", *[f"- {note}" for note in conv.notes], ""]
    return "\n".join(lines)


def card_grid(conv: Converted, input_size: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """The export's token grid, or None where the weights do not say (the card then says so)."""
    try:
        return export_grid(conv, input_size)
    except ConvertError:
        return None


def write_card(conv: Converted, folder: Path, export: str, grid: tuple[int, ...] | None,
               details: dict[str, Any] | None = None) -> Path | None:
    """``folder/README.md``; a README.md already there that mim did not write (no export
    marker lists it at its size: ``mim.rundir.mim_wrote``) is kept."""
    path = folder / CARD
    if (path.exists() or path.is_symlink()) and not mim_wrote(path):
        log.warning("%s exists and mim did not write it (no %s lists it): kept; no model "
                    "card written", path, EXPORT_MARKER)
        return None
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(model_card(conv, export, grid, details))
    return path
