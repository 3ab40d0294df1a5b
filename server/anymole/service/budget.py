"""What jobs and uploads may cost this server: a memory budget and the limits derived from it.

A job's memory grows with its timeline, ``total_frames × joints`` ("frame-joints"): the pipeline holds the
whole timeline in float32 and float64 working copies while it fills it, and the request holds the context.
`BYTES_PER_FRAME_JOINT` is the peak resident memory an ``interp`` job took per frame-joint
(docs/benchmarks.md, "Server memory per job"); a budget of B bytes affords one job of
``B / BYTES_PER_FRAME_JOINT`` frame-joints (`Limits.max_frame_joints`). The queue as a whole may hold
`QUEUED_JOBS_PER_BUDGET` such jobs (`Limits.max_queued_frame_joints`), which also bounds the memory of the
queued requests and the disk their results take; workers start a job only while the running ones fit the
budget together.

Uploads in flight are bounded separately (`UploadGate`): each reserves its announced ``total_bytes`` before
its first chunk is read. One that does not fit is refused at once by default (``wait_s`` = 0): an upload left
waiting still has its chunks buffered by the HTTP/2 transport, so waiting bounds little (docs/benchmarks.md,
"Server memory per job").
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path

from anymole.errors import OverBudget
from anymole.wire.convert import Limits

__all__ = [
    "BYTES_PER_FRAME_JOINT",
    "QUEUED_JOBS_PER_BUDGET",
    "UPLOAD_WAIT_S",
    "UploadGate",
    "available_memory_bytes",
    "budget_limits",
    "parse_size",
]

BYTES_PER_FRAME_JOINT = 200
"""Peak server memory of a job per timeline frame-joint (bytes), rounded up from the measured figure."""

QUEUED_JOBS_PER_BUDGET = 4
"""How many jobs of the largest admitted size the queue (waiting and running together) may hold."""

UPLOAD_WAIT_S = 0.0
"""How long an upload that does not fit `Limits.max_upload_bytes_in_flight` waits for others (s)."""

_GiB = 1 << 30
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": _GiB, "t": 1 << 40}


def parse_size(text: str, field: str) -> int:
    """``"512M"``, ``"20G"``, ``"1.5T"``, ``"4096"`` → bytes (binary units; a trailing ``B``/``iB`` is allowed).
    Raises `InvalidInput` naming ``field`` otherwise."""
    from anymole.errors import InvalidInput

    s = text.strip().lower().removesuffix("ib").removesuffix("b")
    num, unit = (s[:-1], s[-1]) if s and s[-1] in _UNITS else (s, "")
    try:
        value = float(num)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise InvalidInput(field, f"cannot read size {text!r}; give a positive size such as 512M, 20G or 1.5T")
    return int(value * _UNITS[unit])


def available_memory_bytes() -> int:
    """Memory available to new allocations now: Linux's ``MemAvailable``, else the physical memory."""
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def budget_limits(limits: Limits, memory_budget: int | None) -> Limits:
    """``limits`` with the budget-derived fields set for ``memory_budget`` bytes (``None``: half the memory
    available now). One job never exceeds ``max_frames × max_joints``; one upload always fits."""
    budget = available_memory_bytes() // 2 if memory_budget is None else int(memory_budget)
    per_job = max(1, min(budget // BYTES_PER_FRAME_JOINT, limits.max_frames * limits.max_joints))
    return dataclasses.replace(
        limits,
        memory_budget_bytes=budget,
        max_frame_joints=per_job,
        max_queued_frame_joints=QUEUED_JOBS_PER_BUDGET * per_job,
        max_upload_bytes_in_flight=max(limits.max_character_bytes, budget // 4),
    )


class UploadGate:
    """Bounds the bytes of uploads held at once across clients.

    Args:
        capacity: most bytes reserved at once (`Limits.max_upload_bytes_in_flight`).
        wait_s: how long a reservation that does not fit waits for others to be released.
    """

    def __init__(self, capacity: int, wait_s: float = UPLOAD_WAIT_S) -> None:
        self.capacity = capacity
        self.wait_s = wait_s
        self.held = 0
        self._freed = asyncio.Condition()

    async def acquire(self, nbytes: int) -> None:
        """Hold ``nbytes`` until `release`; `OverBudget` naming ``header.total_bytes`` when they do not fit
        within ``wait_s`` (event loop only)."""

        def fits() -> bool:
            return self.held + nbytes <= self.capacity

        async with self._freed:
            try:
                if not fits():
                    await asyncio.wait_for(self._freed.wait_for(fits), max(self.wait_s, 0.0))
            except TimeoutError:
                raise OverBudget(
                    "header.total_bytes",
                    f"uploads in flight hold {self.held} of this server's {self.capacity} bytes "
                    f"(Limits.max_upload_bytes_in_flight) and {nbytes} more do not fit; retry the upload in a moment",
                ) from None
            self.held += nbytes

    async def release(self, nbytes: int) -> None:
        """Give back what `acquire` held and wake the uploads waiting for room."""
        async with self._freed:
            self.held -= nbytes
            self._freed.notify_all()
