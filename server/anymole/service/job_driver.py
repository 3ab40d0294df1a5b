"""Driving one job: run the pipeline's event stream for it and publish every event, ending with exactly one
terminal event whatever happens (completion, cancel, server shutdown, a failing stage)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable

from anymole.pipeline import Cancelled, Completed, Event, Interrupted, Pipeline, ProgressReporter, is_terminal
from anymole.service.job_record import JobRecord

__all__ = ["drive_job"]

log = logging.getLogger("anymole.service.jobs")


async def drive_job(
    job: JobRecord,
    pipeline: Pipeline,
    device: str,
    publish: Callable[[JobRecord, Event], None],
    emit: Callable[[Event], None],
    store_result: Callable[[JobRecord, Completed], None],
) -> None:
    """Run the pipeline for one job on ``device`` and publish its events; always ends with a terminal event.

    Args:
        job: the running job (its spec set).
        pipeline: what runs it.
        device: the compute device of the worker.
        publish: appends an event to the job's log (event-loop thread).
        emit: a thread-safe publish for the stages' progress reports.
        store_result: writes a finished job's result files (called in a worker thread).
    """
    assert job.spec is not None  # queued jobs always carry their spec
    report = ProgressReporter(emit, job.token)
    events = pipeline.run(job.spec, job.token, report, device)
    try:
        job.token.raise_if_cancelled()
        async for event in events:
            if isinstance(event, Completed):
                # Written in a worker thread (a long result would stall every other call), and with cancels
                # held off meanwhile: one landing before Completed is logged would lose a finished result.
                job.finishing = True
                await asyncio.to_thread(store_result, job, event)
                publish(job, dataclasses.replace(event, motion=None, video=None))
            else:
                publish(job, event)
            if is_terminal(event):
                break
        else:
            raise RuntimeError("the pipeline ended without a Completed event")
    except asyncio.CancelledError:
        if job.interrupting:
            publish(job, Interrupted("the server shut down while this job ran; resubmit it"))
        else:
            publish(job, Cancelled(job.token.reason or "cancelled"))
    except Exception as exc:
        import grpc

        from anymole.errors import JobCancelled
        from anymole.service.errors import failed_event

        if isinstance(exc, JobCancelled):
            publish(job, Cancelled(job.token.reason or str(exc)))
        else:
            failed = failed_event(exc)
            if failed.code == grpc.StatusCode.INTERNAL.value[0]:
                log.exception("job %s failed", job.id)
            publish(job, failed)
    finally:
        with contextlib.suppress(Exception):
            await events.aclose()  # type: ignore[attr-defined]
