"""Evaluation of pretrained encoders: ``mim eval knn | linprobe | finetune``.

    mim eval knn run.dir=runs/image/...            # cosine k-NN on frozen features
    mim eval linprobe run.dir=... eval.init=random # the same encoder, untrained
    mim eval finetune weights=mae_pretrain_vit_base.pth data.root=/data/train ...

Protocols follow MAE's appendix A (see ``schema.py``); labelled data comes from the modality
(``ModalitySpec.evaluation``), a built-in demo set when no ``data.root`` is given.
"""
from mim.eval.plan import EvalPlan, load_eval
from mim.eval.runner import evaluate, summary

__all__ = ["EvalPlan", "load_eval", "evaluate", "summary"]
