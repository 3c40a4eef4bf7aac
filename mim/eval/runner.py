"""``evaluate(plan)``: build the encoder, run the protocol, write the results file."""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from mim.eval.plan import EvalPlan
from mim.eval.features import accuracy, extract, pool_name
from mim.eval.finetune import finetune
from mim.eval.knn import knn_scores
from mim.eval.linprobe import linear_probe
from mim.eval.segment.heads import build_segmenter
from mim.eval.segment.protocol import Scoring, summary_of, train_head
from mim.models.transfer import build_encoder
from mim.seeding import seed_all

log = logging.getLogger("mim")


def _device(choice: str) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def run_knn(model, data, plan: EvalPlan, how: str, device: torch.device) -> dict[str, Any]:
    s, p = plan.settings, plan.params
    train, train_labels = extract(model, data.train_plain, how, s.batch_size, s.num_workers,
                                  device)
    val, val_labels = extract(model, data.val, how, s.batch_size, s.num_workers, device)
    scores = knn_scores(train, train_labels, val, p.k, p.temperature, len(data.classes))
    return {"top1": accuracy(scores, val_labels, 1), "top5": accuracy(scores, val_labels, 5),
            "k": min(p.k, len(train))}


def run_segment(model, plan: EvalPlan, device: torch.device) -> dict[str, Any]:
    """A head on the encoder, trained and scored (``mim/eval/segment/``)."""
    p, s, data = plan.params, plan.settings, plan.labelled
    sample = tuple(plan.modality.sample_shape(plan.data))  # [C, *lead, *spatial]
    crop = list(sample[-data.rank:])
    torch.manual_seed(plan.seed)  # the head's initial weights
    segmenter = build_segmenter(model, p.head, len(data.classes), p.blocks, data.rank, sample,
                                p.channels, p.feature_size)
    pictures = plan.out_file.with_name(f"{plan.out_file.stem}-pictures")
    if p.pictures:
        pictures.mkdir(parents=True, exist_ok=True)
    score = Scoring(tuple(crop), p.overlap, p.weighting, s.batch_size, s.num_workers,
                    p.ignore_index, p.pictures, pictures)
    return {"head": p.head, "blocks": segmenter.blocks, **train_head(
        segmenter.to(device), data, p, crop, score, device, plan.seed, data.rank)}


def evaluate(plan: EvalPlan) -> dict[str, Any]:
    """Run ``plan.protocol``; returns the results (also written to ``plan.out_file``)."""
    start = time.perf_counter()
    seed_all(plan.seed)  # seeded as train() seeds before building: the same initial weights
    model = build_encoder(plan.model, plan.in_chans, plan.weights, plan.settings.kernel_resize,
                          plan.labelled.train.nodata)
    if plan.band_ids is not None:  # the data holds a subset of the encoder's bands
        model.tokenizer.select_bands(plan.band_ids)
    device = _device(plan.settings.device)
    model = model.to(device)
    data = plan.labelled
    how = pool_name(plan.settings.pool, model)
    s = plan.settings
    if plan.protocol == "knn":
        metrics = run_knn(model, data, plan, how, device)
    elif plan.protocol == "linprobe":
        metrics = linear_probe(model, data, plan.params, how, device, s.batch_size,
                               s.num_workers, plan.seed)
    elif plan.protocol == "segment":
        metrics = run_segment(model, plan, device)
    else:
        metrics = finetune(model, data, plan.params, how, device, s.batch_size, s.num_workers,
                           plan.seed)
    result = {**plan.record(), "pool": how, "classes": data.classes,
              "num_train": len(data.train), "num_val": len(data.val),
              "seconds": round(time.perf_counter() - start, 1), "metrics": metrics}
    path = plan.out_file
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, path)
    result["path"] = str(path)
    return result


def summary(result: dict[str, Any]) -> str:
    m = result["metrics"]
    if result["protocol"] == "segment":
        return (f"segment ({result['init']}, {m['head']} head): {summary_of(m)} on "
                f"{m['items']} held-out items ({len(result['classes'])} classes); results: "
                f"{Path(result['path'])}")
    extra = f", best {m['best_top1']:.2f}%" if "best_top1" in m else ""
    return (f"{result['protocol']} ({result['init']}, {result['pool']} features): top-1 "
            f"{m['top1']:.2f}%{extra} on {result['num_val']} held-out items "
            f"({len(result['classes'])} classes); results: {Path(result['path'])}")
