"""The in-betweening job as an async stream of domain events.

A `Pipeline` turns one `JobSpec` into an async generator of events (`Progress`, `Preview`, `MotionChunk`, and
finally `Completed`). It never sees gRPC: the service layer (`anymole.service.jobs.JobManager`) stamps each
event with the job id and a sequence number, stores it and fans it out to watchers. Heavy stages are plain
functions over tensors; they run in a worker thread through `run_in_thread` and report through a
`ProgressReporter` (``report(stage, fraction)``), which also raises `JobCancelled` once the job's
`CancelToken` is set, so that cancellation reaches a running stage at its next step.

Timeline convention: frame 0 is the first context frame; the context covers frames ``0 .. C-1``, the gap
and the keyframes lie in ``C .. total_frames-1``. `MotionChunk` events carry frames of ``C ..
total_frames-1``; `Completed.motion` is the whole timeline.

Plugging in a stage (the ML issues): write it as a plain blocking function that takes ``on_step(stage,
fraction, message="")`` and calls it at every step (that call raises `JobCancelled` after a cancel); then in
`AnyMoLePipeline.run`, declare the job's stages with ``report.set_plan([(name, relative_cost), …])`` and run
each stage with ``await run_in_thread(token, stage_fn, …, on_step=report)``, yielding `Preview` and
provisional `MotionChunk` events between stages (``report.post(event)`` publishes one from inside a running
stage, e.g. a `Preview` as a sampler window finishes) and `Completed(motion=…)` at the end.

Methods:
    ``interp``   SLERP rotations, cubic or linear root (`anymole.baseline.inbetween`), instant; streams its
                 frames in chunks. Presets: ``cubic`` (default), ``linear`` (the root interpolation).
    ``video``    AnyMoLe's video stage (`anymole.video.generate.generate_video`): render the context from 4
                 views, ICAdapt, two-stage sampling; streams a `Preview` per sampler window and ends with
                 `Completed(video=…)`, the generated video (no motion yet). Presets: ``quality`` (the
                 reference ICAdapt recipe), ``fast`` (`ICAdaptConfig.fast`), ``turbo``
                 (`ICAdaptConfig.turbo`; compiled on CUDA devices, where the process's first turbo job pays
                 the compile, eager elsewhere). Available when `VideoSettings` names a prior; the prior
                 loads on the first ``video`` job, on that job's device, and serves one ``video`` job at a
                 time there. With `VideoSettings.warmup` the server loads it on every device and compiles
                 ``turbo`` on CUDA devices as it starts (`AnyMoLePipeline.warm_up`).
    ``anymole``  the whole pipeline (video → joint estimator → mimicking); listed but unavailable until the
                 estimator and mimicking stages exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import torch

from anymole.errors import AssetError, InvalidInput, JobCancelled, ModelUnavailable, ResourceExhausted
from anymole.rig import Character, Motion

if TYPE_CHECKING:
    from anymole.video.generate import GeneratedScene, VideoJobConfig, VideoPreview
    from anymole.video.prior import VideoPrior
    from anymole.video.schedule import DDIMSchedule

__all__ = [
    "DEFAULT_CHUNK_FRAMES",
    "TINY_PRIOR",
    "AnyMoLePipeline",
    "CancelToken",
    "Cancelled",
    "Completed",
    "Event",
    "Failed",
    "Interrupted",
    "JobSpec",
    "MethodSpec",
    "MotionChunk",
    "Pipeline",
    "Preview",
    "Progress",
    "ProgressReporter",
    "Queued",
    "VideoClip",
    "VideoSettings",
    "check_spec",
    "is_terminal",
    "run_in_thread",
]

DEFAULT_CHUNK_FRAMES = 30
"""Frames per `MotionChunk` when the request leaves it to the server (one second at 30 fps)."""

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- the job
@dataclass(frozen=True, eq=False)
class JobSpec:
    """One validated in-betweening request.

    Attributes:
        character_id: content id of the character (``"sha256:…"``).
        character: the character itself; its skeleton fixes the joint order ``J``.
        context: known motion, timeline frames ``0 .. C-1``; ``rotations (C, J, 4)`` unit xyzw,
            ``root_translation (C, 3)`` m, at ``context.fps``.
        key_frames: ``K`` strictly increasing timeline frames, each in ``C .. total_frames-1``.
        key_rotations: ``(K, J, 4)`` unit xyzw local rotations at the keyframes.
        key_root: ``(K, 3)`` root translations at the keyframes (m).
        key_translations: optional ``(K, J, 3)`` local translations of every joint at the keyframes (m);
            only with ``context.translations`` (``None``: the last context frame's are held).
        total_frames: timeline length ``T`` (context plus gap).
        method: a method name of the pipeline (``"interp"``).
        preset: a preset of that method (``""`` = its default).
        chunk_frames: frames per streamed `MotionChunk` (> 0).
        seed: seed of every random generator the job uses.
        label: free-form label for listings.
    """

    character_id: str
    character: Character
    context: Motion
    key_frames: tuple[int, ...]
    key_rotations: torch.Tensor
    key_root: torch.Tensor
    total_frames: int
    method: str = "interp"
    preset: str = ""
    chunk_frames: int = DEFAULT_CHUNK_FRAMES
    seed: int = 0
    label: str = ""
    key_translations: torch.Tensor | None = None

    @property
    def num_joints(self) -> int:
        return self.character.skeleton.num_joints

    @property
    def context_frames(self) -> int:
        return self.context.num_frames


# ---------------------------------------------------------------------------------------------- events
@dataclass(frozen=True)
class Queued:
    """The job waits for a device; ``position`` jobs are ahead of it (0 = next)."""

    position: int


@dataclass(frozen=True)
class Progress:
    """A stage made progress. Fractions in [0, 1]; ``eta_seconds`` is ``None`` while unknown."""

    stage: str
    stage_fraction: float
    fraction: float
    eta_seconds: float | None = None
    message: str = ""


@dataclass(frozen=True)
class Preview:
    """A small encoded frame of the generated video (``data`` in ``mime_type``, ``width × height`` px)."""

    stage: str
    frame: int
    view: int
    mime_type: str
    data: bytes
    width: int
    height: int


@dataclass(frozen=True, eq=False)
class MotionChunk:
    """Result frames ``frame_start .. frame_start + n - 1`` of the timeline.

    Attributes:
        frame_start: first timeline frame.
        rotations: ``(n, J, 4)`` float32 unit xyzw local rotations.
        root_translation: ``(n, 3)`` float32 root translations (m).
        is_final: False for a provisional draft that later chunks replace.
        translations: optional ``(n, J, 3)`` float32 local translations of every joint (m), when the job's
            context carries them.
    """

    frame_start: int
    rotations: torch.Tensor
    root_translation: torch.Tensor
    is_final: bool = True
    translations: torch.Tensor | None = None

    @property
    def frame_count(self) -> int:
        return int(self.rotations.shape[0])


@dataclass(frozen=True, eq=False)
class VideoClip:
    """A generated video, the result of a ``video`` job.

    Attributes:
        data: the video as MP4 (H.264) bytes; several sampled views lie side by side, left to right.
        fps: frames per second of the video (15).
        width, height: frame size in px (``width`` = views × render width).
        timeline_frames: the frame each video frame shows on the request's timeline (one per video frame).
        views: the camera views, left to right.
        mime_type: media type of ``data``.
    """

    data: bytes
    fps: float
    width: int
    height: int
    timeline_frames: tuple[int, ...]
    views: tuple[int, ...] = (0,)
    mime_type: str = "video/mp4"

    @property
    def frame_count(self) -> int:
        return len(self.timeline_frames)


@dataclass(frozen=True, eq=False)
class Completed:
    """The job finished.

    Attributes:
        summary: one line for a user.
        timings: ``(stage, seconds)`` in stage order.
        metrics: named quality numbers (e.g. ``key_error_deg``).
        total_frames: timeline length of the result.
        motion: the whole result timeline; the job manager stores it and publishes the event without it.
        video: the generated video of a ``video`` job; stored and left out of the event like ``motion``.
    """

    summary: str
    timings: tuple[tuple[str, float], ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)
    total_frames: int = 0
    motion: Motion | None = None
    video: VideoClip | None = None


@dataclass(frozen=True)
class Failed:
    """The job failed: ``code`` is a google.rpc.Code value, ``field`` the request field to blame (if any)."""

    code: int
    message: str
    field: str = ""


@dataclass(frozen=True)
class Cancelled:
    """The job was cancelled."""

    reason: str


@dataclass(frozen=True)
class Interrupted:
    """The server stopped while the job ran."""

    reason: str


Event = Queued | Progress | Preview | MotionChunk | Completed | Failed | Cancelled | Interrupted
"""Every domain event of a job."""

_TERMINAL = (Completed, Failed, Cancelled, Interrupted)


def is_terminal(event: Event) -> bool:
    """Whether nothing can follow ``event`` in its job's stream."""
    return isinstance(event, _TERMINAL)


# ---------------------------------------------------------------------------------------------- control
class CancelToken:
    """Set once by `cancel`; read from the event loop and from stage threads alike."""

    def __init__(self) -> None:
        self._flag = threading.Event()
        self.reason = ""

    def cancel(self, reason: str = "cancelled by a client") -> None:
        if not self._flag.is_set():
            self.reason = reason
            self._flag.set()

    @property
    def cancelled(self) -> bool:
        return self._flag.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise `JobCancelled` if the token is set (call it between steps)."""
        if self._flag.is_set():
            raise JobCancelled(self.reason)

    async def sleep(self, seconds: float, poll: float = 0.05) -> None:
        """``asyncio.sleep`` that raises `JobCancelled` within ``poll`` seconds of a cancel."""
        end = time.monotonic() + seconds
        while True:
            self.raise_if_cancelled()
            left = end - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, poll))


class ProgressReporter:
    """The ``on_step(stage, fraction, message="")`` callback handed to stages.

    Converts stage progress into `Progress` events with an overall fraction (stages weighted by ``plan``)
    and an ETA extrapolated from the elapsed time, and raises `JobCancelled` once ``token`` is set. Safe to
    call from any thread: ``emit`` must be thread-safe (the job manager posts onto its event loop).

    Args:
        emit: receives each `Progress` event, and the events a stage posts (`post`).
        token: the job's cancel token.
        plan: ``(stage, weight)`` in run order; weights need not sum to 1.
        min_interval: seconds between two events of one stage, except at fraction 0 and 1.
    """

    def __init__(
        self,
        emit: Callable[[Event], None],
        token: CancelToken,
        plan: Sequence[tuple[str, float]] = (),
        min_interval: float = 0.1,
    ) -> None:
        self._emit = emit
        self._token = token
        self._lock = threading.Lock()
        self.set_plan(plan)
        self._min_interval = min_interval
        self._start = time.monotonic()
        self._last_emit: dict[str, float] = {}

    def set_plan(self, plan: Sequence[tuple[str, float]]) -> None:
        """Declare the stages of this job and their relative cost."""
        total = sum(w for _, w in plan) or 1.0
        self._offset: dict[str, float] = {}
        self._weight: dict[str, float] = {}
        acc = 0.0
        for stage, w in plan:
            self._offset[stage] = acc / total
            self._weight[stage] = w / total
            acc += w

    def overall(self, stage: str, stage_fraction: float) -> float:
        """Job fraction when ``stage`` is ``stage_fraction`` done (stages outside the plan count as 0)."""
        return min(1.0, self._offset.get(stage, 0.0) + self._weight.get(stage, 0.0) * stage_fraction)

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        self._token.raise_if_cancelled()
        fraction = min(1.0, max(0.0, float(fraction)))
        now = time.monotonic()
        with self._lock:
            last = self._last_emit.get(stage)
            if last is not None and 0.0 < fraction < 1.0 and now - last < self._min_interval:
                return
            self._last_emit[stage] = now
        done = self.overall(stage, fraction)
        elapsed = now - self._start
        eta = elapsed * (1.0 - done) / done if done > 0.01 else None
        self._emit(Progress(stage, fraction, done, eta, message))

    def post(self, event: Event) -> None:
        """Publish ``event`` (a `Preview`) from inside a running stage, in order with its `Progress` events;
        raises `JobCancelled` once the job is cancelled, like a progress report."""
        self._token.raise_if_cancelled()
        self._emit(event)


_T = TypeVar("_T")


async def run_in_thread(token: CancelToken, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """Run a blocking stage in a worker thread; on cancellation wait until the stage has stopped.

    When the awaiting task is cancelled, ``token`` is set and this waits for the thread (which raises
    `JobCancelled` at its next ``report`` call) before re-raising, so a device is never used by two jobs.
    """
    loop = asyncio.get_running_loop()
    fut = loop.run_in_executor(None, lambda: fn(*args, **kwargs))
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        token.cancel(token.reason or "cancelled")
        try:
            await fut
        except Exception:  # the stage's own JobCancelled: the cancellation below is what matters
            pass
        raise


def _in_daemon_thread(fn: Callable[[], _T]) -> asyncio.Future[_T]:
    """``fn()`` in a daemon thread, as a future of the running loop: for work that cannot stop midway (a
    compile of minutes) and that a stopping process should not wait for. Cancelling the future leaves the
    thread running until ``fn`` returns."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[_T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not fut.done():  # cancelled meanwhile
            outcome()

    def run() -> None:
        try:
            result = fn()
        except BaseException as exc:  # handed to the awaiting task
            done = functools.partial(settle, functools.partial(fut.set_exception, exc))
        else:
            done = functools.partial(settle, functools.partial(fut.set_result, result))
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(done)

    threading.Thread(target=run, name="anymole-daemon", daemon=True).start()
    return fut


# ---------------------------------------------------------------------------------------------- pipelines
@dataclass(frozen=True)
class MethodSpec:
    """A method a pipeline offers: its presets (first = default), whether it can run here, and what its jobs
    produce: ``result`` is ``"motion"`` (GLB/BVH/NPZ results) or ``"video"`` (an MP4 result)."""

    name: str
    description: str
    presets: tuple[str, ...]
    available: bool = True
    unavailable_reason: str = ""
    sends_previews: bool = False
    result: str = "motion"


class Pipeline(Protocol):
    """What the job manager runs. Implementations: `AnyMoLePipeline`; the tests' scripted fakes.

    A pipeline may also define ``validate(spec)``: cheap method-specific checks that raise `InvalidInput`;
    `check_spec` calls it when a job is submitted, so a request that cannot run is refused before it queues.
    """

    def methods(self) -> Sequence[MethodSpec]:
        """The methods this pipeline offers."""
        ...

    def run(
        self, spec: JobSpec, token: CancelToken, report: ProgressReporter, device: str
    ) -> AsyncIterator[Event]:
        """Events of one job on ``device``; the last one is `Completed` (errors are raised)."""
        ...


def check_method(pipeline: Pipeline, method: str, preset: str) -> MethodSpec:
    """The `MethodSpec` for ``method``; `InvalidInput` for an unknown method or preset, `ModelUnavailable`
    for a method that cannot run on this server."""
    specs = {m.name: m for m in pipeline.methods()}
    if method not in specs:
        raise InvalidInput("method", f"unknown method {method!r}; this server offers {sorted(specs)}")
    spec = specs[method]
    if preset and preset not in spec.presets:
        raise InvalidInput("preset", f"method {method!r} has no preset {preset!r}; choose one of {list(spec.presets)}")
    if not spec.available:
        raise ModelUnavailable(method, spec.unavailable_reason)
    return spec


def check_spec(pipeline: Pipeline, spec: JobSpec) -> MethodSpec:
    """`check_method` for the spec's method and preset, then the pipeline's own ``validate(spec)`` if it has
    one; raises what they raise."""
    method = check_method(pipeline, spec.method, spec.preset)
    validate = getattr(pipeline, "validate", None)
    if validate is not None:
        validate(spec)
    return method


def key_error_deg(result: Motion, key_frames: Sequence[int], key_rotations: torch.Tensor) -> float:
    """Largest angle (degrees) between the result and the requested keyframe rotations, over keys and joints.

    Args:
        result: the whole timeline, ``rotations (T, J, 4)``.
        key_frames: ``K`` timeline frames.
        key_rotations: ``(K, J, 4)`` unit xyzw.
    """
    got = result.rotations[list(key_frames)].to(key_rotations.dtype)
    dot = (got * key_rotations).sum(-1).abs().clamp(max=1.0)
    return float(torch.rad2deg(2.0 * torch.acos(dot)).max())


#: `VideoSettings.prior` value for DynamiCrafter's architecture at tiny size with random weights.
TINY_PRIOR = "tiny"
# The checkpoint's name in a folder of `anymole models pull` (video.hub.MODELS["dynamicrafter-512-interp"]).
_CHECKPOINT_NAME = "model.ckpt"
_TINY_WARNING = "random weights: previews are noise"
_VIDEO_DESCRIPTION = (
    "AnyMoLe's video stage: renders the context from 4 views, ICAdapt-adapts the video prior, generates the "
    "in-between video with two-stage guided sampling (Algorithm 2), streams a preview frame per window; result: "
    "the generated video (MP4; no motion until the joint estimator and mimicking exist)"
)
# Relative stage costs for ETAs, in seconds at full size on an H100/H200 (docs/benchmarks.md, "Video prior"):
# an ICAdapt step of 8 clips ≈ 1.6–2.3 s (quality), 1.1–1.7 s (fast), 0.5 s (turbo, whose first job in a process
# also compiles for minutes: one step's weight can't carry that), one denoiser step of a window ≈ 0.25 s, a
# rendered frame per view ≈ 10 ms, reading the 10 GB checkpoint ≈ 30 s.
_COST_ICADAPT_STEP = {"spatial": 2.0, "decoder": 1.4, "lora_top": 0.5}  # by the presets' training modes
_COST_WINDOW_STEP = 0.25
_COST_RENDER_FRAME = 0.01
_COST_LOAD = 30.0


@dataclass(frozen=True)
class VideoSettings:
    """How a server runs the ``video`` method (``anymole serve --video-prior …``).

    Attributes:
        prior: ``None`` (the method is unavailable), ``"tiny"`` (DynamiCrafter's architecture at tiny size
            with random weights, seed 0: the offline demo and tests; its videos are noise), or the path of a
            DynamiCrafter 512 interpolation checkpoint (`DynamiCrafterPrior.from_pretrained`, CLIP tokenizer
            files beside it) or of the folder holding it as ``model.ckpt``.
        icadapt_steps: ICAdapt optimiser steps for every preset (``None``: the presets' 500).
        ddim_steps: DDIM steps per sampler window (``None``: 50).
        width, height: render size in px, multiples of 8 (``None``: the prior's training size, 512 × 320; 64 × 64
            for ``tiny``).
        views: orbit views rendered for ICAdapt (4).
        cache_dir: where ICAdapt results are cached per (model, character, context, settings); ``None``: no
            cache (`anymole serve` puts it in the data directory).
        warmup: when the server starts, load the prior on every device and, on CUDA devices, compile the
            ``turbo`` preset there (`anymole.video.generate.warm_up`), so the first jobs do not pay for either;
            jobs that arrive meanwhile wait for it.
    """

    prior: str | None = None
    icadapt_steps: int | None = None
    ddim_steps: int | None = None
    width: int | None = None
    height: int | None = None
    views: int = 4
    cache_dir: Path | None = None
    warmup: bool = False

    def __post_init__(self) -> None:
        for name in ("icadapt_steps", "ddim_steps", "width", "height"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InvalidInput(name, f"must be >= 1, got {value}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and value % 8:
                raise InvalidInput(name, f"must be a multiple of 8 (the VAE's factor), got {value}")
        if self.views < 1:
            raise InvalidInput("views", f"must be >= 1, got {self.views}")

    @property
    def tiny(self) -> bool:
        return self.prior == TINY_PRIOR

    def checkpoint(self) -> Path | None:
        """The checkpoint file ``prior`` names: the path itself, or ``model.ckpt`` inside a folder (the one
        ``anymole models pull`` fills); ``None`` for no prior or ``tiny``."""
        if self.prior is None or self.tiny:
            return None
        path = Path(self.prior).expanduser()
        return path / _CHECKPOINT_NAME if path.is_dir() else path

    def unavailable_reason(self) -> str:
        """Why the ``video`` method cannot run with these settings, and how to enable it; empty if it can."""
        enable = (
            "start the server with `anymole serve --video-prior PATH` (a DynamiCrafter 512 interp checkpoint: "
            "`anymole models pull dynamicrafter-512-interp` fetches it) or `--video-prior tiny` (random weights, "
            "a dry run whose videos are noise)"
        )
        if self.prior is None:
            return f"no video prior is configured on this server: {enable}"
        checkpoint = self.checkpoint()
        if checkpoint is not None and not checkpoint.is_file():
            return f"the video prior checkpoint {checkpoint} does not exist on the server: {enable}"
        from anymole.video.generate import ffmpeg_problem

        return ffmpeg_problem()


#: the progress message of a video job waiting for its device's prior
_WAITING_FOR_PRIOR = "waiting for this device's video prior: another video job or the server's warm-up holds it"

#: the ``video`` method's presets (the first is its default) → their `ICAdaptConfig` constructors.
_ICADAPT_PRESETS = {"quality": "reference", "fast": "fast", "turbo": "turbo"}


@dataclass
class _LoadedPrior:
    prior: VideoPrior
    schedule: DDIMSchedule
    model_id: str
    model_config: Any
    resolution: tuple[int, int]
    # Held by the job that adapts and samples the prior: ICAdapt overwrites its weights in place (restored
    # after the job), and two workers may share a device (``--device cpu --device cpu``), hence one prior.
    busy: threading.Lock = field(default_factory=threading.Lock)

    @contextlib.contextmanager
    def exclusive(
        self, token: CancelToken, poll: float = 0.1, on_wait: Callable[[], None] | None = None
    ) -> Iterator[VideoPrior]:
        """The prior, for one job at a time (blocking: call it in a worker thread); a job that waits for
        another one (or for the warm-up's compile) still stops within ``poll`` seconds of a cancel, and
        ``on_wait()`` runs once when it has to wait."""
        if not self.busy.acquire(blocking=False):
            if on_wait is not None:
                on_wait()
            while not self.busy.acquire(timeout=poll):
                token.raise_if_cancelled()
        try:
            yield self.prior
        finally:
            self.busy.release()


class AnyMoLePipeline:
    """The server's pipeline: the ``interp`` baseline, the ``video`` stage (when ``video`` names a prior), and
    the whole ``anymole`` method once its last stages exist.

    Args:
        video: how to run the ``video`` method (default: unavailable).
    """

    def __init__(self, video: VideoSettings | None = None) -> None:
        self.video = video or VideoSettings()
        self._priors: dict[str, _LoadedPrior] = {}
        self._load_lock = threading.Lock()
        # device → its prior's load in a worker thread, shared by the jobs that wait for it (event loop only)
        self._loading: dict[str, asyncio.Future[_LoadedPrior]] = {}

    def methods(self) -> Sequence[MethodSpec]:
        reason = self.video.unavailable_reason()
        description = f"{_TINY_WARNING} (tiny prior). {_VIDEO_DESCRIPTION}" if self.video.tiny else _VIDEO_DESCRIPTION
        return (
            MethodSpec(
                "interp",
                "SLERP rotations between context and keyframes; cubic or linear root (instant baseline)",
                presets=("cubic", "linear"),
            ),
            MethodSpec(
                "video",
                description,
                presets=tuple(_ICADAPT_PRESETS),
                available=not reason,
                unavailable_reason=reason,
                sends_previews=True,
                result="video",
            ),
            MethodSpec(
                "anymole",
                "video diffusion prior + scene-specific joint estimator + motion video mimicking",
                presets=("quality", "fast"),
                available=False,
                unavailable_reason=(
                    "the joint estimator and motion mimicking stages are not built yet; use method 'interp' for "
                    "motion, or 'video' for the generated video"
                ),
                sends_previews=True,
            ),
        )

    def validate(self, spec: JobSpec) -> None:
        """Method-specific checks before a job queues: a ``video`` job's keyframes must fit the sampler's
        timeline (`anymole.video.generate.plan_timeline`), and its timeline ends at the last keyframe (the
        video stops there)."""
        if spec.method == "video":
            from anymole.video.generate import plan_timeline

            plan_timeline(spec.context_frames, spec.context.fps, spec.key_frames)
            end = spec.key_frames[-1] + 1
            if spec.total_frames != end:
                raise InvalidInput(
                    "total_frames",
                    f"the video method generates frames up to the last keyframe ({end - 1}), not to "
                    f"{spec.total_frames - 1}; send total_frames {end} or 0, or add a keyframe a second later",
                )

    async def run(
        self, spec: JobSpec, token: CancelToken, report: ProgressReporter, device: str
    ) -> AsyncIterator[Event]:
        method = check_spec(self, spec)
        if method.name == "interp":
            async for event in self._interp(spec, token, report):
                yield event
        elif method.name == "video":
            async for event in self._video(spec, token, report, device):
                yield event

    # ------------------------------------------------------------------ video
    def _video_config(self, preset: str, seed: int, loaded: _LoadedPrior, device: str) -> VideoJobConfig:
        """A video job's settings: ``preset`` (``""``: the default) and ``seed`` on ``device``'s prior."""
        from anymole.video.caption import DEFAULT_CAPTION_MODEL
        from anymole.video.generate import VideoJobConfig
        from anymole.video.icadapt import ICAdaptConfig
        from anymole.video.sampler import SamplerConfig

        v = self.video
        adapt = getattr(ICAdaptConfig, _ICADAPT_PRESETS[preset or "quality"])()
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

    def _load_prior(self, device: str) -> _LoadedPrior:
        """The prior on ``device``, loaded on first use (blocking: call it in a worker thread). Loads take turns
        (one checkpoint in host memory at a time); a device whose prior is loaded does not wait for them."""
        loaded = self._priors.get(device)
        if loaded is not None:
            return loaded
        with self._load_lock:
            if device in self._priors:
                return self._priors[device]
            from anymole.video.dynamicrafter import DynamiCrafterConfig, DynamiCrafterPrior
            from anymole.video.schedule import DDIMSchedule

            if self.video.tiny:
                config = DynamiCrafterConfig.tiny()
                with torch.random.fork_rng(devices=[]):  # seed 0 without touching the caller's RNG
                    torch.manual_seed(0)
                    prior = DynamiCrafterPrior(config)
                prior = prior.to(device)
                model_id = "dynamicrafter-tiny@random-seed-0"
            else:
                checkpoint = self.video.checkpoint()
                assert checkpoint is not None  # not tiny, and unavailable_reason() was empty
                path = checkpoint.resolve()
                try:
                    prior = DynamiCrafterPrior.from_pretrained(path, device=device)
                except AssetError as exc:  # the server's own file, not the client's: FAILED_PRECONDITION
                    raise ModelUnavailable(
                        "video prior",
                        f"{exc}; point `anymole serve --video-prior` at the model.ckpt of "
                        "`anymole models pull dynamicrafter-512-interp`",
                    ) from exc
                config = prior.config
                stat = path.stat()
                model_id = f"dynamicrafter-512-interp@{path}:{stat.st_size}:{stat.st_mtime_ns}"
            prior.eval()
            loaded = _LoadedPrior(
                prior, DDIMSchedule(**config.scheduler_kwargs()), model_id, config.to_dict(), config.resolution
            )
            self._priors[device] = loaded
            return loaded

    async def warm_up(self, devices: Sequence[str]) -> None:
        """`VideoSettings.warmup`: load the prior on each of ``devices`` and, on CUDA devices, compile the
        ``turbo`` preset (one ICAdapt step on random frames, holding the prior as a job would). Devices warm up
        one after another (checkpoint loads take turns anyway); a device whose warm-up fails is logged and the
        next one warms up (jobs on it load and compile on first use). Nothing to do without ``warmup``; without
        a usable prior a warning says why (the video method is off then)."""
        if not self.video.warmup:
            return
        if reason := self.video.unavailable_reason():
            log.warning("no video warm-up: %s", reason)
            return
        for device in dict.fromkeys(devices):
            try:
                await self._warm_up_on(device)
            except Exception:
                log.exception("video warm-up failed on %s; jobs there load and compile on first use", device)

    async def _warm_up_on(self, device: str) -> None:
        from anymole.video.generate import warm_up

        loaded = await self._prior_on(device)
        log.info("video prior loaded on %s", device)
        if not device.startswith("cuda"):
            return
        cfg = self._video_config("turbo", 0, loaded, device)

        def compile_turbo() -> float:
            with loaded.exclusive(CancelToken()) as prior:
                return warm_up(prior, cfg, loaded.schedule)

        seconds = await _in_daemon_thread(compile_turbo)
        log.info("turbo preset compiled on %s in %.0f s", device, seconds)

    async def _prior_on(self, device: str) -> _LoadedPrior:
        """The prior on ``device``, loading it in a worker thread on first use. A job cancelled while the prior
        loads stops at once: a checkpoint load (about 30 s at full size) cannot be interrupted, so it goes on
        for the jobs after it, which wait for the same load rather than start another. A failed load is
        forgotten: the next job tries again."""
        loaded = self._priors.get(device)
        if loaded is not None:
            return loaded
        load = self._loading.get(device)
        if load is None or (load.done() and (load.cancelled() or load.exception() is not None)):
            load = asyncio.get_running_loop().run_in_executor(None, self._load_prior, device)
            self._loading[device] = load
        try:
            return await asyncio.shield(load)
        finally:
            if load.done() and self._loading.get(device) is load:
                del self._loading[device]

    async def _video(
        self, spec: JobSpec, token: CancelToken, report: ProgressReporter, device: str
    ) -> AsyncIterator[Event]:
        from anymole.video.cache import AdaptationCache
        from anymole.video.generate import FROM_CACHE, generate_video, plan_timeline, sampler_windows

        timeline = plan_timeline(spec.context_frames, spec.context.fps, spec.key_frames)
        t0 = time.perf_counter()
        first_load = device not in self._priors
        if first_load:
            report.set_plan([("load", 1.0)])
            report("load", 0.0)
        loaded = await self._prior_on(device)
        load_s = time.perf_counter() - t0
        cfg = self._video_config(spec.preset, spec.seed, loaded, device)
        windows = len(sampler_windows(timeline)) * len(cfg.sample_views)
        frames = timeline.render_context_frames + timeline.num_gaps
        plan = ([("load", _COST_LOAD if not self.video.tiny else 1.0)] if first_load else []) + [
            ("render", _COST_RENDER_FRAME * cfg.views * frames),
            ("icadapt", _COST_ICADAPT_STEP.get(cfg.icadapt.mode, 2.0) * cfg.icadapt.steps),
            ("sample", _COST_WINDOW_STEP * windows * cfg.sampler.num_steps),
        ]
        report.set_plan(plan)
        if first_load:
            report("load", 1.0)
        cache = AdaptationCache(self.video.cache_dir) if self.video.cache_dir is not None else None

        def on_step(stage: str, fraction: float, preview: VideoPreview | None = None, message: str = "") -> None:
            if preview is not None:
                report.post(_preview_event(stage, preview))  # the progress of its window was reported already
                return
            if message == FROM_CACHE:
                # ICAdapt, most of the planned cost, did not run: weigh it 0 (its place in the plan stays,
                # so the job's fraction only grows), so that the ETA extrapolates from the work that runs.
                report.set_plan([(s, 0.0 if s == "icadapt" else w) for s, w in plan])
            report(stage, fraction, message)  # raises JobCancelled once the job is cancelled

        def waiting() -> None:
            report("render", 0.0, _WAITING_FOR_PRIOR)

        def generate() -> GeneratedScene:
            with loaded.exclusive(token, on_wait=waiting) as prior:
                return generate_video(
                    spec.character,
                    spec.context,
                    spec.key_frames,
                    spec.key_rotations,
                    spec.key_root,
                    prior,
                    cfg,
                    key_translations=spec.key_translations,
                    schedule=loaded.schedule,
                    cache=cache,
                    model_id=loaded.model_id,
                    model_config=loaded.model_config,
                    character_digest=spec.character_id,
                    on_step=on_step,
                )

        try:
            scene = await run_in_thread(token, generate)
        except torch.OutOfMemoryError as exc:  # the weights are restored; say what to change, not INTERNAL
            what = str(exc).partition("\n")[0]  # torch's first line: how much it tried to allocate
            raise ResourceExhausted(
                f"{device} ran out of memory in the video stage ({what}); retry once other work has freed "
                "the device, or run the server with a smaller `anymole serve --video-size` or on a larger device"
            ) from exc
        t1 = time.perf_counter()
        clip = await asyncio.to_thread(_video_clip, scene)
        yield _video_completed(spec, scene, clip, cfg, load_s if first_load else None, time.perf_counter() - t1, self.video.tiny)

    async def _interp(self, spec: JobSpec, token: CancelToken, report: ProgressReporter) -> AsyncIterator[Event]:
        from anymole.baseline import inbetween

        report.set_plan([("interp", 1.0), ("stream", 1.0)])
        report("interp", 0.0)
        t0 = time.perf_counter()
        motion = await run_in_thread(
            token,
            inbetween,
            spec.context,
            list(spec.key_frames),
            spec.key_rotations,
            spec.key_root,
            spec.total_frames,
            method="slerp",
            root=spec.preset or "cubic",
            key_translations=spec.key_translations,
        )
        t1 = time.perf_counter()
        report("interp", 1.0)
        start, total = spec.context_frames, spec.total_frames
        n_chunks = max(1, math.ceil((total - start) / spec.chunk_frames))
        rot = motion.rotations.to(torch.float32)
        root = motion.root_translation.to(torch.float32)
        tr = None if motion.translations is None else motion.translations.to(torch.float32)
        for i, s in enumerate(range(start, total, spec.chunk_frames)):
            e = min(total, s + spec.chunk_frames)
            part = None if tr is None else tr[s:e].contiguous()
            yield MotionChunk(s, rot[s:e].contiguous(), root[s:e].contiguous(), is_final=True, translations=part)
            report("stream", (i + 1) / n_chunks)
            await asyncio.sleep(0)  # let watchers drain and cancels land between chunks
        t2 = time.perf_counter()
        err = key_error_deg(motion, spec.key_frames, spec.key_rotations)
        yield Completed(
            summary=f"filled frames {start}..{total - 1} with interp/{spec.preset or 'cubic'} in {t2 - t0:.3f} s",
            timings=(("interp", t1 - t0), ("stream", t2 - t1)),
            metrics={"key_error_deg": err},
            total_frames=total,
            motion=motion,
        )


def _preview_event(stage: str, preview: VideoPreview) -> Preview:
    """A JPEG `Preview` of a sampler window's frame (encoded in the stage thread)."""
    from PIL import Image

    rgb = (preview.image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=85)
    height, width = rgb.shape[:2]
    return Preview(stage, preview.frame, preview.view, "image/jpeg", buf.getvalue(), width, height)


def _video_clip(scene: GeneratedScene) -> VideoClip:
    """The sampled views side by side as an MP4 (H.264, every frame kept, no resizing)."""
    from anymole.video.generate import encode_mp4

    frames = (scene.frames.clamp(0, 1) * 255).round().to(torch.uint8)  # (V, 3, N, H, W)
    v, _, n, h, w = frames.shape
    tiled = frames.permute(2, 3, 0, 4, 1).reshape(n, h, v * w, 3)  # (N, H, V·W, 3)
    return VideoClip(encode_mp4(tiled, scene.fps), scene.fps, v * w, h, scene.request_frames, scene.views)


def _video_completed(
    spec: JobSpec,
    scene: GeneratedScene,
    clip: VideoClip,
    cfg: VideoJobConfig,
    load_s: float | None,
    encode_s: float,
    tiny: bool,
) -> Completed:
    from anymole.video.generate import FROM_CACHE

    timings = ((("load", load_s),) if load_s is not None else ()) + scene.timings + (("encode", encode_s),)
    adapt = FROM_CACHE if scene.adaptation is None else f"{cfg.icadapt.steps} ICAdapt steps"
    summary = (
        f"generated {clip.frame_count} frames ({clip.frame_count / clip.fps:.1f} s at {clip.fps:g} fps, view "
        f"{', '.join(map(str, clip.views))}) for frames {spec.context_frames - 1}..{spec.key_frames[-1]}: {adapt}, "
        f"{cfg.sampler.num_steps} DDIM steps a window, {sum(t for _, t in timings):.1f} s; result: video only (MP4), "
        "no motion until the joint estimator and mimicking exist"
    )
    if tiny:
        summary = f"{_TINY_WARNING} (tiny prior): {summary}"
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
