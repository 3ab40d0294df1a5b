"""A job as `anymole.service.jobs.JobManager` keeps it (`JobRecord`), what a client said about it besides its spec
(`Submission`), and its log as stored (`read_log`)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from anymole.pipeline import (
    Cancelled,
    CancelToken,
    Completed,
    Failed,
    Interrupted,
    JobSpec,
    JobState,
    Progress,
    Stamped,
)
from anymole.service.timeline import Timeline

if TYPE_CHECKING:
    from anymole.service.store import JobStore

__all__ = ["END_STATE", "JobRecord", "Submission", "read_log"]

#: the state each terminal event leaves its job in
END_STATE: dict[type, JobState] = {
    Completed: JobState.COMPLETED,
    Failed: JobState.FAILED,
    Cancelled: JobState.CANCELLED,
    Interrupted: JobState.INTERRUPTED,
}


def read_log(store: JobStore, job_id: str) -> list[Stamped]:
    """A job's log as stored in its events.jsonl (blocking file I/O: call it off the event loop)."""
    from anymole.service.store import event_from_json

    return [
        Stamped(job_id, e["seq"], e["time"], event_from_json({k: v for k, v in e.items() if k not in ("seq", "time")}))
        for e in store.read_events(job_id)
    ]


@dataclass(frozen=True)
class Submission:
    """What a client said about a job besides its spec: tags to find it by, and the idempotency key with the
    digest of the request it came with (a retried submit with the key gets the first job back)."""

    client_tags: dict[str, str] = field(default_factory=dict)
    idempotency_key: str = ""
    request_digest: str = ""


@dataclass(eq=False)
class JobRecord:
    """One job as the manager keeps it: what was asked, where it stands, its log (in memory while it may still
    change), its cancel token and task; `meta` is what job.json stores."""

    id: str
    created: float
    character_id: str
    method: str
    preset: str
    label: str
    total_frames: int
    spec: JobSpec | None
    state: JobState = JobState.QUEUED
    # The log in memory, or None for a finished job whose log lives only in events.jsonl.
    events: list[Stamped] | None = field(default_factory=list)
    last_seq: int = 0
    token: CancelToken = field(default_factory=CancelToken)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    timeline: Timeline = field(init=False)
    # total_frames × joints of a queued or running job: its share of the memory budget (0 once finished).
    frame_joints: int = 0
    announced_position: int = -1
    interrupting: bool = False
    finishing: bool = False  # storing its result: cancels and shutdown let it complete
    finished: float = 0.0  # Unix time of the terminal event; 0 while queued or running
    submission: Submission = field(default_factory=Submission)
    quiet_since: float = field(default_factory=time.monotonic)  # monotonic time of its latest event
    last_progress: Progress | None = None

    def meta(self) -> dict[str, object]:
        return {
            "job_id": self.id,
            "state": self.state.value,
            "created": self.created,
            "character_id": self.character_id,
            "method": self.method,
            "preset": self.preset,
            "label": self.label,
            "total_frames": self.total_frames,
            "last_seq": self.last_seq,
            "finished": self.finished,
            "client_tags": self.submission.client_tags,
            "idempotency_key": self.submission.idempotency_key,
            "request_digest": self.submission.request_digest,
        }

    @classmethod
    def from_meta(cls, m: dict[str, Any], max_label_bytes: int) -> JobRecord:
        """The record of a stored job.json as a server restart finds it (spec not loaded, log not read): a
        label stored before labels had a limit is cut to ``max_label_bytes`` (0: no limit), so that listings
        stay small; a job that was running comes back RUNNING (the caller interrupts it), any other QUEUED
        until its log says more."""
        label = m["label"]
        if max_label_bytes and len(label.encode("utf-8")) > max_label_bytes:
            label = label.encode("utf-8")[:max_label_bytes].decode("utf-8", "ignore")
        return cls(
            id=m["job_id"],
            created=m["created"],
            character_id=m["character_id"],
            method=m["method"],
            preset=m["preset"],
            label=label,
            total_frames=m["total_frames"],
            spec=None,
            state=JobState.RUNNING if m["state"] == "running" else JobState.QUEUED,
            submission=Submission(  # absent from directories written before protocol 1.2
                dict(m.get("client_tags", {})), m.get("idempotency_key", ""), m.get("request_digest", "")
            ),
        )
