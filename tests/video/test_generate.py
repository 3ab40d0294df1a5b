"""`anymole.video.generate`: the request ↔ 30 fps timeline mapping, end-aligned context resampling, and the
video stage end to end on the Fox with a small conv prior (previews, cache, weights restored, cancel)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from anymole.errors import InvalidInput, JobCancelled
from anymole.rig import Keyframes, Motion
from anymole.rig.quat import quat_mul
from anymole.video.cache import AdaptationCache
from anymole.video.generate import (
    VideoJobConfig,
    decode_mp4,
    encode_mp4,
    generate_video,
    plan_timeline,
    preview_frames,
    render_scene,
    resample_context,
    sampler_windows,
)
from anymole.video.icadapt import ICAdaptConfig
from anymole.video.sampler import SamplerConfig, plan_stage1, plan_stage2
from asset_files import cached_load


# ---------------------------------------------------------------------------------------------- timeline
@given(fps=st.sampled_from([10, 15, 24, 25, 30, 48, 50, 60, 120]), extra=st.integers(0, 40), gaps=st.integers(1, 5))
def test_timeline_maps_context_end_and_keys_exactly(fps: int, extra: int, gaps: int) -> None:
    context = 2 * fps + 1 + extra
    end = context - 1
    keys = [end + fps * (j + 1) for j in range(gaps)]
    tl = plan_timeline(context, fps, keys)
    assert tl.render_context_frames == math.floor(end * 30 / fps + 1e-3) + 1 >= 61
    assert tl.to_request(tl.render_context_end) == end
    assert [tl.to_request(tl.render_context_end + 30 * (j + 1)) for j in range(gaps)] == keys
    times = tl.render_times()
    assert times[-1].item() == end and times[0].item() >= 0
    torch.testing.assert_close(times.diff(), torch.full((len(times) - 1,), fps / 30, dtype=torch.float64))


def test_timeline_at_a_bvh_frame_rate() -> None:
    """A BVH frame time of 0.0333333 s is 30.00003 fps: 61 frames are 2 s to within 1e-3 frame, keys 30 apart."""
    fps = 1 / 0.0333333
    tl = plan_timeline(61, fps, [90, 120])
    assert tl.render_context_frames == 61 and tl.to_request(120) == 120
    out = resample_context(_spinning(61, fps), tl)
    assert out.num_frames == 61


def test_timeline_at_24_fps() -> None:
    tl = plan_timeline(49, 24.0, [72, 96])
    assert (tl.render_context_frames, tl.num_gaps) == (61, 2)
    # The 15 fps output frames (render 62, 64, …) land on the nearest 24 fps request frames.
    assert [tl.to_request(f) for f in (62, 64, 66, 90, 92, 120)] == [50, 51, 53, 72, 74, 96]


@pytest.mark.parametrize(
    ("context", "fps", "keys", "field", "hint"),
    [
        (61, 30.0, [121], "keyframes", "at most 2 s (60 frames at 30 fps)"),  # a 2 s 1-frame gap
        (61, 30.0, [90, 151], "keyframes", "keyframe 151 is 2.03 s"),
        (49, 24.0, [97], "keyframes", "48 frames at 24 fps"),
        (61, 30.0, [90, 90], "keyframes", "must increase"),
        (61, 30.0, [60], "keyframes", "must increase"),
        (60, 30.0, [89], "context", "61 frames"),
        (48, 24.0, [72], "context", "49 frames at 24 fps"),
        (61, 30.0, [], "keyframes", "at least one"),
    ],
)
def test_timeline_refuses_what_the_sampler_cannot_do(context, fps, keys, field, hint) -> None:
    with pytest.raises(InvalidInput) as err:
        plan_timeline(context, fps, keys)
    assert err.value.field == field and hint in err.value.reason


@given(
    fps=st.sampled_from([24.0, 25.0, 29.97, 30.0, 60.0, 1 / 0.0333333]),
    gaps=st.lists(st.floats(0.02, 2.0), min_size=1, max_size=5),
)
def test_timeline_maps_uneven_gaps_onto_one_render_second_each(fps: float, gaps: list[float]) -> None:
    """Keys at any spacing (not on 30 fps frames, gaps of different lengths): every key sits on its render
    second, the video frames in between spread linearly over the gap, and the map inverts."""
    context = math.ceil(2 * fps) + 1
    keys: list[int] = []
    for seconds in gaps:
        keys.append((keys[-1] if keys else context - 1) + max(1, math.floor(seconds * fps)))
    tl = plan_timeline(context, fps, keys)
    r0 = tl.render_context_end
    assert [tl.to_request(r0 + 30 * (j + 1)) for j in range(len(keys))] == keys
    assert tl.to_request(r0) == context - 1
    render = torch.arange(r0 - 30, r0 + 30 * len(keys) + 1)
    pos = tl.request_positions(render)
    assert bool((pos.diff() > 0).all())  # monotone
    torch.testing.assert_close(pos[:31], (context - 1) - torch.arange(30, -1, -1, dtype=torch.float64) * fps / 30)
    bounds = torch.tensor([context - 1, *keys], dtype=torch.float64)
    for g in range(len(keys)):  # each gap: equal steps from its opening to its closing key
        seg = pos[30 + 30 * g : 30 + 30 * (g + 1) + 1]
        torch.testing.assert_close(seg.diff(), torch.full((30,), float(bounds[g + 1] - bounds[g]) / 30, dtype=torch.float64))
    frames = torch.arange(context - 1, keys[-1] + 1)
    torch.testing.assert_close(tl.request_positions(tl.render_positions(frames)), frames.double())
    torch.testing.assert_close(torch.tensor(tl.gap_seconds, dtype=torch.float64), bounds.diff() / fps, rtol=0, atol=1e-12)


def _spinning(frames: int, fps: float, joints: int = 3) -> Motion:
    """Every joint spins about +Y at 1 rad/s (a different phase each), the root moves at (1, 0, −2) m/s:
    SLERP and lerp between samples of it are exact at any time in between."""
    t = torch.arange(frames, dtype=torch.float64) / fps
    return _at(t, joints, fps)


def _at(t: torch.Tensor, joints: int, fps: float) -> Motion:
    half = 0.5 * t[:, None] + 0.3 * torch.arange(joints, dtype=torch.float64)
    q = torch.stack((torch.zeros_like(half), half.sin(), torch.zeros_like(half), half.cos()), -1)
    tilt = torch.tensor([0.2, 0.0, 0.0, 1.0], dtype=torch.float64)
    rot = quat_mul(tilt / tilt.norm(), q)
    root = t[:, None] * torch.tensor([1.0, 0.0, -2.0], dtype=torch.float64)
    tr = torch.zeros(len(t), joints, 3, dtype=torch.float64)
    tr[:, 0] = root
    return Motion(fps=fps, rotations=rot, root_translation=root, translations=tr)


@pytest.mark.parametrize(("fps", "frames"), [(24.0, 53), (25.0, 51), (60.0, 131), (30.0, 70)])
def test_resample_context_is_the_motion_at_30_fps_ending_on_its_last_frame(fps: float, frames: int) -> None:
    ctx = _spinning(frames, fps)
    tl = plan_timeline(frames, fps, [frames - 1 + int(fps)])
    out = resample_context(ctx, tl)
    n = tl.render_context_frames
    assert out.fps == 30.0 and out.num_frames == n
    t = (frames - 1) / fps - torch.arange(n - 1, -1, -1, dtype=torch.float64) / 30
    want = _at(t, 3, 30.0)
    dot = (out.rotations * want.rotations).sum(-1).abs()
    torch.testing.assert_close(dot, torch.ones_like(dot), rtol=0, atol=1e-9)
    torch.testing.assert_close(out.root_translation, want.root_translation, rtol=0, atol=1e-9)
    torch.testing.assert_close(out.translations, want.translations, rtol=0, atol=1e-9)
    if fps in (30.0, 60.0):  # whole-frame positions: the context's own samples, bit for bit
        step = int(fps // 30)
        assert torch.equal(out.rotations, ctx.rotations[frames - 1 - step * (n - 1) :: step])


def test_preview_frames_follow_the_window_plans() -> None:
    tl = plan_timeline(61, 30.0, [90, 120, 150])
    windows = sampler_windows(tl)
    assert [(p.stage, p.gap) for p in windows] == [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]
    assert len(windows) == len(plan_stage1(60, 3)) + len(plan_stage2(60, 3))
    # Stage 1 shows its third written frame (key + 18), stage 2 the eighth (key + 16).
    assert preview_frames(tl) == [78, 108, 138, 76, 106, 136]


# ---------------------------------------------------------------------------------------------- the stage
FOX_CONTEXT, FOX_KEYS, FOX_POSES = 49, [72, 96], [72, 82]


def _fox_inputs():
    fox = cached_load("Fox.glb")
    motion = fox.motions["Survey"]
    return fox, motion.slice(0, FOX_CONTEXT), FOX_KEYS, motion.rotations[FOX_POSES], motion.root_translation[FOX_POSES]


CFG = VideoJobConfig(
    width=96,
    height=64,
    views=2,
    icadapt=ICAdaptConfig(steps=1, batch_size=2, grad_accum=1, mode="spatial"),
    sampler=SamplerConfig(num_steps=2, seed=5),
)


def _fox_scene(keys: int = 2, on_step=None):
    """The Fox job's timeline and renders (its first ``keys`` keyframes) at `CFG`'s size."""
    fox, ctx, key_frames, rots, roots = _fox_inputs()
    tl = plan_timeline(ctx.num_frames, ctx.fps, key_frames[:keys])
    kw = {} if on_step is None else {"on_step": on_step}
    keyed = Keyframes(tuple(key_frames[:keys]), Motion(ctx.fps, rots[:keys], roots[:keys]))
    return tl, render_scene(fox, ctx, keyed, tl, CFG, **kw)


def test_render_scene_keeps_images_labels_and_caption() -> None:
    """The render stage renders context (at 30 fps) and keys once, with the estimator's labels beside them."""
    fox = cached_load("Fox.glb")
    seen: list[tuple[str, float]] = []
    tl, r = _fox_scene(on_step=lambda s, f, *a, **k: seen.append((s, f)))
    n, j = tl.render_context_frames, fox.skeleton.num_joints
    assert seen == [("render", 0.0), ("render", 1.0)]
    assert r.context.shape == (2, 3, n, 64, 96) and r.keys.shape == (2, 3, 2, 64, 96) and r.views == 2
    assert r.mask.shape == r.depth.shape == (2, n + 2, 64, 96) and r.mask.dtype == torch.bool
    assert r.joints_px.shape == (2, n + 2, j, 2) and r.joints_depth.shape == (2, n + 2, j)
    assert bool((r.depth[r.mask] > 0).all()) and bool((r.depth[~r.mask] == 0).all())
    assert bool((r.joints_depth > 0).all()) and "Fox" in r.caption
    # The character is in view: its mask covers pixels in every frame of every view.
    assert bool(r.mask.flatten(2).any(-1).all())


def test_generate_video_on_the_fox(conv_prior, tmp_path) -> None:
    before = {k: v.clone() for k, v in conv_prior.state_dict().items()}
    events: list[tuple[str, float, object]] = []
    cache = AdaptationCache(tmp_path)

    def on_step(stage: str, fraction: float, message: str = "", preview=None) -> None:
        events.append((stage, fraction, preview))

    tl, renders = _fox_scene(on_step=on_step)
    out = generate_video(
        conv_prior, renders, tl, CFG, cache=cache, model_id="conv", character_digest="fox", on_step=on_step
    )
    # From the last context frame (render 60) to the last key, at 15 fps.
    assert out.frames.shape == (1, 3, 31, 64, 96) and out.views == (0,) and out.fps == 15.0
    assert out.render_frames.tolist() == [60, *range(62, 121, 2)]
    assert out.request_frames == tuple(tl.to_request(f) for f in [60, *range(62, 121, 2)])
    assert out.request_frames[0] == tl.context_frames - 1
    # Known frames come back as their renders, bit for bit: the opening key and every key.
    assert torch.equal(out.frames[0, :, 0], renders.context[0, :, -1])
    for j in range(renders.keys.shape[2]):
        k = out.render_frames.tolist().index(tl.render_context_end + 30 * (j + 1))
        assert torch.equal(out.frames[0, :, k], renders.keys[0, :, j])
    assert out.request_frames[-1] == 96 and not out.from_cache and len(out.adaptation.losses) == 1
    assert [s for s, _ in out.timings] == ["icadapt", "sample"]
    assert "Fox" in out.caption

    stages = [s for s, _, _ in events]
    assert stages.index("render") < stages.index("icadapt") < stages.index("sample")
    for stage in ("render", "icadapt", "sample"):
        fractions = [f for s, f, _ in events if s == stage]
        assert fractions == sorted(fractions) and fractions[-1] == 1.0
    previews = [p for _, _, p in events if p is not None]
    assert [p.window for p in previews] == [0, 1, 2, 3]
    assert [p.render_frame for p in previews] == preview_frames(tl)
    assert [p.frame for p in previews] == [tl.to_request(p.render_frame) for p in previews]
    for p in previews[2:]:  # a fine window's preview is a frame of the result, bit for bit
        k = out.render_frames.tolist().index(p.render_frame)
        assert torch.equal(p.image, out.frames[0, :, k])
    # The prior is left as it was found.
    assert all(torch.equal(v, conv_prior.state_dict()[k]) for k, v in before.items())

    # Same scene again: the adapted weights come from the cache, and the video is the same.
    again = generate_video(conv_prior, renders, tl, CFG, cache=cache, model_id="conv", character_digest="fox")
    assert again.from_cache and again.cache_key == out.cache_key and out.cache_key in cache
    assert torch.equal(again.frames, out.frames)
    # Another seed samples another video from the same adaptation.
    reseeded = VideoJobConfig(**{**CFG.__dict__, "sampler": SamplerConfig(num_steps=2, seed=6)})
    other = generate_video(conv_prior, renders, tl, reseeded, cache=cache, model_id="conv", character_digest="fox")
    assert other.from_cache and not torch.equal(other.frames, out.frames)
    assert all(torch.equal(v, conv_prior.state_dict()[k]) for k, v in before.items())
    # An entry that cannot be loaded (another backend's, say) is adapted again and replaced, not an error.
    meta = cache.path(out.cache_key).with_name(cache.path(out.cache_key).name + ".json")
    meta.write_text('{"model": "another-prior"}')
    redone = generate_video(conv_prior, renders, tl, CFG, cache=cache, model_id="conv", character_digest="fox")
    assert not redone.from_cache and redone.cache_key == out.cache_key and torch.equal(redone.frames, out.frames)
    assert '"conv-prior"' in meta.read_text()
    assert all(torch.equal(v, conv_prior.state_dict()[k]) for k, v in before.items())


def test_a_cache_that_cannot_be_written_does_not_fail_the_job(conv_prior, tmp_path, monkeypatch, caplog) -> None:
    tl, renders = _fox_scene(keys=1)
    cache = AdaptationCache(tmp_path)

    def disk_full(key, prior):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache, "put", disk_full)
    out = generate_video(conv_prior, renders, tl, CFG, cache=cache, model_id="conv", character_digest="fox")
    assert out.frames.shape == (1, 3, 16, 64, 96) and not out.from_cache and out.cache_key not in cache
    assert "No space left on device" in caplog.text and str(tmp_path) in caplog.text


def test_generate_video_stops_when_on_step_raises(conv_prior) -> None:
    tl, renders = _fox_scene()
    before = {k: v.clone() for k, v in conv_prior.state_dict().items()}
    cfg = VideoJobConfig(**{**CFG.__dict__, "icadapt": ICAdaptConfig(steps=50, batch_size=2, grad_accum=1)})
    seen: list[tuple[str, float]] = []

    def on_step(stage: str, fraction: float, message: str = "", preview=None) -> None:
        seen.append((stage, fraction))
        if stage == "icadapt" and fraction > 0:
            raise JobCancelled("stop")

    with pytest.raises(JobCancelled):
        generate_video(conv_prior, renders, tl, cfg, on_step=on_step)
    assert seen[-1] == ("icadapt", 1 / 50) and not any(s == "sample" for s, _ in seen)
    assert all(torch.equal(v, conv_prior.state_dict()[k]) for k, v in before.items())


def test_generate_video_checks_before_adapting(conv_prior, tmp_path) -> None:
    tl, renders = _fox_scene()
    called: list[str] = []
    odd = VideoJobConfig(**{**CFG.__dict__, "width": 97})
    with pytest.raises(InvalidInput) as err:
        generate_video(conv_prior, renders, tl, odd, on_step=lambda s, f, *a, **k: called.append(s))
    assert err.value.field == "width/height" and called == []
    with pytest.raises(InvalidInput) as err:  # a cache needs the character's content hash in its key
        generate_video(conv_prior, renders, tl, CFG, cache=AdaptationCache(tmp_path), on_step=lambda s, f, *a, **k: called.append(s))
    assert err.value.field == "character_digest" and called == []


def test_generate_video_stops_sampling_when_on_step_raises(conv_prior) -> None:
    tl, renders = _fox_scene()
    before = {k: v.clone() for k, v in conv_prior.state_dict().items()}
    previews = []

    def on_step(stage: str, fraction: float, message: str = "", preview=None) -> None:
        if preview is not None:
            previews.append(preview)
        if stage == "sample" and len(previews) == 1:
            raise JobCancelled("stop")

    with pytest.raises(JobCancelled):
        generate_video(conv_prior, renders, tl, CFG, on_step=on_step)
    assert len(previews) == 1  # stopped right after the first window, 3 windows short
    assert all(torch.equal(v, conv_prior.state_dict()[k]) for k, v in before.items())


def test_mp4_round_trip_keeps_every_frame_and_its_size() -> None:
    g = torch.Generator().manual_seed(0)
    frames = torch.zeros(7, 16, 24, 3, dtype=torch.uint8)
    frames[:, :8] = (torch.rand(7, 1, 1, 3, generator=g) * 255).to(torch.uint8)  # a colour per frame, top half
    frames[:, 8:, :12] = 128
    back = torch.from_numpy(decode_mp4(encode_mp4(frames, 15.0), 24, 16).copy())
    assert back.shape == (7, 16, 24, 3)
    # Lossy (H.264, 4:2:0): flat regions come back within a few levels; colour edges blur by a pixel or two.
    inner = (back.int() - frames.int())[:, 2:6, 2:22].abs()
    assert inner.float().mean() < 3 and inner.max() <= 12
    with pytest.raises(ValueError, match="even"):
        encode_mp4(torch.zeros(2, 15, 24, 3, dtype=torch.uint8), 15.0)


def test_stage_costs_follow_the_stage_configs() -> None:
    """A job's progress plan comes from its configs: render cost ∝ views, sampling ∝ DDIM steps, ICAdapt ∝ steps."""
    tl = plan_timeline(61, 30.0, [90, 120])
    base = dict(CFG.stage_costs(tl))
    more = VideoJobConfig(
        **{**CFG.__dict__, "views": 4, "sampler": SamplerConfig(num_steps=4), "icadapt": ICAdaptConfig(steps=3, mode="spatial")}
    )
    bigger = dict(more.stage_costs(tl))
    assert list(base) == ["render", "icadapt", "sample"] and all(c > 0 for c in base.values())
    assert bigger["render"] == pytest.approx(2 * base["render"])
    assert bigger["sample"] == pytest.approx(2 * base["sample"])
    assert bigger["icadapt"] == pytest.approx(3 * base["icadapt"])
