"""``train.compile``: the modes, their config errors, and regional compilation of the blocks
(transformer blocks, and the conv blocks of a hybrid tokenizer's stages)."""
from __future__ import annotations

import pytest
import torch

from mim.models.blocks import Block
from mim.config.compose import load
from mim.config.errors import ConfigError
from mim.engine import compiling
from mim.engine.backends.torch import TorchBackend
from mim.engine.optim import build_adamw, cosine_schedule
from mim.models.factory import create_model
from mim.masking import RandomMask
from mim.models.tokenizers.masked_conv import ConvBlock

pytestmark = pytest.mark.e2e

SMALL = dict(embed_dim=32, depth=2, num_heads=2, decoder_embed_dim=16, decoder_depth=1,
             decoder_num_heads=2, patch_size=8)


@pytest.mark.parametrize("value, want", [(True, "blocks"), (False, "none"), ("true", "blocks"),
                                         ("False", "none"), ("model", "model"),
                                         ("blocks", "blocks"), ("none", "none")])
def test_modes_and_their_boolean_aliases(value, want):
    assert compiling.mode(value) == want


def test_a_bad_mode_is_a_one_line_config_error_naming_the_values():
    with pytest.raises(ConfigError) as info:
        load(["experiment=demo", "train.compile=fast"])
    message = str(info.value)
    assert "\n" not in message
    assert "train.compile" in message and "blocks" in message and "model" in message
    assert load(["experiment=demo", "train.compile=true"]).train.compile == "blocks"


# preset, its overrides at tiny size, a sample's shape (C, *spatial)
MODELS = {
    "vit": ("mae_vit_base_patch16", SMALL, (3, 32, 32)),
    "video": ("videomae_vit_base_patch16_16x224", dict(SMALL, tubelet_size=2), (3, 4, 32, 32)),
    "hybrid": ("mcmae_small", dict(SMALL, tokenizer={"dims": [8, 16]}), (3, 64, 64)),
}


def _step(compile: str, activation_checkpointing: str = "none", which: str = "vit"):
    """Loss and gradients of one training forward/backward through the backend's runner."""
    name, sizes, shape = MODELS[which]
    torch.manual_seed(0)
    model = create_model(name, activation_checkpointing=activation_checkpointing, **sizes)
    backend = TorchBackend(precision="fp32", compile=compile)
    optimizer = build_adamw(model, 1e-3, (0.9, 0.95), 0.05, "cpu")
    runner = backend.setup(model, optimizer, cosine_schedule(optimizer, 1, 10))
    x = torch.randn(4, *shape)
    grid = model.tokenizer.mask_grid(shape)
    mask = torch.stack([RandomMask(0.75)(grid, torch.Generator().manual_seed(i))
                        for i in range(4)])
    loss = runner(x, mask).loss
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    return model, loss.detach(), grads


@pytest.mark.parametrize("which, checkpointing", [("vit", "none"), ("vit", "all"),
                                                   ("video", "none"), ("hybrid", "none")])
def test_compiled_blocks_train_like_eager_blocks(which, checkpointing):
    eager_model, eager_loss, eager_grads = _step("none", checkpointing, which)
    model, loss, grads = _step("blocks", checkpointing, which)
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    conv_blocks = [m for m in model.modules() if isinstance(m, ConvBlock)]
    assert len(blocks) == SMALL["depth"] + SMALL["decoder_depth"]
    assert (len(conv_blocks) > 0) == (which == "hybrid")
    assert all(b._compiled_call_impl is not None for b in blocks + conv_blocks)  # in place
    assert eager_model.state_dict().keys() == model.state_dict().keys()  # checkpoints unchanged
    torch.testing.assert_close(loss, eager_loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == eager_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, eager_grads[name], rtol=1e-4, atol=1e-5, msg=name)


def test_a_model_without_blocks_cannot_compile_by_blocks():
    with pytest.raises(ValueError, match="train.compile=model"):
        compiling.compile_blocks(torch.nn.Sequential(torch.nn.Linear(2, 2)))
