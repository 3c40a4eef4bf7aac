"""Every preset at a tiny size: shapes, loss, gradients, visible-only encoding; full-size counts."""
from __future__ import annotations

import mim
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mim.models.model import MAEOutput, MaskedAutoencoder
from mim.models.factory import ModelConfig, model_config

TINY = dict(embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=32, decoder_depth=1,
            decoder_num_heads=2, patch_size=8)
B, L, P = 2, 16, 8 * 8 * 3  # 32x32 input, 8x8 patches, RGB
NUM_MASKED = 12  # MAE's 0.75


def random_mask(batch: int = B, length: int = L, num_masked: int = NUM_MASKED,
                seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(batch, length, dtype=torch.bool)
    for row in range(batch):
        mask[row, torch.randperm(length, generator=g)[:num_masked]] = True
    return mask


def tiny(name: str = "mae_vit_base_patch16", **overrides) -> MaskedAutoencoder:
    torch.manual_seed(0)
    return mim.create_model(name, **{**TINY, **overrides})


def images(seed: int = 0, batch: int = B) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", mim.list_models())
def test_every_preset_trains_at_tiny_size(name):
    # 3D presets take a 4-step clip of 32x32 frames: 8x8 patches, cubes 2 deep (hybrid: all
    # of it at stage 1); hybrid conv stages at a tiny width
    by_tokenizer = {"cube": dict(tubelet_size=2),
                    "hybrid2d": dict(tokenizer={"dims": [8, 16]}),
                    "hybrid3d": dict(tubelet_size=2, tokenizer={"dims": [8, 16],
                                                                "time_strides": [2, 1, 1]})}
    model = tiny(name, **by_tokenizer.get(mim.models.factory.model_config(name).tokenizer_name, {}))
    rank = model.tokenizer.rank
    x = images() if rank == 2 else torch.randn(B, 3, 4, 32, 32)
    length = L if rank == 2 else 2 * L
    out = model(x, random_mask(length=length, num_masked=length * 3 // 4))
    assert isinstance(out, MAEOutput)
    assert out.pred.shape == (B, length, model.tokenizer.patch_dim)
    assert out.mask.shape == (B, length)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    grads = {k: p.grad for k, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    keys = ["tokenizer.proj.weight", "blocks.0.attn.qkv.weight", "decoder_embed.weight",
            "mask_token", "decoder_blocks.0.mlp.fc1.weight", "decoder_pred.weight"]
    if model.cls_token is not None:
        keys.append("cls_token")
    for key in keys:
        assert grads[key].abs().sum() > 0, key


def test_encoder_blocks_see_only_visible_tokens():
    model = tiny().eval()
    seen = []
    model.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].shape))
    mask = random_mask()
    encoded = model.encode(images(), mask)
    assert seen == [torch.Size([B, 1 + L - NUM_MASKED, 32])]
    assert encoded.tokens.shape == (B, 1 + L - NUM_MASKED, 32)
    assert torch.equal(encoded.ids_keep, torch.stack([(~m).nonzero().squeeze(1) for m in mask]))
    model.encode(images(), None)  # no mask: every token
    assert seen[-1] == torch.Size([B, 1 + L, 32])


@given(seed=st.integers(0, 2**16))
def test_masked_pixels_do_not_reach_the_encoder(seed):
    model = tiny().eval()
    x, mask = images(seed), random_mask(seed=seed)
    patches = model.tokenizer.patchify(x)
    noise = torch.randn(patches.shape, generator=torch.Generator().manual_seed(seed + 1))
    changed = model.tokenizer.unpatchify(torch.where(mask[..., None], patches + 5 * noise,
                                                     patches), (4, 4))
    assert not torch.equal(changed, x)
    with torch.no_grad():
        before = model.encode(x, mask).tokens
        assert torch.equal(model.encode(changed, mask).tokens, before)
        # the same change on a visible patch does reach it
        flipped = mask.clone()
        row, col = 0, int((~mask[0]).nonzero()[0])
        flipped[row, col] = True
        touched = model.tokenizer.unpatchify(torch.where(flipped[..., None], patches + noise,
                                                         patches), (4, 4))
        assert not torch.equal(model.encode(touched, mask).tokens, before)


def test_norm_pix_target():
    model = tiny(norm_pix_loss=True)
    target = model.target(images() * 3 + 1)
    assert target.shape == (B, L, P)
    torch.testing.assert_close(target.mean(-1), torch.zeros(B, L), atol=1e-5, rtol=0)
    torch.testing.assert_close(target.var(-1), torch.ones(B, L), atol=1e-4, rtol=0)
    plain = tiny(norm_pix_loss=False)
    assert torch.equal(plain.target(images()), plain.tokenizer.patchify(images()))


def test_loss_on_masked_and_all():
    masked = tiny(loss_on="masked")
    everything = tiny(loss_on="all")
    everything.load_state_dict(masked.state_dict())
    x, mask = images(), random_mask()
    with torch.no_grad():
        out = masked(x, mask)
        per_patch = ((out.pred - masked.target(x)) ** 2).mean(-1)  # [B, L]
        torch.testing.assert_close(out.loss, per_patch[mask].mean())
        out_all = everything(x, mask)
        torch.testing.assert_close(out_all.pred, out.pred)
        torch.testing.assert_close(out_all.loss, per_patch.mean())
    assert not torch.allclose(out.loss, out_all.loss)
    with pytest.raises(ValueError, match="loss_on"):
        tiny(loss_on="visible")


def test_decoder_output_matches_input_resolution_for_other_sizes():
    model = tiny()
    x = torch.randn(1, 3, 48, 32)  # a 6x4 grid
    out = model(x, random_mask(1, 24, 18))
    assert out.pred.shape == (1, 24, P)
    recon = model.tokenizer.unpatchify(out.pred, (6, 4))
    assert recon.shape == x.shape


def _encoder_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for k, p in model.named_parameters()
               if not k.startswith(("decoder", "mask_token")))


@pytest.mark.parametrize("name, expected", [("mae_vit_base_patch16", 85.8e6),
                                            ("mae_vit_large_patch16", 304e6)])
def test_full_size_encoder_parameter_counts(name, expected, monkeypatch):
    # the count does not depend on the initialisation; skipping MAE's init saves seconds
    monkeypatch.setattr(MaskedAutoencoder, "_init_weights", lambda self: None)
    model = mim.create_model(name, decoder_depth=1, decoder_embed_dim=16, decoder_num_heads=1)
    assert _encoder_params(model) == pytest.approx(expected, rel=0.01)


def test_presets():
    ls = model_config("lsmae_vit_base_patch16")
    assert (ls.embed_dim, ls.decoder_embed_dim, ls.decoder_num_heads) == (768, 384, 12)
    base = model_config("mae_vit_base_patch16")
    assert (base.embed_dim, base.depth, base.num_heads, base.patch_size) == (768, 12, 12, 16)
    assert (base.decoder_embed_dim, base.decoder_depth, base.decoder_num_heads) == (512, 8, 16)
    large = model_config("mae_vit_large_patch16", depth=6)
    assert (large.embed_dim, large.depth, large.num_heads) == (1024, 6, 16)
    assert model_config("mae_vit_huge_patch14").patch_size == 14


def test_config_errors_name_the_key():
    with pytest.raises(TypeError, match="bogus"):
        model_config("mae_vit_base_patch16", bogus=1)
    with pytest.raises(ValueError, match="model.num_heads"):
        ModelConfig(num_heads=5)
    with pytest.raises(ValueError, match="model.decoder_num_heads"):
        ModelConfig(decoder_num_heads=7)
    with pytest.raises(ValueError, match="model.depth"):
        ModelConfig(depth=0)
    with pytest.raises(mim.registry.UnknownNameError, match="mae_vit_base_patch16"):
        mim.create_model("vit_gigantic")


def test_python_api_refuses_a_mask_of_the_wrong_shape_or_with_nothing_masked():
    model = tiny()
    with pytest.raises(ValueError, match=r"mask: expected bool \[B, L\] = \[2, 16\].*\[2, 15\]"):
        model(images(), random_mask(length=15, num_masked=11))
    with pytest.raises(ValueError, match=r"mask: expected bool.*torch.int64"):
        model(images(), random_mask().long())
    with pytest.raises(ValueError, match="mask: no token is masked"):
        model(images(), torch.zeros(B, L, dtype=torch.bool))
    # loss_on=all scores every token: an empty mask is fine there
    assert torch.isfinite(tiny(loss_on="all")(images(), torch.zeros(B, L, dtype=torch.bool)).loss)
