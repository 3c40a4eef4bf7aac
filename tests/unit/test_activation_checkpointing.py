"""``model.activation_checkpointing``: the same gradients, fewer activations kept for backward."""
from __future__ import annotations

import pytest
import torch

from mim.models.factory import create_model, model_config
from mim.masking import RandomMask

SMALL = dict(embed_dim=64, depth=3, num_heads=4, decoder_embed_dim=32, decoder_depth=2,
             decoder_num_heads=2, patch_size=8)


def _loss_and_grads(which: str, drop_path: float = 0.0):
    torch.manual_seed(0)
    model = create_model("mae_vit_base_patch16", activation_checkpointing=which,
                         drop_path=drop_path, **SMALL)
    x = torch.randn(4, 3, 32, 32)
    mask = torch.stack([RandomMask(0.75)((4, 4), torch.Generator().manual_seed(i))
                        for i in range(4)])
    saved = [0]

    def pack(tensor):  # every tensor autograd keeps for backward outside recomputed blocks
        saved[0] += tensor.numel() * tensor.element_size()
        return tensor

    torch.manual_seed(1)  # the drop-path draws
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(x, mask).loss
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, saved[0]


@pytest.mark.parametrize("drop_path", [0.0, 0.2])
@pytest.mark.parametrize("which", ["decoder", "encoder", "all"])
def test_recomputed_blocks_give_bit_identical_gradients(which, drop_path):
    loss, grads, _ = _loss_and_grads("none", drop_path)
    loss2, grads2, _ = _loss_and_grads(which, drop_path)
    assert torch.equal(loss, loss2)
    assert grads.keys() == grads2.keys() and len(grads) > 20
    for name, grad in grads.items():
        assert torch.equal(grad, grads2[name]), name


def test_fewer_activations_are_kept_for_backward():
    kept = {which: _loss_and_grads(which)[2] for which in ("none", "decoder", "encoder", "all")}
    assert kept["all"] < kept["decoder"] < kept["none"]
    assert kept["all"] < kept["encoder"] < kept["none"]
    assert kept["all"] < 0.3 * kept["none"], kept


def test_a_bad_value_names_the_key_and_the_choices():
    with pytest.raises(ValueError, match="model.activation_checkpointing: 'some' is not one of: "
                                         "none, decoder, encoder, all"):
        model_config("mae_vit_base_patch16", activation_checkpointing="some")
