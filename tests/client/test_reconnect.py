"""The reconnect policy of a client following a job: growing pauses with a bounded total, a watch resumed after
the last event seen, and a clear error naming the job when the server does not come back (issue 12, item 5)."""

from __future__ import annotations

import itertools

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from anymole.client import Reconnect, ServerLost, _watch
from anymole.client._watch import events_with_reattach, retrying
from anymole.pipeline import Completed, Progress
from anymole.service.jobs import Stamped


def _gone() -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "gone")


@given(
    total=st.floats(0.0, 600.0),
    first=st.floats(0.01, 5.0),
    cap=st.floats(0.01, 30.0),
)
def test_pauses_grow_to_the_cap_and_add_up_to_the_total(total: float, first: float, cap: float) -> None:
    pauses = list(Reconnect(total, first, max(cap, first)).pauses())
    assert sum(pauses) == pytest.approx(total, abs=1e-9)
    assert all(p > 0 for p in pauses)
    full = pauses[:-1]  # the last one is cut to what is left of the total
    for a, b in itertools.pairwise(full):
        assert b == pytest.approx(min(2 * a, max(cap, first)))
    if full:
        assert full[0] == first


class _Outages:
    """A server whose WatchJob streams break: ``plan[i]`` events are delivered by the i-th call, then it drops
    (UNAVAILABLE); ``None`` entries are calls refused outright (the server is down)."""

    def __init__(self, plan: list[int | None]) -> None:
        self.plan = plan
        self.after: list[int] = []
        self.events = [Stamped("j", i, 0.0, Progress("s", i / 10, i / 10)) for i in range(1, 10)] + [
            Stamped("j", 10, 0.0, Completed("ok"))
        ]

    async def watch(self, job_id: str, joints: int, after_seq: int = 0):
        call = len(self.after)
        self.after.append(after_seq)
        budget = self.plan[call] if call < len(self.plan) else len(self.events)
        if budget is None:
            raise _gone()
        for n, ev in enumerate(self.events[after_seq:]):
            if n == budget:
                raise _gone()
            yield ev


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    monkeypatch.setattr(_watch.asyncio, "sleep", sleep)
    return pauses


async def test_a_watch_resumes_after_the_last_event_through_outages(slept: list[float]) -> None:
    server = _Outages([3, None, None, 2, None, 0, None])
    policy = Reconnect(total_s=10.0, first_s=1.0, max_s=4.0)
    seqs = [st.seq async for st in events_with_reattach(server, "j", 0, policy)]
    assert seqs == list(range(1, 11))  # every event once, in order
    assert server.after == [0, 3, 3, 3, 5, 5, 5, 5]
    # pauses start over after an event arrives: 1, 2, 4 in the first outage; in the second (a stream that
    # delivers nothing does not count) 1, 2, 4 and then the 3 s left of the 10 s total
    assert slept == [1.0, 2.0, 4.0, 1.0, 2.0, 4.0, 3.0]


async def test_a_server_that_stays_away_ends_the_watch_naming_the_job(slept: list[float]) -> None:
    server = _Outages([2] + [None] * 100)
    seen = []
    with pytest.raises(ServerLost) as err:
        async for st in events_with_reattach(server, "job-7", 0, Reconnect(total_s=12.0, first_s=1.0, max_s=5.0),
                                             server="10.0.0.1:50051"):  # fmt: skip
            seen.append(st.seq)
    assert seen == [1, 2]
    assert sum(slept) == pytest.approx(12.0)  # the bounded total wait
    assert "anymole jobs watch job-7 --server 10.0.0.1:50051" in str(err.value) and "--reconnect-wait" in str(err.value)


async def test_no_reconnect_wait_gives_up_at_once(slept: list[float]) -> None:
    with pytest.raises(ServerLost):
        [st async for st in events_with_reattach(_Outages([1]), "j", 0, Reconnect(total_s=0.0))]
    assert slept == []


async def test_other_errors_are_not_retried(slept: list[float]) -> None:
    calls = 0

    async def not_found() -> None:
        nonlocal calls
        calls += 1
        raise grpc.aio.AioRpcError(grpc.StatusCode.NOT_FOUND, grpc.aio.Metadata(), grpc.aio.Metadata(), "no job")

    with pytest.raises(grpc.aio.AioRpcError):
        await retrying(not_found, Reconnect(), "s", "j")
    assert calls == 1 and slept == []


async def test_a_download_is_retried_while_the_server_restarts(slept: list[float]) -> None:
    answers: list[BaseException | bytes] = [_gone(), _gone(), b"result"]

    async def download() -> bytes:
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    assert await retrying(download, Reconnect(total_s=5.0, first_s=0.5), "s", "j") == b"result"
    assert slept == [0.5, 1.0]
