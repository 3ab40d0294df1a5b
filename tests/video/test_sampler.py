"""Algorithm 2 window plans, guided inpainting, CFG and the sampler end to end with a small conv prior."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from anymole.errors import InvalidInput
from anymole.video.sampler import (
    SamplerConfig,
    TwoStageSampler,
    classifier_free_guidance,
    plan_stage1,
    plan_stage2,
    replace_known,
    window_fps,
)
from anymole.video.schedule import DDIMSchedule


def _slots(flags: tuple[bool, ...]) -> list[int]:
    return [i for i, f in enumerate(flags) if f]


def test_stage1_reference_layout() -> None:
    """The reference's slot layouts (anymole_reference_code.md §4) for 61 context frames."""
    p0, p1, p2, p3 = plan_stage1(context_end=60, num_gaps=4)
    assert p0.frames == tuple(range(0, 91, 6)) and p0.fps == 5.0
    assert _slots(p0.keymask) == list(range(1, 11)) and p0.mask == p0.keymask
    assert p0.writes == (11, 12, 13, 14) and [p0.frames[i] for i in p0.writes] == [66, 72, 78, 84]
    assert p1.frames[0] == 30 and p1.frames[15] == 120
    assert _slots(p1.keymask) == [1, 2, 3, 4, 5, 10]
    assert _slots(p1.mask) == list(range(1, 11))  # slots 6-9: stage-1 frames 66…84
    assert [p1.frames[i] for i in range(6, 10)] == [66, 72, 78, 84] and p1.frames[10] == 90
    for g, p in ((2, p2), (3, p3)):
        key = 60 + 30 * g
        assert p.frames[0] == key - 60 and p.frames[5] == key - 30 and p.frames[10] == key
        assert p.frames[15] == key + 30
        assert _slots(p.keymask) == [5, 10] and _slots(p.mask) == list(range(1, 11))
        assert [p.frames[i] for i in p.writes] == [key + 6, key + 12, key + 18, key + 24]


def test_stage2_reference_layout() -> None:
    for g, p in enumerate(plan_stage2(context_end=60, num_gaps=3)):
        key = 60 + 30 * g
        assert p.fps == 15.0 and p.frames == tuple(range(key, key + 31, 2))
        assert _slots(p.mask) == [3, 6, 9, 12] and not any(p.keymask)
        assert p.writes == tuple(range(1, 15))


@settings(max_examples=40, deadline=None)
@given(context_end=st.integers(60, 100), num_gaps=st.integers(1, 8))
def test_windows_cover_every_target_frame(context_end: int, num_gaps: int) -> None:
    keys = {context_end + 30 * j for j in range(num_gaps + 1)}
    last_key = max(keys)
    known = set(range(context_end + 1)) | keys
    coarse_targets = {k + d for k in keys - {last_key} for d in (6, 12, 18, 24)}
    written: list[int] = []
    for p in plan_stage1(context_end, num_gaps):
        assert p.frames[0] in known and p.frames[-1] in known  # c_concat ends are real frames
        for i in range(16):
            if p.mask[i]:
                assert p.frames[i] in known, "guidance must exist before the window runs"
            if p.keymask[i]:
                assert p.frames[i] <= context_end or p.frames[i] in keys
        new = [p.frames[i] for i in p.writes]
        written += new
        known |= set(new)
    assert sorted(written) == sorted(coarse_targets)  # each coarse frame exactly once
    fine_targets = set(range(context_end + 2, last_key, 2)) - keys
    fine: list[int] = []
    for p in plan_stage2(context_end, num_gaps):
        assert p.frames[0] in keys and p.frames[-1] in keys
        assert all(p.frames[i] in coarse_targets for i in _slots(p.mask))
        fine += [p.frames[i] for i in p.writes]
    assert sorted(fine) == sorted(fine_targets) and len(fine_targets) == 14 * num_gaps


def test_short_context_is_rejected() -> None:
    with pytest.raises(InvalidInput, match="2 s of context"):
        plan_stage1(context_end=45, num_gaps=2)
    with pytest.raises(InvalidInput, match="keyframe"):
        plan_stage2(context_end=60, num_gaps=0)


def test_replace_known() -> None:
    s = DDIMSchedule()
    x = torch.randn(2, 3, 4, 2, 2)
    known = torch.randn_like(x)
    noise = torch.randn_like(x)
    mask = torch.tensor([True, False, True, False]).reshape(1, 1, 4, 1, 1).expand(2, 1, 4, 1, 1)
    out = replace_known(x, known, mask, 500, s, noise)
    q = s.add_noise(known, noise, 500)
    torch.testing.assert_close(out[:, :, [0, 2]], q[:, :, [0, 2]])
    torch.testing.assert_close(out[:, :, [1, 3]], x[:, :, [1, 3]])
    torch.testing.assert_close(replace_known(x, known, mask, -1, s, noise)[:, :, 0], known[:, :, 0])


def test_cfg_and_rescale() -> None:
    c, u = torch.randn(2, 3, 4, 5).unbind(0)
    c, u = c[None], u[None]
    plain = classifier_free_guidance(c, u, 7.5, 0.0)
    torch.testing.assert_close(plain, u + 7.5 * (c - u))
    full = classifier_free_guidance(c, u, 7.5, 1.0)
    torch.testing.assert_close(full.std(), c.std(), rtol=1e-5, atol=1e-6)
    mix = classifier_free_guidance(c, u, 7.5, 0.7)
    torch.testing.assert_close(mix, 0.7 * full + 0.3 * plain)


def test_condition_cat_stacks_the_batch(conv_prior) -> None:
    """CFG's one batched pass: ``[cond ; uncond]`` row by row, every field."""
    first = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    cond = conv_prior.condition(["walk", "run"], first, first.flip(0), torch.tensor([5.0, 15.0]))
    null = conv_prior.unconditional(cond)
    both = cond.cat(null)
    assert both.context.shape[0] == both.concat.shape[0] == both.fps.shape[0] == 4
    for got, a, b in ((both.context, cond.context, null.context), (both.concat, cond.concat, null.concat)):
        assert torch.equal(got[:2], a) and torch.equal(got[2:], b)
    assert both.fps.tolist() == [5.0, 15.0, 5.0, 15.0]


def _scene(h: int = 8, w: int = 8, context: int = 61, gaps: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(3, context, h, w, generator=g), torch.rand(3, gaps, h, w, generator=g)


def test_keymask_frames_come_back_equal_to_guidance(conv_prior) -> None:
    """Known (keymask) slots leave the sampler as their guidance's latents; decoded, as the guidance."""
    context, keys = _scene()
    sampler = TwoStageSampler(conv_prior, DDIMSchedule(), SamplerConfig(num_steps=6, guidance_scale=2.0))
    plan = plan_stage1(60, 2)[0]  # slots 1-10: context frames 6…60 (keymask); 11-14 generated
    pixels = {i: context[:, i] for i in range(61)} | {90: keys[:, 0], 120: keys[:, 1]}
    key_slots = _slots(plan.keymask)
    guidance = torch.stack([pixels[plan.frames[i]] for i in key_slots], dim=1)
    z = conv_prior.encode(guidance[None])[0]
    latents = {plan.frames[i]: z[:, k] for k, i in enumerate(key_slots)}
    x = sampler.denoise_windows([plan], pixels, latents, "walk", torch.Generator().manual_seed(0))
    torch.testing.assert_close(x[0][:, key_slots], z, atol=1e-6, rtol=0)
    video = conv_prior.decode(x)[0]
    torch.testing.assert_close(video[:, key_slots], guidance, atol=1e-5, rtol=0)  # VAE round trip
    # The generated slots are not copies of the guidance.
    assert (video[:, list(plan.writes)] - guidance[:, -1:]).abs().max() > 0.05


def test_sampler_end_to_end(conv_prior) -> None:
    context, keys = _scene(gaps=3)
    calls: list[int] = []
    predict = conv_prior.predict

    def counting(latents, t, cond):
        calls.append(latents.shape[0])
        return predict(latents, t, cond)

    conv_prior.predict = counting
    events: list[tuple[str, float, object]] = []
    cfg = SamplerConfig(num_steps=4, stage2_batch=2)
    out = TwoStageSampler(conv_prior, DDIMSchedule(), cfg)(
        context, keys, "walk", on_step=lambda stage, f, preview=None, frame=None: events.append((stage, f, (preview, frame)))
    )
    assert out.frames.shape == (3, 45, 8, 8) and out.indices.tolist() == list(range(62, 151, 2))
    for j in range(3):  # keys are the given keys
        torch.testing.assert_close(out.frames[:, 14 + 15 * j], keys[:, j])
    assert float(out.frames.min()) >= 0 and float(out.frames.max()) <= 1
    # Cost: 3 coarse windows + 3 fine windows (batched 2 + 1), 4 steps each, CFG doubles the batch.
    assert calls == [2] * 12 + [4] * 4 + [2] * 4
    fractions = [f for _, f, (p, _) in events if p is None]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    previews = [(p, frame) for _, _, (p, frame) in events if p is not None]
    assert len(previews) == 6 and all(p.shape == (3, 8, 8) for p, _ in previews)
    plans = plan_stage1(60, 3) + plan_stage2(60, 3)  # the order windows finish in
    assert [frame for _, frame in previews] == [p.frames[p.writes[len(p.writes) // 2]] for p in plans]
    for image, frame in previews[3:]:  # a fine window's preview is its frame of the result
        torch.testing.assert_close(image, out.frames[:, out.indices.tolist().index(frame)])
    assert {s for s, _, _ in events} == {"sample_video"}
    # Same seed, same video.
    again = TwoStageSampler(conv_prior, DDIMSchedule(), cfg)(context, keys, "walk")
    torch.testing.assert_close(again.frames, out.frames)


def test_window_fps_follows_each_gaps_real_length() -> None:
    """A gap of L s is one render second: its windows keep the reference layout, their fps condition is the
    reference's divided by L (whole fps), clamped to the trained range for very short and the longest gaps."""
    seconds = (0.5, 1.0, 1.7, 0.1, 2.0, 0.96)
    coarse, fine = plan_stage1(60, 6, seconds), plan_stage2(60, 6, seconds)
    assert [p.fps for p in fine] == [30.0, 15.0, 9.0, 30.0, 8.0, 16.0]
    assert [p.fps for p in coarse] == [10.0, 5.0, 3.0, 10.0, 3.0, 5.0]
    for warped, plain in zip(coarse + fine, plan_stage1(60, 6) + plan_stage2(60, 6), strict=True):
        assert (warped.frames, warped.mask, warped.keymask, warped.writes) == (
            plain.frames, plain.mask, plain.keymask, plain.writes)  # fmt: skip
    assert window_fps(15, 5.0) == 8.0 and window_fps(15, 0.01) == 30.0  # beyond the limits: clamped
    with pytest.raises(InvalidInput, match="gap_seconds"):
        plan_stage2(60, 2, (1.0,))


def test_sampler_conditions_each_window_on_its_gaps_fps(conv_prior) -> None:
    context, keys = _scene(gaps=3)
    seen: list[list[float]] = []
    condition = conv_prior.condition

    def recording(prompts, first, last, fps, **kw):
        seen.append(fps.tolist())
        return condition(prompts, first, last, fps, **kw)

    conv_prior.condition = recording
    TwoStageSampler(conv_prior, DDIMSchedule(), SamplerConfig(num_steps=1, stage2_batch=3))(
        context, keys, "walk", gap_seconds=(0.5, 1.7, 1.0)
    )
    assert seen == [[10.0], [3.0], [5.0], [30.0, 9.0, 15.0]]


def test_sampler_checks_inputs(conv_prior) -> None:
    sampler = TwoStageSampler(conv_prior, DDIMSchedule(), SamplerConfig(num_steps=1))
    context, keys = _scene()
    with pytest.raises(InvalidInput, match="context"):
        sampler(context[:, :40], keys, "x")
    with pytest.raises(InvalidInput, match="key_images"):
        sampler(context, keys[:, :, :4], "x")
    with pytest.raises(InvalidInput, match="multiples"):
        sampler(context[:, :, :7, :7], keys[:, :, :7, :7], "x")
    with pytest.raises(InvalidInput):
        SamplerConfig(num_steps=0)
    with pytest.raises(InvalidInput, match="autocast_dtype"):
        SamplerConfig(autocast_dtype="fp8")
