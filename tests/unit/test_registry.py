"""Registries: unique names, helpful unknown-name errors, decorator and direct forms."""
from __future__ import annotations

import mim  # noqa: F401
import pytest

from mim.registry import ALL, MASKS, MODELS, Registry, UnknownNameError


def test_decorator_and_direct_registration():
    reg = Registry("thing")

    @reg.register("alpha")
    class Alpha:
        pass

    @reg.register()  # the object's own name
    def beta():
        return "b"

    gamma = object()
    assert reg.register("gamma", obj=gamma) is gamma
    assert reg.get("alpha") is Alpha  # the decorator returns the class unchanged
    assert reg.get("beta") is beta and reg.get("beta")() == "b"
    assert reg.get("gamma") is gamma
    assert reg.names() == ["alpha", "beta", "gamma"]
    assert "alpha" in reg and "delta" not in reg
    assert [e.name for e in reg.entries()] == ["alpha", "beta", "gamma"]


def test_registering_a_name_twice_raises():
    reg = Registry("thing")
    reg.register("alpha", obj=1)
    with pytest.raises(ValueError, match="alpha.*already registered"):
        reg.register("alpha", obj=2)
    with pytest.raises(ValueError):

        @reg.register("alpha")
        def other():
            pass

    assert reg.get("alpha") == 1  # the first registration is kept


def test_unknown_name_lists_valid_names():
    reg = Registry("thing")
    for name in ("zeta", "alpha", "mu"):
        reg.register(name, obj=name)
    with pytest.raises(UnknownNameError) as err:
        reg.get("omega")
    message = str(err.value)
    assert "thing" in message and "'omega'" in message
    assert "valid: alpha, mu, zeta" in message
    assert isinstance(err.value, KeyError)
    assert not message.startswith('"')  # not quoted like a plain KeyError


def test_empty_registry_says_none():
    with pytest.raises(UnknownNameError, match="none"):
        Registry("thing").get("x")


def test_builtin_registries_are_filled():
    assert {"random", "block"} <= set(MASKS.names())
    assert "mae_vit_base_patch16" in MODELS
    assert {"tokenizer", "mask", "model", "modality", "backend", "launcher",
            "tracker"} == set(ALL)
    assert {"tensorboard", "mlflow", "wandb"} <= set(ALL["tracker"].names())
    assert "image" in ALL["modality"].names()  # registered through the entry point
    assert {"patch2d", "cube"} <= set(ALL["tokenizer"].names())


def test_every_model_preset_comes_from_the_presets_of_a_modality():
    # one rule: a preset is registered by the modality whose samples it pretrains on
    modules = {MODELS.get(name).__module__ for name in MODELS.names()}
    assert modules == {f"mim.modalities.{m}.presets" for m in ("image", "video", "volume", "audio")}
    assert MODELS.get("mae_vit_base_patch16").__module__ == "mim.modalities.image.presets"
    assert MODELS.get("mae3d_vit_base_patch16").__module__ == "mim.modalities.volume.presets"
    assert MODELS.get("mcmae_base").__module__ == "mim.modalities.image.presets"


def test_a_lookup_loads_the_plugins_through_the_hook():
    import mim.plugins
    import mim.registry

    assert mim.registry._before_lookup is mim.plugins.load_plugins  # installed by import mim
    calls = []
    mim.registry.set_lookup_hook(lambda: calls.append(1))
    try:
        reg = Registry("thing")
        reg.register("a", obj=1)
        assert reg.get("a") == 1 and "a" in reg and reg.names() == ["a"]
        assert len(calls) == 3
    finally:
        mim.registry.set_lookup_hook(mim.plugins.load_plugins)
