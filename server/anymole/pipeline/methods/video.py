"""The ``video`` method: AnyMoLe's video stage (`anymole.video.generate.generate_video`).

Renders the context from 4 views, ICAdapt, two-stage sampling; streams a `Preview` per sampler window and ends
with `Completed(video=…)`, the generated video (no motion yet). Presets (`ICADAPT_PRESETS`): ``quality`` (the
reference ICAdapt recipe), ``fast`` (`ICAdaptConfig.fast`), ``turbo`` (`ICAdaptConfig.turbo`; compiled on CUDA
devices, where the process's first turbo job pays the compile, eager elsewhere). Available when `VideoSettings`
names a prior; the prior loads on the first ``video`` job, on that job's device (`anymole.pipeline.pool`), and
serves one ``video`` job at a time there. With `VideoSettings.warmup` the server loads it on every device and
compiles ``turbo`` on CUDA devices as it starts (`VideoMethod.warm_up`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from typing import Any

import torch

from anymole.errors import InvalidInput, ResourceExhausted
from anymole.pipeline.control import CancelToken, ProgressReporter, run_in_thread
from anymole.pipeline.events import Completed, Event, VideoClip
from anymole.pipeline.methods.base import MethodSpec
from anymole.pipeline.methods.preview import preview_event
from anymole.pipeline.pool import LoadedPrior, PriorPool
from anymole.pipeline.settings import VideoSettings
from anymole.pipeline.spec import JobSpec
from anymole.video.cache import AdaptationCache
from anymole.video.caption import DEFAULT_CAPTION_MODEL
from anymole.video.config import VideoJobConfig
from anymole.video.generate import (
    FROM_CACHE,
    GeneratedScene,
    check_render_size,
    generate_video,
    render_scene,
    warm_up,
)
from anymole.video.icadapt import ICAdaptConfig
from anymole.video.mp4 import encode_mp4
from anymole.video.sampler import SamplerConfig
from anymole.video.timeline import MAX_GAP_SECONDS, MIN_CONTEXT_SECONDS, VideoTimeline, plan_timeline

__all__ = ["ICADAPT_PRESETS", "WAITING_FOR_PRIOR", "VideoMethod", "out_of_memory"]

#: the presets (the first is the default) → their ICAdapt recipes
ICADAPT_PRESETS: dict[str, Callable[[], ICAdaptConfig]] = {
    "quality": ICAdaptConfig.reference,
    "fast": ICAdaptConfig.fast,
    "turbo": ICAdaptConfig.turbo,
}

TINY_WARNING = "random weights: previews are noise"
_VIDEO_DESCRIPTION = (
    "AnyMoLe's video stage: renders the context from 4 views, ICAdapt-adapts the video prior, generates the "
    "in-between video with two-stage guided sampling (Algorithm 2), streams a preview frame per window; result: "
    "the generated video (MP4; no motion until the joint estimator and mimicking exist)"
)

#: the progress message of a video job waiting for its device's prior
WAITING_FOR_PRIOR = "waiting for this device's video prior: another job on it or the server's warm-up holds it"


class VideoMethod:
    """The ``video`` method under ``settings``, on the priors of ``pool``."""

    def __init__(self, settings: VideoSettings, pool: PriorPool) -> None:
        self.settings = settings
        self.pool = pool

    def spec(self) -> MethodSpec:
        reason = self.settings.unavailable_reason()
        description = f"{TINY_WARNING} (tiny prior). {_VIDEO_DESCRIPTION}" if self.settings.tiny else _VIDEO_DESCRIPTION
        return MethodSpec(
            "video",
            description,
            presets=tuple(ICADAPT_PRESETS),
            available=not reason,
            unavailable_reason=reason,
            sends_previews=True,
            result="video",
            min_context_seconds=float(MIN_CONTEXT_SECONDS),
            key_spacing_seconds=0.0,  # keys on any frames: each gap is sampled as one render second
            max_gap_seconds=MAX_GAP_SECONDS,  # what `plan_timeline` enforces
        )

    def validate(self, spec: JobSpec) -> None:
        """`timeline`'s checks, before a job queues."""
        self.timeline(spec)

    def timeline(self, spec: JobSpec) -> VideoTimeline:
        """The job's timeline on the sampler's (`anymole.video.timeline.plan_timeline`: the keyframes must fit
        it); the job's timeline must end at the last keyframe (the video stops there)."""
        timeline = plan_timeline(spec.context_frames, spec.context.fps, spec.keyframes.frames)
        end = spec.keyframes.frames[-1] + 1
        if spec.total_frames != end:
            raise InvalidInput(
                "total_frames",
                f"the video method generates frames up to the last keyframe ({end - 1}), not to "
                f"{spec.total_frames - 1}; send total_frames {end} or 0, or add a keyframe a second later",
            )
        return timeline

    async def warm_up(self, devices: Sequence[str]) -> None:
        """`VideoSettings.warmup`: load the prior on each device and compile ``turbo`` on CUDA devices
        (`compile_turbo`; `PriorPool.warm_up`)."""
        await self.pool.warm_up(devices, self.compile_turbo)

    def compile_turbo(self, device: str, loaded: LoadedPrior) -> float:
        """The warm-up's compile on ``device``: one ``turbo`` ICAdapt step on random frames in a job's shapes
        (`anymole.video.generate.warm_up`); hold the prior (`LoadedPrior.exclusive`). Returns its seconds."""
        return warm_up(loaded.prior, self.config("turbo", 0, loaded, device), loaded.schedule)

    def config(self, preset: str, seed: int, loaded: LoadedPrior, device: str) -> VideoJobConfig:
        """A video job's settings: ``preset`` (``""``: the default) and ``seed`` on ``device``'s prior."""
        v = self.settings
        adapt = ICADAPT_PRESETS[preset or next(iter(ICADAPT_PRESETS))]()
        if adapt.compile and not device.startswith("cuda"):  # a compile pays back over a GPU's fast steps only
            adapt = replace(adapt, compile=False)
        if v.icadapt_steps is not None:
            adapt = replace(adapt, steps=v.icadapt_steps)
        sampler = SamplerConfig(seed=seed)
        if v.ddim_steps is not None:
            sampler = replace(sampler, num_steps=v.ddim_steps)
        height, width = loaded.resolution
        return VideoJobConfig(
            width=v.width or width,
            height=v.height or height,
            views=v.views,
            icadapt=adapt,
            sampler=sampler,
            caption_model=None if v.tiny else DEFAULT_CAPTION_MODEL,
        )

    async def run(
        self, spec: JobSpec, token: CancelToken, report: ProgressReporter, device: str
    ) -> AsyncIterator[Event]:
        timeline = self.timeline(spec)  # planned once a run; checked at submission too (`validate`)
        t0 = time.perf_counter()
        first_load = device not in self.pool.priors
        if first_load:
            report.set_plan([("load", 1.0)])
            report("load", 0.0)
        loaded = await self.pool.get(device)
        load_s = time.perf_counter() - t0
        cfg = self.config(spec.preset, spec.seed, loaded, device)
        plan = ([("load", self.pool.load_cost)] if first_load else []) + cfg.stage_costs(timeline)
        report.set_plan(plan)
        if first_load:
            report("load", 1.0)
        cache = AdaptationCache(self.settings.cache_dir) if self.settings.cache_dir is not None else None

        def on_step(stage: str, fraction: float, message: str = "", *, preview: Any = None, frame: int = 0) -> None:
            if preview is not None:
                report.post(preview_event(stage, preview))  # the progress of its window was reported already
                return
            if message == FROM_CACHE:
                # ICAdapt, most of the planned cost, did not run: weigh it 0 (its place in the plan stays,
                # so the job's fraction only grows), so that the ETA extrapolates from the work that runs.
                report.set_plan([(s, 0.0 if s == "icadapt" else w) for s, w in plan])
            report(stage, fraction, message)  # raises JobCancelled once the job is cancelled

        def waiting() -> None:
            report("render", 0.0, WAITING_FOR_PRIOR)

        def generate() -> tuple[float, GeneratedScene]:
            with loaded.exclusive(token, on_wait=waiting) as prior:
                check_render_size(prior, cfg)
                t = time.perf_counter()
                renders = render_scene(
                    spec.character,
                    spec.context,
                    spec.keyframes,
                    timeline,
                    cfg,
                    device=device,
                    on_step=on_step,
                )
                render_s = time.perf_counter() - t
                return render_s, generate_video(
                    prior,
                    renders,
                    timeline,
                    cfg,
                    schedule=loaded.schedule,
                    cache=cache,
                    model_id=loaded.model_id,
                    model_config=loaded.model_config,
                    character_digest=spec.character_id,
                    on_step=on_step,
                )

        try:
            render_s, scene = await run_in_thread(token, generate)
        except torch.OutOfMemoryError as exc:  # the weights are restored; say what to change, not INTERNAL
            raise out_of_memory(device, "the video stage", exc) from exc
        t1 = time.perf_counter()
        clip = await asyncio.to_thread(_video_clip, scene)
        load = (("load", load_s),) if first_load else ()
        timings = (*load, ("render", render_s), *scene.timings, ("encode", time.perf_counter() - t1))
        yield _video_completed(spec, scene, clip, cfg, timings, self.settings.tiny)


def out_of_memory(device: str, stage: str, exc: torch.OutOfMemoryError) -> ResourceExhausted:
    """What a job that ran out of device memory in ``stage`` fails with: RESOURCE_EXHAUSTED saying how much torch
    tried to allocate (its first line) and what to change, not an INTERNAL error."""
    what = str(exc).partition("\n")[0]
    return ResourceExhausted(
        f"{device} ran out of memory in {stage} ({what}); retry once other work has freed the device, or run the "
        "server with a smaller `anymole serve --video-size` or on a larger device"
    )


def _video_clip(scene: GeneratedScene) -> VideoClip:
    """The sampled views side by side as an MP4 (H.264, every frame kept, no resizing)."""
    frames = (scene.frames.clamp(0, 1) * 255).round().to(torch.uint8)  # (V, 3, N, H, W)
    v, _, n, h, w = frames.shape
    tiled = frames.permute(2, 3, 0, 4, 1).reshape(n, h, v * w, 3)  # (N, H, V·W, 3)
    return VideoClip(encode_mp4(tiled, scene.fps), scene.fps, v * w, h, scene.request_frames, scene.views)


def _video_completed(
    spec: JobSpec,
    scene: GeneratedScene,
    clip: VideoClip,
    cfg: VideoJobConfig,
    timings: tuple[tuple[str, float], ...],
    tiny: bool,
) -> Completed:
    adapt = FROM_CACHE if scene.adaptation is None else f"{cfg.icadapt.steps} ICAdapt steps"
    summary = (
        f"generated {clip.frame_count} frames ({clip.frame_count / clip.fps:.1f} s at {clip.fps:g} fps, view "
        f"{', '.join(map(str, clip.views))}) for frames {clip.timeline_frames[0]}..{clip.timeline_frames[-1]}: {adapt}, "
        f"{cfg.sampler.num_steps} DDIM steps a window, {sum(t for _, t in timings):.1f} s; result: video only (MP4), "
        "no motion until the joint estimator and mimicking exist"
    )
    if tiny:
        summary = f"{TINY_WARNING} (tiny prior): {summary}"
    metrics = {"video_frames": float(clip.frame_count)}
    if scene.adaptation is not None and scene.adaptation.losses:
        metrics["icadapt_final_loss"] = scene.adaptation.losses[-1]
    return Completed(
        summary=summary,
        timings=timings,
        metrics=metrics,
        total_frames=spec.total_frames,
        video=clip,
    )
