"""`RayPipeline`: the front end's pipeline under `anymole serve --ray`, which runs every job's method on a Ray
actor (`anymole.service.ray_worker.PipelineWorker`, one per GPU of the cluster) instead of in-process.

The job manager stays as it is: it runs one job per worker slot from its FIFO queue, stamps, persists and
replays the events, and cancels through the job's token and task. `RayPipeline.run` picks the worker when
the job starts (`anymole.service.ray_placement`: the worker that holds the scene's caches, else the least
used free one), streams the actor's events back as they come (Ray's streaming generators), and turns a cancel
into the actor's ``cancel`` (the job's `CancelToken` there), then waits until the actor has stopped.

A worker lost mid-job (its process killed, its node gone) is retried once on the first worker free (another,
or this one once Ray has restarted it), announced by a progress event: the stages that finished wrote their
artefacts (adapted prior, estimator) to the shared cache directory, so the retry loads them instead of redoing
them. A second loss fails the job with `WorkerLost`.
Ray restarts a lost actor where it can; it takes jobs again once it answers (its models load on its next job).
One not back within `WORKER_WAIT_S` (or one Ray cannot restart) is given up, with a warning in the log. A job
that finds no worker free says so in a progress event and waits; once every worker is given up it fails with
`WorkerLost`.
The actors live and die with the front end (Ray's default ownership): a restarted front end starts its own,
and marks the jobs that were running interrupted, as an embedded server does.

Importing this module imports Ray: `anymole.service.server` imports it only for ``--ray``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import (
    ActorDiedError,
    ActorUnavailableError,
    NodeDiedError,
    ObjectLostError,
    RayActorError,
    WorkerCrashedError,
)

from anymole.errors import InvalidInput
from anymole.pipeline import (
    AnyMoLePipeline,
    CancelToken,
    Completed,
    Event,
    JobSpec,
    Progress,
    ProgressReporter,
    is_terminal,
)
from anymole.pipeline.methods import MethodSpec
from anymole.service.errors import WorkerLost
from anymole.service.ray_placement import SceneMemory, WorkerLoad, choose_worker, scene_key
from anymole.service.ray_worker import PipelineWorker

__all__ = ["WORKER_STAGE", "WORKER_WAIT_S", "RayPipeline", "connect"]

log = logging.getLogger("anymole.service.ray")

#: the stage of the progress event that says which worker a job runs on (and, after a loss, that it is retried)
WORKER_STAGE = "worker"

#: what a lost worker's calls raise, whichever way it went
_LOST = (RayActorError, WorkerCrashedError, NodeDiedError, ObjectLostError)

#: seconds between two checks of whether a lost worker is back
_RESTART_POLL_S = 1.0

#: how long a lost worker has to answer again before it is given up (a job waiting for it then fails, where no
#: other worker is left): Ray restarts a killed actor in seconds where its node still has room; a node that left takes as long as a new
#: one takes to join, and nothing comes back where the cluster has no room for the actor
WORKER_WAIT_S = 300.0


def connect(address: str) -> bool:
    """Connect this process to a Ray cluster: ``"auto"`` is the one it is connected to already, else the one
    ``ray start`` runs on this machine, else a new local one; any other value is a cluster's address
    (``HOST:PORT``, as ``ray start --head`` prints it). Returns whether this call connected (so that
    `RayPipeline.close` disconnects)."""
    if ray.is_initialized():
        return False
    try:
        ray.init(address=None if address == "auto" else address, logging_level=logging.WARNING)
    except ConnectionError as exc:
        raise InvalidInput("--ray", f"cannot reach a Ray cluster at {address!r} ({exc}); start one with `ray start "
                           "--head` and pass the address it prints, or --ray auto for a local one; a cluster with token "
                           "authentication (Ray >= 2.59) also needs RAY_AUTH_MODE=token and its token here "
                           "(~/.ray/auth_token or RAY_AUTH_TOKEN; docs/ray.md)") from None  # fmt: skip
    return True


@dataclass(eq=False)
class _Worker:
    """One actor as the front end tracks it."""

    name: str
    device: str
    handle: Any  # ray.actor.ActorHandle of a PipelineWorker
    alive: bool = True
    busy: bool = False
    jobs_done: int = 0
    pid: int = 0
    description: str = "starting"
    # lost and given up: Ray could not restart it, or it did not answer within WORKER_WAIT_S
    gone: bool = False


class RayPipeline:
    """The pipeline of a front end whose jobs run on Ray actors.

    Args:
        local: the same pipeline as the actors', in the front end: it lists the methods and checks jobs
            before they queue, and never loads a model here.
        devices: one actor per entry: ``"cpu"`` (``worker_cpus`` CPUs), ``"cuda"``/``"cuda:N"`` (one GPU
            anywhere in the cluster; the index means nothing there), ``"auto"`` (one per GPU of the cluster,
            or one CPU worker without GPUs).
        worker_cpus: CPUs Ray reserves for each actor (fractions share a core: tests run two CPU workers on one).
        owns_connection: disconnect from Ray on `close` (`connect` made the connection).

    Attributes:
        devices: ``(name, description)`` of every worker, as GetServerInfo lists them; the descriptions are
            filled in by `start` (the server hands this very list to the servicer).
    """

    def __init__(self, local: AnyMoLePipeline, devices: Sequence[str], worker_cpus: float = 1.0,
                 owns_connection: bool = False) -> None:  # fmt: skip
        self.local = local
        self._owns = owns_connection
        kinds = _worker_devices(devices)
        gpus = int(ray.cluster_resources().get("GPU", 0))
        wanted = sum(d == "cuda" for d in kinds)
        if wanted > gpus:
            raise InvalidInput("--device", f"{wanted} GPU workers asked for and the Ray cluster has {gpus} GPUs; "
                               "join more GPU nodes (`ray start --address …`) or ask for fewer")  # fmt: skip
        actor = ray.remote(PipelineWorker)
        self.workers = [
            _Worker(f"ray-{i}:{d}", d, actor.options(
                num_cpus=worker_cpus, num_gpus=1 if d == "cuda" else 0,
                max_restarts=-1,  # Ray brings a lost worker back where it can; the job is retried by us, once
                max_task_retries=0,
            ).remote(local.video, d))
            for i, d in enumerate(kinds)
        ]  # fmt: skip
        self.devices: list[tuple[str, str]] = [(w.name, w.description) for w in self.workers]
        self.scenes = SceneMemory()
        self._changed = asyncio.Event()
        self._watchers: set[asyncio.Task[None]] = set()

    @property
    def slots(self) -> list[str]:
        """One name per worker: the job manager runs one job per slot."""
        return [w.name for w in self.workers]

    # ------------------------------------------------------------------ the pipeline protocol
    def methods(self) -> Sequence[MethodSpec]:
        return self.local.methods()

    def validate(self, spec: JobSpec) -> None:
        self.local.validate(spec)

    async def run(
        self, spec: JobSpec, token: CancelToken, report: ProgressReporter, device: str
    ) -> AsyncIterator[Event]:
        """The job's events from the worker it is placed on (``device``, the job manager's slot, is not read:
        the worker is chosen now); one retry after a loss, on the first worker free."""
        scene = scene_key(spec)
        lost: list[str] = []
        while True:
            # every worker busy or lost: say so, then wait (where all are given up, `_acquire` fails the job)
            if choose_worker(scene, self.loads()) is None and not all(w.gone for w in self.workers):
                waiting = self._waiting(lost)
                log.warning("a job waits for a Ray worker: %s", waiting)
                yield Progress(WORKER_STAGE, 0.0, 0.0, None, waiting)
            worker = await self._acquire(scene)
            released = False
            try:
                where = f"{worker.name} ({worker.description})"
                yield Progress(WORKER_STAGE, 0.0, 0.0, None,
                               f"worker {lost[-1]} lost: retrying on {where}; the stages that finished there load "
                               "from the shared cache" if lost else f"running on {where}")  # fmt: skip
                async with contextlib.aclosing(self._stream(worker, spec, token)) as events:
                    async for event in events:
                        if is_terminal(event):
                            # free (and holding the scene) before anyone hears of the result: a client that
                            # submits the same scene on Completed (or again on Failed) must find its worker
                            # free, not busy
                            if isinstance(event, Completed):
                                self.scenes.add(worker.name, scene)
                            self._release(worker)
                            released = True
                        yield event
                return
            except _WorkerGone:
                lost.append(worker.name)
                self._lose(worker)
                if len(lost) > 1:
                    raise WorkerLost(f"this job lost its worker twice ({', '.join(lost)}: the process died or its "
                                     "node left the Ray cluster); resubmit it once the cluster is healthy, and "
                                     "see `ray logs` on the nodes for why") from None  # fmt: skip
                log.warning("worker %s lost mid-job; retrying it once, on the first worker free (another, or this "
                            "one once Ray has restarted it)", worker.name)  # fmt: skip
            finally:
                if not released:
                    self._release(worker)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Wait until every worker answers, and describe them (GetServerInfo's devices)."""
        answers: list[tuple[str, int, str]] = await asyncio.gather(
            *(w.handle.describe.remote() for w in self.workers)
        )
        for i, (w, (node, pid, what)) in enumerate(zip(self.workers, answers, strict=True)):
            w.pid, w.description = pid, f"{what} on {node} (Ray worker, pid {pid})"
            self.devices[i] = (w.name, w.description)
        log.info("Ray workers: %s", "; ".join(f"{n}: {d}" for n, d in self.devices))

    async def warm_up(self, devices: Sequence[str]) -> None:
        """`VideoSettings.warmup` on every worker (``devices``, the slots, is not read)."""
        outcomes = await asyncio.gather(
            *(w.handle.warm_up.remote() for w in self.workers), return_exceptions=True
        )
        for w, outcome in zip(self.workers, outcomes, strict=True):
            if isinstance(outcome, BaseException):  # its jobs load and compile on first use
                log.warning("warm-up failed on worker %s: %s", w.name, outcome)

    async def close(self) -> None:
        """Stop the workers (and disconnect, when `connect` connected)."""
        for task in self._watchers:
            task.cancel()
        for w in self.workers:
            with contextlib.suppress(Exception):
                ray.kill(w.handle, no_restart=True)
        if self._owns:
            ray.shutdown()

    # ------------------------------------------------------------------ internals
    def loads(self) -> list[WorkerLoad]:
        return [
            WorkerLoad(w.name, w.alive, w.busy, w.jobs_done, self.scenes.of(w.name)) for w in self.workers
        ]

    def _waiting(self, lost: Sequence[str]) -> str:
        """What a job that finds no worker free waits for (its progress message and the log's)."""
        busy = [w.name for w in self.workers if w.alive and w.busy]
        out = [w.name for w in self.workers if not w.alive and not w.gone]
        waits = ([f"{', '.join(busy)} to finish a job"] if busy else []) + (
            [f"Ray to restart {', '.join(out)} (up to {WORKER_WAIT_S:.0f} s)"] if out else [])  # fmt: skip
        return f"{'worker ' + lost[-1] + ' lost: ' if lost else ''}no Ray worker free; waiting for {' or '.join(waits)}"

    async def _acquire(self, scene: str | None) -> _Worker:
        """The worker placement picks, marked busy; waits while none is free (a busy one frees, a lost one comes
        back: `_wait_back` gives that `WORKER_WAIT_S`), and raises `WorkerLost` once every worker is given up."""
        while (name := choose_worker(scene, self.loads())) is None:
            if all(w.gone for w in self.workers):
                raise WorkerLost(f"every Ray worker of this server was lost and given up ({', '.join(self.slots)}: "
                                 "their processes died or their nodes left the cluster, and Ray did not bring them "
                                 f"back, or not within {WORKER_WAIT_S:.0f} s); resubmit the job once the cluster is healthy "
                                 "(`ray status`; `ray logs` on the nodes says why) and the server restarted, which "
                                 "starts new workers")  # fmt: skip
            self._changed.clear()
            await self._changed.wait()
        worker = next(w for w in self.workers if w.name == name)
        worker.busy = True
        worker.jobs_done += 1
        return worker

    def _release(self, worker: _Worker) -> None:
        worker.busy = False
        self._changed.set()

    def _lose(self, worker: _Worker) -> None:
        """Take a lost worker out of placement until Ray has it back."""
        worker.alive = False
        task = asyncio.create_task(self._wait_back(worker), name=f"anymole-ray-restart-{worker.name}")
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def _wait_back(self, worker: _Worker) -> None:
        """Put a lost worker back into placement once it answers; give it up after `WORKER_WAIT_S` (a call to an
        actor Ray cannot place again waits for ever) or when Ray says it is dead for good."""
        log.warning("worker %s lost: no jobs go to it until Ray has restarted it (waiting up to %.0f s)",
                    worker.name, WORKER_WAIT_S)  # fmt: skip
        self._describe(worker, "lost: waiting for Ray to restart it")
        try:
            async with asyncio.timeout(WORKER_WAIT_S):
                while True:
                    try:
                        node, pid, what = await worker.handle.describe.remote()
                    # for good: Ray could not restart it (its node is gone and nothing fits)
                    except ActorDiedError:
                        why = "Ray could not restart it"
                        break
                    except RayActorError:  # restarting
                        await asyncio.sleep(_RESTART_POLL_S)
                        continue
                    worker.pid, worker.alive = pid, True
                    self._describe(worker, f"{what} on {node} (Ray worker, pid {pid})")
                    log.info("worker %s is back (pid %d)", worker.name, pid)
                    self._changed.set()
                    return
        except TimeoutError:
            why = f"it did not answer within {WORKER_WAIT_S:.0f} s"
        worker.gone = True
        self._describe(worker, f"given up: {why}")
        log.warning("worker %s given up (%s): the server runs on with %d of its %d workers; see `ray status` and "
                    "`ray logs` on its node, and restart the server to start a new worker in its place", worker.name,
                    why, sum(not w.gone for w in self.workers), len(self.workers))  # fmt: skip
        self._changed.set()  # jobs waiting for a worker look again: none may be left

    def _describe(self, worker: _Worker, description: str) -> None:
        """Set what GetServerInfo lists for ``worker``."""
        worker.description = description
        self.devices[[n for n, _ in self.devices].index(worker.name)] = (worker.name, description)

    async def _stream(
        self, worker: _Worker, spec: JobSpec, token: CancelToken
    ) -> AsyncGenerator[Event, None]:
        """The events of one attempt on ``worker``; raises `_WorkerGone` when it is lost. When the caller stops
        early (a cancel), the actor's job is cancelled and this waits until it has stopped."""
        call = uuid.uuid4().hex
        events: ray.ObjectRefGenerator = worker.handle.run.remote(call, spec)
        done = False
        try:
            async for ref in events:
                yield await ref
            done = True
        except _LOST as exc:
            done = True  # a dead worker has nothing left to cancel
            if isinstance(exc, ActorUnavailableError):
                # unreachable, maybe not dead: the job is retried elsewhere, so this attempt must not carry on
                # (or hold the GPU) should the worker answer again; the cancel is delivered when it does
                with contextlib.suppress(Exception):
                    worker.handle.cancel.remote(
                        call, "retried on another worker after this one was unreachable"
                    )
            raise _WorkerGone(str(exc)) from exc
        finally:
            if not done:
                worker.handle.cancel.remote(call, token.reason or "cancelled")
                # until the actor's generator has returned, even through a second cancel of this task (a
                # client's retried Cancel, a shutdown): the worker must not be released while its job runs
                drain = asyncio.ensure_future(_drain(events))
                while not drain.done():
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.shield(drain)


async def _drain(events: ray.ObjectRefGenerator) -> None:
    """Read a cancelled attempt's remaining events (the actor stops at its next step), ignoring a loss."""
    with contextlib.suppress(*_LOST):
        async for _ in events:
            pass


class _WorkerGone(Exception):
    """The worker of one attempt was lost."""


def _worker_devices(devices: Sequence[str]) -> list[str]:
    """``"cpu"`` or ``"cuda"`` per worker (`RayPipeline`'s ``devices``)."""
    out: list[str] = []
    for d in devices:
        if d == "auto":
            gpus = int(ray.cluster_resources().get("GPU", 0))
            out += ["cuda"] * gpus if gpus else ["cpu"]
        elif d == "cpu" or d.partition(":")[0] == "cuda":
            out.append("cpu" if d == "cpu" else "cuda")
        else:
            raise InvalidInput("--device", f"unknown device {d!r}; use cpu, cuda, cuda:N or auto")
    return out
