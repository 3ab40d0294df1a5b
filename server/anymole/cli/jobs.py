"""``anymole jobs list | watch | get | cancel``: a server's jobs by id."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from anymole.client import Remote
    from anymole.pipeline import JobState

from anymole.cli._common import _RECONNECT_HELP, _check_suffix, _reconnect

jobs_app = typer.Typer(
    help="A server's jobs by id: list them, watch one (through server restarts), get its result, cancel it. "
    "`anymole fill --server` prints the id of its job when the server queues it."
)

_Server = Annotated[str, typer.Option(help="HOST:PORT of the anymole server")]
_Token = Annotated[str | None, typer.Option(envvar="ANYMOLE_TOKEN", help="bearer token for --server")]
_TlsCa = Annotated[Path | None, typer.Option(help="PEM root certificate: talk TLS to --server")]
_JobId = Annotated[str, typer.Argument(help="job id, as `anymole fill --server` or `anymole jobs list` print it")]


def _remote(server: str, token: str | None, tls_ca: Path | None, reconnect_wait: float | None = None) -> Remote:
    from anymole.client import Remote

    return Remote(server, token, tls_ca, _reconnect(reconnect_wait))


def _job_states(names: list[str] | None) -> tuple[JobState, ...]:
    from anymole.errors import InvalidInput
    from anymole.pipeline import JobState

    known = [s.value for s in JobState]
    for name in names or ():
        if name not in known:
            raise InvalidInput("--state", f"no job state {name!r}; use one of {', '.join(known)}")
    return tuple(JobState(n) for n in names or ())


@jobs_app.command("list")
def jobs_list(
    server: _Server = "127.0.0.1:50051",
    state: Annotated[list[str] | None, typer.Option(help="only jobs in this state, repeatable: queued, running, completed, failed, cancelled, interrupted")] = None,
    limit: Annotated[int, typer.Option(min=0, help="newest jobs shown (0: all)")] = 20,
    json_out: Annotated[bool, typer.Option("--json", help="print the jobs as JSON")] = False,
    token: _Token = None,
    tls_ca: _TlsCa = None,
) -> None:
    """List a server's jobs, newest first: id, state, method, label, frames, when submitted."""
    import asyncio
    import dataclasses
    import json
    import time

    from rich.console import Console
    from rich.table import Table

    from anymole.client import list_jobs

    jobs = asyncio.run(list_jobs(_remote(server, token, tls_ca), _job_states(state), limit))
    if json_out:
        rows = [{**dataclasses.asdict(j), "state": j.state.value} for j in jobs]
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("job", "state", "method", "label", "frames", "submitted", title=f"jobs on {server}")
    for j in jobs:
        method = f"{j.method}:{j.preset}" if j.preset else j.method
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j.created))
        table.add_row(j.job_id, j.state.value, method, j.label, str(j.total_frames), when)
    Console().print(table)


@jobs_app.command("watch")
def jobs_watch(
    job_id: _JobId,
    server: _Server = "127.0.0.1:50051",
    reconnect_wait: Annotated[float | None, typer.Option(min=0, help=_RECONNECT_HELP)] = None,
    token: _Token = None,
    tls_ca: _TlsCa = None,
) -> None:
    """Follow a job's progress to its end (events it already had are replayed first); exit 1 unless it
    completes. Then `anymole jobs get JOB --out FILE` writes its result."""
    import asyncio

    from anymole.client import watch_job

    completed = asyncio.run(watch_job(_remote(server, token, tls_ca, reconnect_wait), job_id))
    typer.echo(f"job {job_id} completed: {completed.summary}", err=True)
    typer.echo(f"get the result: anymole jobs get {job_id} --server {server} --out RESULT.glb", err=True)


@jobs_app.command("get")
def jobs_get(
    job_id: _JobId,
    out: Annotated[Path, typer.Option("--out", help="result file: .glb, .bvh or .npz for motion; .mp4 for a video job")],
    server: _Server = "127.0.0.1:50051",
    token: _Token = None,
    tls_ca: _TlsCa = None,
) -> None:
    """Write a completed job's result, in the format the --out suffix names."""
    import asyncio

    from anymole.client import get_result

    _check_suffix(out, "--out", (".glb", ".bvh", ".npz", ".mp4"))
    path = asyncio.run(get_result(_remote(server, token, tls_ca), job_id, out))
    typer.echo(f"wrote {path} (job {job_id})", err=True)


@jobs_app.command("cancel")
def jobs_cancel(
    job_id: _JobId,
    server: _Server = "127.0.0.1:50051",
    token: _Token = None,
    tls_ca: _TlsCa = None,
) -> None:
    """Cancel a queued or running job; a finished job keeps its state."""
    import asyncio

    from anymole.client import cancel_job

    state = asyncio.run(cancel_job(_remote(server, token, tls_ca), job_id))
    typer.echo(f"job {job_id}: {state.value}", err=True)
