"""torch's process-wide RNG under threads: `GLOBAL_RNG_LOCK` and `seeded_global_rng`.

Stages run in worker threads, and two may run at once: a job's estimator trains while its prior adapts, and
two devices' jobs run side by side. Module initialisers take no generator, so a stage that seeds the global RNG
and builds a model draws from the one RNG of the process; another thread that draws from it, or forks it and
restores it (``torch.random.fork_rng``) meanwhile, makes those draws depend on timing, and one request's result
differ from run to run. Every seeded draw from the global RNG holds `GLOBAL_RNG_LOCK`. Code that draws step after
step (ICAdapt's dropout) draws from a generator of its own instead (`anymole.video.dropout.DropoutRng`): no lock
can stop a thread that draws from the global RNG without taking it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence

import torch

__all__ = ["GLOBAL_RNG_LOCK", "seeded_global_rng"]

#: held while a thread seeds, forks or draws from torch's global RNG on purpose
GLOBAL_RNG_LOCK = threading.RLock()


@contextlib.contextmanager
def seeded_global_rng(seed: int | None, devices: Sequence[torch.device] = ()) -> Iterator[None]:
    """Torch's global RNG for this thread alone: forked (the state before it comes back after, on the CPU and
    on ``devices``) and, unless ``seed`` is ``None``, seeded with ``seed``."""
    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=list(devices)):
        if seed is not None:
            # Not torch.manual_seed: it seeds every GPU too, whose generators are not forked here (but for
            # ``devices``), and a job's dropout on its GPU (ICAdapt) draws from one while its estimator starts.
            torch.default_generator.manual_seed(seed)
            for device in devices:
                with torch.cuda.device(device):
                    torch.cuda.manual_seed(seed)
        yield

