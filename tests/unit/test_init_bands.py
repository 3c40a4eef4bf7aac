"""model.init across band sets: mapped by name, a missing band refused unless asked for at
random, and weights that name no bands adapted as timm's adapt_input_conv does."""
from __future__ import annotations

import mim  # noqa: F401
import pytest
import torch

from mim.config.errors import ConfigError
from mim.convert.common import Converted
from mim.init import fit_bands
from mim.models.factory import create_model, model_config
from mim.models.keys import KERNEL

NAMES = ["B02", "B03", "B04", "B08", "B11"]


def weights(in_chans: int, data: dict | None) -> Converted:
    cfg = model_config("mae_vit_tiny_patch16", patch_size=8)
    model = create_model("mae_vit_tiny_patch16", in_chans=in_chans, patch_size=8)
    return Converted(cfg, in_chans, model.state_dict(), "mim",
                     run={"config": {"data": data}} if data is not None else {})


def own(in_chans: int) -> dict[str, torch.Tensor]:
    return create_model("mae_vit_tiny_patch16", in_chans=in_chans, patch_size=8).state_dict()


def test_bands_are_mapped_by_name():
    source = weights(5, {"band_names": NAMES, "bands": [0, 1, 2, 3, 4]})
    state = dict(source.state)
    done = fit_bands(source, source.config, state, own(3), ["B08", "B04", "B02"])
    kernel = source.state[KERNEL]  # [D, 5, p, p]
    assert torch.equal(state[KERNEL], kernel[:, [3, 2, 0]])
    assert "mapped by name" in done[0]


def test_a_band_the_weights_lack_stops_the_run_unless_random():
    source = weights(5, {"band_names": NAMES, "bands": [0, 1, 2, 3, 4]})
    with pytest.raises(ConfigError, match="no band B12.*model.init_bands=random"):
        fit_bands(source, source.config, dict(source.state), own(2), ["B04", "B12"])
    cfg = model_config("mae_vit_tiny_patch16", patch_size=8, init_bands="random")
    target = own(2)
    state = dict(source.state)
    done = fit_bands(source, cfg, state, target, ["B04", "B12"])
    assert torch.equal(state[KERNEL][:, 0], source.state[KERNEL][:, 2])
    assert torch.equal(state[KERNEL][:, 1], target[KERNEL][:, 1])  # its own initialisation
    assert "at random: B12" in done[0]


def test_weights_without_band_names_are_adapted_as_timm_does():
    from timm.models import adapt_input_conv

    source = weights(3, None)  # e.g. an RGB MAE from timm: no run, no names
    state = dict(source.state)
    done = fit_bands(source, source.config, state, own(1), ["band0"])
    assert torch.equal(state[KERNEL], adapt_input_conv(1, source.state[KERNEL]))
    torch.testing.assert_close(state[KERNEL][:, 0], source.state[KERNEL].sum(1))
    assert "summed into 1" in done[0]
    assert fit_bands(source, source.config, dict(source.state), own(3), None) == []
