"""Stage control under threads and cancels (issue 14.4): the ``anymole`` method's two stage threads (the prior's
and the estimator's) report while one of them re-plans (a stage loaded from a cache weighs 0), so a report must
see the old plan or the new one whole; a cancelled job waits for its stage thread however often it is
cancelled."""

from __future__ import annotations

import asyncio
import sys
import threading

import pytest

from anymole.pipeline import CancelToken, Progress, ProgressReporter, run_in_thread

# Two plans of the same stages: "b" half done is 0.75 of the job under the first, 0.875 under the second.
PLANS = ([("a", 1.0), ("b", 1.0)], [("a", 3.0), ("b", 1.0)])
VALID = (0.75, 0.875)


@pytest.fixture
def fast_switching():
    """Threads switch every microsecond (CPython's default is 5 ms): a torn read shows within a few thousand
    re-plans instead of by luck."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


def test_a_report_beside_set_plan_reads_one_whole_plan(fast_switching) -> None:
    seen: list[float] = []
    report = ProgressReporter(lambda e: seen.append(e.fraction) if isinstance(e, Progress) else None,
                              CancelToken(), PLANS[0], min_interval=0.0)  # fmt: skip
    stop = threading.Event()

    def replan() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            report.set_plan(PLANS[i % 2])

    t = threading.Thread(target=replan)
    t.start()
    try:
        for i in range(200000):  # at least 20000 reports, and until both plans were read (a loaded machine)
            report("b", 0.5)
            if i >= 20000 and len(set(seen)) > 1:
                break
    finally:
        stop.set()
        t.join()
    torn = sorted({round(f, 6) for f in seen} - set(VALID))
    assert not torn, f"fractions of no plan: {torn}"
    assert set(VALID) <= {round(f, 6) for f in seen}  # both plans were read: the threads did interleave


def test_a_stage_beside_the_others_adds_its_work_and_the_fraction_only_grows() -> None:
    """The anymole method's estimator trains beside ICAdapt and sampling: its reports count its own work, not the
    stages before it in the plan, and it counts as done once a stage after it reports (here a: 1, b: 2, side: 1,
    c: 4 of 8)."""
    seen: list[float] = []
    report = ProgressReporter(lambda e: seen.append(e.fraction) if isinstance(e, Progress) else None,
                              CancelToken(), min_interval=0.0)  # fmt: skip
    report.set_plan([("a", 1.0), ("b", 2.0), ("side", 1.0), ("c", 4.0)], beside=("side",))
    steps = [("a", 0.5), ("side", 0.5), ("a", 1.0), ("b", 0.5), ("b", 1.0), ("c", 0.0), ("c", 0.5), ("c", 1.0)]
    for stage, fraction in steps:
        report(stage, fraction)
    expected = [0.5, 1.0, 1.5, 2.5, 3.5, 4.0, 6.0, 8.0]
    assert seen == pytest.approx([x / 8 for x in expected])
    report.set_plan([("a", 1.0), ("b", 2.0), ("side", 0.0), ("c", 4.0)], beside=("side",))  # what was done stays
    report("c", 1.0)
    assert seen[-1] == pytest.approx(1.0)
    report("elsewhere", 0.0)  # a stage outside the plan moves nothing
    assert seen[-1] == pytest.approx(1.0)


def test_two_threads_reports_reach_the_log_in_the_order_of_their_fractions() -> None:
    """The estimator's thread and the prior's report side by side: their fractions reach the log (``emit``) in
    the order they were computed in, so the job's fraction only grows in its event stream too. Here the first
    report's emit is held until the second report has had its chance to emit (before: a report's fraction was
    computed under the reporter's lock but emitted after it, so the second, larger one was logged first)."""
    seen: list[float] = []
    first_emitting, second_done = threading.Event(), threading.Event()

    def emit(event: object) -> None:
        if isinstance(event, Progress):
            if threading.current_thread().name == "first":
                first_emitting.set()
                second_done.wait(1.0)  # a reporter that holds the second report back runs on after this
            seen.append(event.fraction)

    report = ProgressReporter(emit, CancelToken(), min_interval=0.0)
    report.set_plan([("video", 1.0), ("estimator", 1.0)], beside=("estimator",))
    first = threading.Thread(target=report, args=("estimator", 0.5), name="first")
    first.start()
    assert first_emitting.wait(30)

    def second_report() -> None:
        report("video", 0.5)
        second_done.set()

    second = threading.Thread(target=second_report)
    second.start()
    first.join(30)
    second.join(30)
    assert seen == pytest.approx([0.25, 0.5])


async def test_a_second_cancel_still_waits_for_the_stage_thread() -> None:
    """`run_in_thread` waits for a cancelled stage to stop, so a device is never used by two jobs; a second
    cancel of its task (a client's retried CancelJob, a server shutdown after a cancel) must not end that wait
    while the thread still runs (the next job would start beside it, and the job end before its stage)."""
    token = CancelToken()
    entered, release = threading.Event(), threading.Event()
    ended: list[bool] = []

    def stage() -> None:  # a step that takes a while: the cancel reaches it at its next report
        entered.set()
        release.wait(60)
        ended.append(True)
        token.raise_if_cancelled()

    task = asyncio.create_task(run_in_thread(token, stage))
    try:
        assert await asyncio.to_thread(entered.wait, 60)
        for _ in range(2):
            task.cancel()
            for _ in range(10):  # let the task take the cancel
                await asyncio.sleep(0)
        assert token.cancelled and not task.done() and not ended  # still waiting for the running stage
    finally:
        release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ended == [True]
