"""The sampler and ICAdapt over the real backend at its `tiny` size (CPU)."""

from __future__ import annotations

import concurrent.futures
import copy
import functools
from dataclasses import replace

import pytest
import torch

from anymole.video.clips import ClipBank, gather_clips
from anymole.video.dynamicrafter import DynamiCrafterConfig, DynamiCrafterPrior
from anymole.video.icadapt import ICAdaptConfig, encode_clip_frames, icadapt, icadapt_loss
from anymole.video.sampler import SamplerConfig, TwoStageSampler, plan_stage1
from anymole.video.schedule import DDIMSchedule

SIZE = 32  # pixels; 4×4 latents keep the CPU test fast


@functools.cache
def _base() -> DynamiCrafterPrior:
    torch.manual_seed(0)
    return DynamiCrafterPrior(DynamiCrafterConfig.tiny()).eval()


def _prior() -> tuple[DynamiCrafterPrior, DDIMSchedule]:
    """A fresh copy of one tiny prior (ICAdapt mutates it) and its schedule."""
    prior = copy.deepcopy(_base())
    return prior, DDIMSchedule(**prior.config.scheduler_kwargs())


def test_tiny_dynamicrafter_guided_window() -> None:
    prior, schedule = _prior()
    g = torch.Generator().manual_seed(3)
    context, keys = torch.rand(3, 61, SIZE, SIZE, generator=g), torch.rand(3, 1, SIZE, SIZE, generator=g)
    sampler = TwoStageSampler(prior, schedule, SamplerConfig(num_steps=2))
    plan = plan_stage1(60, 1)[0]
    pixels = {i: context[:, i] for i in range(61)} | {90: keys[:, 0]}
    slots = [i for i in range(16) if plan.keymask[i]]
    guidance = torch.stack([pixels[plan.frames[i]] for i in slots], dim=1)
    with torch.no_grad():
        z = prior.encode(guidance[None])[0]
        x = sampler.denoise_windows(
            [plan],
            pixels,
            {plan.frames[i]: z[:, k] for k, i in enumerate(slots)},
            "walk",
            torch.Generator().manual_seed(0),
        )
        decoded = prior.decode(x[:, :, slots])[0]
        reference = prior.decode(z[None])[0]
    torch.testing.assert_close(x[0][:, slots], z, atol=1e-6, rtol=0)
    torch.testing.assert_close(decoded, reference, atol=1e-5, rtol=0)  # = decode(encode(guidance))


def test_tiny_dynamicrafter_two_stage_video() -> None:
    prior, schedule = _prior()
    g = torch.Generator().manual_seed(4)
    context, keys = torch.rand(3, 61, SIZE, SIZE, generator=g), torch.rand(3, 1, SIZE, SIZE, generator=g)
    previews = []
    out = TwoStageSampler(prior, schedule, SamplerConfig(num_steps=1))(
        context,
        keys,
        "walk",
        on_step=lambda s, f, preview=None, frame=None: preview is not None and previews.append(preview),
    )
    assert out.frames.shape == (3, 15, SIZE, SIZE) and out.indices.tolist() == list(range(62, 91, 2))
    assert torch.isfinite(out.frames).all() and len(previews) == 2
    torch.testing.assert_close(out.frames[:, -1], keys[:, 0])


@pytest.mark.parametrize(
    ("mode", "ckpt", "selective"), [("spatial", False, False), ("decoder", True, True)], ids=["spatial", "decoder_sac"]
)
def test_tiny_dynamicrafter_icadapt_reduces_loss(mode: str, ckpt: bool, selective: bool) -> None:
    prior, schedule = _prior()
    encoder_before = copy.deepcopy(prior.unet.input_blocks.state_dict())
    resampler_before = copy.deepcopy(prior.image_proj.state_dict())
    frames = 17  # two 16-frame clips: every ICAdapt batch is this fixed batch
    video = torch.full((1, 3, frames, SIZE, SIZE), 0.3)
    for f in range(frames):
        video[:, :, f, 8:20, f : f + 8] = 0.9
    bank = ClipBank(video, gather_clips(1, frames, k=16, strides=(1,)), "a box sliding")
    index = torch.arange(len(bank))
    with torch.no_grad():
        x0 = encode_clip_frames(prior, bank).latents[bank.frame_rows(index)].transpose(1, 2)
    gen = torch.Generator().manual_seed(9)
    t = torch.randint(0, 1000, (len(index),), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    first, last = bank.endpoints(index)

    def loss() -> float:
        with torch.no_grad():
            cond = prior.condition([bank.caption] * len(index), first, last, bank.fps[index])
            return float(icadapt_loss(prior, schedule, x0, cond, t, noise))

    before = loss()
    cfg = ICAdaptConfig(
        steps=3,
        lr=3e-3,
        batch_size=2,
        grad_accum=1,
        mode=mode,
        autocast_dtype="fp32",
        gradient_checkpointing=ckpt,
        selective_checkpointing=selective,
    )
    result = icadapt(prior, bank, cfg, schedule=schedule)
    after = loss()
    assert after < 0.9 * before, (before, after, result.losses)
    assert result.trainable_parameters == sum(p.numel() for p in prior.parameters() if p.requires_grad)
    # Decoder mode leaves the encoder half and the resampler bit-identical; the spatial set moves them.
    encoder_same = all(torch.equal(v, prior.unet.input_blocks.state_dict()[k]) for k, v in encoder_before.items())
    resampler_same = all(torch.equal(v, prior.image_proj.state_dict()[k]) for k, v in resampler_before.items())
    assert encoder_same == resampler_same == (mode == "decoder")


def test_icadapt_dropout_on_the_cpu_is_the_seeds_alone_beside_another_run() -> None:
    """The UNet's dropout draws from the run's own stream, not torch's global RNG, which another thread uses
    meanwhile (the estimator beside, a second CPU job's ICAdapt): two runs at once, checkpointing replaying their
    dropout, adapt the prior exactly as one run alone does with the same seed, whatever the global RNG held before
    (before 06177d3: the masks were whatever the shared RNG gave each step)."""
    torch.manual_seed(0)
    base = DynamiCrafterPrior(replace(DynamiCrafterConfig.tiny(), unet=replace(DynamiCrafterConfig.tiny().unet,
                                                                             dropout=0.3))).eval()  # fmt: skip
    frames = 17
    video = torch.full((1, 3, frames, SIZE, SIZE), 0.3)
    for f in range(frames):
        video[:, :, f, 8:20, f : f + 8] = 0.9
    bank = ClipBank(video, gather_clips(1, frames, k=16, strides=(1,)), "a box sliding")
    cfg = ICAdaptConfig(steps=3, lr=3e-3, batch_size=2, grad_accum=1, mode="spatial", autocast_dtype="fp32",
                        gradient_checkpointing=True, selective_checkpointing=False)  # fmt: skip

    def adapt(seed_before: int) -> tuple[list[float], list[torch.Tensor]]:
        prior = copy.deepcopy(base)
        torch.manual_seed(seed_before)  # the global RNG as other work left it
        result = icadapt(prior, bank, cfg, schedule=DDIMSchedule(**prior.config.scheduler_kwargs()))
        return result.losses, [p.detach().clone() for p in prior.trainable_parameters("spatial")]

    alone = adapt(1)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        both = list(pool.map(adapt, (2, 3)))
    later = adapt(4)
    base.unet.apply(lambda m: setattr(m, "p", 0.0) if isinstance(m, torch.nn.Dropout) else None)
    without = adapt(1)
    for losses, params in (*both, later):
        assert losses == alone[0]
        assert all(torch.equal(a, b) for a, b in zip(params, alone[1], strict=True))
    assert without[0] != alone[0]  # the dropout is live in this test
