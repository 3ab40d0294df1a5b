"""ICAdapt with the small conv prior: the loss drops, only the chosen parameters move, CFG dropout cases."""

from __future__ import annotations

import pytest
import torch

from anymole.errors import InvalidInput
from anymole.video.clips import ClipBank, gather_clips
from anymole.video.icadapt import ICAdaptConfig, _dropout_condition, encode_clip_frames, icadapt, icadapt_loss
from anymole.video.schedule import DDIMSchedule


def _bank(views: int = 2, frames: int = 20, size: int = 8) -> ClipBank:
    # A moving square: a learnable, scene-specific pattern.
    t = torch.arange(frames)
    video = torch.full((views, 3, frames, size, size), 0.2)
    for f in range(frames):
        x = int(t[f]) % (size - 2)
        video[:, :, f, 2:5, x : x + 2] = 0.9
    return ClipBank(video, gather_clips(views, frames, k=16, strides=(1,)), "a square moving")


def _fixed_batch(prior, bank: ClipBank, schedule: DDIMSchedule):
    g = torch.Generator().manual_seed(7)
    index = torch.arange(len(bank))
    x0 = encode_clip_frames(prior, bank).latents[bank.frame_rows(index)].transpose(1, 2)
    first, last = bank.endpoints(index)
    t = torch.randint(0, 1000, (len(index),), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    return x0, first, last, bank.fps[index], t, noise


def test_icadapt_reduces_loss_on_fixed_batch(conv_prior) -> None:
    bank, schedule = _bank(), DDIMSchedule()
    x0, first, last, fps, t, noise = _fixed_batch(conv_prior, bank, schedule)

    def loss() -> float:
        with torch.no_grad():
            cond = conv_prior.condition([bank.caption] * len(t), first, last, fps)
            return float(icadapt_loss(conv_prior, schedule, x0, cond, t, noise))

    temporal_before = conv_prior.temporal.weight.detach().clone()
    spatial_before = conv_prior.spatial.weight.detach().clone()
    before = loss()
    fractions: list[float] = []
    cfg = ICAdaptConfig(steps=12, lr=1e-2, batch_size=4, grad_accum=1, autocast_dtype="fp32")
    result = icadapt(conv_prior, bank, cfg, on_step=lambda stage, f, preview=None: fractions.append(f))
    after = loss()
    assert after < 0.8 * before, (before, after)
    assert len(result.losses) == 12 and fractions[-1] == 1.0 and len(fractions) == 12
    # Spatial mode: temporal layers and time/fps embeddings stay frozen; spatial ones moved.
    torch.testing.assert_close(conv_prior.temporal.weight, temporal_before, rtol=0, atol=0)
    assert not torch.equal(conv_prior.spatial.weight, spatial_before)
    assert result.trainable_parameters == sum(p.numel() for p in conv_prior.trainable_parameters("spatial"))
    trainable = {id(p) for p in conv_prior.trainable_parameters("spatial")}
    assert all(p.requires_grad == (id(p) in trainable) for p in conv_prior.parameters())
    assert not conv_prior.training


def test_icadapt_is_seeded(conv_prior, make_conv_prior) -> None:
    twin = make_conv_prior()
    cfg = ICAdaptConfig(steps=3, lr=1e-3, autocast_dtype="fp32", gradient_checkpointing=False)
    a = icadapt(conv_prior, _bank(), cfg).losses
    b = icadapt(twin, _bank(), ICAdaptConfig(steps=3, lr=1e-3, autocast_dtype="fp32")).losses
    assert a == pytest.approx(b, rel=1e-5)  # checkpointing changes memory, not the numbers



def test_gradients_left_on_the_prior_do_not_leak_into_the_first_step(conv_prior, make_conv_prior) -> None:
    twin = make_conv_prior()
    for p in twin.trainable_parameters("spatial"):
        p.grad = torch.full_like(p, 1e3)  # e.g. from a caller's own backward before adapting
    cfg = ICAdaptConfig(steps=2, lr=1e-3, autocast_dtype="fp32", gradient_checkpointing=False)
    a = icadapt(conv_prior, _bank(), cfg)
    b = icadapt(twin, _bank(), cfg)
    assert a.losses == pytest.approx(b.losses, rel=1e-6)
    for pa, pb in zip(conv_prior.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(pa, pb)

def test_conditioning_dropout_cases(conv_prior) -> None:
    bank = _bank()
    index = torch.arange(4)
    first, last = bank.endpoints(index)
    fps = bank.fps[index]
    p = 0.05
    u = torch.tensor([0.01, 0.07, 0.12, 0.5])  # text only, text+image, image only, none
    cond = _dropout_condition(conv_prior, bank.caption, first, last, fps, u, p)
    full = conv_prior.condition([bank.caption] * 4, first, last, fps)
    empty = conv_prior.condition([""] * 4, first, last, fps)
    null = conv_prior.unconditional(full)
    text = slice(0, 4)  # ConvPrior: 4 text tokens, then 2 image tokens
    image = slice(4, 6)
    torch.testing.assert_close(cond.context[0], empty.context[0])
    torch.testing.assert_close(cond.context[1], null.context[1])
    torch.testing.assert_close(cond.context[2, text], full.context[2, text], rtol=0, atol=0)
    torch.testing.assert_close(cond.context[2, image], null.context[2, image], rtol=0, atol=0)  # exact
    torch.testing.assert_close(cond.context[3], full.context[3])
    torch.testing.assert_close(cond.concat, full.concat)  # the frame latents are never dropped


def test_presets_keep_the_recipe_and_differ_only_where_documented() -> None:
    ref, fast = ICAdaptConfig.reference(), ICAdaptConfig.fast()
    assert ref == ICAdaptConfig() and (ref.mode, ref.selective_checkpointing, ref.compile) == ("spatial", False, False)
    assert (ref.steps, ref.lr, ref.batch_size, ref.grad_accum) == (500, 1e-5, 4, 2)  # the reference trainer's
    same = ("steps", "lr", "grad_clip", "weight_decay", "uncond_prob", "seed", "autocast_dtype", "compile")
    assert all(getattr(fast, k) == getattr(ref, k) for k in same)
    assert (fast.steps, fast.lr, fast.batch_size * fast.grad_accum) == (500, 1e-5, 8)
    assert (fast.mode, fast.gradient_checkpointing, fast.batch_size, fast.grad_accum) == ("decoder", True, 8, 1)
    assert ICAdaptConfig.fast(steps=20).steps == 20 and ICAdaptConfig.fast(steps=20).mode == "decoder"
    with pytest.raises(InvalidInput, match="selective_checkpointing"):
        ICAdaptConfig(gradient_checkpointing=False, selective_checkpointing=True)


def test_turbo_preset_keeps_the_recipe_and_compiles_a_lora_top_step() -> None:
    ref, turbo = ICAdaptConfig.reference(), ICAdaptConfig.turbo()
    same = ("steps", "grad_clip", "weight_decay", "uncond_prob", "seed", "autocast_dtype")
    assert all(getattr(turbo, k) == getattr(ref, k) for k in same)
    assert turbo.lr == 1e-4 == 10 * ref.lr  # adapters need a LoRA rate, not a full fine-tune's
    assert (turbo.mode, turbo.batch_size, turbo.grad_accum) == ("lora_top", 8, 1)
    assert (turbo.gradient_checkpointing, turbo.compile, turbo.compile_memory_budget) == (False, True, 1.0)
    assert ICAdaptConfig.turbo(steps=3).steps == 3
    with pytest.raises(InvalidInput, match="compile_memory_budget"):
        ICAdaptConfig(compile_memory_budget=0.5)  # without compile it would silently do nothing
    for bad in (0.0, 1.5):
        with pytest.raises(InvalidInput, match="compile_memory_budget"):
            ICAdaptConfig(compile=True, compile_memory_budget=bad)


def test_config_validation() -> None:
    with pytest.raises(InvalidInput, match="mode"):
        ICAdaptConfig(mode="temporal")
    with pytest.raises(InvalidInput, match="steps"):
        ICAdaptConfig(steps=0)
    with pytest.raises(InvalidInput, match="autocast_dtype"):
        ICAdaptConfig(autocast_dtype="fp8")
    assert ICAdaptConfig().steps == 500 and ICAdaptConfig().lr == 1e-5 and ICAdaptConfig().grad_clip == 0.5


def test_one_micro_batch_of_8_equals_4x2_accumulation(conv_prior) -> None:
    """One micro-batch of 8 gives the gradient of the reference trainer's 4 × 2 (equal halves)."""
    bank, schedule = _bank(views=4), DDIMSchedule()
    x0, first, last, fps, t, noise = _fixed_batch(conv_prior, bank, schedule)
    x0, first, last, fps, t, noise = (a[:8] for a in (x0, first, last, fps, t, noise))
    params = list(conv_prior.trainable_parameters("spatial"))

    def grads(parts: int) -> list[torch.Tensor]:
        conv_prior.zero_grad()
        for idx in torch.arange(8).chunk(parts):
            cond = conv_prior.condition([bank.caption] * len(idx), first[idx], last[idx], fps[idx])
            (icadapt_loss(conv_prior, schedule, x0[idx], cond, t[idx], noise[idx]) / parts).backward()
        return [p.grad.clone() for p in params]

    for a, b in zip(grads(1), grads(2), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_a_bank_smaller_than_the_micro_batch_is_reported(conv_prior, caplog) -> None:
    """The micro-batch shrinks to the clips there are (5 here, not 8): a run says so instead of hiding it."""
    bank = _bank(views=1)  # 20 frames, k = 16: 5 clips
    assert len(bank) == 5
    cfg = ICAdaptConfig(steps=1, batch_size=8, grad_accum=1, autocast_dtype="fp32", gradient_checkpointing=False)
    with caplog.at_level("WARNING", logger="anymole.video.icadapt"):
        icadapt(conv_prior, bank, cfg)
    assert "5 clips, fewer than batch_size=8" in caplog.text and "(5 clips a step, not 8)" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="anymole.video.icadapt"):
        icadapt(conv_prior, bank, ICAdaptConfig(steps=1, batch_size=4, autocast_dtype="fp32"))
    assert "fewer than" not in caplog.text
