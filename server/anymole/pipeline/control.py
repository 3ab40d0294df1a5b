"""Running a stage under a job's control: cancellation, progress, worker threads.

`CancelToken` is set once when a job is cancelled; `ProgressReporter` is the `OnStep` a job's stages report
to: it turns ``(stage, fraction)`` into `Progress` events weighted by the job's plan and raises `JobCancelled`
once the token is set, so a cancel reaches a running stage at its next step. `run_in_thread` runs a blocking
stage in a worker thread and waits for it to stop when its task is cancelled; `in_daemon_thread` runs work that
cannot stop midway (a compile) where a stopping process need not wait for it; `daemon_future` runs a stage's
helper (a second thread of the stage) the same way.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import threading
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar

from anymole.errors import JobCancelled
from anymole.pipeline.events import Event, Progress
from anymole.progress import OnStep

__all__ = ["CancelToken", "OnStep", "ProgressReporter", "daemon_future", "in_daemon_thread", "run_in_thread"]


class CancelToken:
    """Set once by `cancel`; read from the event loop and from stage threads alike."""

    def __init__(self) -> None:
        self._flag = threading.Event()
        self.reason = ""
        self.abandoned = False

    def cancel(self, reason: str = "cancelled by a client") -> None:
        if not self._flag.is_set():
            self.reason = reason
            self._flag.set()

    def abandon(self, reason: str) -> None:
        """Cancel, and stop waiting for the job's stage: a `run_in_thread` whose task is cancelled after this
        returns at once and leaves the stage's thread running (a stopping server that gave up on a hung stage;
        event-loop thread only)."""
        self.cancel(reason)
        self.abandoned = True

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

    The job's fraction is the planned work done: each stage's weight times its furthest fraction, where a report
    of a stage counts every stage before it in the plan as done, except for stages that run beside others
    (``beside`` in `set_plan`): their reports count only themselves, and they count as done once a stage after
    them reports. So the fraction only grows, also while two threads report side by side.

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
        self._lock = threading.RLock()  # `overall` takes it again inside a report
        self._plan: tuple[Sequence[tuple[str, float]], frozenset[str]] = ((), frozenset())
        self.set_plan(plan)
        self._done: dict[str, float] = {}  # stage → its furthest fraction, 1.0 once a later stage reported
        self._min_interval = min_interval
        self._start = time.monotonic()
        self._last_emit: dict[str, float] = {}

    def set_plan(self, plan: Sequence[tuple[str, float]], beside: Collection[str] = ()) -> None:
        """Declare the stages of this job and their relative cost; ``beside``: those that run beside the stages
        before them in ``plan`` (in a thread of their own) rather than after them. Safe beside reports from other
        threads: the new plan is swapped in with one assignment, so a report reads the old plan or the new one,
        never half of each; what the stages have done stays."""
        self._plan = (tuple(plan), frozenset(beside))

    def overall(self, stage: str, stage_fraction: float) -> float:
        """The job's fraction once ``stage`` has reached ``stage_fraction`` (see the class docstring; a stage
        outside the plan counts nothing)."""
        plan, beside = self._plan  # one read: the stages and their kinds of the same plan
        names = [s for s, _ in plan]
        with self._lock:
            if stage in names:
                if stage not in beside:
                    for s in names[: names.index(stage)]:
                        self._done[s] = 1.0
                self._done[stage] = max(self._done.get(stage, 0.0), stage_fraction)
            total = sum(w for _, w in plan) or 1.0
            return min(1.0, sum(w * self._done.get(s, 0.0) for s, w in plan) / total)

    def __call__(self, stage: str, fraction: float, message: str = "", *, preview: Any = None, frame: int = 0) -> None:
        """Report ``stage`` at ``fraction`` (an `OnStep`); ``preview``, when given, is an `Event` (a `Preview`)
        published after the report, as `post` does (it says its own frame: ``frame`` is not read)."""
        self._token.raise_if_cancelled()
        fraction = min(1.0, max(0.0, float(fraction)))
        now = time.monotonic()
        # emitted under the lock that computes it: two threads' reports reach the log in the order of their fractions
        with self._lock:
            last = self._last_emit.get(stage)
            if last is None or not 0.0 < fraction < 1.0 or now - last >= self._min_interval:
                self._last_emit[stage] = now
                done = self.overall(stage, fraction)
                eta = (now - self._start) * (1.0 - done) / done if done > 0.01 else None
                self._emit(Progress(stage, fraction, done, eta, message))
        if preview is not None:  # never thinned out like the reports
            self._emit(preview)

    def post(self, event: Event) -> None:
        """Publish ``event`` (a `Preview`) from inside a running stage, in order with its `Progress` events;
        raises `JobCancelled` once the job is cancelled, like a progress report."""
        self._token.raise_if_cancelled()
        self._emit(event)


_T = TypeVar("_T")


async def run_in_thread(token: CancelToken, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """Run a blocking stage in a worker thread; on cancellation wait until the stage has stopped.

    When the awaiting task is cancelled, ``token`` is set and this waits for the thread (which raises
    `JobCancelled` at its next ``report`` call) before re-raising, so a device is never used by two jobs. Further
    cancels meanwhile (a client's retried cancel, a server shutdown after a cancel) do not end that wait. The
    thread is a daemon (`in_daemon_thread`), not one of the loop's executor: a stage that never returns (a hung
    device) can be left behind by a stopping server (`JobManager.shutdown`) without holding up the process's exit.
    Once ``token`` is abandoned (`CancelToken.abandon`), the next cancel ends the wait: else the loop's last task
    would wait for that thread (``asyncio.run`` cancels and awaits every task left when its coroutine returns).
    """
    fut = in_daemon_thread(functools.partial(fn, *args, **kwargs))
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        token.cancel(token.reason or "cancelled")
        while not fut.done() and not token.abandoned:
            # shielded: a cancel of a plain `await fut` would cancel the future and leave the thread running
            with contextlib.suppress(asyncio.CancelledError, Exception):  # Exception: the stage's JobCancelled
                await asyncio.shield(fut)
        fut.cancel()  # abandoned: the thread's late outcome is dropped (a no-op once it is done)
        raise


def in_daemon_thread(fn: Callable[[], _T]) -> asyncio.Future[_T]:
    """``fn()`` in a daemon thread, as a future of the running loop: for work that cannot stop midway (a
    compile of minutes) and that a stopping process should not wait for. Cancelling the future leaves the
    thread running until ``fn`` returns."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[_T] = loop.create_future()

    def settle(source: concurrent.futures.Future[_T]) -> None:
        if fut.done():  # cancelled meanwhile
            return
        if (exc := source.exception()) is not None:  # handed to the awaiting task
            fut.set_exception(exc)
        else:
            fut.set_result(source.result())

    def hand_over(source: concurrent.futures.Future[_T]) -> None:  # in the thread, once ``fn`` has returned
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(settle, source)

    daemon_future(fn, "anymole-daemon").add_done_callback(hand_over)
    return fut


def daemon_future(fn: Callable[[], _T], name: str) -> concurrent.futures.Future[_T]:
    """``fn()`` in a daemon thread named ``name``, as a `concurrent.futures.Future`: a second thread of a stage
    (the estimator that trains beside the video stage). A stopping server abandons a hung stage
    (`JobManager.shutdown`); a `ThreadPoolExecutor`'s worker would still hold the process at its exit (those are
    joined then), a daemon does not."""
    fut: concurrent.futures.Future[_T] = concurrent.futures.Future()

    def run() -> None:
        if not fut.set_running_or_notify_cancel():  # cancelled before it started
            return
        try:
            result = fn()
        except BaseException as exc:  # handed to whoever waits on the future
            fut.set_exception(exc)
        else:
            fut.set_result(result)

    threading.Thread(target=run, name=name, daemon=True).start()
    return fut
