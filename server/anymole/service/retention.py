"""Job retention: keeps a long-running server's data directory within days and bytes (``anymole serve
--keep-days D --max-disk SIZE``).

What is collected, in this order, and nothing else:

1. finished jobs (completed, failed, cancelled, interrupted) that finished more than ``keep_days`` ago;
2. stored characters no remaining job refers to, last uploaded more than ``keep_days`` ago;
3. while jobs and characters together take more than ``max_disk`` bytes: the longest-finished jobs, then the
   unreferenced characters least recently uploaded, one at a time, until they fit.

Queued and running jobs are never collected, nor the characters of any job that stays. ``max_disk`` counts the
job directories and uploaded characters (``data_dir/jobs``, ``data_dir/characters``), the parts that grow with
use; the ICAdapt cache and compiled graphs have their own bounds. A collected job is no longer listed, watched
or served (NOT_FOUND); a collected character is uploaded again by the next client that needs it.

`collect` runs on the event loop between the steps that touch files, which run in a worker thread: the
server calls it at start and every ``interval_s`` seconds (`Retention.run`).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from anymole.service.characters import CharacterStore
from anymole.service.jobs import JobManager
from anymole.service.store import disk_bytes

__all__ = ["Collected", "Retention", "RetentionPolicy"]

log = logging.getLogger("anymole.service.retention")

_DAY = 86_400.0


@dataclass(frozen=True)
class RetentionPolicy:
    """How long and how much the server keeps.

    Attributes:
        keep_days: finished jobs and unreferenced characters older than this many days are collected;
            ``None`` keeps them whatever their age.
        max_disk: most bytes of job directories and characters; ``None`` = no bound.
        interval_s: seconds between collections while the server runs.
    """

    keep_days: float | None = None
    max_disk: int | None = None
    interval_s: float = 600.0

    @property
    def active(self) -> bool:
        return self.keep_days is not None or self.max_disk is not None


@dataclass
class Collected:
    """What one collection removed, and what the jobs and characters take afterwards (bytes)."""

    jobs: list[str] = field(default_factory=list)
    characters: list[str] = field(default_factory=list)
    freed_bytes: int = 0
    disk_bytes: int = 0


def _dir_bytes(root: Path) -> dict[str, int]:
    """Bytes the files of each directory under ``root`` take on disk, by directory name."""
    sizes: dict[str, int] = {}
    for d in root.iterdir() if root.is_dir() else ():
        total = 0
        for p in d.rglob("*"):
            try:
                if p.is_file():
                    total += disk_bytes(p)
            except OSError:  # removed meanwhile
                continue
        sizes[d.name] = total
    return sizes


class Retention:
    """Applies a `RetentionPolicy` to a server's jobs and characters."""

    def __init__(self, policy: RetentionPolicy, jobs: JobManager, characters: CharacterStore) -> None:
        self.policy = policy
        self.jobs = jobs
        self.characters = characters

    async def collect(self, now: float | None = None) -> Collected:
        """One collection (see the module docstring); ``now`` is the Unix time ages are measured at."""
        now = time.time() if now is None else now
        policy, out = self.policy, Collected()
        finished = self.jobs.finished_jobs()  # the longest finished first
        job_bytes = await asyncio.to_thread(_dir_bytes, self.jobs.store.jobs_dir)  # every job directory
        chars = sorted(await asyncio.to_thread(self.characters.stored), key=lambda c: c[1])  # least recent first
        cutoff = now - policy.keep_days * _DAY if policy.keep_days is not None else None
        total = sum(job_bytes.values()) + sum(size for _, _, size in chars)

        doomed_jobs: list[str] = []
        for job_id, ended, _ in finished:
            too_old = cutoff is not None and ended < cutoff
            if too_old or (policy.max_disk is not None and total > policy.max_disk):
                doomed_jobs.append(job_id)
                total -= job_bytes.get(job_id, 0)
        kept_refs = self.jobs.character_refs(excluding=set(doomed_jobs))
        doomed_chars: list[str] = []
        for cid, uploaded, size in chars:
            if cid in kept_refs:
                continue
            if (cutoff is not None and uploaded < cutoff) or (policy.max_disk is not None and total > policy.max_disk):
                doomed_chars.append(cid)
                total -= size

        dirs = [self.jobs.forget(j) for j in doomed_jobs]  # unlisted before their files go
        await asyncio.to_thread(self._remove, dirs, doomed_chars)
        out.jobs, out.characters, out.disk_bytes = doomed_jobs, doomed_chars, total
        out.freed_bytes = sum(job_bytes.get(j, 0) for j in doomed_jobs) + sum(s for c, _, s in chars if c in doomed_chars)
        if doomed_jobs or doomed_chars:
            log.info(
                "retention: removed %d finished jobs and %d unreferenced characters (%d bytes); %d bytes kept",
                len(doomed_jobs), len(doomed_chars), out.freed_bytes, total,
            )
        if policy.max_disk is not None and total > policy.max_disk:
            log.warning(
                "retention: queued, running and recent jobs and their characters take %d bytes, over --max-disk %d; "
                "nothing more may be collected", total, policy.max_disk,
            )
        return out

    def _remove(self, dirs: list[Path], characters: list[str]) -> None:
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
        for cid in characters:
            self.characters.delete(cid)

    async def run(self) -> None:
        """Collect now and every ``interval_s`` seconds until cancelled; a failed collection is logged and the
        next one runs on time."""
        while True:
            try:
                await self.collect()
            except Exception:
                log.exception("retention: collection failed")
            await asyncio.sleep(self.policy.interval_s)
