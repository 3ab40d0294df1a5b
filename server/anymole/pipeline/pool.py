"""The per-device model pools: each device's video prior, and the estimator's frozen ViT backbones, loaded once
and shared by the jobs on that device.

`PriorPool.get` loads a device's prior in a daemon thread on first use (loads take turns: one checkpoint in host
memory at a time); the jobs that wait for a load share it, and a failed load is retried by the next job.
`LoadedPrior.exclusive` hands the prior to one job at a time (ICAdapt overwrites its weights in place).
`PriorPool.warm_up` loads every device's prior when the server starts and runs a method's warm-up (the
``video`` method compiles its ``turbo`` preset) while holding it. `BackbonePool` keeps the frozen ViTs that the
``fast`` and ``quality`` estimators read from the server's weight files (`VideoSettings.estimator_weights`), a few
at a time, until the server stops.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from pickle import UnpicklingError
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from torch import nn

from anymole.errors import AssetError, InvalidInput, ModelUnavailable
from anymole.estimator import EstimatorConfig, build_backbone
from anymole.pipeline.control import CancelToken, in_daemon_thread
from anymole.pipeline.estimator_cache import weights_id
from anymole.pipeline.settings import VideoSettings
from anymole.seeding import seeded_global_rng
from anymole.video.schedule import DDIMSchedule

if TYPE_CHECKING:
    from anymole.video.prior import VideoPrior

__all__ = ["BACKBONE_CAPACITY", "BackbonePool", "LoadedPrior", "PriorPool"]

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
        loading: device → its prior's load in a daemon thread, shared by the jobs waiting for it (event loop only).
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
        """The prior on ``device``, loading it in a daemon thread on first use. A job cancelled while the prior
        loads stops at once: a checkpoint load (about 30 s at full size) cannot be interrupted, so it goes on
        for the jobs after it, which wait for the same load rather than start another. A failed load is
        forgotten: the next job tries again. The thread is a daemon (`in_daemon_thread`), not one of the loop's
        executor, whose threads ``asyncio.run`` and the interpreter join at their end: a load that hangs (a
        stalled disk or device) cannot hold a stopping server's exit."""
        loaded = self.priors.get(device)
        if loaded is not None:
            return loaded
        load = self.loading.get(device)
        if load is None or (load.done() and (load.cancelled() or load.exception() is not None)):
            load = in_daemon_thread(functools.partial(self.load, device))
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


#: frozen backbones a `BackbonePool` keeps: the paper's pair on two devices (or two weight sets on one)
BACKBONE_CAPACITY = 4


class BackbonePool:
    """The estimator's frozen ViT backbones built from weight files (`EstimatorConfig.weights`), each loaded once
    and shared by the jobs after it: reading a ViT-B checkpoint costs seconds, and the frozen modules are only
    read (a job trains its heads on their features). A job that fits a new estimator and one that loads a cached
    one take the same modules.

    Keyed by the backbone's name, its weight files (resolved path; every file's name, size and mtime: a replaced
    file loads anew), the feature stride and the device. The weights stay float32 on every device (bf16 is
    autocast when features are encoded), so one module serves either autocast setting. At most ``capacity``
    modules stay, the least recently used goes first; `clear` releases them all (the server's shutdown).

    Args:
        capacity: modules kept at most (≥ 1).
    """

    def __init__(self, capacity: int = BACKBONE_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._modules: OrderedDict[tuple[object, ...], nn.Module] = OrderedDict()
        # the loads in progress: a second job wanting the same module waits for the first one's load
        self._loading: dict[tuple[object, ...], concurrent.futures.Future[nn.Module]] = {}
        self._lock = threading.Lock()  # guards the two dicts only; never held while a module loads

    def __len__(self) -> int:
        return len(self._modules)

    def get(
        self,
        name: str,
        config: EstimatorConfig,
        device: str,
        token: CancelToken | None = None,
        poll: float = 0.1,
    ) -> nn.Module:
        """The frozen backbone ``name`` of ``config`` on ``device``, built from the weights ``config`` names for
        it on first use (blocking: call it in a worker thread). Jobs asking for a module that is loading wait for
        that one load, and stop within ``poll`` seconds of a cancel of their ``token`` (`JobCancelled`; the load
        goes on for the job that started it); jobs asking for a loaded module never wait for a load. A file that
        holds another ViT or cannot be read is the server's, not a client's: `ModelUnavailable`
        (FAILED_PRECONDITION) naming it, as for the video prior (nothing is kept then, and every job that waited
        for that load gets the error)."""
        if name not in config.frozen or not config.weights:
            raise ValueError(f"{name!r} is not a frozen backbone with weights in this config ({config.frozen})")
        path = Path(config.weights[config.frozen.index(name)]).resolve()
        dev = torch.device(device)
        key = (name, str(path), repr(weights_id(path)), config.feature_stride, str(dev))
        with self._lock:
            module = self._modules.get(key)
            if module is not None:
                self._modules.move_to_end(key)
                return module
            loading = self._loading.get(key)
            if loading is None:
                mine: concurrent.futures.Future[nn.Module] = concurrent.futures.Future()
                self._loading[key] = mine
        if loading is not None:
            while token is not None and not concurrent.futures.wait([loading], timeout=poll).done:
                token.raise_if_cancelled()
            return loading.result()
        try:
            module = self._load(name, config, path, dev)
        except BaseException as exc:
            with self._lock:
                del self._loading[key]
            mine.set_exception(exc)
            raise
        with self._lock:
            del self._loading[key]
            self._modules[key] = module
            while len(self._modules) > self.capacity:
                self._modules.popitem(last=False)
        mine.set_result(module)
        return module

    @staticmethod
    def _load(name: str, config: EstimatorConfig, path: Path, device: torch.device) -> nn.Module:
        # A model is initialised before its checkpoint is read: those draws from the global RNG are kept from any
        # seeded stage running in another thread.
        try:
            with seeded_global_rng(None):
                module = build_backbone(name, config)
        except (InvalidInput, OSError, UnpicklingError, SafetensorError, RuntimeError) as exc:
            # InvalidInput: a ViT of another width (its reason names the file); the others: a damaged file
            first = str(exc).partition("\n")[0]
            what = exc.reason if isinstance(exc, InvalidInput) else f"cannot read {path} ({first})"
            raise ModelUnavailable(name, f"{what}; point `anymole serve --estimator-weights` at a folder that "
                                         "`anymole models pull estimator` filled") from exc  # fmt: skip
        return module.to(device)

    def clear(self) -> None:
        """Release every module (jobs that still hold one keep it until they end)."""
        with self._lock:
            self._modules.clear()
