"""The domain events of a job: what a pipeline yields and the job manager stamps, stores and streams.

`Queued` … `Interrupted` form the `Event` union; `Completed`, `Failed`, `Cancelled` and `Interrupted` end a
job's stream (`is_terminal`). `VideoClip` is the result of a ``video`` job, carried by `Completed`. None of
them sees gRPC: `anymole.wire.convert` turns them into messages.

Timeline convention: frame 0 is the first context frame; the context covers frames ``0 .. C-1``, the gap and
the keyframes lie in ``C .. total_frames-1``. `MotionChunk` events carry frames of ``C .. total_frames-1``;
`Completed.motion` is the whole timeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

import torch

from anymole.rig import Motion

__all__ = [
    "Cancelled",
    "Completed",
    "Event",
    "Failed",
    "Interrupted",
    "MotionChunk",
    "Preview",
    "Progress",
    "Queued",
    "Stamped",
    "VideoClip",
    "is_terminal",
]


@dataclass(frozen=True)
class Queued:
    """The job waits for a device; ``position`` jobs are ahead of it (0 = next)."""

    position: int


@dataclass(frozen=True)
class Progress:
    """A stage made progress. Fractions in [0, 1]; ``eta_seconds`` is ``None`` while unknown."""

    stage: str
    stage_fraction: float
    fraction: float
    eta_seconds: float | None = None
    message: str = ""


@dataclass(frozen=True)
class Preview:
    """A small encoded frame of the generated video (``data`` in ``mime_type``, ``width × height`` px)."""

    stage: str
    frame: int
    view: int
    mime_type: str
    data: bytes
    width: int
    height: int


@dataclass(frozen=True, eq=False)
class MotionChunk:
    """Result frames ``frame_start .. frame_start + n - 1`` of the timeline.

    Attributes:
        frame_start: first timeline frame.
        rotations: ``(n, J, 4)`` float32 unit xyzw local rotations.
        root_translation: ``(n, 3)`` float32 root translations (m).
        is_final: False for a provisional draft that later chunks replace.
        translations: optional ``(n, J, 3)`` float32 local translations of every joint (m), when the job's
            context carries them.
    """

    frame_start: int
    rotations: torch.Tensor
    root_translation: torch.Tensor
    is_final: bool = True
    translations: torch.Tensor | None = None

    @property
    def frame_count(self) -> int:
        return int(self.rotations.shape[0])


@dataclass(frozen=True, eq=False)
class VideoClip:
    """A generated video, the result of a ``video`` job.

    Attributes:
        data: the video as MP4 (H.264) bytes; several sampled views lie side by side, left to right.
        fps: frames per second of the video (15).
        width, height: frame size in px (``width`` = views × render width).
        timeline_frames: the frame each video frame shows on the request's timeline (one per video frame).
        views: the camera views, left to right.
        mime_type: media type of ``data``.
    """

    data: bytes
    fps: float
    width: int
    height: int
    timeline_frames: tuple[int, ...]
    views: tuple[int, ...] = (0,)
    mime_type: str = "video/mp4"

    @property
    def frame_count(self) -> int:
        return len(self.timeline_frames)


@dataclass(frozen=True, eq=False)
class Completed:
    """The job finished.

    Attributes:
        summary: one line for a user.
        timings: ``(stage, seconds)`` in stage order.
        metrics: named quality numbers (e.g. ``key_error_deg``).
        total_frames: timeline length of the result.
        motion: the whole result timeline; the job manager stores it and publishes the event without it.
        video: the generated video of a ``video`` job; stored and left out of the event like ``motion``.
    """

    summary: str
    timings: tuple[tuple[str, float], ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)
    total_frames: int = 0
    motion: Motion | None = None
    video: VideoClip | None = None


@dataclass(frozen=True)
class Failed:
    """The job failed: ``code`` is a google.rpc.Code value, ``field`` the request field to blame (if any)."""

    code: int
    message: str
    field: str = ""


@dataclass(frozen=True)
class Cancelled:
    """The job was cancelled."""

    reason: str


@dataclass(frozen=True)
class Interrupted:
    """The server stopped while the job ran."""

    reason: str


Event = Queued | Progress | Preview | MotionChunk | Completed | Failed | Cancelled | Interrupted
"""Every domain event of a job."""

_TERMINAL = (Completed, Failed, Cancelled, Interrupted)


def is_terminal(event: Event) -> bool:
    """Whether nothing can follow ``event`` in its job's stream."""
    return isinstance(event, _TERMINAL)


E = TypeVar("E")


@dataclass(frozen=True, eq=False)
class Stamped(Generic[E]):
    """An event of a job with the job's id, its sequence number in the job's log (from 1) and its Unix time
    (s). Clients receive ``Stamped[Event]``; in the server's log a motion chunk is a reference to its stored
    numbers (`anymole.service.timeline.MotionRef`), which `JobManager.watch` reads back into the chunk."""

    job_id: str
    seq: int
    time: float
    event: E
