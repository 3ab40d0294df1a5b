"""Following a job from a terminal: gRPC errors as user errors, the progress bar, and a watch that outlives a
server restart.

A job lives on the server, not in the client: when the server goes away mid-job (a restart, a network blip),
its queued jobs run again after the next start and every event stays replayable by sequence number. So a
client that loses the stream waits (`Reconnect`: growing pauses, a bounded total) and watches again after
the last event it saw, and `follow` draws the same bar whether the stream broke or not.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from anymole.errors import AnymoleError, InvalidInput, JobCancelled
from anymole.pipeline import Cancelled, Completed, Failed, Interrupted, MotionChunk, Preview, Progress, Queued

if TYPE_CHECKING:
    from rich.progress import Progress as ProgressView

    from anymole.client._client import AnyMoLeClient
    from anymole.pipeline import Stamped

__all__ = ["DEFAULT_RECONNECT_S", "Reconnect", "ServerLost", "events_with_reattach", "follow", "read_tls_ca", "retrying", "rpc_errors"]

DEFAULT_RECONNECT_S = 120.0
"""How long a client keeps trying to reach a server that went away mid-job: a restart that loads a video prior
takes about half a minute on a GPU box."""

T = TypeVar("T")


@dataclass(frozen=True)
class Reconnect:
    """How a client waits for a server it lost: ``first_s``, doubling up to ``max_s``, until the pauses add up
    to ``total_s`` (0: give up at once). Every event that arrives starts the count again.

    The pauses, not the clock, are counted: a refused connection fails at once, so they are the wait."""

    total_s: float = DEFAULT_RECONNECT_S
    first_s: float = 0.5
    max_s: float = 5.0

    def pauses(self) -> Iterator[float]:
        """Seconds to wait before each attempt; ends when ``total_s`` is spent."""
        spent, step = 0.0, self.first_s
        while spent < self.total_s:
            pause = min(step, self.total_s - spent)
            yield pause
            spent += pause
            step = min(2 * step, self.max_s)


def read_tls_ca(path: str | Path | None) -> bytes | None:
    """The PEM root certificate(s) at ``path`` (``None``: plaintext), or an `InvalidInput` naming --tls-ca."""
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInput("--tls-ca", f"cannot read {path} ({exc.strerror}); give the server's PEM root certificate") from None


def _unavailable(exc: BaseException) -> bool:
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() is grpc.StatusCode.UNAVAILABLE


class ServerLost(AnymoleError):
    """The server stayed unreachable for the whole `Reconnect` wait; the job may still run there."""

    def __init__(self, server: str, job_id: str, waited_s: float) -> None:
        super().__init__(
            f"lost the server at {server} and it did not come back within {waited_s:g} s; job {job_id} stays "
            f"on it: follow it later with `anymole jobs watch {job_id} --server {server}` (wait longer with "
            "--reconnect-wait)"
        )


async def events_with_reattach(
    client: AnyMoLeClient,
    job_id: str,
    joints: int,
    reconnect: Reconnect | None = None,
    on_lost: Callable[[float], None] | None = None,
    server: str = "the server",
) -> AsyncIterator[Stamped]:
    """WatchJob from the start until the terminal event; a stream the server drops (UNAVAILABLE: it stopped,
    restarts, the network broke) is watched again after the last event seen, following ``reconnect``.
    ``on_lost(pause)`` runs before each pause."""
    reconnect = reconnect or Reconnect()
    last_seq = 0
    pauses = reconnect.pauses()
    while True:
        try:
            async for st in client.watch(job_id, joints, after_seq=last_seq):
                if st.seq > last_seq:
                    last_seq, pauses = st.seq, reconnect.pauses()
                yield st
            return
        except grpc.aio.AioRpcError as exc:
            if not _unavailable(exc):
                raise
            pause = next(pauses, None)
            if pause is None:
                raise ServerLost(server, job_id, reconnect.total_s) from None
            if on_lost is not None:
                on_lost(pause)
            await asyncio.sleep(pause)


async def retrying(call: Callable[[], Awaitable[T]], reconnect: Reconnect, server: str, job_id: str) -> T:
    """``await call()``, called again after the pauses of ``reconnect`` while the server is UNAVAILABLE."""
    pauses = reconnect.pauses()
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            pause = next(pauses, None) if _unavailable(exc) else None
            if pause is None:
                if _unavailable(exc):
                    raise ServerLost(server, job_id, reconnect.total_s) from None
                raise
            await asyncio.sleep(pause)


@contextlib.contextmanager
def rpc_errors(server: str, frame_offset: int = 0) -> Iterator[None]:
    """Turn gRPC failures into `AnymoleError`s with a next step (the CLI prints them without a traceback);
    ``frame_offset``: the clip frame the request's frame 0 is (the context's start)."""
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
        if code is grpc.StatusCode.UNAVAILABLE:
            raise AnymoleError(
                f"no AnyMoLe server answers at {server} ({exc.details()}); start one with `anymole serve` "
                "or fix --server"
            ) from None
        if code is grpc.StatusCode.INVALID_ARGUMENT:
            raise _invalid_input(exc, frame_offset) from None
        raise AnymoleError(f"server answered {code.name}: {exc.details()}") from None


def _invalid_input(exc: grpc.aio.AioRpcError, frame_offset: int = 0) -> InvalidInput:
    """The server's `InvalidInput` again, its field and reason read from the status's BadRequest detail; a
    keyframe's reason also says how its frames map to clip frames when the context starts after frame 0."""
    status = rpc_status.from_call(exc)  # an AioRpcError carries the trailers of a finished call
    for detail in status.details if status is not None else ():
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad) and bad.field_violations:
            field, reason = bad.field_violations[0].field, bad.field_violations[0].description
            if frame_offset and field.startswith("keyframes"):
                reason += f" (frames of the request count from the --context start: add {frame_offset} for clip frames)"
            return InvalidInput(field, reason)
    return InvalidInput("request", exc.details() or "rejected by the server")


def _progress_view(enabled: bool) -> ProgressView | None:
    if not enabled:
        return None
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description:<18}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("ETA {task.fields[eta]}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[received]}"),
    )


async def follow(
    client: AnyMoLeClient,
    job_id: str,
    joints: int,
    progress: bool,
    reconnect: Reconnect | None = None,
    server: str = "the server",
) -> Completed:
    """Watch a job to its end, drawing progress; return its `Completed` event or raise why it ended."""
    frames = previews = 0
    view = _progress_view(progress)
    with view if view is not None else contextlib.nullcontext():
        task = view.add_task("queued", total=100, eta="?", received="") if view is not None else None

        def lost(pause: float) -> None:
            if view is not None and task is not None:
                view.update(task, description="server lost", eta="?", received=f"trying again in {pause:g} s")

        async for st in events_with_reattach(client, job_id, joints, reconnect, lost, server):
            ev = st.event
            if isinstance(ev, MotionChunk):
                frames += ev.frame_count
            elif isinstance(ev, Preview):
                previews += 1
            if view is not None and task is not None:
                if isinstance(ev, Queued):
                    view.update(task, description=f"queued (#{ev.position + 1})", received="")
                elif isinstance(ev, Progress):
                    eta = "?" if ev.eta_seconds is None else f"{ev.eta_seconds:4.1f}s"
                    view.update(task, description=ev.stage, completed=100 * ev.fraction, eta=eta)
                elif isinstance(ev, MotionChunk):
                    view.update(task, received=f"{frames} frames")
                elif isinstance(ev, Preview):
                    view.update(task, received=f"{previews} previews (frame {ev.frame})")
                elif isinstance(ev, Completed):
                    view.update(task, description="done", completed=100, eta="0s")
            if isinstance(ev, Completed):
                return ev
            if isinstance(ev, Failed):
                if ev.field:
                    raise InvalidInput(ev.field, ev.message)
                raise AnymoleError(f"job {job_id} failed: {ev.message}")
            if isinstance(ev, Cancelled):
                raise JobCancelled(f"job {job_id} was cancelled: {ev.reason}")
            if isinstance(ev, Interrupted):
                raise AnymoleError(f"job {job_id} was interrupted: {ev.reason}")
    raise AnymoleError(f"the event stream of job {job_id} ended without a result; watch it again")
