"""DynamiCrafterPrior: tiny-config forward passes on CPU, structure properties, adaptation round trips."""

from __future__ import annotations

import pytest
import torch
from anymole.video import attention
from anymole.video.dynamicrafter import DynamiCrafterConfig, DynamiCrafterPrior
from anymole.video.prior import VideoCondition, VideoPrior
from anymole.video.unet3d import TemporalConvBlock, TemporalTransformer

T, H, W = 16, 64, 64  # tiny: 8×8 latents


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Two shared cores: several intra-op threads per process oversubscribe them (10× slower here).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _randomize(module: torch.nn.Module, seed: int = 0, std: float = 0.05) -> None:
    """Non-zero values everywhere (fresh models have zero-initialised output layers)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            scale = 1.0 if p.ndim == 1 and name.endswith("weight") else 0.0  # norm gains around 1
            p.copy_(torch.randn(p.shape, generator=gen) * std + scale)


@pytest.fixture(scope="module")
def prior() -> DynamiCrafterPrior:
    torch.manual_seed(0)
    model = DynamiCrafterPrior(DynamiCrafterConfig.tiny()).eval()
    _randomize(model.unet)
    _randomize(model.image_proj, seed=1)
    return model


def _cond(prior: DynamiCrafterPrior, seed: int = 0, per_frame: bool = True) -> VideoCondition:
    gen = torch.Generator().manual_seed(seed)
    cfg = prior.config
    length = cfg.unet.text_context_len + (cfg.unet.image_tokens_per_frame * T if per_frame else 3)
    return VideoCondition(
        context=torch.randn(1, length, cfg.unet.context_dim, generator=gen),
        concat=torch.randn(1, 4, T, 8, 8, generator=gen),
        fps=torch.tensor([10.0]),
    )


def test_tiny_prior_satisfies_protocol_and_predicts_latent_shape(prior):
    assert isinstance(prior, VideoPrior)
    assert (prior.latent_channels, prior.vae_scale_factor, prior.num_frames) == (4, 8, 16)
    assert (prior.prediction_type, prior.num_train_timesteps) == ("v", 1000)
    z = torch.randn(1, 4, T, 8, 8)
    with torch.no_grad():
        v = prior.predict(z, torch.tensor([500]), _cond(prior))
    assert v.shape == z.shape and v.dtype == z.dtype
    assert torch.isfinite(v).all() and v.abs().mean() > 1e-3


def test_fresh_unet_outputs_zero_as_reference_init():
    model = DynamiCrafterPrior(DynamiCrafterConfig.tiny()).eval()
    with torch.no_grad():
        v = model.predict(torch.randn(1, 4, T, 8, 8), torch.tensor([10]), _cond(model))
    assert torch.equal(v, torch.zeros_like(v))


def _zero_temporal(model: DynamiCrafterPrior) -> None:
    for m in model.unet.modules():
        if isinstance(m, (TemporalConvBlock, TemporalTransformer)):
            m.reset_parameters()  # zero output layer: the block becomes the identity


def test_without_temporal_layers_frames_are_independent():
    """Spatial layers fold frames into the batch; with temporal blocks at identity and a context shared by
    all frames, reversing the input frames reverses the output."""
    model = DynamiCrafterPrior(DynamiCrafterConfig.tiny()).eval()
    _randomize(model.unet)
    _zero_temporal(model)
    cond = _cond(model, per_frame=False)
    z = torch.randn(1, 4, T, 8, 8)
    rev = VideoCondition(cond.context, cond.concat.flip(2), cond.fps)
    with torch.no_grad():
        out = model.predict(z, torch.tensor([300]), cond)
        out_rev = model.predict(z.flip(2), torch.tensor([300]), rev)
    torch.testing.assert_close(out_rev, out.flip(2), atol=1e-5, rtol=1e-4)


def test_temporal_layers_mix_frames(prior):
    cond = _cond(prior)
    z = torch.randn(1, 4, T, 8, 8)
    z2 = z.clone()
    z2[:, :, 0] += 1.0
    with torch.no_grad():
        a = prior.predict(z, torch.tensor([300]), cond)
        b = prior.predict(z2, torch.tensor([300]), cond)
    assert (a[:, :, -1] - b[:, :, -1]).abs().max() > 1e-4  # the last frame sees the first


def test_fps_and_timestep_change_the_output(prior):
    cond = _cond(prior)
    z = torch.randn(1, 4, T, 8, 8)
    other_fps = VideoCondition(cond.context, cond.concat, torch.tensor([30.0]))
    with torch.no_grad():
        base = prior.predict(z, torch.tensor([300]), cond)
        by_fps = prior.predict(z, torch.tensor([300]), other_fps)
        by_t = prior.predict(z, torch.tensor([301]), cond)
    assert (base - by_fps).abs().max() > 1e-4
    assert (base - by_t).abs().max() > 1e-5


def test_image_tokens_are_split_per_frame(prior):
    """With 8 text + 2·16 image tokens, frame k attends to its own 2 image tokens only: changing frame 5's
    tokens with the temporal layers at identity changes frame 5's output and no other."""
    model = DynamiCrafterPrior(DynamiCrafterConfig.tiny()).eval()
    _randomize(model.unet)
    _zero_temporal(model)
    cond = _cond(model)
    ctx = cond.context.clone()
    k, text, per = 5, model.config.unet.text_context_len, model.config.unet.image_tokens_per_frame
    ctx[:, text + k * per : text + (k + 1) * per] += 1.0
    z = torch.randn(1, 4, T, 8, 8)
    with torch.no_grad():
        a = model.predict(z, torch.tensor([300]), cond)
        b = model.predict(z, torch.tensor([300]), VideoCondition(ctx, cond.concat, cond.fps))
    diff = (a - b).abs().amax(dim=(0, 1, 3, 4))
    assert diff[k] > 1e-4
    assert torch.all(diff[torch.arange(T) != k] < 1e-6)


def test_math_and_sdpa_attention_agree(prior):
    cond, z = _cond(prior), torch.randn(1, 4, T, 8, 8)
    with torch.no_grad():
        sdpa = prior.predict(z, torch.tensor([700]), cond)
        attention.set_backend("math")
        try:
            ref = prior.predict(z, torch.tensor([700]), cond)
        finally:
            attention.set_backend("sdpa")
    torch.testing.assert_close(sdpa, ref, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="backend"):
        attention.set_backend("xformers")


def test_bf16_autocast_close_to_float32(prior):
    cond, z = _cond(prior), torch.randn(1, 4, T, 8, 8)
    with torch.no_grad():
        ref = prior.predict(z, torch.tensor([700]), cond)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = prior.predict(z, torch.tensor([700]), cond)
    assert low.dtype == torch.float32
    assert (low - ref).norm() / ref.norm() < 0.05


def test_gradient_checkpointing_gives_identical_gradients():
    model = DynamiCrafterPrior(DynamiCrafterConfig.tiny())
    _randomize(model.unet)
    model.trainable_parameters("spatial")
    params = [p for p in model.unet.parameters() if p.requires_grad]
    cond, z = _cond(model), torch.randn(1, 4, T, 8, 8)

    def grads() -> list[torch.Tensor]:
        model.zero_grad()
        model.predict(z, torch.tensor([400]), cond).square().mean().backward()
        return [p.grad.clone() for p in params]

    plain = grads()
    model.enable_gradient_checkpointing(True)
    recomputed = grads()
    model.enable_gradient_checkpointing(False)
    for a, b in zip(plain, recomputed, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
