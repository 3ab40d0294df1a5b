"""`JobManager`: the FIFO job queue, one worker per compute device, event logs, watchers, cancel, restart.

Each job owns an append-only list of `Stamped` events (sequence numbers 1, 2, 3, …), mirrored to
``events.jsonl`` in its directory (`JobStore`). Watchers read that list from any position and then wait for
new events, so any number of clients can follow one job and a client that reconnects resumes with
``after_seq``. A finished job's log never changes again, so only the logs of the last
``finished_in_memory`` finished (or replayed) jobs stay in memory; the others are read back from
``events.jsonl`` when someone watches them (`JobManager.events_after`), which bounds a long-running server's
memory by its live jobs rather than its whole history. A dropped watcher only stops reading; `cancel` stops
the job: a queued job leaves the queue, a running one sees its `CancelToken` (stages check it at every
progress report) and its task is cancelled.

On start the manager reloads every job directory: finished jobs stay readable (from their job.json; their logs
stay on disk until watched), jobs that were running are marked INTERRUPTED, queued jobs re-enter the queue in
submission order. `shutdown(grace)` stops taking jobs, lets running jobs finish for ``grace`` seconds and
interrupts the rest; a stage that does not stop within `STAGE_STOP_S` of that is left running in its (daemon)
thread and its job ends Interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from pathlib import Path

from anymole.errors import NotFound, ResourceExhausted
from anymole.pipeline import (
    Cancelled,
    Completed,
    Event,
    Interrupted,
    JobInfo,
    JobSpec,
    JobState,
    MotionChunk,
    Pipeline,
    Preview,
    Progress,
    Queued,
    Stamped,
    check_spec,
    is_terminal,
)
from anymole.rig import Character, Motion
from anymole.service.job_driver import drive_job
from anymole.service.job_record import END_STATE, JobRecord, Submission, read_log
from anymole.service.timeline import MotionRef

__all__ = ["FINISHED_EVENTS_IN_MEMORY", "STAGE_STOP_S", "JobInfo", "JobManager", "JobState", "Stamped", "Submission"]

# How many finished jobs keep their event logs in memory (most recently finished or replayed first); the
# rest are replayed from disk. A handful covers clients re-watching the job they just ran.
FINISHED_EVENTS_IN_MEMORY = 16

# How long a shutdown waits for interrupted jobs' stages to stop (a stage sees the interrupt at its next progress
# report) before it leaves them: a stage stuck in one call (a hung device, a deadlock) must not hold the server.
STAGE_STOP_S = 30.0

log = logging.getLogger("anymole.service.jobs")


class JobManager:
    """Queue, workers and event logs of every job.

    Args:
        pipeline: runs each job (`anymole.pipeline.Pipeline`).
        data_dir: where job directories live (`JobStore` layout).
        devices: one worker per entry, e.g. ``("cuda:0", "cuda:1")`` or ``("cpu",)``.
        max_queue: most jobs waiting (not running); `submit` beyond it raises `ResourceExhausted`.
        resolve_character: character id → `Character`, used to requeue stored jobs after a restart.
        finished_in_memory: how many finished jobs keep their event logs in memory (LRU); the others are
            replayed from their ``events.jsonl``.
        max_frame_joints: most frame-joints (``total_frames × joints``) running at once: a worker starts the
            next job only when it fits beside the running ones (or nothing runs); 0 = unbounded.
        max_queued_frame_joints: most frame-joints of queued and running jobs together; `submit` beyond it
            raises `OverBudget`; 0 = unbounded.
        max_label_bytes: labels of stored jobs longer than this (UTF-8 bytes, from before the limit) are cut
            to it on start; 0 = no cut.
        clock: Unix time of events and submissions (default `time.time`); the stream recorder
            (scripts/record_streams.py) passes a fixed one so that its recordings do not change between runs.
        new_job_id: makes a job id (default ``job-`` and 16 random hex digits); the recorder passes a counter
            for the same reason.
        heartbeat_s: a queued or running job quiet this long publishes a heartbeat event
            (`anymole.service.keepalive`); 0 = never.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        data_dir: Path,
        devices: Sequence[str] = ("cpu",),
        max_queue: int = 64,
        resolve_character: Callable[[str], Character] | None = None,
        finished_in_memory: int = FINISHED_EVENTS_IN_MEMORY,
        max_frame_joints: int = 0,
        max_queued_frame_joints: int = 0,
        max_label_bytes: int = 0,
        clock: Callable[[], float] | None = None,
        new_job_id: Callable[[], str] | None = None,
        heartbeat_s: float = 10.0,
    ) -> None:
        from anymole.service.store import JobStore

        if not devices:
            raise ValueError("JobManager needs at least one device")
        self.pipeline = pipeline
        self.store = JobStore(data_dir)
        self.devices = tuple(devices)
        self.max_queue = max_queue
        self.max_frame_joints = max_frame_joints
        self.max_queued_frame_joints = max_queued_frame_joints
        self.max_label_bytes = max_label_bytes
        self._resolve = resolve_character
        self._jobs: dict[str, JobRecord] = {}
        self._by_key: dict[str, JobRecord] = {}  # idempotency key -> the job its first submit created
        self._clock = clock or time.time
        self._new_job_id = new_job_id or (lambda: f"job-{uuid.uuid4().hex[:16]}")
        self._finished_in_memory = max(0, finished_in_memory)
        self._cached: OrderedDict[str, JobRecord] = OrderedDict()  # finished jobs whose events are in memory, LRU first
        self._pending: deque[JobRecord] = deque()
        self._running: set[JobRecord] = set()
        self._heartbeat_s = heartbeat_s
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
        if self._heartbeat_s > 0:
            self._workers.append(asyncio.create_task(self._heartbeat(), name="anymole-heartbeat"))
        self._announce_positions()
        self._work.set()

    @property
    def accepting(self) -> bool:
        return self._accepting

    async def shutdown(self, grace: float, stage_stop: float = STAGE_STOP_S) -> None:
        """Stop taking jobs; give running jobs ``grace`` seconds, then interrupt them and wait ``stage_stop``
        seconds at most for their stages to stop. A job whose stage is still running then ends Interrupted (or
        Cancelled, where a client cancelled it) and its thread is abandoned, with a warning in the log; one storing
        its result completes. Queued jobs stay stored and run after the next start."""
        self._accepting = False
        running = [j for j in self._jobs.values() if j.state is JobState.RUNNING and j.task is not None]
        if running:
            tasks = {j.task for j in running if j.task is not None}
            _, late = await asyncio.wait(tasks, timeout=max(grace, 0.0))
            for job in running:
                if job.task in late and not job.finishing:  # one storing its result completes
                    # One a client cancelled already ends Cancelled once its stage stops, as the client asked.
                    if not job.token.cancelled:
                        job.interrupting = True
                        job.token.cancel("the server is shutting down")
                    job.task.cancel()
            if late:
                _, hung = await asyncio.wait(late, timeout=max(stage_stop, 0.0))
                # one storing its result is not hung: its write (file I/O) completes, however short stage_stop
                storing = {j.task for j in running if j.task is not None and j.task in hung and j.finishing}
                if storing:
                    await asyncio.wait(storing)
                    hung -= storing
                for job in running:
                    if job.task in hung and not job.state.terminal:
                        log.warning("job %s: its stage did not stop within %.1f s of the shutdown's interrupt; "
                                    "stopping without it (its thread is left running)", job.id, stage_stop)  # fmt: skip
                        by_client = job.token.cancelled and not job.interrupting
                        self._publish(job, Cancelled(job.token.reason) if by_client else Interrupted(
                            "the server shut down while this job ran (its stage did not stop); resubmit it"))  # fmt: skip
                    if job.task in hung:  # its task stops waiting for the thread, so the loop can end without it
                        job.token.abandon("the server is shutting down")
                        job.task.cancel()
        for w in self._workers:
            w.cancel()
        for w in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await w
        self._workers = []

    # ------------------------------------------------------------------ requests
    def submit(self, spec: JobSpec, submission: Submission | None = None) -> tuple[JobInfo, bool]:
        """Queue a validated job; returns its info and False, or, when ``submission.idempotency_key`` was seen
        before with the same request digest, that first job's info and True. Raises `KeyReused` for the key
        with another request and `ResourceExhausted` when the queue is full."""
        from anymole.service.errors import KeyReused, ShuttingDown

        submission = submission or Submission()
        first = self._by_key.get(submission.idempotency_key) if submission.idempotency_key else None
        if first is not None:
            if first.submission.request_digest != submission.request_digest:
                raise KeyReused(
                    "idempotency_key",
                    f"was used for job {first.id} with a different request; send a new key for a new job",
                )
            return self._info(first), True
        if not self._accepting:
            raise ShuttingDown("the server is shutting down and takes no new jobs; retry once it is back")
        check_spec(self.pipeline, spec)
        if len(self._pending) >= self.max_queue:
            raise ResourceExhausted(
                f"the job queue is full ({self.max_queue} waiting); retry later or cancel queued jobs"
            )
        cost = spec.total_frames * spec.num_joints
        held = self.queued_frame_joints
        if self.max_queued_frame_joints and held + cost > self.max_queued_frame_joints:
            from anymole.errors import OverBudget

            raise OverBudget(
                "total_frames",
                f"queued and running jobs hold {held} of this server's {self.max_queued_frame_joints} frame-joints "
                f"(Limits.max_queued_frame_joints) and this job's {spec.total_frames} frames × {spec.num_joints} "
                f"joints = {cost} do not fit; retry once jobs finish, or cancel queued ones",
            )
        job = JobRecord(
            id=self._new_job_id(),
            created=self._clock(),
            character_id=spec.character_id,
            method=spec.method,
            preset=spec.preset,
            label=spec.label,
            total_frames=spec.total_frames,
            spec=spec,
            frame_joints=cost,
            submission=submission,
        )
        job.timeline = self.store.timeline(job.id)
        self.store.create(job.id, job.meta(), spec)
        self._jobs[job.id] = job
        if submission.idempotency_key:
            self._by_key[submission.idempotency_key] = job
        self._pending.append(job)
        self._announce_positions()
        self._work.set()
        return self._info(job), False

    @property
    def queued_frame_joints(self) -> int:
        """Frame-joints of the queued and running jobs together."""
        return sum(j.frame_joints for j in self._jobs.values() if not j.state.terminal)

    def info(self, job_id: str) -> JobInfo:
        return self._info(self._get(job_id))

    def list(
        self,
        states: Sequence[JobState] = (),
        limit: int = 0,
        tags: dict[str, str] | None = None,
        before: tuple[float, str] | None = None,
    ) -> list[JobInfo]:
        """Jobs newest first (by creation time, then id), optionally filtered by state and by client tags (a job
        matches when its tags hold every given entry), starting after the job whose ``(created, job_id)`` is
        ``before`` and truncated to ``limit`` (0: all)."""
        jobs = sorted(self._jobs.values(), key=lambda j: (j.created, j.id), reverse=True)
        if states:
            jobs = [j for j in jobs if j.state in states]
        if tags:
            jobs = [j for j in jobs if all(j.submission.client_tags.get(k) == v for k, v in tags.items())]
        if before is not None:
            jobs = [j for j in jobs if (j.created, j.id) < before]
        return [self._info(j) for j in (jobs[:limit] if limit else jobs)]

    async def watch(self, job_id: str, after_seq: int = 0, skip_replayed_previews: bool = False) -> AsyncIterator[Stamped]:
        """Events of ``job_id`` with ``seq > after_seq``: stored ones, then live ones until the terminal one.
        With ``skip_replayed_previews`` the `Preview` events stored before the call are left out."""
        job = self._get(job_id)
        seq = max(0, int(after_seq))
        replayed = job.last_seq  # events up to here were stored before this call
        while True:
            ended = job.state.terminal  # taken before the read: the events read then include the last one
            for st in await self.events_after(job_id, seq):
                seq = st.seq
                if skip_replayed_previews and st.seq <= replayed and isinstance(st.event, Preview):
                    continue
                if isinstance(st.event, MotionRef):  # read when sent: one chunk in memory per watcher
                    st = Stamped(st.job_id, st.seq, st.time, await asyncio.to_thread(job.timeline.read, st.event))
                yield st
            if ended:
                return
            # No await between this check and taking `changed`: an event published after it wakes us.
            if seq >= job.last_seq:
                await job.changed.wait()

    async def events_after(self, job_id: str, after_seq: int) -> Sequence[Stamped]:
        """The events of ``job_id`` so far with ``seq > after_seq``, in order: from memory, or for a finished
        job whose log was let go, from its ``events.jsonl`` (read in a worker thread)."""
        job = self._get(job_id)
        events = job.events
        if events is None:
            events = await asyncio.to_thread(read_log, self.store, job.id)
            if job.events is None:
                job.events = events
            self._remember(job)
        return events[max(0, after_seq) :]

    def cancel(self, job_id: str, reason: str = "cancelled by a client") -> JobState:
        """Cancel a queued or running job; returns its state right after the request."""
        job = self._get(job_id)
        if job.state is JobState.QUEUED:
            with contextlib.suppress(ValueError):
                self._pending.remove(job)
            self._publish(job, Cancelled(reason))
            self._announce_positions()
        elif job.state is JobState.RUNNING and not job.finishing:  # a job storing its result completes
            job.token.cancel(reason)
            if job.task is not None:
                job.task.cancel()
        return job.state

    def result(self, job_id: str) -> Motion:
        """The result timeline of a completed job, memory-mapped from its directory (blocking file I/O)."""
        from anymole.service.errors import NotReady

        job = self._get(job_id)
        if job.state is not JobState.COMPLETED:
            raise NotReady(f"job {job_id} is {job.state.value}; results exist only for completed jobs")
        return self.store.load_result(job_id)

    def result_kind(self, job_id: str) -> str:
        """``"video"`` for a completed job whose result is a video (method ``video``), else ``"motion"``."""
        from anymole.service.errors import NotReady

        job = self._get(job_id)
        if job.state is not JobState.COMPLETED:
            raise NotReady(f"job {job_id} is {job.state.value}; results exist only for completed jobs")
        return "video" if self.store.has_video(job_id) else "motion"

    def video(self, job_id: str) -> tuple[Path, dict[str, object]]:
        """The MP4 file of a completed ``video`` job and its description (fps, frames, width, height,
        timeline_frames, views); blocking file I/O."""
        if self.result_kind(job_id) != "video":
            raise NotFound("video result", job_id)
        return self.store.result_path(job_id, ".mp4"), self.store.load_video_meta(job_id)

    def character_id(self, job_id: str) -> str:
        return self._get(job_id).character_id

    def result_path(self, job_id: str, suffix: str) -> Path:
        """Where a job's result file with ``suffix`` (".glb", ".bvh", ".npz") lives."""
        self._get(job_id)
        return self.store.result_path(job_id, suffix)

    # ------------------------------------------------------------------ retention
    def finished_jobs(self) -> Sequence[tuple[str, float, str]]:
        """``(job_id, finished, character_id)`` of every finished job, the longest finished first."""
        done = [(j.id, j.finished, j.character_id) for j in self._jobs.values() if j.state.terminal]
        return sorted(done, key=lambda t: t[1])

    def character_refs(self, excluding: Collection[str] = ()) -> set[str]:
        """The character ids of every job the manager knows (queued, running and finished) but ``excluding``."""
        return {j.character_id for j in self._jobs.values() if j.id not in excluding}

    def forget(self, job_id: str) -> Path:
        """Drop a finished job (it is no longer listed, watched nor served); returns its directory, which the
        caller deletes. Queued and running jobs are never forgotten."""
        job = self._get(job_id)
        if not job.state.terminal:
            raise ValueError(f"job {job_id} is {job.state.value}; only finished jobs can be forgotten")
        del self._jobs[job_id]
        self._cached.pop(job_id, None)
        if self._by_key.get(job.submission.idempotency_key) is job:
            del self._by_key[job.submission.idempotency_key]
        return self.store.job_dir(job_id)

    # ------------------------------------------------------------------ internals
    def _get(self, job_id: str) -> JobRecord:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise NotFound("job", job_id) from None

    def _info(self, job: JobRecord) -> JobInfo:
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
            last_seq=job.last_seq,
            total_frames=job.total_frames,
            client_tags=dict(job.submission.client_tags),
        )

    def _publish(self, job: JobRecord, event: Event) -> None:
        """Append ``event`` to the job's log and wake its watchers (event-loop thread only)."""
        if job.state.terminal:
            return  # a late progress report after the end: the log is closed
        assert job.events is not None  # only finished jobs let their log go
        logged: Event | MotionRef = event
        if isinstance(event, MotionChunk):
            # On disk at once, logged as a reference: the numbers are kept once, in the result timeline.
            if event.is_final and not job.timeline.created:
                assert job.spec is not None  # only running jobs emit motion
                job.timeline.create(job.spec.total_frames, event.rotations.shape[1], event.translations is not None)
            logged = job.timeline.write(event)
        job.quiet_since = time.monotonic()
        if isinstance(event, Progress):
            job.last_progress = event
        st = Stamped(job.id, job.last_seq + 1, self._clock(), logged)
        self.store.append_event(job.id, st.seq, st.time, logged)
        job.events.append(st)
        job.last_seq = st.seq
        if is_terminal(event):
            job.state = END_STATE[type(event)]
            job.frame_joints = 0
            job.finished = st.time
            self.store.write_meta(job.id, job.meta())
            self._remember(job)
            self._work.set()  # a worker waiting for budget may start the next job
        old, job.changed = job.changed, asyncio.Event()
        old.set()

    def _remember(self, job: JobRecord) -> None:
        """Mark a finished job's in-memory log as most recently used; let the least recent ones go beyond the
        limit (their events.jsonl has every event, so `events_after` can read them back)."""
        self._cached[job.id] = job
        self._cached.move_to_end(job.id)
        while len(self._cached) > self._finished_in_memory:
            _, old = self._cached.popitem(last=False)
            old.events = None

    def _emitter(self, job: JobRecord) -> Callable[[Event], None]:
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

    def _fits(self, job: JobRecord) -> bool:
        """Whether ``job`` may start beside the running jobs within `max_frame_joints` (always when none runs)."""
        running = sum(j.frame_joints for j in self._jobs.values() if j.state is JobState.RUNNING)
        return not self.max_frame_joints or running == 0 or running + job.frame_joints <= self.max_frame_joints

    async def _heartbeat(self) -> None:
        """Publish `heartbeat_event` for every queued or running job quiet for ``heartbeat_s``, so that no open
        stream of a live job goes longer without an event (`anymole.service.keepalive`)."""
        from anymole.service.keepalive import heartbeat_event

        while True:
            await asyncio.sleep(self._heartbeat_s / 4)
            now = time.monotonic()
            for job in [*self._pending, *self._running]:
                quiet = now - job.quiet_since
                if quiet >= self._heartbeat_s and not job.state.terminal:
                    position = self._pending.index(job) if job.state is JobState.QUEUED else None
                    self._publish(job, heartbeat_event(position, job.last_progress, quiet))

    async def _worker(self, device: str) -> None:
        while True:
            if not self._pending or not self._accepting or not self._fits(self._pending[0]):
                self._work.clear()
                await self._work.wait()
                continue
            job = self._pending.popleft()
            self._announce_positions()
            job.state = JobState.RUNNING
            self.store.write_meta(job.id, job.meta())
            job.task = asyncio.create_task(
                drive_job(job, self.pipeline, device, self._publish, self._emitter(job), self._store_result),
                name=f"anymole-{job.id}",
            )
            self._running.add(job)
            try:
                await asyncio.wait({job.task})
            finally:
                self._running.discard(job)
            if not job.state.terminal:  # cancelled before its first step: drive_job never ran
                self._publish(job, Interrupted("the server shut down") if job.interrupting else Cancelled(job.token.reason))

    def _store_result(self, job: JobRecord, event: Completed) -> None:
        """Write a finished job's result files (worker thread)."""
        if event.motion is not None:
            job.timeline.write_motion(event.motion)
        if event.video is not None:
            self.store.save_video(job.id, event.video)

    def _reload(self) -> None:
        stored = sorted(self.store.load_all(), key=lambda m: m["created"])
        for m in stored:
            job = JobRecord.from_meta(m, self.max_label_bytes)
            job.timeline = self.store.timeline(job.id)
            self._jobs[job.id] = job
            if job.submission.idempotency_key:
                self._by_key[job.submission.idempotency_key] = job
            state = JobState(m["state"])
            if state.terminal and "last_seq" in m:
                # job.json is rewritten after the terminal event is logged, so its last_seq is the log's:
                # the log itself stays on disk until someone watches the job.
                job.state, job.last_seq, job.events = state, m["last_seq"], None
                # Directories from before "finished" was stored: job.json was last written when the job ended.
                job.finished = m.get("finished") or self.store.job_dir(job.id).joinpath("job.json").stat().st_mtime
                if job.label != m["label"]:
                    self.store.write_meta(job.id, job.meta())
                continue
            # A job that had not finished (or a directory from before last_seq was stored): read its log.
            job.events = read_log(self.store, job.id)
            job.last_seq = job.events[-1].seq if job.events else 0
            if job.events and type(job.events[-1].event) in END_STATE:
                # The log is written before job.json: after a crash between the two, the log is right.
                state = END_STATE[type(job.events[-1].event)]
            if state.terminal:
                job.finished = job.events[-1].time if job.events else m["created"]
                job.state, job.events = state, None
                if m != job.meta():
                    self.store.write_meta(job.id, job.meta())
            elif state is JobState.RUNNING:
                self._publish(job, Interrupted("the server stopped while this job ran; resubmit it"))
            else:
                try:
                    if self._resolve is None:
                        raise NotFound("character", job.character_id)
                    job.spec = self.store.load_spec(job.id, self._resolve(job.character_id))
                    job.frame_joints = job.total_frames * job.spec.num_joints
                except Exception as exc:
                    from anymole.service.errors import failed_event

                    self._publish(job, failed_event(exc))
                    continue
                last_queued = [e.event for e in job.events if isinstance(e.event, Queued)]
                job.announced_position = last_queued[-1].position if last_queued else -1
                self._pending.append(job)
