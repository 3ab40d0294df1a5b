"""Build and run the gRPC server: ``build_server(cfg) -> (server, port)`` and ``serve(cfg)``.

The server registers `AnyMoLeServicer`, the standard health service (``grpc.health.v1``: SERVING while it
takes jobs) and reflection; raises message limits to `Limits.max_message_bytes` (256 MiB); optionally demands
a bearer token and serves TLS. On SIGTERM or SIGINT it goes NOT_SERVING, refuses new jobs, lets running jobs
finish for ``grace_s`` seconds (then marks them interrupted), persists everything and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from anymole.errors import InvalidInput, ResourceExhausted
from anymole.pipeline import AnyMoLePipeline, Pipeline, VideoSettings
from anymole.service.auth import GateInterceptor
from anymole.service.budget import UPLOAD_WAIT_S, UploadGate, budget_limits
from anymole.service.characters import CharacterStore
from anymole.service.jobs import FINISHED_EVENTS_IN_MEMORY, STAGE_STOP_S, JobManager
from anymole.service.keepalive import KeepalivePolicy
from anymole.service.retention import Retention, RetentionPolicy
from anymole.service.servicer import AnyMoLeServicer, add_servicer
from anymole.wire.convert import Limits
from anymole.wire.proto.anymole.v1 import anymole_pb2 as pb

__all__ = ["DEFAULT_PORT", "SERVICE_NAME", "AnyMoLeServer", "ServerConfig", "build_server", "resolve_devices", "serve"]

log = logging.getLogger("anymole.service")

DEFAULT_PORT = 50051
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AnyMoLeService"].full_name


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``anymole serve`` configures.

    Attributes:
        host: interface to bind; 127.0.0.1 keeps the server local, 0.0.0.0 exposes it (use a token and TLS).
        port: TCP port; 0 picks a free one (tests).
        data_dir: job directories and uploaded characters.
        devices: torch device names, one worker each; ``("auto",)`` = every CUDA device, else the CPU.
        max_queue: most queued jobs before SubmitJob answers RESOURCE_EXHAUSTED.
        memory_budget: bytes of memory jobs may take (`anymole.service.budget`); ``None``: half the memory
            available at start. Sets `Limits.max_frame_joints` and the other budget-derived limits.
        retention: how long and how much finished jobs and unreferenced characters are kept
            (``--keep-days``, ``--max-disk``; default: everything, forever).
        upload_wait_s: how long an upload waits for room under `Limits.max_upload_bytes_in_flight` before it
            fails with RESOURCE_EXHAUSTED.
        finished_in_memory: how many finished jobs keep their event logs in memory; older ones are replayed
            from disk.
        token: when set, every call must carry ``authorization: Bearer <token>``.
        tls_cert: PEM certificate chain; with ``tls_key`` the server speaks TLS only.
        tls_key: PEM private key.
        grace_s: seconds running jobs get to finish on shutdown before they are interrupted.
        stage_stop_s: seconds a shutdown then waits for the interrupted jobs' stages to stop before it leaves them
            running in their threads and ends their jobs Interrupted (`JobManager.shutdown`).
        limits: request limits (message size, joints, frames…).
        keepalive: client pings accepted, server pings, the job heartbeat (`anymole.service.keepalive`).
        video: the ``video`` method's prior (none, ``tiny`` or a checkpoint path), step overrides and render
            size; loaded on the first ``video`` job. Its ICAdapt cache defaults to ``data_dir/icadapt``.
        ray: ``None`` (jobs run in this process, one worker per device), or the Ray cluster whose actors run
            them (``"auto"`` or ``HOST:PORT``; `anymole.service.ray_pool`): one actor per entry of ``devices``,
            and the per-scene cache (``video.cache_dir``) must be a path every node shares.
        ray_worker_cpus: CPUs Ray reserves for each actor (a fraction shares a core).
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    data_dir: Path = Path("anymole-data")
    devices: tuple[str, ...] = ("auto",)
    max_queue: int = 64
    memory_budget: int | None = None
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    upload_wait_s: float = UPLOAD_WAIT_S
    finished_in_memory: int = FINISHED_EVENTS_IN_MEMORY
    token: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    grace_s: float = 30.0
    stage_stop_s: float = STAGE_STOP_S
    limits: Limits = field(default_factory=Limits)
    video: VideoSettings = field(default_factory=VideoSettings)
    keepalive: KeepalivePolicy = field(default_factory=KeepalivePolicy)
    ray: str | None = None
    ray_worker_cpus: float = 1.0

    def __post_init__(self) -> None:
        # Named by their `anymole serve` flags: the CLI passes them through unchanged.
        if not 0 <= self.port <= 65535:
            raise InvalidInput("--port", f"must be a TCP port in 0..65535 (0 picks a free one), got {self.port}")
        if self.max_queue < 1:
            raise InvalidInput("--max-queue", f"must be at least 1 (0 would refuse every job), got {self.max_queue}")
        if self.finished_in_memory < 0:
            raise InvalidInput("--finished-in-memory", f"must be 0 or more, got {self.finished_in_memory}")
        if not self.grace_s >= 0:
            raise InvalidInput("--grace", f"must be 0 or more seconds, got {self.grace_s}")
        if not 0 <= self.stage_stop_s < math.inf:
            raise InvalidInput("--stage-stop", f"must be a number of seconds, 0 or more, got {self.stage_stop_s}")
        if not self.ray_worker_cpus > 0:
            raise InvalidInput("--ray-worker-cpus", f"must be more than 0, got {self.ray_worker_cpus}")


def resolve_devices(devices: tuple[str, ...]) -> list[tuple[str, str]]:
    """``(name, description)`` per worker; ``"auto"`` expands to the CUDA devices, or ``cpu`` without CUDA."""
    import torch

    out: list[tuple[str, str]] = []
    for d in devices:
        if d == "auto":
            if torch.cuda.is_available():
                out += [(f"cuda:{i}", torch.cuda.get_device_name(i)) for i in range(torch.cuda.device_count())]
            else:
                out.append(("cpu", "CPU"))
        elif d == "cpu":
            out.append(("cpu", "CPU"))
        else:
            idx = _cuda_index(d)
            if not torch.cuda.is_available() or idx >= torch.cuda.device_count():
                seen = torch.cuda.device_count() if torch.cuda.is_available() else 0
                raise InvalidInput("--device", f"{d} is not available here ({seen} CUDA devices); use 'cpu' or 'auto'")
            out.append((f"cuda:{idx}", torch.cuda.get_device_name(idx)))
    return out


def _cuda_index(name: str) -> int:
    """The index of ``cuda`` / ``cuda:N``; any other name is refused (workers run on the CPU or CUDA only)."""
    kind, sep, index = name.partition(":")
    if kind != "cuda" or (sep and not index.isdigit()):
        raise InvalidInput("--device", f"unknown device {name!r}; use cpu, cuda, cuda:N or auto")
    return int(index) if sep else 0


class AnyMoLeServer:
    """A built, not yet started server; `start`, then `stop` (graceful) or `wait_for_termination`."""

    def __init__(
        self,
        grpc_server: grpc.aio.Server,
        jobs: JobManager,
        health: HealthServicer,
        characters: CharacterStore,
        grace_s: float,
        uploads: UploadGate | None = None,
        retention: Retention | None = None,
        stage_stop_s: float = STAGE_STOP_S,
    ) -> None:
        self.grpc_server = grpc_server
        self.jobs = jobs
        self.health = health
        self.characters = characters
        self.grace_s = grace_s
        self.stage_stop_s = stage_stop_s
        self.uploads = uploads
        self.retention = retention
        self._retention_task: asyncio.Task[None] | None = None
        self._stopped = False
        self.warm_up: asyncio.Task[None] | None = None

    async def start(self) -> None:
        start = getattr(self.jobs.pipeline, "start", None)  # a pipeline's own workers (`RayPipeline`), if any
        if start is not None:
            await start()
        await self.jobs.start()
        await self.grpc_server.start()
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        if self.retention is not None and self.retention.policy.active:
            self._retention_task = asyncio.create_task(self.retention.run(), name="anymole-retention")
        warm_up = getattr(self.jobs.pipeline, "warm_up", None)  # a pipeline's own start-up work, if it has any
        if warm_up is not None:
            self.warm_up = asyncio.create_task(self._warm(warm_up), name="anymole-warm-up")

    async def _warm(self, warm_up: Callable[[tuple[str, ...]], Awaitable[None]]) -> None:
        """Run the pipeline's warm-up while the server serves; a failure is logged (the jobs that need what it
        prepares fail with their own error), never raised into the server."""
        try:
            await warm_up(self.jobs.devices)
        except Exception:
            log.exception("warm-up failed; jobs will load and compile on first use")

    async def stop(self, grace: float | None = None, stage_stop: float | None = None) -> None:
        """Graceful stop: NOT_SERVING, no new jobs, running jobs finish within ``grace`` s (default: the server's
        ``grace_s``) or are interrupted; a stage still running ``stage_stop`` s after its interrupt (default: the
        server's ``stage_stop_s``) is abandoned (`JobManager.shutdown`)."""
        if self._stopped:
            return
        self._stopped = True
        if self.warm_up is not None:  # its compile's daemon thread ends with the process; a load runs to its end
            self.warm_up.cancel()
        if self._retention_task is not None:
            self._retention_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retention_task
        grace = self.grace_s if grace is None else grace
        stage_stop = self.stage_stop_s if stage_stop is None else stage_stop
        await self.health.enter_graceful_shutdown()
        await self.jobs.shutdown(grace, stage_stop)
        await self.grpc_server.stop(min(grace, 1.0))  # watchers have their terminal events by now
        close = getattr(self.jobs.pipeline, "close", None)
        if close is not None:
            await close()

    async def wait_for_termination(self) -> None:
        await self.grpc_server.wait_for_termination()


def build_server(
    cfg: ServerConfig,
    pipeline: Pipeline | None = None,
    *,
    clock: Callable[[], float] | None = None,
    new_job_id: Callable[[], str] | None = None,
) -> tuple[AnyMoLeServer, int]:
    """Create the server for ``cfg`` and bind its port; returns ``(server, bound_port)``. Call inside a loop.
    Without ``pipeline``, an `AnyMoLePipeline` with ``cfg.video``. ``clock`` and ``new_job_id`` replace the job
    manager's Unix time and job-id source (scripts/record_streams.py makes its recordings repeatable with them)."""
    data_dir = Path(cfg.data_dir).expanduser()
    if pipeline is None:
        video = cfg.video
        if video.prior is not None and video.cache_dir is None:
            video = dataclasses.replace(video, cache_dir=data_dir / "icadapt")
        pipeline = AnyMoLePipeline(video)
    if cfg.ray is None:
        devices = resolve_devices(cfg.devices)
        slots = [n for n, _ in devices]
    else:  # imported here only: an embedded server never imports Ray
        from anymole.service.ray_pool import RayPipeline, connect

        if not isinstance(pipeline, AnyMoLePipeline):
            raise TypeError(f"--ray runs AnyMoLePipeline's methods on the workers, not a {type(pipeline).__name__}")
        pipeline = RayPipeline(pipeline, cfg.devices, cfg.ray_worker_cpus, owns_connection=connect(cfg.ray))
        devices, slots = pipeline.devices, pipeline.slots  # the servicer lists `devices` as `start` fills it in
    _make_data_dir(data_dir)
    limits = budget_limits(dataclasses.replace(cfg.limits, max_queue=cfg.max_queue), cfg.memory_budget)
    characters = CharacterStore(data_dir, limits)
    jobs = JobManager(
        pipeline,
        data_dir,
        devices=slots,
        max_queue=cfg.max_queue,
        resolve_character=characters.get,
        finished_in_memory=cfg.finished_in_memory,
        max_frame_joints=limits.max_frame_joints,
        max_queued_frame_joints=limits.max_queued_frame_joints,
        max_label_bytes=limits.max_label_bytes,
        clock=clock,
        new_job_id=new_job_id,
        heartbeat_s=cfg.keepalive.heartbeat_s,
    )
    limit = cfg.limits.max_message_bytes
    server = grpc.aio.server(
        interceptors=[GateInterceptor(cfg.token)],
        options=[
            ("grpc.max_send_message_length", limit),
            ("grpc.max_receive_message_length", limit),
            ("grpc.so_reuseport", 0),  # a second server on a taken port must fail, not share it
            *cfg.keepalive.server_options(),
        ],
    )
    uploads = UploadGate(limits.max_upload_bytes_in_flight, cfg.upload_wait_s)
    servicer = AnyMoLeServicer(
        jobs, characters, pipeline, limits, devices, auth_required=cfg.token is not None, uploads=uploads
    )
    add_servicer(server, servicer)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server
    )
    address = f"{cfg.host}:{cfg.port}"
    if (cfg.tls_cert is None) != (cfg.tls_key is None):
        raise InvalidInput("--tls-cert/--tls-key", "give both the certificate and the key, or neither")
    try:
        if cfg.tls_cert is not None and cfg.tls_key is not None:
            creds = grpc.ssl_server_credentials([(_read_pem(cfg.tls_key, "--tls-key"), _read_pem(cfg.tls_cert, "--tls-cert"))])
            port = server.add_secure_port(address, creds)
        else:
            port = server.add_insecure_port(address)
    except RuntimeError as exc:
        port = 0
        log.debug("bind failed: %s", exc)
    if port == 0:
        raise _bind_failure(cfg.host, cfg.port)
    retention = Retention(cfg.retention, jobs, characters)
    return AnyMoLeServer(server, jobs, health, characters, cfg.grace_s, uploads, retention, cfg.stage_stop_s), port


def _read_pem(path: Path, option: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInput(option, f"cannot read {path} ({exc.strerror}); give the PEM file's path") from None


def _make_data_dir(path: Path) -> None:
    """Create the data directory, or say why it cannot be one (a file there, no permission)."""
    if path.exists() and not path.is_dir():
        raise InvalidInput("--data-dir", f"{path} is a file, not a directory; pick a folder for the server's data")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInput("--data-dir", f"cannot create {path} ({exc.strerror}); pick a folder you can write") from None


def _bind_failure(host: str, port: int) -> InvalidInput | ResourceExhausted:
    """Why gRPC could not bind ``host:port`` (it only says that it could not): a name that does not resolve
    or an address this machine does not have is the host's fault; a port in use or a privileged one, the port's."""
    import errno
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return InvalidInput("--host", f"{host!r} is neither an IP address nor a name this machine resolves; "
                            "use 127.0.0.1 (local), 0.0.0.0 (every interface) or one of this machine's addresses")
    family, kind, proto, _, address = infos[0]
    try:
        with socket.socket(family, kind, proto) as probe:
            probe.bind(address)
    except OSError as exc:
        if exc.errno == errno.EADDRNOTAVAIL:
            return InvalidInput("--host", f"{host} is not an address of this machine; use 127.0.0.1, 0.0.0.0 "
                                "or one of its interfaces' addresses")
        if exc.errno == errno.EACCES:
            return InvalidInput("--port", f"port {port} needs privileges to bind; pick one above 1023")
    return ResourceExhausted(f"cannot listen on {host}:{port}: is another server running there? pick --port")


async def serve(
    cfg: ServerConfig, pipeline: Pipeline | None = None, on_ready: Callable[[int], None] | None = None
) -> None:
    """Run until SIGTERM/SIGINT, then shut down gracefully. ``on_ready(port)`` runs once it listens."""
    server, port = build_server(cfg, pipeline)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows / not the main thread
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    try:
        await server.start()
        log.info("anymole serving on %s:%d (%s)", cfg.host, port, "TLS" if cfg.tls_cert else "plaintext")
        jobs = server.jobs
        log.info(
            "memory budget: jobs up to %d frame-joints (total_frames × joints) each, %d queued and running together",
            jobs.max_frame_joints, jobs.max_queued_frame_joints,
        )
        if on_ready is not None:
            on_ready(port)
        await stop.wait()
        log.info("shutting down: finishing running jobs (up to %.0f s)", cfg.grace_s)
    finally:
        await server.stop(cfg.grace_s)
        for sig in handled:
            loop.remove_signal_handler(sig)
