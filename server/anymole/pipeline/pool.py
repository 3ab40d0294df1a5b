"""The per-device model pool: each device's video prior, loaded once and shared by the jobs on that device.

`PriorPool.get` loads a device's prior in a worker thread on first use (loads take turns: one checkpoint in host
memory at a time); the jobs that wait for a load share it, and a failed load is retried by the next job.
`LoadedPrior.exclusive` hands the prior to one job at a time (ICAdapt overwrites its weights in place).
`PriorPool.warm_up` loads every device's prior when the server starts and runs a method's warm-up (the
``video`` method compiles its ``turbo`` preset) while holding it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from anymole.errors import AssetError, ModelUnavailable
from anymole.pipeline.control import CancelToken, in_daemon_thread
from anymole.pipeline.settings import VideoSettings
from anymole.seeding import seeded_global_rng
from anymole.video.schedule import DDIMSchedule

if TYPE_CHECKING:
    from anymole.video.prior import VideoPrior

__all__ = ["LoadedPrior", "PriorPool"]

log = logging.getLogger(__name__)


@dataclass
class LoadedPrior:
    """A device's prior with its schedule and identity (``model_id``, ``model_config``: the adaptation cache's
    key), its training resolution ``(height, width)``, and the lock of the job that holds it."""

    prior: VideoPrior
    schedule: DDIMSchedule
    model_id: str
    model_config: Any
    resolution: tuple[int, int]
    # Held by the job that adapts and samples the prior: ICAdapt overwrites its weights in place (restored
    # after the job), and two workers may share a device (``--device cpu --device cpu``), hence one prior.
    busy: threading.Lock = field(default_factory=threading.Lock)

    @contextlib.contextmanager
    def exclusive(
        self, token: CancelToken, poll: float = 0.1, on_wait: Callable[[], None] | None = None
    ) -> Iterator[VideoPrior]:
        """The prior, for one job at a time (blocking: call it in a worker thread); a job that waits for
        another one (or for the warm-up's compile) still stops within ``poll`` seconds of a cancel, and
        ``on_wait()`` runs once when it has to wait."""
        if not self.busy.acquire(blocking=False):
            if on_wait is not None:
                on_wait()
            while not self.busy.acquire(timeout=poll):
                token.raise_if_cancelled()
        try:
            yield self.prior
        finally:
            self.busy.release()


#: seconds the prior's load costs in a job's progress plan, relative to the stage costs of `anymole.pipeline.methods.
#: video` (reading the 10 GB checkpoint; docs/benchmarks.md)
LOAD_COST = 30.0


class PriorPool:
    """Each device's video prior under ``settings``, loaded on first use.

    Attributes:
        priors: device → its loaded prior.
        loading: device → its prior's load in a worker thread, shared by the jobs waiting for it (event loop only).
        load_lock: held by the one load in progress (blocking; any thread).
    """

    def __init__(self, settings: VideoSettings) -> None:
        self.settings = settings
        self.priors: dict[str, LoadedPrior] = {}
        self.load_lock = threading.Lock()
        self.loading: dict[str, asyncio.Future[LoadedPrior]] = {}

    @property
    def load_cost(self) -> float:
        """The load's weight in a progress plan (the tiny prior loads at once)."""
        return 1.0 if self.settings.tiny else LOAD_COST

    def load(self, device: str) -> LoadedPrior:
        """The prior on ``device``, loaded on first use (blocking: call it in a worker thread). Loads take turns
        (one checkpoint in host memory at a time); a device whose prior is loaded does not wait for them."""
        loaded = self.priors.get(device)
        if loaded is not None:
            return loaded
        with self.load_lock:
            if device in self.priors:
                return self.priors[device]
            from anymole.video.dynamicrafter import DynamiCrafterConfig, DynamiCrafterPrior
            from anymole.video.weights import load_pretrained

            if self.settings.tiny:
                config = DynamiCrafterConfig.tiny()
                with seeded_global_rng(0):  # seed 0 without touching the caller's RNG, or another thread's
                    prior = DynamiCrafterPrior(config)
                prior = prior.to(device)
                model_id = "dynamicrafter-tiny@random-seed-0"
            else:
                checkpoint = self.settings.checkpoint()
                assert checkpoint is not None  # not tiny, and unavailable_reason() was empty
                path = checkpoint.resolve()
                try:
                    prior = load_pretrained(path, device=device)
                except AssetError as exc:  # the server's own file, not the client's: FAILED_PRECONDITION
                    raise ModelUnavailable(
                        "video prior",
                        f"{exc}; point `anymole serve --video-prior` at the model.ckpt of "
                        "`anymole models pull dynamicrafter-512-interp`",
                    ) from exc
                config = prior.config
                stat = path.stat()
                model_id = f"dynamicrafter-512-interp@{path}:{stat.st_size}:{stat.st_mtime_ns}"
            prior.eval()
            loaded = LoadedPrior(
                prior, DDIMSchedule(**config.scheduler_kwargs()), model_id, config.to_dict(), config.resolution
            )
            self.priors[device] = loaded
            return loaded

    async def get(self, device: str) -> LoadedPrior:
        """The prior on ``device``, loading it in a worker thread on first use. A job cancelled while the prior
        loads stops at once: a checkpoint load (about 30 s at full size) cannot be interrupted, so it goes on
        for the jobs after it, which wait for the same load rather than start another. A failed load is
        forgotten: the next job tries again."""
        loaded = self.priors.get(device)
        if loaded is not None:
            return loaded
        load = self.loading.get(device)
        if load is None or (load.done() and (load.cancelled() or load.exception() is not None)):
            load = asyncio.get_running_loop().run_in_executor(None, self.load, device)
            self.loading[device] = load
        try:
            return await asyncio.shield(load)
        finally:
            if load.done() and self.loading.get(device) is load:
                del self.loading[device]

    async def warm_up(self, devices: Sequence[str], compile_on: Callable[[str, LoadedPrior], float]) -> None:
        """`VideoSettings.warmup`: load the prior on each of ``devices`` and, on CUDA devices, run
        ``compile_on(device, prior)`` (the ``video`` method's compile of its ``turbo`` preset, in seconds) while
        holding the prior as a job would. Devices warm up one after another (checkpoint loads take turns anyway);
        a device whose warm-up fails is logged and the next one warms up (jobs on it load and compile on first
        use). Nothing to do without ``warmup``; without a usable prior a warning says why (the video method is off
        then)."""
        if not self.settings.warmup:
            return
        if reason := self.settings.unavailable_reason():
            log.warning("no video warm-up: %s", reason)
            return
        for device in dict.fromkeys(devices):
            try:
                await self._warm_up_on(device, compile_on)
            except Exception:
                log.exception("video warm-up failed on %s; jobs there load and compile on first use", device)

    async def _warm_up_on(self, device: str, compile_on: Callable[[str, LoadedPrior], float]) -> None:
        loaded = await self.get(device)
        log.info("video prior loaded on %s", device)
        if not device.startswith("cuda"):
            return

        def compile_held() -> float:
            with loaded.exclusive(CancelToken()):
                return compile_on(device, loaded)

        seconds = await in_daemon_thread(compile_held)  # a stopping server does not wait for a compile
        log.info("turbo preset compiled on %s in %.0f s", device, seconds)
