"""Configs an earlier mim wrote, read with today's keys (``mim/config/migrate.py``): a resume
compares like with like, and an earlier run's files still load."""
from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mim.config.compose import load
from mim.config.errors import ConfigError
from mim.config.history import check_resume
from mim.config.migrate import current, current_model
from mim.convert.formats import _model_config
from mim.pretrained import run_config
from mim.rundir import default_run_dir

# the model section as mim wrote it before the tokenizer had a section of its own
OLD_HYBRID = {"tokenizer": "hybrid2d", "hybrid_dims": [128, 256], "hybrid_depths": [2, 2],
              "hybrid_mlp_ratios": [4.0, 4.0], "hybrid_kernel": 5, "hybrid_time_kernel": 5,
              "hybrid_time_strides": [], "hybrid_multiscale": True,
              "hybrid_mask_level": "stage3"}


def _old(model: dict, **changes) -> dict:
    """``model`` (today's section) written as an earlier mim wrote it."""
    out = {k: v for k, v in model.items() if k != "tokenizer"}
    old = dict(OLD_HYBRID, tokenizer=model["tokenizer"]["name"])
    if model["tokenizer"]["name"] != "hybrid2d":  # every tokenizer carried the hybrid defaults
        old.update(hybrid_dims=[256, 384])
    return {**out, **old, **changes}


def test_an_old_model_section_reads_as_todays():
    spec = load(["model=mcmae_small", "data.input_size=96"])
    now = OmegaConf.to_container(spec.raw.model)
    assert current_model(_old(now)) == now
    assert current_model(now) == now  # a current section comes back equal
    plain = OmegaConf.to_container(load([]).raw.model)
    assert current_model(_old(plain)) == plain  # unused hybrid values of patch2d dropped


def test_a_resume_compares_an_old_checkpoint_key_by_key():
    spec = load(["model=mcmae_small", "data.input_size=96"])
    config = OmegaConf.to_container(spec.raw, resolve=True)
    old = dict(config, model=_old(config["model"]))
    changed, forced = check_resume(current(old), config, "auto", Path("step_4"), 8, 8)
    assert (changed, forced) == ({}, False)
    kernel = dict(config, model=_old(config["model"], hybrid_kernel=7))
    with pytest.raises(ConfigError, match=r"model.tokenizer.kernel: 7 -> 5"):
        check_resume(current(kernel), config, "auto", Path("step_4"), 8, 8)


def test_an_old_run_folder_and_export_load_with_their_stage_settings(tmp_path):
    spec = load(["model=mcmae_small", "data.input_size=96"])
    config = OmegaConf.to_container(spec.raw, resolve=True)
    old = dict(config, model=_old(config["model"], hybrid_kernel=7))
    OmegaConf.save(OmegaConf.create(old), tmp_path / "config.yaml")
    assert run_config(str(tmp_path))["model"]["tokenizer"]["kernel"] == 7
    assert _model_config(old["model"], {}).tokenizer["kernel"] == 7


def test_the_same_command_finds_the_run_folder_an_earlier_mim_made(tmp_path):
    """A rename changes the config's hash, not the run: the command that made a run folder
    before the rename still resumes it, and another config does not take it."""
    overrides = ["model=mcmae_small", "data.input_size=96", f"run.root={tmp_path}"]
    spec = load(overrides)
    config = OmegaConf.to_container(spec.raw, resolve=True)
    assert not default_run_dir(spec).exists()
    old = tmp_path / "image" / spec.model.name / "0123abcd"  # the old keys' hash
    old.mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(dict(config, model=_old(config["model"]))),
                   old / "config.yaml")
    assert default_run_dir(spec) == old
    assert default_run_dir(load([*overrides, "model.tokenizer.kernel=7"])) != old
