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
provisional `MotionChunk` events between stages and `Completed(motion=…)` at the end.

Methods:
    ``interp``   SLERP rotations, cubic or linear root (`anymole.baseline.inbetween`), instant; streams its
                 frames in chunks. Presets: ``cubic`` (default), ``linear`` (the root interpolation).
    ``anymole``  the video-prior pipeline; listed but unavailable until its stages are plugged in.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import torch

from anymole.errors import InvalidInput, JobCancelled, ModelUnavailable
from anymole.rig import Character, Motion

__all__ = [
    "DEFAULT_CHUNK_FRAMES",
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
    "is_terminal",
    "run_in_thread",
]

DEFAULT_CHUNK_FRAMES = 30
"""Frames per `MotionChunk` when the request leaves it to the server (one second at 30 fps)."""


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
class Completed:
    """The job finished.

    Attributes:
        summary: one line for a user.
        timings: ``(stage, seconds)`` in stage order.
        metrics: named quality numbers (e.g. ``key_error_deg``).
        total_frames: timeline length of the result.
        motion: the whole result timeline; the job manager stores it and publishes the event without it.
    """

    summary: str
    timings: tuple[tuple[str, float], ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)
    total_frames: int = 0
    motion: Motion | None = None


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
        emit: receives each `Progress` event.
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


# ---------------------------------------------------------------------------------------------- pipelines
@dataclass(frozen=True)
class MethodSpec:
    """A method a pipeline offers: its presets (first = default) and whether it can run here."""

    name: str
    description: str
    presets: tuple[str, ...]
    available: bool = True
    unavailable_reason: str = ""
    sends_previews: bool = False


class Pipeline(Protocol):
    """What the job manager runs. Implementations: `AnyMoLePipeline`; the tests' scripted fakes."""

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


class AnyMoLePipeline:
    """The server's pipeline: the ``interp`` baseline now; the video-prior stages plug in as ``anymole``."""

    def methods(self) -> Sequence[MethodSpec]:
        return (
            MethodSpec(
                "interp",
                "SLERP rotations between context and keyframes; cubic or linear root (instant baseline)",
                presets=("cubic", "linear"),
            ),
            MethodSpec(
                "anymole",
                "video diffusion prior + scene-specific joint estimator + motion video mimicking",
                presets=("quality", "fast"),
                available=False,
                unavailable_reason="the video-prior stages are not installed in this build; use method 'interp'",
                sends_previews=True,
            ),
        )

    async def run(
        self, spec: JobSpec, token: CancelToken, report: ProgressReporter, device: str
    ) -> AsyncIterator[Event]:
        method = check_method(self, spec.method, spec.preset)
        if method.name == "interp":
            async for event in self._interp(spec, token, report):
                yield event

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
