"""One override grammar: the same ``key=value`` text means the same to ``mim train`` (Hydra
composition) and to ``mim eval`` (its own tree), value for value and error for error.

Both commands share the ``model`` section (``ModelConfig``) and the ``model=NAME`` group, so the
same strings are fed to both; ``optim.betas`` (train) and ``finetune.betas`` (eval) are the
same kind of field (a list of two floats) under different sections.
"""
from __future__ import annotations

import mim  # noqa: F401
import pytest

from mim.cli import main
from mim.config import ConfigError
from mim.config.compose import load
from mim.eval.plan import load_eval

TRAIN = ["model=mae_vit_tiny_patch16", "data.root=/data/photos", "data.input_size=32"]
EVAL = ["eval.init=random", "model=mae_vit_tiny_patch16", "data.input_size=32"]


def _over(base: list[str], overrides: tuple[str, ...]) -> list[str]:
    """``base`` less the keys ``overrides`` set again (a key is taken once), then those."""
    def key(item: str) -> str:
        return item.split("=", 1)[0].lstrip("+~")

    given = {key(o) for o in overrides}
    return [*(b for b in base if key(b) not in given), *overrides]


def train(*overrides: str):
    return load(_over(TRAIN, overrides))


def evaluate(*overrides: str):
    return load_eval("finetune", _over(EVAL, overrides))


def outcome(build, *overrides: str) -> tuple:
    """(model, seed) of the config, or the one-line error message."""
    try:
        config = build(*overrides)
    except ConfigError as exc:
        text = str(exc)
        assert "\n" not in text, text
        # the top-level keys are each command's own (train's optim, eval's eval and weights)
        return ("error", text.split("valid keys: ")[0] if text.startswith("bogus") else text)
    model = {k: v for k, v in vars(config.model).items() if k != "drop_path"}  # eval: finetune's
    return ("ok", model, config.seed)


SAME = [
    # plain values, quoting, type coercion as OmegaConf does it
    ["model.depth=3"], ["model.depth='3'"], ['model.depth="3"'], ["model.depth= 3"],
    ["model.norm_pix_loss=true"], ["model.norm_pix_loss=yes"], ["model.norm_pix_loss=0"],
    ["model.norm_pix_loss=off"], ["model.mlp_ratio=2"], ["model.norm_eps=1e-5"],
    ["model.name='a b'"],
    # lists and null
    ["model=mcmae_small", "model.tokenizer.dims=[64,128]"], ["model.pos_grid=[4,4]"], ["model.pos_grid=null"],
    ["model=mcmae_small", "model.tokenizer.time_strides=[]"],
    # + / ++ / ~ forms
    ["++model.depth=5"], ["+model.depth=5"], ["~model.depth"], ["+model.bogus=1"],
    ["~model.bogus"], ["++model.bogus=1"], ["+bogus=1"], ["~model.pos_grid"],
    ["~model"], ["++model=mae_vit_small_patch16"], ["model=null"],
    # a dict merged into a section, dotted keys into a list
    ["model={depth:2,num_heads:1}"], ["model=mcmae_small", "model.tokenizer.dims.0=32"],
    ["model=mcmae_small", "model.tokenizer.dims.x=32"],
    # interpolation, resolved against the whole config
    ["model.depth=${model.num_heads}"], ["seed=${model.depth}"], ["model.depth=${oops}"],
    # config-group choice, and a choice followed by keys of the chosen option
    ["model=mae_vit_small_patch16"], ["model=mae_vit_small_patch16", "model.depth=2"],
    ["+model=mae_vit_small_patch16"], ["model=nope"],
    # type errors and unknown keys, at every level
    ["model.depth=8.0"], ["model.depth=abc"], ["model.depth=null"], ["model.depth=[1,2]"],
    ["model.bogus=1"], ["model=mcmae_small", "model.tokenizer.dims.bogus.x=1"], ["bogus.x=1"], ["seed=abc"],
    ["seed=1.5"], ["model.num_heads=5"], ["model.tokenizer=nope"],
    # the grammar's own errors: sweeps (mim train -m only), a missing '=', bad syntax
    ["model.depth=2,3"], ["model.depth=range(1,3)"], ["model.depth"], ["model.depth=[1"],
    ["'model.depth'=3"], ["model.depth=${x"],
]


@pytest.mark.parametrize("overrides", SAME, ids=" ".join)
def test_train_and_eval_read_an_override_alike(overrides) -> None:
    assert outcome(train, *overrides) == outcome(evaluate, *overrides)


def test_the_cases_above_take_effect_or_fail() -> None:
    """Guards against the comparison passing because neither command reads the override."""
    assert outcome(evaluate, "model.depth='3'")[1]["depth"] == 3
    assert outcome(evaluate, "model.norm_pix_loss=off")[1]["norm_pix_loss"] is False
    assert outcome(evaluate, "model=mcmae_small",
                   "model.tokenizer.dims=[64,128]")[1]["tokenizer"]["dims"] == [64, 128]
    assert outcome(evaluate, "model.depth=${model.num_heads}")[1]["depth"] == 3
    assert outcome(evaluate, "seed=${model.depth}")[2] == 12
    assert outcome(evaluate, "model={depth:2,num_heads:1}")[1]["num_heads"] == 1
    assert outcome(evaluate, "model=mae_vit_small_patch16")[1]["embed_dim"] == 384
    assert outcome(evaluate, "model=mcmae_small",
                   "model.tokenizer.dims.0=32")[1]["tokenizer"]["dims"] == [32, 256]
    errors = {
        "model.depth=8.0": "model.depth: Value '8.0' of type 'float' could not be converted",
        "model.bogus=1": "model.bogus: unknown key; valid keys in model: activation_checkpointing",
        "+model.bogus=1": "model.bogus: unknown key; valid keys in model:",
        "~model.depth": "model.depth: ModelConfig (DictConfig) does not support deletion",
        "+bogus=1": "bogus: unknown key; valid keys: data, eval, finetune, modality, model, run, "
                    "seed, weights",
        "model=nope": "model: unknown option 'nope'; valid: ",
        "model.depth=2,3": "model.depth: one value expected; a sweep (model.depth=2,3) needs "
                           "mim train -m",
        "model.depth": "model.depth: expected key=value",
        "model.depth=${oops}": "model.depth: Interpolation key 'oops' not found",
        "model.tokenizer.kernel=7": "model.tokenizer.kernel: unknown key; valid keys in "
                                    "model.tokenizer: name (the keys of the model.tokenizer "
                                    "chosen; for another's, choose it and add its keys: "
                                    "model.tokenizer.name=NAME +model.tokenizer.kernel=VALUE)",
    }
    for override, text in errors.items():
        with pytest.raises(ConfigError) as info:
            evaluate(override)
        assert str(info.value).startswith(text), (override, str(info.value))


@pytest.mark.parametrize("train_key, eval_key", [("optim.betas", "finetune.betas"),
                                                  ("train.batch_size", "eval.batch_size")])
@pytest.mark.parametrize("value", ["[0.5,0.6]", "[0.5]", "null", "8", "8.0", "'8'", "abc",
                                   "${seed}"])
def test_fields_of_one_type_in_other_sections_read_alike(train_key, eval_key, value) -> None:
    def read(build, key):
        try:
            config = build("seed=4", f"{key}={value}")
        except ConfigError as exc:
            return str(exc).replace(key, "KEY").replace(key.split(".")[0], "SECTION")
        section, name = key.split(".")
        node = config.optim if section == "optim" else (
            config.train if section == "train" else (
                config.params if section == "finetune" else config.settings))
        return getattr(node, name)

    assert read(train, train_key) == read(evaluate, eval_key)


def test_visualize_and_convert_use_the_same_grammar(tmp_path) -> None:
    from mim.visualize import load_visualize

    for bad, text in [(["input=x", "out=y", "to=mim", "model.depth=1,2"],
                       "model.depth: one value expected"),
                      (["+bogus=1"], "bogus: unknown key; valid keys: drop_coords, input, input_size,"),
                      (["~to"], "to: not set (null), so there is nothing to delete"),
                      (["to=mim", "~to"], "to: required; it cannot be deleted")]:
        with pytest.raises(ConfigError) as info:
            from mim.cli import _convert_config
            _convert_config(bad)
        assert str(info.value).startswith(text), str(info.value)
    with pytest.raises(ConfigError, match=r"^mask: unknown option 'nope'; valid: .*block"):
        load_visualize([f"input={tmp_path}", "weights=w", "mask=nope"])


def test_an_unquoted_path_with_spaces_or_accents_gets_the_quoting_hint(capsys) -> None:
    # the shell splits an unquoted path at its space; Hydra's lexer refuses non-ASCII letters
    for given, value, key in ((["data.root=/data/my", "photos"], "/data/my photos", "photos"),
                              (["data.root=/data/données"], "/data/données", "data.root")):
        hint = f"""must be quoted for Hydra, inside the shell's quotes: 'data.root="{value}"'"""
        for command in (["train", *given], ["train", "-m", *given], ["eval", "knn", *given]):
            assert main(command) == 2
            err = capsys.readouterr().err
            assert err.startswith(f"mim: config error: {key}: ") and hint in err, err
        assert load([f'data.root="{value}"', "data.input_size=32"]).data.root == value


@pytest.mark.parametrize("command", ["train", "eval", "visualize", "convert"])
def test_every_command_prints_its_usage_for_help(command, capsys) -> None:
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:\n") and f"\n  mim {command} " in out  # its own usage lines


@pytest.mark.parametrize("command", [["train"], ["train", "-m"], ["eval", "knn"],
                                     ["data", "pack"], ["convert"]])
def test_a_key_given_twice_is_refused_in_every_command(command, capsys) -> None:
    """The last of two values would win silently; the shell's expansion of an unquoted brace
    pattern (data.root=/d/shard-{000000..000003}.tar) is the usual cause: the hint says so."""
    expanded = [f"input=/d/shard-{n:06d}.tar" for n in range(4)] if command[0] in (
        "data", "convert") else [f"data.root=/d/shard-{n:06d}.tar" for n in range(4)]
    key = expanded[0].split("=")[0]
    assert main([*command, *expanded]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mim: config error: {key}: given 4 times ({expanded[0]}, ") and \
        "a brace pattern must be quoted" in err and err.count("\n") == 1, err
    assert main([*command, "seed=1", "seed=2"] if command[0] != "data" else
                [*command, "shard_size=1", "shard_size=2"]) == 2
    err = capsys.readouterr().err
    assert "given 2 times" in err and "brace" not in err, err


def test_a_choice_and_a_merge_into_its_section_are_not_a_repeat() -> None:
    spec = train("model=mae_vit_small_patch16", "model={depth:2}")
    assert (spec.model.embed_dim, spec.model.depth) == (384, 2)
