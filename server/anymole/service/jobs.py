"""`JobManager`: the FIFO job queue, one worker per compute device, event logs, watchers, cancel, restart.

Each job owns an append-only list of `Stamped` events (sequence numbers 1, 2, 3, …), mirrored to
``events.jsonl`` in its directory (`JobStore`). Watchers read that list from any position and then wait for
new events, so any number of clients can follow one job and a client that reconnects resumes with
``after_seq``. A dropped watcher only stops reading; `cancel` stops the job: a queued job leaves the queue,
a running one sees its `CancelToken` (stages check it at every progress report) and its task is cancelled.

On start the manager reloads every job directory: finished jobs stay readable, jobs that were running are
marked INTERRUPTED, queued jobs re-enter the queue in submission order. `shutdown(grace)` stops taking jobs,
lets running jobs finish for ``grace`` seconds and interrupts the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from anymole.errors import NotFound, ResourceExhausted
from anymole.pipeline import (
    Cancelled,
    CancelToken,
    Completed,
    Event,
    Failed,
    Interrupted,
    JobSpec,
    Pipeline,
    ProgressReporter,
    Queued,
    check_method,
    is_terminal,
)
from anymole.rig import Character, Motion

__all__ = ["JobInfo", "JobManager", "JobState", "Stamped"]

log = logging.getLogger("anymole.service.jobs")


class JobState(enum.Enum):
    """Lifecycle of a job (mirrors ``anymole.v1.JobState``)."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"

    @property
    def terminal(self) -> bool:
        return self not in (JobState.QUEUED, JobState.RUNNING)


_END_STATE: dict[type, JobState] = {
    Completed: JobState.COMPLETED,
    Failed: JobState.FAILED,
    Cancelled: JobState.CANCELLED,
    Interrupted: JobState.INTERRUPTED,
}


@dataclass(frozen=True, eq=False)
class Stamped:
    """A domain event with its job id, sequence number (from 1) and Unix time (s)."""

    job_id: str
    seq: int
    time: float
    event: Event


@dataclass(frozen=True)
class JobInfo:
    """One row of `JobManager.list`."""

    job_id: str
    state: JobState
    character_id: str
    method: str
    preset: str
    label: str
    created: float
    position: int
    last_seq: int
    total_frames: int


@dataclass(eq=False)
class _Job:
    id: str
    created: float
    character_id: str
    method: str
    preset: str
    label: str
    total_frames: int
    spec: JobSpec | None
    state: JobState = JobState.QUEUED
    events: list[Stamped] = field(default_factory=list)
    token: CancelToken = field(default_factory=CancelToken)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    result: Motion | None = None
    announced_position: int = -1
    interrupting: bool = False

    def meta(self) -> dict[str, object]:
        return {
            "job_id": self.id,
            "state": self.state.value,
            "created": self.created,
            "character_id": self.character_id,
            "method": self.method,
            "preset": self.preset,
            "label": self.label,
            "total_frames": self.total_frames,
        }


class JobManager:
    """Queue, workers and event logs of every job.

    Args:
        pipeline: runs each job (`anymole.pipeline.Pipeline`).
        data_dir: where job directories live (`JobStore` layout).
        devices: one worker per entry, e.g. ``("cuda:0", "cuda:1")`` or ``("cpu",)``.
        max_queue: most jobs waiting (not running); `submit` beyond it raises `ResourceExhausted`.
        resolve_character: character id → `Character`, used to requeue stored jobs after a restart.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        data_dir: Path,
        devices: Sequence[str] = ("cpu",),
        max_queue: int = 64,
        resolve_character: Callable[[str], Character] | None = None,
    ) -> None:
        from anymole.service.store import JobStore

        if not devices:
            raise ValueError("JobManager needs at least one device")
        self.pipeline = pipeline
        self.store = JobStore(data_dir)
        self.devices = tuple(devices)
        self.max_queue = max_queue
        self._resolve = resolve_character
        self._jobs: dict[str, _Job] = {}
        self._pending: deque[_Job] = deque()
        self._work = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._accepting = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Reload stored jobs and start one worker per device."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._reload()
        self._accepting = True
        self._workers = [asyncio.create_task(self._worker(d), name=f"anymole-worker-{d}") for d in self.devices]
        self._announce_positions()
        self._work.set()

    @property
    def accepting(self) -> bool:
        return self._accepting

    async def shutdown(self, grace: float) -> None:
        """Stop taking jobs; give running jobs ``grace`` seconds, then interrupt them. Queued jobs stay stored
        and run after the next start."""
        self._accepting = False
        running = [j for j in self._jobs.values() if j.state is JobState.RUNNING and j.task is not None]
        if running:
            tasks = {j.task for j in running if j.task is not None}
            _, late = await asyncio.wait(tasks, timeout=max(grace, 0.0))
            for job in running:
                if job.task in late:
                    job.interrupting = True
                    job.token.cancel("the server is shutting down")
                    job.task.cancel()
            if late:
                await asyncio.wait(late)
        for w in self._workers:
            w.cancel()
        for w in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await w
        self._workers = []

    # ------------------------------------------------------------------ requests
    def submit(self, spec: JobSpec) -> JobInfo:
        """Queue a validated job; raises `ResourceExhausted` when the queue is full."""
        from anymole.service.errors import ShuttingDown

        if not self._accepting:
            raise ShuttingDown("the server is shutting down and takes no new jobs; retry once it is back")
        check_method(self.pipeline, spec.method, spec.preset)
        if len(self._pending) >= self.max_queue:
            raise ResourceExhausted(
                f"the job queue is full ({self.max_queue} waiting); retry later or cancel queued jobs"
            )
        job = _Job(
            id=f"job-{uuid.uuid4().hex[:16]}",
            created=time.time(),
            character_id=spec.character_id,
            method=spec.method,
            preset=spec.preset,
            label=spec.label,
            total_frames=spec.total_frames,
            spec=spec,
        )
        self.store.create(job.id, job.meta(), spec)
        self._jobs[job.id] = job
        self._pending.append(job)
        self._announce_positions()
        self._work.set()
        return self._info(job)

    def info(self, job_id: str) -> JobInfo:
        return self._info(self._get(job_id))

    def list(self, states: Sequence[JobState] = (), limit: int = 0) -> list[JobInfo]:
        """Jobs newest first, optionally filtered by state and truncated to ``limit``."""
        jobs = sorted(self._jobs.values(), key=lambda j: j.created, reverse=True)
        if states:
            jobs = [j for j in jobs if j.state in states]
        if limit:
            jobs = jobs[:limit]
        return [self._info(j) for j in jobs]

    async def watch(self, job_id: str, after_seq: int = 0) -> AsyncIterator[Stamped]:
        """Events of ``job_id`` with ``seq > after_seq``: stored ones, then live ones until the terminal one."""
        job = self._get(job_id)
        i = max(0, int(after_seq))
        while True:
            while i < len(job.events):
                yield job.events[i]
                i += 1
            if job.state.terminal:
                return
            await job.changed.wait()

    def cancel(self, job_id: str, reason: str = "cancelled by a client") -> JobState:
        """Cancel a queued or running job; returns its state right after the request."""
        job = self._get(job_id)
        if job.state is JobState.QUEUED:
            with contextlib.suppress(ValueError):
                self._pending.remove(job)
            self._publish(job, Cancelled(reason))
            self._announce_positions()
        elif job.state is JobState.RUNNING:
            job.token.cancel(reason)
            if job.task is not None:
                job.task.cancel()
        return job.state

    def result(self, job_id: str) -> Motion:
        """The result timeline of a completed job (loaded from its directory after a restart)."""
        from anymole.service.errors import NotReady

        job = self._get(job_id)
        if job.state is not JobState.COMPLETED:
            raise NotReady(f"job {job_id} is {job.state.value}; results exist only for completed jobs")
        if job.result is None:
            job.result = self.store.load_result(job_id)
        return job.result

    def character_id(self, job_id: str) -> str:
        return self._get(job_id).character_id

    def result_path(self, job_id: str, suffix: str) -> Path:
        """Where a job's result file with ``suffix`` (".glb", ".bvh", ".npz") lives."""
        self._get(job_id)
        return self.store.result_path(job_id, suffix)

    # ------------------------------------------------------------------ internals
    def _get(self, job_id: str) -> _Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise NotFound("job", job_id) from None

    def _info(self, job: _Job) -> JobInfo:
        position = self._pending.index(job) if job.state is JobState.QUEUED and job in self._pending else 0
        return JobInfo(
            job_id=job.id,
            state=job.state,
            character_id=job.character_id,
            method=job.method,
            preset=job.preset,
            label=job.label,
            created=job.created,
            position=position,
            last_seq=len(job.events),
            total_frames=job.total_frames,
        )

    def _publish(self, job: _Job, event: Event) -> None:
        """Append ``event`` to the job's log and wake its watchers (event-loop thread only)."""
        if job.state.terminal:
            return  # a late progress report after the end: the log is closed
        st = Stamped(job.id, len(job.events) + 1, time.time(), event)
        self.store.append_event(job.id, st.seq, st.time, event)
        job.events.append(st)
        if is_terminal(event):
            job.state = _END_STATE[type(event)]
            self.store.write_meta(job.id, job.meta())
        old, job.changed = job.changed, asyncio.Event()
        old.set()

    def _emitter(self, job: _Job) -> Callable[[Event], None]:
        """A thread-safe publish for progress reports from stage threads."""
        loop = self._loop
        assert loop is not None  # set by start(); jobs only run after it

        def emit(event: Event) -> None:
            if threading.get_ident() == self._loop_thread:
                self._publish(job, event)
            else:
                loop.call_soon_threadsafe(self._publish, job, event)

        return emit

    def _announce_positions(self) -> None:
        for pos, job in enumerate(self._pending):
            if job.announced_position != pos:
                job.announced_position = pos
                self._publish(job, Queued(pos))

    async def _worker(self, device: str) -> None:
        while True:
            if not self._pending or not self._accepting:
                self._work.clear()
                await self._work.wait()
                continue
            job = self._pending.popleft()
            self._announce_positions()
            job.state = JobState.RUNNING
            self.store.write_meta(job.id, job.meta())
            job.task = asyncio.create_task(self._drive(job, device), name=f"anymole-{job.id}")
            await asyncio.wait({job.task})
            if not job.state.terminal:  # cancelled before its first step: _drive never ran
                self._publish(job, Interrupted("the server shut down") if job.interrupting else Cancelled(job.token.reason))

    async def _drive(self, job: _Job, device: str) -> None:
        """Run the pipeline for one job and publish its events; always ends with a terminal event."""
        assert job.spec is not None  # queued jobs always carry their spec
        report = ProgressReporter(self._emitter(job), job.token)
        events = self.pipeline.run(job.spec, job.token, report, device)
        try:
            job.token.raise_if_cancelled()
            async for event in events:
                if isinstance(event, Completed):
                    if event.motion is not None:
                        job.result = event.motion
                        self.store.save_result(job.id, event.motion)
                    self._publish(job, dataclasses.replace(event, motion=None))
                else:
                    self._publish(job, event)
                if is_terminal(event):
                    break
            else:
                raise RuntimeError("the pipeline ended without a Completed event")
        except asyncio.CancelledError:
            if job.interrupting:
                self._publish(job, Interrupted("the server shut down while this job ran; resubmit it"))
            else:
                self._publish(job, Cancelled(job.token.reason or "cancelled"))
        except Exception as exc:
            from anymole.errors import JobCancelled
            from anymole.service.errors import code_of, failed_event

            if isinstance(exc, JobCancelled):
                self._publish(job, Cancelled(job.token.reason or str(exc)))
            else:
                if code_of(exc).name == "INTERNAL":
                    log.exception("job %s failed", job.id)
                self._publish(job, failed_event(exc))
        finally:
            with contextlib.suppress(Exception):
                await events.aclose()  # type: ignore[attr-defined]

    def _reload(self) -> None:
        from anymole.service.store import event_from_json

        stored = sorted(self.store.load_all(), key=lambda p: p.meta["created"])
        for p in stored:
            m = p.meta
            job = _Job(
                id=m["job_id"],
                created=m["created"],
                character_id=m["character_id"],
                method=m["method"],
                preset=m["preset"],
                label=m["label"],
                total_frames=m["total_frames"],
                spec=None,
                state=JobState.RUNNING if m["state"] == "running" else JobState.QUEUED,
            )
            job.events = [
                Stamped(job.id, e["seq"], e["time"], event_from_json({k: v for k, v in e.items() if k not in ("seq", "time")}))
                for e in p.events
            ]
            self._jobs[job.id] = job
            state = JobState(m["state"])
            if job.events and is_terminal(job.events[-1].event):
                # The log is written before job.json: after a crash between the two, the log is right.
                state = _END_STATE[type(job.events[-1].event)]
            if state.terminal:
                job.state = state
                if m["state"] != state.value:
                    self.store.write_meta(job.id, job.meta())
            elif state is JobState.RUNNING:
                self._publish(job, Interrupted("the server stopped while this job ran; resubmit it"))
            else:
                try:
                    if self._resolve is None:
                        raise NotFound("character", job.character_id)
                    job.spec = self.store.load_spec(job.id, p.request, self._resolve(job.character_id))
                except Exception as exc:
                    from anymole.service.errors import failed_event

                    self._publish(job, failed_event(exc))
                    continue
                last_queued = [e.event for e in job.events if isinstance(e.event, Queued)]
                job.announced_position = last_queued[-1].position if last_queued else -1
                self._pending.append(job)
