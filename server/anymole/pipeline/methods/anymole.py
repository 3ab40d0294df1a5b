"""The ``anymole`` method, the whole pipeline: render → ICAdapt and estimator training side by side → two-stage
sampling → estimation on the generated frames → motion video mimicking.

It streams the SLERP fill at once as provisional motion (``is_final=False``), a `Preview` per sampler window, and
each gap's final motion as soon as mimicking settles it (`solve_sizes`: on a CPU the first gap alone, then
doubling groups; on a GPU, where a solve's few frames leave the device mostly idle, all gaps in one batched
solve, which should settle them all about when one gap alone would settle); the provisional fill of the other
gaps stands until then. Keys may lie at any spacing up to `MAX_GAP_SECONDS` (see
`anymole.video.timeline`). The estimator needs only the renders, so it trains in a
thread of its own while the prior adapts and samples; whichever of the two fails first stops the other at its
next step, and the job fails with that one's error. Per scene, the adapted prior (`AdaptationCache`) and the
trained estimator (`EstimatorCache`) are cached under `VideoSettings.cache_dir`, keyed by the character and
its context and keyframe renders (`estimator_key` says when the gaps count too), so a second fill of the same
scene skips ICAdapt and estimator training.

Presets: ``draft`` (ICAdapt ``turbo``, the draft estimator and mimicking: CPU-sized), ``fast``, ``quality`` (the
reference's ICAdapt recipe and step counts). ``fast`` and ``quality`` use the paper's frozen ViT pair when the
server has its weights (`VideoSettings.estimator_weights`), the conv backbone otherwise, as ``draft`` always
does; the method's description and every job's summary name the backbone, and the ViTs read from those weights
stay loaded between jobs (`BackbonePool`). A method given a `BackboneFactory`
trains every preset, ``draft`` included, on the ViT pair the factory builds (`anymole bench pipeline` hands it
random-weight ViTs on a GPU: the speed of the paper's estimator under the ``turbo`` ICAdapt of ``draft``).
"""

from __future__ import annotations

import concurrent.futures
import functools
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import torch
from torch import nn

from anymole.baseline import inbetween
from anymole.errors import JobCancelled
from anymole.estimator import BACKBONES, EstimatorConfig, SceneEstimator, build_backbone
from anymole.mimic import MimicConfig
from anymole.pipeline.control import CancelToken, ProgressReporter, daemon_future, run_in_thread
from anymole.pipeline.estimator_cache import EstimatorCache, estimator_key
from anymole.pipeline.events import Completed, Event, MotionChunk
from anymole.pipeline.fromvideo import (
    background,
    estimate,
    estimator_config,
    gap_fill,
    gap_poses,
    mimic_gaps,
    relative_targets,
    solve_sizes,
    train_estimator,
)
from anymole.pipeline.methods.base import MethodSpec
from anymole.pipeline.methods.preview import preview_event
from anymole.pipeline.methods.video import WAITING_FOR_PRIOR, VideoMethod, out_of_memory
from anymole.pipeline.pool import BackbonePool
from anymole.pipeline.spec import JobSpec, key_error_deg
from anymole.rig import Motion
from anymole.video.cache import AdaptationCache
from anymole.video.config import VideoJobConfig
from anymole.video.generate import FROM_CACHE, GeneratedScene, check_render_size, generate_video, render_scene
from anymole.video.scene import SceneRenders
from anymole.video.timeline import MAX_GAP_SECONDS, MIN_CONTEXT_SECONDS, VideoTimeline

__all__ = ["PRESETS", "VIT_PAIR", "AnyMoLeMethod", "BackboneFactory", "progress_plan"]

#: preset → the ``video`` method's ICAdapt preset
PRESETS = {"draft": "turbo", "fast": "fast", "quality": "quality"}


#: relative costs of the stages after sampling (the units of `VideoJobConfig.stage_costs`): per estimator step, and
#: per mimicking iteration and gap frame by preset (each preset's solver and silhouette size; docs/quality.md,
#: "Mimicking's weight in a job's progress", has the measurement)
_ESTIMATOR_STEP_COST = 0.02
_MIMIC_STEP_COST = {"draft": 0.027, "fast": 0.18, "quality": 0.36}
#: video frames a gap (the fine sampler window's 15 fps)
_GAP_FRAMES = 15
#: the paper's frozen backbones: DINOv2-B/14 with registers (2D) and FiT3D-S/14 with registers (3D-aware)
VIT_PAIR = tuple(b for b in BACKBONES if b != "conv")
#: ``factory(name, config)`` builds the frozen backbone ``name`` for ``config`` (`anymole.estimator.build_backbone`
#: with local weights, or ``random_init=True`` for speed measurements). A job calls it for each frozen backbone
#: and does not train what it returns: a factory may hand the same module to every job.
BackboneFactory = Callable[[str, EstimatorConfig], nn.Module]


def progress_plan(video: VideoJobConfig, timeline: VideoTimeline, preset: str, estimator: EstimatorConfig,
                  mimicking: MimicConfig) -> list[tuple[str, float]]:  # fmt: skip
    """The job's stages in run order with their relative costs (`ProgressReporter.set_plan`; the estimator runs
    beside ICAdapt and sampling)."""
    mimic = _MIMIC_STEP_COST[preset] * mimicking.steps * timeline.num_gaps * _GAP_FRAMES
    return [*video.stage_costs(timeline), ("estimator", _ESTIMATOR_STEP_COST * estimator.steps), ("mimic", mimic)]


class _EstimatorFailed(Exception):
    """Raised in the video stage at its next step once the estimator's training has failed."""


def _chunks(spec: JobSpec, motion: Motion, final: bool, frames: range | None = None) -> list[MotionChunk]:
    """``motion``'s ``frames`` (default ``C .. T-1``) in chunks of ``spec.chunk_frames`` (float32)."""
    out = []
    tr = motion.translations
    frames = frames or range(spec.context_frames, motion.num_frames)
    for s in range(frames.start, frames.stop, spec.chunk_frames):
        e = min(frames.stop, s + spec.chunk_frames)
        out.append(
            MotionChunk(
                s,
                motion.rotations[s:e].to(torch.float32).contiguous(),
                motion.root_translation[s:e].to(torch.float32).contiguous(),
                is_final=final,
                translations=None if tr is None else tr[s:e].to(torch.float32).contiguous(),
            )
        )
    return out


class AnyMoLeMethod:
    """The whole method on the ``video`` method's prior and settings; ``backbones`` builds the estimator's
    frozen ViT pair for every preset (``None``: the ViT pair on the server's weights where it has them, the conv
    backbone trained per scene otherwise); ``vits`` keeps the ViTs read from those weights loaded between jobs
    (default: a pool of the method's own)."""

    def __init__(self, video: VideoMethod, backbones: BackboneFactory | None = None,
                 vits: BackbonePool | None = None) -> None:  # fmt: skip
        self.video = video
        self.backbones = backbones
        self.vits = vits if vits is not None else BackbonePool()

    def spec(self) -> MethodSpec:
        reason = self.video.settings.unavailable_reason()
        return MethodSpec(
            "anymole",
            "video diffusion prior + scene-specific joint estimator + motion video mimicking: streams the SLERP "
            f"fill at once (provisional), a preview per sampler window, then the mimicked motion; {self._backbones()}",
            presets=tuple(PRESETS),
            available=not reason,
            unavailable_reason=f"{reason}; meanwhile method 'interp' fills any gap instantly" if reason else "",
            sends_previews=True,
            min_context_seconds=float(MIN_CONTEXT_SECONDS),  # the video stage's timeline (`plan_timeline`)
            key_spacing_seconds=0.0,  # keys on any frames
            max_gap_seconds=MAX_GAP_SECONDS,
        )

    def validate(self, spec: JobSpec) -> None:
        """The video timeline's checks (2 s of context, gaps of at most `MAX_GAP_SECONDS`, ending at the last
        key)."""
        self.video.timeline(spec)

    def configs(self, preset: str) -> tuple[EstimatorConfig, MimicConfig]:
        """The estimator and mimicking settings of ``preset``: the preset's backbones where the server has the
        ViT weights they need (`VideoSettings.estimator_weights`; ``draft`` needs none), the conv backbone
        otherwise, the ViT pair of the `BackboneFactory` for every preset where the method has one; the
        server's step counts (`VideoSettings.estimator_steps`, ``mimic_steps``) where it sets them."""
        name = preset or next(iter(PRESETS))
        v = self.video.settings
        est: dict[str, Any] = {} if v.estimator_steps is None else {"steps": v.estimator_steps}
        mim = {} if v.mimic_steps is None else {"steps": v.mimic_steps}
        if self.backbones is not None:  # the factory's frozen ViTs under every preset's heads
            return EstimatorConfig.preset(name, backbones=VIT_PAIR, **est), MimicConfig.preset(name, **mim)
        return estimator_config(name, v.estimator_weights, **est), MimicConfig.preset(name, **mim)

    def _built(self, config: EstimatorConfig, device: str, token: CancelToken) -> list[nn.Module] | None:
        """``config``'s backbones with the frozen ones from the factory, or from the pool of loaded ViTs where
        ``config`` names weight files for them (``None`` for a config without either: built with the
        estimator); a job waiting for another one's load of a ViT stops when ``token`` is cancelled."""
        if self.backbones is None and not config.weights:
            return None

        def frozen(name: str) -> nn.Module:
            if self.backbones is not None:
                return self.backbones(name, config)
            return self.vits.get(name, config, device, token)

        return [frozen(b) if b in config.frozen else build_backbone(b, config) for b in config.backbones]

    def _backbones(self) -> str:
        """Which estimator backbone each preset trains (the method's description)."""
        folder = self.video.settings.estimator_weights
        if self.backbones is not None:
            return "estimator backbone: the frozen ViT pair of the method's backbone factory, for every preset"
        if folder is None:
            return ("estimator backbone: conv, trained per scene, for every preset (the paper's frozen ViTs need "
                    "`anymole models pull estimator` and `anymole serve --estimator-weights`)")  # fmt: skip
        return (f"estimator backbone: frozen DINOv2-reg ViT-B/14 + FiT3D ViT-S/14 (weights in {folder}) for fast "
                "and quality, conv for draft")  # fmt: skip

    async def run(self, spec: JobSpec, token: CancelToken, report: ProgressReporter, device: str) -> AsyncIterator[Event]:
        timeline = self.video.timeline(spec)
        preset = spec.preset or next(iter(PRESETS))
        est_cfg, mim_cfg = self.configs(preset)
        t0 = time.perf_counter()
        fill = inbetween(spec.context, spec.keyframes, spec.total_frames, root="cubic")
        for chunk in _chunks(spec, fill, final=False):  # provisional: the SLERP fill, at once
            yield chunk
        report.set_plan([("load", 1.0)])
        report("load", 0.0)
        loaded = await self.video.pool.get(device)
        cfg = self.video.config(PRESETS[preset], spec.seed, loaded, device)
        plan = progress_plan(cfg, timeline, preset, est_cfg, mim_cfg)
        report.set_plan(plan, beside=("estimator",))  # it trains while the prior adapts and samples
        settings = self.video.settings
        adapt_cache = AdaptationCache(settings.cache_dir) if settings.cache_dir is not None else None
        est_cache = EstimatorCache(settings.cache_dir / "estimator") if settings.cache_dir is not None else None
        timings: dict[str, float] = {"interp": time.perf_counter() - t0}
        cached: dict[str, bool] = {}
        # stages loaded from a cache (ICAdapt, the estimator: two threads); each skip keeps the other's
        skipped: set[str] = set()
        plan_lock = threading.Lock()

        def on_step(stage: str, fraction: float, message: str = "", *, preview: Any = None, frame: int = 0) -> None:
            if preview is not None:
                report.post(preview_event(stage, preview))
                return
            if message == FROM_CACHE:  # as the video method: a skipped stage weighs nothing in the ETA
                with plan_lock:
                    skipped.add(stage)
                    report.set_plan([(s, 0.0 if s in skipped else w) for s, w in plan], beside=("estimator",))
            report(stage, fraction, message)

        # Each of the two threads stops at its next step once the other has failed: `stop` is set when the video
        # stage fails, `fit_failed` when the estimator does (then the job fails with the estimator's error, and
        # what the video stage finished before, an adapted prior in its cache, stays).
        stop = threading.Event()
        fit_failed = threading.Event()

        def fit_step(stage: str, fraction: float, message: str = "", *, preview: Any = None, frame: int = 0) -> None:
            if stop.is_set():
                raise JobCancelled("the video stage failed")
            on_step(stage, fraction, message, preview=preview, frame=frame)

        def flag_failure(training: concurrent.futures.Future[SceneEstimator]) -> None:
            if training.exception() is not None:
                fit_failed.set()

        def video_step(stage: str, fraction: float, message: str = "", *, preview: Any = None, frame: int = 0) -> None:
            if fit_failed.is_set():
                raise _EstimatorFailed
            on_step(stage, fraction, message, preview=preview, frame=frame)

        def fit(renders: SceneRenders) -> SceneEstimator:
            t = time.perf_counter()
            key = estimator_key(spec.character_id, renders, est_cfg, gap_fill(fill, timeline))
            est = est_cache.get(key, self._built(est_cfg, device, token)) if est_cache is not None else None
            cached["estimator"] = est is not None
            if est is None:
                extra = None  # the gaps' fill and perturbations of it, rendered like the context (fromvideo)
                if est_cfg.pose_copies:
                    extra = gap_poses(spec.character, fill, timeline, renders.cameras, est_cfg.pose_copies,
                                      est_cfg.pose_noise_deg, est_cfg.seed)  # fmt: skip
                built = self._built(est_cfg, device, token)
                est = train_estimator(renders, est_cfg, fit_step, device, extra, backbones=built)
                if est_cache is not None:
                    est_cache.put(key, est)
            else:  # loaded on the CPU: estimation runs where the job does
                est.to(device)
                on_step("estimator", 1.0, FROM_CACHE)
            timings["estimator"] = time.perf_counter() - t
            return est

        def waiting() -> None:
            report("render", 0.0, WAITING_FOR_PRIOR)

        def generate() -> tuple[SceneRenders, GeneratedScene, SceneEstimator]:
            with loaded.exclusive(token, on_wait=waiting) as prior:
                check_render_size(prior, cfg)
                t = time.perf_counter()
                renders = render_scene(spec.character, spec.context, spec.keyframes, timeline, cfg, device=device,
                                       on_step=on_step)  # fmt: skip
                timings["render"] = time.perf_counter() - t
                # the estimator needs only the renders: it trains while the prior adapts and samples, in a daemon
                # thread that a stopping server can leave behind with this stage if it hangs
                estimator = daemon_future(functools.partial(fit, renders), "anymole-estimator")
                estimator.add_done_callback(flag_failure)
                try:
                    scene = generate_video(prior, renders, timeline, cfg, schedule=loaded.schedule, cache=adapt_cache,
                                           model_id=loaded.model_id, model_config=loaded.model_config,
                                           character_digest=spec.character_id, on_step=video_step)  # fmt: skip
                except _EstimatorFailed:
                    error = estimator.exception()  # done: its callback set `fit_failed`
                    assert error is not None
                    raise error from None
                except BaseException:
                    stop.set()
                    raise
                finally:  # the stage ends with its estimator thread: a device is never used by two jobs
                    concurrent.futures.wait([estimator])
                return renders, scene, estimator.result()

        try:
            renders, scene, est = await run_in_thread(token, generate)
        except torch.OutOfMemoryError as exc:  # as the video method: say what to change, not INTERNAL
            raise out_of_memory(device, "the video and estimator stages", exc) from exc
        timings.update(scene.timings)
        cached["icadapt"] = scene.from_cache

        def solve() -> Motion:
            t = time.perf_counter()
            n = renders.context.shape[2]
            view = scene.views.index(0) if 0 in scene.views else 0
            targets = estimate(est, scene.frames[view], background(renders.context[scene.views[view]], renders.mask[scene.views[view], :n]))
            camera = renders.cameras.select(scene.views[view])
            # the estimator's own error on a render of the fill, taken off where the video agrees with the fill
            targets = relative_targets(est, targets, spec.character, fill, timeline, scene.render_frames, camera,
                                       mim_cfg.fill_trust_px, mim_cfg.fill_deadband_px, mim_cfg.confidence_px)  # fmt: skip
            timings["estimate"] = time.perf_counter() - t

            def settled(frames: range, motion: Motion) -> None:  # a gap's final motion, as soon as it is solved
                for chunk in _chunks(spec, motion, True, frames):
                    report.post(chunk)

            t = time.perf_counter()
            on_step("mimic", 0.0)
            motion = mimic_gaps(spec.character, fill, timeline, scene.render_frames, camera, targets, mim_cfg, on_step,
                                solves=solve_sizes(timeline.num_gaps, batched=torch.device(device).type != "cpu"),
                                on_settled=settled, device=device)  # fmt: skip
            timings["mimic"] = time.perf_counter() - t
            return motion

        try:
            motion = await run_in_thread(token, solve)
        except torch.OutOfMemoryError as exc:
            raise out_of_memory(device, "estimation and mimicking", exc) from exc
        hits = [s for s in ("icadapt", "estimator") if cached.get(s)]
        summary = (f"filled frames {spec.context_frames}..{spec.total_frames - 1} with anymole/{preset} in "
                   f"{time.perf_counter() - t0:.1f} s (estimator backbone {'+'.join(est_cfg.backbones)}"
                   f"{'; from the cache: ' + ', '.join(hits) if hits else ''})")  # fmt: skip
        if settings.tiny:
            summary = f"random-weight video prior (tiny): the motion follows noise; {summary}"
        metrics = {
            "key_error_deg": key_error_deg(motion, spec.keyframes),
            "icadapt_cached": float(cached["icadapt"]),
            "estimator_cached": float(cached["estimator"]),
        }
        if est.losses:
            metrics["estimator_final_loss"] = est.losses[-1]
        yield Completed(summary=summary, timings=tuple(timings.items()), metrics=metrics,
                        total_frames=spec.total_frames, motion=motion)  # fmt: skip
