"""`PipelineWorker`: the Ray actor of `anymole serve --ray`, one per GPU (or CPU share) of the cluster.

It keeps its own `AnyMoLePipeline`, so its video prior stays loaded between jobs (`PriorPool`), and runs one
job's method at a time for the front end (`anymole.service.ray_pool.RayPipeline`). ``run`` is an async
generator, which Ray streams to the caller as it yields (an ``ObjectRefGenerator``): the method's own events
and its stages' progress reports come out in the order the embedded job manager would have published them.
``cancel`` sets the job's `CancelToken`, so its stage stops at the next step as on an embedded server. Errors
come back as the job's terminal event (`failed_event`), never as exceptions that would need pickling.

This module runs in the worker processes; the front end imports it only to create the actors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterator

import torch

from anymole.errors import JobCancelled
from anymole.pipeline import (
    AnyMoLePipeline,
    Cancelled,
    CancelToken,
    Event,
    JobSpec,
    ProgressReporter,
    VideoSettings,
)

__all__ = ["PipelineWorker"]

log = logging.getLogger("anymole.service.ray")


class PipelineWorker:
    """Runs jobs' methods on one device with its own pipeline (models stay loaded between jobs).

    Args:
        video: the ``video`` method's settings, the front end's (its ``cache_dir`` must be a path every
            worker reads and writes: per-scene artefacts are shared through it).
        device: ``"cpu"`` or ``"cuda"``: Ray makes the actor's one GPU the only visible one, ``cuda:0``.
    """

    def __init__(self, video: VideoSettings, device: str) -> None:
        self.device = "cpu" if device == "cpu" else "cuda:0"
        self.pipeline = AnyMoLePipeline(video)
        self._tokens: dict[str, CancelToken] = {}

    def describe(self) -> tuple[str, int, str]:
        """``(node address, process id, device description)``; answering it also says the actor is up."""
        import ray

        what = torch.cuda.get_device_name(0) if self.device.startswith("cuda") else "CPU"
        return ray.util.get_node_ip_address(), os.getpid(), what

    def cancel(self, call_id: str, reason: str) -> None:
        """Cancel the job that ``run(call_id, …)`` runs (nothing if it has ended)."""
        token = self._tokens.get(call_id)
        if token is not None:
            token.cancel(reason)

    async def warm_up(self) -> None:
        """`AnyMoLePipeline.warm_up` on this worker's device."""
        await self.pipeline.warm_up([self.device])

    async def run(self, call_id: str, spec: JobSpec) -> AsyncIterator[Event]:
        """The events of ``spec``'s job on this worker, ending with its terminal event."""
        token = CancelToken()
        self._tokens[call_id] = token
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()
        queue: asyncio.Queue[Event | None] = asyncio.Queue()

        def emit(event: Event) -> None:
            # As the job manager's emitter: at once on the loop, in order with the method's own events.
            if threading.get_ident() == loop_thread:
                queue.put_nowait(event)
            else:
                loop.call_soon_threadsafe(queue.put_nowait, event)

        async def produce() -> None:
            try:
                async for event in self.pipeline.run(spec, token, ProgressReporter(emit, token), self.device):
                    queue.put_nowait(event)
            except JobCancelled as exc:
                queue.put_nowait(Cancelled(token.reason or str(exc)))
            except asyncio.CancelledError:
                queue.put_nowait(Cancelled(token.reason or "cancelled"))
            except Exception as exc:
                import grpc

                from anymole.service.errors import failed_event

                failed = failed_event(exc)
                if failed.code == grpc.StatusCode.INTERNAL.value[0]:
                    log.exception("job call %s failed on %s", call_id, self.device)
                queue.put_nowait(failed)
            finally:
                queue.put_nowait(None)

        task = asyncio.create_task(produce(), name=f"anymole-ray-{call_id}")
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            # The caller went away before the end (cancelled through Ray): stop the stages and wait for them,
            # so that the device is never used by two jobs.
            token.cancel(token.reason or "cancelled")
            if not task.done():
                task.cancel()
            with contextlib.suppress(BaseException):
                await task
            del self._tokens[call_id]
