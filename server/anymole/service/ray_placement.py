"""Where a job runs on a Ray cluster (`anymole serve --ray`): which worker takes it, and which scenes each worker
has adapted. Pure bookkeeping, no Ray: `anymole.service.ray_pool` asks it when a job starts.

Jobs wait in the front end's one FIFO queue (`JobManager`) and bind to a worker only when they start, so a job
never waits behind another on a busy worker while a free one idles (per-worker queues, and the choice of the
shortest one, are an approximation of exactly this). Among the free workers a job takes, in order:

1. one that already ran a job of the same scene (character and context): the adapted prior and the trained
   estimator it wrote to the shared cache directory are the ones that job reads, and are still in that node's
   page cache, or only on that node when the cache directory is not shared after all;
2. otherwise the free worker that has run the fewest jobs, so that scenes spread over the workers and each
   keeps its own.

A worker that was lost (its process killed, its node gone) takes nothing until it is back.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from anymole.pipeline import JobSpec

__all__ = ["SCENES_PER_WORKER", "SceneMemory", "WorkerLoad", "choose_worker", "scene_key"]

#: scenes a worker is remembered to hold (most recent first); older ones no longer attract jobs
SCENES_PER_WORKER = 256

#: methods whose jobs write and read per-scene artefacts (`VideoSettings.cache_dir`); the others have no scene
_CACHED_METHODS = frozenset({"video", "anymole"})


def scene_key(spec: JobSpec) -> str | None:
    """The scene a job adapts to, as the affinity key: a digest of its character and its context motion (the
    inputs of ICAdapt's clips and of the estimator's training renders); ``None`` for a method that caches
    nothing per scene (``interp``)."""
    if spec.method not in _CACHED_METHODS:
        return None
    h = hashlib.sha256(spec.character_id.encode())
    ctx = spec.context
    h.update(repr(float(ctx.fps)).encode())
    tensors = [ctx.rotations, ctx.root_translation] + ([ctx.translations] if ctx.translations is not None else [])
    for t in tensors:
        h.update(repr(tuple(t.shape)).encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


@dataclass(frozen=True)
class WorkerLoad:
    """What placement knows of one worker: ``alive`` (not lost), ``busy`` (running a job), ``jobs_done`` (jobs
    it started so far) and ``scenes`` (scene keys whose artefacts it wrote or read)."""

    name: str
    alive: bool = True
    busy: bool = False
    jobs_done: int = 0
    scenes: frozenset[str] = frozenset()


def choose_worker(scene: str | None, workers: Sequence[WorkerLoad]) -> str | None:
    """The worker a job of ``scene`` should start on now (see the module docstring), or ``None`` when no worker
    is alive and free. Ties go to the worker listed first."""
    free = [(i, w) for i, w in enumerate(workers) if w.alive and not w.busy]
    if not free:
        return None
    holders = [(i, w) for i, w in free if scene is not None and scene in w.scenes]
    _, best = min(holders or free, key=lambda iw: (iw[1].jobs_done, iw[0]))
    return best.name


class SceneMemory:
    """Which scenes each worker holds, the ``limit`` most recent per worker."""

    def __init__(self, limit: int = SCENES_PER_WORKER) -> None:
        self.limit = limit
        self._scenes: dict[str, OrderedDict[str, None]] = {}

    def add(self, worker: str, scene: str | None) -> None:
        """Remember that ``worker`` ran a job of ``scene`` (``None``: nothing to remember)."""
        if scene is None:
            return
        held = self._scenes.setdefault(worker, OrderedDict())
        held[scene] = None
        held.move_to_end(scene)
        while len(held) > self.limit:
            held.popitem(last=False)

    def of(self, worker: str) -> frozenset[str]:
        return frozenset(self._scenes.get(worker, ()))
