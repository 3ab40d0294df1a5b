"""AnyMoLe's video stage as one engine-free function: render → ICAdapt → two-stage sampling.

`generate_video` takes a character, a request's context motion and keyframes and a `VideoPrior`, and returns
the generated in-between video. It renders the context and the keyframe poses from ``views`` orbit cameras
(`anymole.render`), cuts the Algorithm-1 clips from the context renders (`clips`), captions the scene once
(`caption`), adapts the prior with ICAdapt (or loads the adapted weights from an `AdaptationCache`), and runs
`TwoStageSampler` (Algorithm 2) for each sampled view. It leaves the prior's weights as it found them.

Timelines. The request's timeline is the context clip's: frame 0 is the first context frame, ``C − 1`` the
last, at the context's fps. The sampler's timeline is the 30 fps render timeline whose keyframes lie exactly
30 frames (1 s) apart after the context (see `anymole.video.sampler`). `plan_timeline` maps one onto the
other honestly: the context is resampled to 30 fps ending exactly at its last frame (`resample_context`,
needs at least 2 s of context), and keyframe ``j`` must lie exactly ``j + 1`` seconds after the last context
frame (one key a second, none skipped), else `InvalidInput` names ``keyframes`` and lists the frames to use.
Generated frames are 15 fps frames of the render timeline; `VideoTimeline.to_request` gives their frame on
the request's timeline (rounded to the nearest frame when the request's fps is not a multiple of 15).

Progress goes through ``on_step(stage, fraction, preview=None, message="")`` with stages ``"render"``,
``"icadapt"`` and ``"sample"``; ``preview`` is a `VideoPreview` (one per sampler window and sampled view, as the
window finishes); when the adapted weights come from the cache, ``icadapt`` jumps to 1 with the message
`FROM_CACHE`. Raising from ``on_step`` (e.g. `JobCancelled`) stops ICAdapt and sampling at their next step.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from anymole.errors import InvalidInput, ModelUnavailable
from anymole.progress import OnStep, no_step
from anymole.rig import Character, Motion
from anymole.video.cache import AdaptationCache, adaptation_key, tensor_digest
from anymole.video.caption import scene_caption
from anymole.video.clips import ClipBank, gather_clips
from anymole.video.icadapt import AdaptedWeights, ICAdaptConfig, icadapt
from anymole.video.prior import VideoPrior
from anymole.video.sampler import (
    FINE_FPS,
    RENDER_FPS,
    SamplerConfig,
    TwoStageSampler,
    WindowPlan,
    plan_stage1,
    plan_stage2,
)
from anymole.video.schedule import DDIMSchedule

__all__ = [
    "FROM_CACHE",
    "MIN_CONTEXT_SECONDS",
    "GeneratedScene",
    "VideoJobConfig",
    "VideoPreview",
    "VideoTimeline",
    "decode_mp4",
    "encode_mp4",
    "generate_video",
    "plan_timeline",
    "preview_frames",
    "resample_context",
    "sampler_windows",
    "warm_up",
]

#: seconds of context the two-stage sampler needs (its first coarse window reaches 2 s back).
MIN_CONTEXT_SECONDS = 2
#: a keyframe (or the first 30 fps context frame) within this many frames of a whole second counts as on it.
_ON_SECOND = 1e-3

#: the ``message`` of the ``icadapt`` report when the adapted weights come from the cache (no ICAdapt run).
FROM_CACHE = "adapted weights from the cache"


log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- timeline
@dataclass(frozen=True)
class VideoTimeline:
    """How a request's timeline maps onto the sampler's 30 fps render timeline.

    Attributes:
        fps: frame rate of the request's timeline (its context clip), > 0.
        context_frames: ``C``, context frames on the request's timeline (frames ``0 … C − 1``).
        key_frames: request frames of the ``K`` keyframes; key ``j`` is ``j + 1`` seconds after frame ``C − 1``.
        render_context_frames: ``N``, context frames at 30 fps; render frame ``N − 1`` is request frame ``C − 1``.
    """

    fps: float
    context_frames: int
    key_frames: tuple[int, ...]
    render_context_frames: int

    @property
    def num_gaps(self) -> int:
        return len(self.key_frames)

    @property
    def render_context_end(self) -> int:
        """The last context frame on the render timeline (the sampler's ``context_end``)."""
        return self.render_context_frames - 1

    def to_request(self, render_frame: int) -> int:
        """The request frame nearest to ``render_frame`` of the 30 fps render timeline."""
        seconds = (render_frame - self.render_context_end) / RENDER_FPS
        return math.floor(self.context_frames - 1 + seconds * self.fps + 0.5)

    def render_times(self) -> torch.Tensor:
        """``(N,)`` float64 request-timeline positions (in request frames) of the 30 fps context frames."""
        back = torch.arange(self.render_context_frames - 1, -1, -1, dtype=torch.float64)
        return (self.context_frames - 1) - back * (self.fps / RENDER_FPS)


def plan_timeline(context_frames: int, fps: float, key_frames: Sequence[int]) -> VideoTimeline:
    """Check that a request fits the sampler's timeline and map it; pure and cheap (call it before any work).

    Args:
        context_frames: ``C`` context frames at ``fps``.
        fps: the request's frame rate.
        key_frames: request frames of the keyframes, increasing.

    Raises:
        InvalidInput: ``context`` shorter than 2 s, or ``keyframes`` not exactly at 1, 2, … s after the last
            context frame; the message lists the frames to use.
    """
    if not fps > 0:
        raise InvalidInput("context.fps", f"must be > 0, got {fps}")
    end = context_frames - 1
    duration = end / fps
    # 30 fps frames back from the last context frame; a position within 1e-3 frame of the first one counts
    # (float frame rates such as a BVH's 0.0333333 s frame time give 30.00003 fps).
    frames = math.floor(duration * RENDER_FPS + _ON_SECOND) + 1
    if frames < MIN_CONTEXT_SECONDS * RENDER_FPS + 1:
        need = math.ceil(MIN_CONTEXT_SECONDS * fps - _ON_SECOND) + 1
        raise InvalidInput(
            "context",
            f"the video method needs at least {MIN_CONTEXT_SECONDS} s of context ({need} frames at {fps:g} fps); "
            f"got {context_frames} frames ({duration:.2f} s). Send a longer context, or use method 'interp'.",
        )
    if not key_frames:
        raise InvalidInput("keyframes", "send at least one keyframe, 1 s after the last context frame")
    wanted = [end + (j + 1) * fps for j in range(len(key_frames))]
    if any(abs(k - w) > _ON_SECOND for k, w in zip(key_frames, wanted, strict=True)):
        got = ", ".join(f"{k} ({(k - end) / fps:.3g} s)" for k, w in zip(key_frames, wanted, strict=True))
        if any(abs(w - round(w)) > _ON_SECOND for w in wanted):
            todo = f"at {fps:g} fps no frame lies on a whole second: resample the clip to 24, 30 or 60 fps"
        else:
            todo = f"put them at frames {[round(w) for w in wanted]}"
        raise InvalidInput(
            "keyframes",
            f"the video method generates 1 s gaps: keyframe j must lie exactly j + 1 seconds after the last "
            f"context frame {end} (one a second, none skipped); got frames {got}. To fix: {todo}, or use "
            "method 'interp' for keyframes at any frame.",
        )
    return VideoTimeline(float(fps), int(context_frames), tuple(int(k) for k in key_frames), frames)


def resample_context(context: Motion, timeline: VideoTimeline) -> Motion:
    """The context at 30 fps, ending exactly on its last frame: SLERP of rotations, linear translations.

    A context already at 30 fps comes back unchanged; 60 fps takes every second frame exactly.

    Args:
        context: ``C`` frames at ``timeline.fps`` (``rotations (C, J, 4)``).
        timeline: from `plan_timeline` for this context.

    Returns:
        ``N = timeline.render_context_frames`` frames at 30 fps.
    """
    if context.num_frames != timeline.context_frames:
        raise InvalidInput("context", f"has {context.num_frames} frames, the timeline {timeline.context_frames}")
    return context.sample(timeline.render_times(), float(RENDER_FPS))


def sampler_windows(timeline: VideoTimeline) -> list[WindowPlan]:
    """The sampler's windows in the order it finishes them: stage 1, then stage 2 (one preview each)."""
    return plan_stage1(timeline.render_context_end, timeline.num_gaps) + plan_stage2(
        timeline.render_context_end, timeline.num_gaps
    )


def preview_frames(timeline: VideoTimeline) -> list[int]:
    """Render frames the sampler's previews will show, window by window: the middle frame each window writes
    (what `TwoStageSampler` reports with each preview), known before sampling starts."""
    return [p.frames[p.preview_slot] for p in sampler_windows(timeline)]


# ---------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class VideoJobConfig:
    """Settings of `generate_video`.

    Attributes:
        width, height: render size (px), multiples of the prior's VAE factor (8 for DynamiCrafter); the
            reference renders 512 × 320.
        views: orbit views rendered for ICAdapt (4: main, ±5°, back; see `anymole.render.view_layout`).
        sample_views: views the sampler generates (the mimicking stage uses the main view, 0).
        strides: Algorithm-1 frame intervals of the ICAdapt clips (1, 2, 3: 30, 15, 10 fps).
        icadapt: ICAdapt settings (`ICAdaptConfig()` is the reference recipe).
        sampler: sampling settings (its seed is the job's).
        caption_model: image-captioning model used when installed locally; ``None``: the name template.
    """

    width: int = 512
    height: int = 320
    views: int = 4
    sample_views: tuple[int, ...] = (0,)
    strides: tuple[int, ...] = (1, 2, 3)
    icadapt: ICAdaptConfig = field(default_factory=ICAdaptConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    caption_model: str | None = None

    def __post_init__(self) -> None:
        if self.width < 8 or self.height < 8:
            raise InvalidInput("width/height", f"render size {self.width}×{self.height} is too small")
        if self.views < 1:
            raise InvalidInput("views", f"need at least one view, got {self.views}")
        if not self.sample_views or any(not 0 <= v < self.views for v in self.sample_views):
            raise InvalidInput("sample_views", f"{self.sample_views} are not views of 0..{self.views - 1}")


@dataclass(frozen=True, eq=False)
class VideoPreview:
    """One preview frame from a finished sampler window.

    Attributes:
        image: ``(3, H, W)`` float in [0, 1], on the CPU.
        view: the view it was generated for.
        frame: its frame on the request's timeline.
        render_frame: its frame on the 30 fps render timeline.
        window: index of the window in `sampler_windows` order.
    """

    image: torch.Tensor
    view: int
    frame: int
    render_frame: int
    window: int


@dataclass(frozen=True, eq=False)
class GeneratedScene:
    """What `generate_video` produced.

    Attributes:
        frames: ``(V, 3, N, H, W)`` float in [0, 1]: the ``V = len(views)`` sampled views, ``N`` frames at 15
            fps from 2 render frames after the context to the last key (keys included).
        views: the sampled view indices.
        render_frames: ``(N,)`` int64 frames of the 30 fps render timeline.
        request_frames: the ``N`` frames on the request's timeline (`VideoTimeline.to_request`).
        fps: frame rate of ``frames`` (15).
        caption: the scene caption used for ICAdapt and sampling.
        timings: ``(stage, seconds)`` for ``render``, ``icadapt``, ``sample``.
        adaptation: the ICAdapt run's summary, ``None`` when the weights came from the cache.
        cache_key: the adaptation cache key (empty without a cache).
    """

    frames: torch.Tensor
    views: tuple[int, ...]
    render_frames: torch.Tensor
    request_frames: tuple[int, ...]
    fps: float
    caption: str
    timings: tuple[tuple[str, float], ...]
    adaptation: AdaptedWeights | None
    cache_key: str = ""

    @property
    def from_cache(self) -> bool:
        return self.adaptation is None


# ---------------------------------------------------------------------------------------------- stages
def _render(
    character: Character,
    context30: Motion,
    key_rotations: torch.Tensor,
    key_root: torch.Tensor,
    key_translations: torch.Tensor | None,
    cfg: VideoJobConfig,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Context and keyframe poses rendered together (cameras fitted to both, so the keys stay in view).

    Returns:
        ``(videos (V, 3, N, H, W), keys (V, 3, K, H, W))`` float in [0, 1] on the CPU.
    """
    from anymole.render.views import render_motion  # moderngl loads only when a job renders

    n = context30.num_frames
    dtype = context30.rotations.dtype
    translations = None
    if context30.translations is not None:
        held = context30.translations[-1:].expand(key_rotations.shape[0], -1, -1)
        keys_tr = held.clone() if key_translations is None else key_translations.to(dtype).clone()
        keys_tr[:, 0] = key_root.to(dtype)
        translations = torch.cat((context30.translations, keys_tr))
    poses = Motion(
        fps=float(RENDER_FPS),
        rotations=torch.cat((context30.rotations, key_rotations.to(dtype))),
        root_translation=torch.cat((context30.root_translation, key_root.to(context30.root_translation.dtype))),
        translations=translations,
        name=context30.name,
    )
    fk_device = device if device.type == "cuda" else None
    renders = render_motion(
        character, poses, views=cfg.views, width=cfg.width, height=cfg.height, with_depth=False, device=fk_device
    )
    images = renders.images().permute(0, 2, 1, 3, 4)  # (V, F, 3, H, W) → (V, 3, F, H, W)
    return images[:, :, :n].contiguous(), images[:, :, n:].contiguous()


def _device_of(prior: VideoPrior) -> torch.device:
    """Where the prior's weights live (the protocol has no device; every backend is an ``nn.Module``)."""
    if isinstance(prior, torch.nn.Module):
        return next(prior.parameters()).device
    return torch.device("cpu")


@dataclass(eq=False)
class _HostCopy:
    """A host copy of one parameter, and the parameter's `_weight_state` when the two were last equal."""

    param: weakref.ref[torch.nn.Parameter]
    value: torch.Tensor
    state: tuple[object, ...]


def _weight_state(p: torch.Tensor) -> tuple[object, ...]:
    """What changes when a tensor's values are replaced other than through ``.data``: its storage address,
    dtype, device, layout, or its version counter (which every in-place write bumps, ``load_state_dict``,
    ``copy_`` and optimiser steps included)."""
    return (p.data_ptr(), p._version, p.dtype, p.device, tuple(p.shape), p.stride())


#: per prior, the host copies of the parameters jobs have snapshotted, by ``id`` of the parameter (held weakly:
#: a prior or parameter that is dropped takes its copies with it)
_host_copies: weakref.WeakKeyDictionary[VideoPrior, dict[int, _HostCopy]] = weakref.WeakKeyDictionary()
_host_copies_lock = threading.Lock()


def _sync(devices: set[torch.device]) -> None:
    for device in devices:
        if device.type == "cuda":
            torch.cuda.synchronize(device)


@torch.no_grad()
def _snapshot(prior: VideoPrior, mode: str) -> list[tuple[torch.nn.Parameter, _HostCopy]]:
    """Host copies of the parameters ICAdapt (or cached adapted weights) will overwrite, in host rather than
    device memory, which ICAdapt needs (the full model's spatial set is 938 M parameters, 3.8 GB).

    The copies are kept per prior and parameter across jobs (pinned for CUDA parameters, so restoring is a
    fast asynchronous copy) and only refreshed for parameters whose `_weight_state` moved since they were
    last snapshotted or restored: weights changed outside a job (another checkpoint loaded, say). Not seen:
    a write through ``.data`` (it bumps no version counter), or a ``.data`` swap to a storage at the freed
    address of the old one with the same shape and version count."""
    with _host_copies_lock:
        copies = _host_copies.setdefault(prior, {})
    for pid in [pid for pid, c in copies.items() if c.param() is None]:  # parameters since dropped
        del copies[pid]
    saved, refreshed = [], set()
    for p in prior.trainable_parameters(mode):
        copy = copies.get(id(p))
        if copy is None or copy.param() is not p or copy.state != _weight_state(p):
            value = copy.value if copy is not None and copy.value.shape == p.shape and copy.value.dtype == p.dtype else None
            if value is None:
                value = torch.empty(p.shape, dtype=p.dtype, pin_memory=p.is_cuda)
            value.copy_(p.detach(), non_blocking=True)
            copy = copies[id(p)] = _HostCopy(weakref.ref(p), value, _weight_state(p))
            refreshed.add(p.device)
        saved.append((p, copy))
    _sync(refreshed)  # a non-blocking copy to pinned memory is complete only after this
    return saved


@torch.no_grad()
def _restore(saved: list[tuple[torch.nn.Parameter, _HostCopy]]) -> None:
    """Write the snapshotted values back (bit for bit) and freeze the parameters again; the copies stay valid
    for the next job on this prior."""
    for p, copy in saved:
        p.copy_(copy.value, non_blocking=True)
        p.requires_grad_(False)
    _sync({p.device for p, _ in saved})
    for p, copy in saved:
        copy.state = _weight_state(p)


def warm_up(prior: VideoPrior, cfg: VideoJobConfig, schedule: DDIMSchedule | None = None) -> float:
    """Pay a job's one-time cost before the first job: one ICAdapt step of ``cfg.icadapt`` on random frames at
    ``cfg``'s render size, in the micro-batch shape of a job's steps, so that a compiled preset (`ICAdaptConfig.
    turbo` on a GPU: minutes the first time on a machine) compiles now and jobs reuse its graphs. The prior's
    weights are restored afterwards. Returns the seconds it took."""
    start = time.perf_counter()
    frames = prior.num_frames + cfg.icadapt.batch_size - 1  # one clip per start frame: a whole micro-batch
    videos = torch.rand(1, 3, frames, cfg.height, cfg.width, generator=torch.Generator().manual_seed(0))
    bank = ClipBank(videos.to(_device_of(prior)), gather_clips(1, frames, k=prior.num_frames, strides=(1,)), "")
    saved = _snapshot(prior, cfg.icadapt.mode)
    try:
        icadapt(prior, bank, replace(cfg.icadapt, steps=1), schedule=schedule)
    finally:
        _restore(saved)
    return time.perf_counter() - start


def _load_cached(cache: AdaptationCache, key: str, prior: VideoPrior) -> bool:
    """Load the cached adapted weights of ``key`` into ``prior``; False when there are none, or when the entry
    cannot be loaded (written by another version of the backend, say): ICAdapt then runs and replaces it, rather
    than every job on this scene failing on an entry no client can remove."""
    try:
        return cache.load_into(key, prior)
    except ModelUnavailable as exc:
        log.warning("ICAdapt cache entry %s is unusable, adapting again: %s", key, exc)
        return False


def _context_digest(videos: torch.Tensor, caption: str, strides: Sequence[int]) -> str:
    """Everything besides the model, character and ICAdapt settings that fixes an ICAdapt result."""
    return hashlib.sha256(f"{tensor_digest(videos)}|{caption}|{list(strides)}".encode()).hexdigest()


def generate_video(
    character: Character,
    context: Motion,
    key_frames: Sequence[int],
    key_rotations: torch.Tensor,
    key_root: torch.Tensor,
    prior: VideoPrior,
    cfg: VideoJobConfig | None = None,
    *,
    key_translations: torch.Tensor | None = None,
    schedule: DDIMSchedule | None = None,
    cache: AdaptationCache | None = None,
    model_id: str = "",
    model_config: object = None,
    character_digest: str = "",
    on_step: OnStep | None = None,
) -> GeneratedScene:
    """Render the context, adapt the prior to it and generate the in-between video (AnyMoLe A.1, Alg. 1–2).

    Args:
        character: rig and mesh (a capsule body is rendered when it has no mesh).
        context: ``C`` known frames at ``context.fps``: ``rotations (C, J, 4)`` unit xyzw, root ``(C, 3)`` m.
        key_frames: ``K`` request frames, key ``j`` exactly ``j + 1`` s after frame ``C − 1`` (`plan_timeline`).
        key_rotations: ``(K, J, 4)`` unit xyzw local rotations.
        key_root: ``(K, 3)`` root translations (m).
        prior: the video prior, on the device to run on; its weights are restored before returning.
        cfg: settings (render size, views, ICAdapt, sampler).
        key_translations: optional ``(K, J, 3)`` local translations at the keys (with ``context.translations``).
        schedule: the prior's diffusion schedule (default `DDIMSchedule` for its prediction type).
        cache: where adapted weights are looked up and stored; ``None`` always runs ICAdapt.
        model_id, model_config: the prior's identity for the cache key.
        character_digest: the character's content hash for the cache key (required with ``cache``).
        on_step: ``on_step(stage, fraction, preview=None, message="")``; raising stops the run at the next
            step.

    Returns:
        The generated video of the sampled views.

    Raises:
        InvalidInput: context or keyframes off the sampler's timeline, or a render size the prior cannot take.
    """
    cfg = cfg or VideoJobConfig()
    timeline = plan_timeline(context.num_frames, context.fps, key_frames)
    factor = prior.vae_scale_factor
    if cfg.width % factor or cfg.height % factor:
        raise InvalidInput("width/height", f"render size {cfg.width}×{cfg.height} must be a multiple of {factor}")
    if cache is not None and not character_digest:
        raise InvalidInput("character_digest", "give the character's content hash to key the adaptation cache")
    report = on_step or no_step
    timings: list[tuple[str, float]] = []

    device = _device_of(prior)
    report("render", 0.0)
    t0 = time.perf_counter()
    context30 = resample_context(context, timeline)
    videos, keys = _render(character, context30, key_rotations, key_root, key_translations, cfg, device)
    caption = scene_caption(character.name, videos[0], cfg.caption_model)
    timings.append(("render", time.perf_counter() - t0))
    report("render", 1.0)

    saved = _snapshot(prior, cfg.icadapt.mode)
    try:
        report("icadapt", 0.0)
        t0 = time.perf_counter()
        key = ""
        adaptation: AdaptedWeights | None = None
        if cache is not None:
            key = adaptation_key(
                model_id, model_config, character_digest, _context_digest(videos, caption, cfg.strides), cfg.icadapt
            )
        if not (cache is not None and _load_cached(cache, key, prior)):
            clips = gather_clips(cfg.views, timeline.render_context_frames, k=prior.num_frames, strides=cfg.strides)
            bank = ClipBank(videos.to(device), clips, caption)
            adaptation = icadapt(prior, bank, cfg.icadapt, on_step=report, schedule=schedule)
            if cache is not None:
                try:
                    cache.put(key, prior)
                except OSError as exc:  # a full disk, say: the job goes on with the weights it holds
                    log.warning("could not cache the adapted weights under %s (%s); the next job adapts again", cache.root, exc)
        timings.append(("icadapt", time.perf_counter() - t0))
        if adaptation is None:  # from the cache; a run reports its own last step
            report("icadapt", 1.0, message=FROM_CACHE)

        t0 = time.perf_counter()
        report("sample", 0.0)
        sampler = TwoStageSampler(prior, schedule or DDIMSchedule(prediction_type=prior.prediction_type), cfg.sampler)
        out = []
        for i, view in enumerate(cfg.sample_views):
            window = 0

            def step(
                _stage: str,
                fraction: float,
                message: str = "",
                *,
                preview: torch.Tensor | None = None,
                frame: int = 0,
                i: int = i,
                view: int = view,
            ) -> None:
                nonlocal window
                done = (i + fraction) / len(cfg.sample_views)
                if preview is None:
                    report("sample", done)
                    return
                shown = VideoPreview(preview.float().cpu(), view, timeline.to_request(frame), frame, window)
                report("sample", done, preview=shown)
                window += 1

            result = sampler(videos[view].to(device), keys[view].to(device), caption, on_step=step)
            out.append(result.frames.cpu())
        timings.append(("sample", time.perf_counter() - t0))
    finally:
        _restore(saved)
    render_frames = result.indices
    return GeneratedScene(
        frames=torch.stack(out),
        views=tuple(cfg.sample_views),
        render_frames=render_frames,
        request_frames=tuple(timeline.to_request(int(f)) for f in render_frames.tolist()),
        fps=float(FINE_FPS),
        caption=caption,
        timings=tuple(timings),
        adaptation=adaptation,
        cache_key=key,
    )


# ---------------------------------------------------------------------------------------------- video files
@functools.cache
def ffmpeg_problem() -> str:
    """Why the MP4 of a video job could not be written here (no ffmpeg found), or ``""``; checked once per
    process, so a server says so when it starts instead of after a job's GPU work."""
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as exc:
        return (
            f"the video method writes MP4 with ffmpeg, which is not available ({exc}): reinstall the package "
            "(imageio-ffmpeg ships one), install ffmpeg, or point IMAGEIO_FFMPEG_EXE at one"
        )
    return ""


def _ffmpeg(args: list[str], stdin: bytes) -> bytes:
    """Run the ffmpeg that imageio-ffmpeg ships. Called directly rather than through imageio's writer and
    reader, which pass ``preexec_fn=os.setpgrp``: that forces a fork that runs Python code in the child, and
    in a process with gRPC and torch threads (the server) such a child can crash. Without it, Python spawns
    the child with vfork; ``start_new_session`` keeps a terminal's Ctrl-C away from it just the same."""
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", *args]
    proc = subprocess.run(cmd, input=stdin, capture_output=True, start_new_session=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg exited with {proc.returncode}: {proc.stderr.decode(errors='replace')[-400:]}")
    return proc.stdout


def encode_mp4(frames: torch.Tensor | np.ndarray, fps: float) -> bytes:
    """Encode ``(N, H, W, 3)`` uint8 RGB frames (``H``, ``W`` even) as MP4 bytes: H.264, yuv420p, CRF 18,
    every frame kept at its size."""
    arr = np.ascontiguousarray(frames.cpu().numpy() if isinstance(frames, torch.Tensor) else frames)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8 or arr.shape[1] % 2 or arr.shape[2] % 2:
        raise ValueError(f"frames: expected (N, H, W, 3) uint8 with even H and W, got {arr.shape} {arr.dtype}")
    _, h, w, _ = arr.shape
    with tempfile.TemporaryDirectory(prefix="anymole-mp4-") as tmp:
        out = Path(tmp) / "video.mp4"
        _ffmpeg(
            ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", f"{fps:g}", "-i", "pipe:0",
             "-an", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18", str(out)],
            arr.tobytes(),
        )  # fmt: skip
        return out.read_bytes()


def decode_mp4(data: bytes, width: int, height: int) -> np.ndarray:
    """Decode MP4 bytes of ``width × height`` frames to ``(N, height, width, 3)`` uint8 RGB."""
    with tempfile.TemporaryDirectory(prefix="anymole-mp4-") as tmp:
        src = Path(tmp) / "video.mp4"
        src.write_bytes(data)
        raw = _ffmpeg(["-i", str(src), "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "pipe:1"], b"")
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, height, width, 3)
