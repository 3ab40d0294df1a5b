"""AnyMoLe's video generation as plain stages over a job's renders: adapt the prior, then sample the video.

`generate_video` samples the in-between video for a job's renders (`anymole.video.scene.render_scene`) and its
timeline (`anymole.video.timeline.plan_timeline`): it adapts the prior to the context renders with ICAdapt
(`adapted`: Algorithm 1, or the adapted weights from an `AdaptationCache`), runs `TwoStageSampler` (Algorithm 2)
for each sampled view (`sample_video`), and leaves the prior's weights as it found them (`anymole.video.
snapshot`). `warm_up` pays a compiled preset's one-time cost before the first job.

Progress goes through an `OnStep`: ``on_step("icadapt", fraction)``, ``on_step("sample", fraction)``, and
``on_step("sample", fraction, preview=VideoPreview(…))`` as each sampler window finishes for a sampled view;
when the adapted weights come from the cache, ``icadapt`` jumps to 1 with the message `FROM_CACHE`. Raising
from ``on_step`` (e.g. `JobCancelled`) stops ICAdapt and sampling at their next step.

The timeline, config, render and MP4 helpers live in their own modules and are re-exported here, where the
stages' callers have always found them.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import torch

from anymole.errors import InvalidInput, ModelUnavailable
from anymole.progress import OnStep, no_step
from anymole.video.cache import AdaptationCache, adaptation_key, tensor_digest
from anymole.video.clips import ClipBank, gather_clips
from anymole.video.config import VideoJobConfig
from anymole.video.icadapt import AdaptedWeights, icadapt
from anymole.video.mp4 import decode_mp4, encode_mp4, ffmpeg_problem
from anymole.video.prior import VideoPrior
from anymole.video.sampler import FINE_FPS, TwoStageSampler
from anymole.video.scene import SceneRenders, render_scene
from anymole.video.schedule import DDIMSchedule
from anymole.video.snapshot import restore, snapshot
from anymole.video.timeline import (
    MIN_CONTEXT_SECONDS,
    VideoTimeline,
    plan_timeline,
    preview_frames,
    resample_context,
    sampler_windows,
)

__all__ = [
    "FROM_CACHE",
    "MIN_CONTEXT_SECONDS",
    "GeneratedScene",
    "SceneRenders",
    "VideoJobConfig",
    "VideoPreview",
    "VideoTimeline",
    "adapted",
    "check_render_size",
    "decode_mp4",
    "encode_mp4",
    "ffmpeg_problem",
    "generate_video",
    "plan_timeline",
    "preview_frames",
    "render_scene",
    "resample_context",
    "sample_video",
    "sampler_windows",
    "warm_up",
]

#: the ``message`` of the ``icadapt`` report when the adapted weights come from the cache (no ICAdapt run).
FROM_CACHE = "adapted weights from the cache"

log = logging.getLogger(__name__)


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
            fps from the last context frame to the last key. Known frames (the last context frame and every
            key) are their renders exactly; the sampler writes the rest.
        views: the sampled view indices.
        render_frames: ``(N,)`` int64 frames of the 30 fps render timeline.
        request_frames: the ``N`` frames on the request's timeline (`VideoTimeline.to_request`).
        fps: frame rate of ``frames`` (15).
        caption: the scene caption used for ICAdapt and sampling.
        timings: ``(stage, seconds)`` for ``icadapt`` and ``sample``.
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




def _device_of(prior: VideoPrior) -> torch.device:
    """Where the prior's weights live (the protocol has no device; every backend is an ``nn.Module``)."""
    if isinstance(prior, torch.nn.Module):
        return next(prior.parameters()).device
    return torch.device("cpu")


def check_render_size(prior: VideoPrior, cfg: VideoJobConfig) -> None:
    """`InvalidInput` unless ``cfg``'s render size is a multiple of the prior's VAE factor."""
    factor = prior.vae_scale_factor
    if cfg.width % factor or cfg.height % factor:
        raise InvalidInput("width/height", f"render size {cfg.width}×{cfg.height} must be a multiple of {factor}")


def warm_up(prior: VideoPrior, cfg: VideoJobConfig, schedule: DDIMSchedule | None = None) -> float:
    """Pay a job's one-time cost before the first job: one ICAdapt step of ``cfg.icadapt`` on random frames at
    ``cfg``'s render size, in the micro-batch shape of a job's steps, so that a compiled preset (`ICAdaptConfig.
    turbo` on a GPU: minutes the first time on a machine) compiles now and jobs reuse its graphs. The prior's
    weights are restored afterwards. Returns the seconds it took."""
    start = time.perf_counter()
    frames = prior.num_frames + cfg.icadapt.batch_size - 1  # one clip per start frame: a whole micro-batch
    videos = torch.rand(1, 3, frames, cfg.height, cfg.width, generator=torch.Generator().manual_seed(0))
    bank = ClipBank(videos.to(_device_of(prior)), gather_clips(1, frames, k=prior.num_frames, strides=(1,)), "")
    saved = snapshot(prior, cfg.icadapt.mode)
    try:
        icadapt(prior, bank, replace(cfg.icadapt, steps=1), schedule=schedule)
    finally:
        restore(saved)
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



@contextlib.contextmanager
def adapted(
    prior: VideoPrior,
    renders: SceneRenders,
    timeline: VideoTimeline,
    cfg: VideoJobConfig,
    *,
    schedule: DDIMSchedule | None = None,
    cache: AdaptationCache | None = None,
    model_id: str = "",
    model_config: object = None,
    character_digest: str = "",
    on_step: OnStep = no_step,
) -> Iterator[tuple[AdaptedWeights | None, str]]:
    """The ICAdapt stage: ``prior`` adapted to the context renders inside the block, restored after it.

    Yields ``(adaptation, cache_key)``: the ICAdapt run's summary (``None`` when the weights came from
    ``cache``) and the cache key (empty without a cache). Arguments as `generate_video`'s.
    """
    if cache is not None and not character_digest:
        raise InvalidInput("character_digest", "give the character's content hash to key the adaptation cache")
    device = _device_of(prior)
    saved = snapshot(prior, cfg.icadapt.mode)
    try:
        on_step("icadapt", 0.0)
        key = ""
        adaptation: AdaptedWeights | None = None
        if cache is not None:
            digest = _context_digest(renders.context, renders.caption, cfg.strides)
            key = adaptation_key(model_id, model_config, character_digest, digest, cfg.icadapt)
        if not (cache is not None and _load_cached(cache, key, prior)):
            clips = gather_clips(cfg.views, timeline.render_context_frames, k=prior.num_frames, strides=cfg.strides)
            bank = ClipBank(renders.context.to(device), clips, renders.caption)
            adaptation = icadapt(prior, bank, cfg.icadapt, on_step=on_step, schedule=schedule)
            if cache is not None:
                try:
                    cache.put(key, prior)
                except OSError as exc:  # a full disk, say: the job goes on with the weights it holds
                    log.warning("could not cache the adapted weights under %s (%s); the next job adapts again", cache.root, exc)
        if adaptation is None:  # from the cache; a run reports its own last step
            on_step("icadapt", 1.0, message=FROM_CACHE)
        yield adaptation, key
    finally:
        restore(saved)


def sample_video(
    prior: VideoPrior,
    renders: SceneRenders,
    timeline: VideoTimeline,
    cfg: VideoJobConfig,
    *,
    schedule: DDIMSchedule | None = None,
    on_step: OnStep = no_step,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The sampling stage: two-stage sampling (Algorithm 2) of each of ``cfg.sample_views``.

    Returns:
        ``(frames (V, 3, N, H, W), render_frames (N,))``: see `GeneratedScene`. The sampler returns the frames
        after the last context frame; that frame, the gap's opening key, is put in front as rendered, so a
        video runs from a known frame to a known frame.
    """
    device = _device_of(prior)
    on_step("sample", 0.0)
    sampler = TwoStageSampler(prior, schedule or DDIMSchedule(prediction_type=prior.prediction_type), cfg.sampler)
    out = []
    for i, view in enumerate(cfg.sample_views):
        window = 0

        def step(
            stage: str,
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
                on_step("sample", done)
                return
            shown = VideoPreview(preview.float().cpu(), view, timeline.to_request(frame), frame, window)
            on_step("sample", done, preview=shown)
            window += 1

        result = sampler(renders.context[view].to(device), renders.keys[view].to(device), renders.caption,
                         on_step=step, gap_seconds=timeline.gap_seconds)  # fmt: skip
        out.append(torch.cat([renders.context[view][:, -1:], result.frames.cpu()], dim=1))
    opening = torch.tensor([timeline.render_context_end], dtype=result.indices.dtype)
    return torch.stack(out), torch.cat([opening, result.indices])


def generate_video(
    prior: VideoPrior,
    renders: SceneRenders,
    timeline: VideoTimeline,
    cfg: VideoJobConfig | None = None,
    *,
    schedule: DDIMSchedule | None = None,
    cache: AdaptationCache | None = None,
    model_id: str = "",
    model_config: object = None,
    character_digest: str = "",
    on_step: OnStep = no_step,
) -> GeneratedScene:
    """Sample the in-between video for these renders and this timeline (AnyMoLe A.1, Alg. 1–2): adapt the prior
    to the context renders, then sample each of ``cfg.sample_views``.

    Args:
        prior: the video prior, on the device to run on; its weights are restored before returning.
        renders: `render_scene` of the job, with ``cfg``'s size and views.
        timeline: the job's `plan_timeline`.
        cfg: settings (ICAdapt, sampler; render size and views as ``renders``).
        schedule: the prior's diffusion schedule (default `DDIMSchedule` for its prediction type).
        cache: where adapted weights are looked up and stored; ``None`` always runs ICAdapt.
        model_id, model_config: the prior's identity for the cache key.
        character_digest: the character's content hash for the cache key (required with ``cache``).
        on_step: progress of ``icadapt`` and ``sample`` (see the module docstring); raising stops the run at
            the next step.

    Raises:
        InvalidInput: a render size the prior cannot take, or a cache without ``character_digest``.
    """
    cfg = cfg or VideoJobConfig()
    check_render_size(prior, cfg)
    t0 = time.perf_counter()
    with adapted(
        prior,
        renders,
        timeline,
        cfg,
        schedule=schedule,
        cache=cache,
        model_id=model_id,
        model_config=model_config,
        character_digest=character_digest,
        on_step=on_step,
    ) as (adaptation, key):
        t1 = time.perf_counter()
        frames, render_frames = sample_video(prior, renders, timeline, cfg, schedule=schedule, on_step=on_step)
        t2 = time.perf_counter()
    return GeneratedScene(
        frames=frames,
        views=tuple(cfg.sample_views),
        render_frames=render_frames,
        request_frames=tuple(timeline.to_request(int(f)) for f in render_frames.tolist()),
        fps=float(FINE_FPS),
        caption=renders.caption,
        timings=(("icadapt", t1 - t0), ("sample", t2 - t1)),
        adaptation=adaptation,
        cache_key=key,
    )
