"""``anymole jobs list|watch|get|cancel``: a server's jobs by id, from any client, at any time.

A fill's client may stop (Ctrl-Z, a closed laptop, a server restart it did not wait out) while its job runs
on: the server keeps every job, its events and its result. These flows reach them again.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from anymole.client._client import AnyMoLeClient
from anymole.client._watch import Reconnect, follow, read_tls_ca, retrying, rpc_errors
from anymole.pipeline import Completed, JobInfo, JobState

__all__ = ["Remote", "cancel_job", "get_result", "list_jobs", "watch_job"]


@dataclass(frozen=True)
class Remote:
    """Where a server is and how to talk to it.

    Attributes:
        server: ``"host:port"``.
        token: bearer token, if the server demands one.
        tls_ca: PEM root certificate to trust; TLS is used when given.
        reconnect: how long to wait for the server when it goes away mid-call.
    """

    server: str
    token: str | None = None
    tls_ca: Path | None = None
    reconnect: Reconnect = field(default_factory=Reconnect)

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[AnyMoLeClient]:
        """A connected client; gRPC failures inside become `AnymoleError`s naming the server."""
        ca = read_tls_ca(self.tls_ca)
        with rpc_errors(self.server):
            async with await AnyMoLeClient.connect(self.server, token=self.token, tls_ca=ca) as client:
                yield client


async def list_jobs(remote: Remote, states: Sequence[JobState] = (), limit: int = 0) -> list[JobInfo]:
    """The server's jobs, newest first (``limit`` 0: all), only those in ``states`` when given."""
    async with remote.client() as client:
        return await client.list_jobs(states, limit)


async def watch_job(remote: Remote, job_id: str, progress: bool = True) -> Completed:
    """Follow a job to its end (through server restarts); its `Completed` event, else why it ended."""
    async with remote.client() as client:
        return await follow(client, job_id, 0, progress, remote.reconnect, remote.server)


async def get_result(remote: Remote, job_id: str, out: Path) -> Path:
    """Write a completed job's result to ``out``, in the format its suffix names; returns ``out``."""
    async with remote.client() as client:
        data = await retrying(lambda: client.result_file(job_id, out.suffix), remote.reconnect, remote.server, job_id)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return out


async def cancel_job(remote: Remote, job_id: str) -> JobState:
    """Cancel a job; its state afterwards (a finished job keeps its state)."""
    async with remote.client() as client:
        return await client.cancel(job_id, timeout=30.0)
