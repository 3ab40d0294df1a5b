"""The job a client asked for: `JobSpec`, its defaults, and `key_error_deg` (how close a result came to it);
a job's lifecycle (`JobState`) and its row in a listing (`JobInfo`), which the server and clients share.

A `JobSpec` is validated at the edge (`anymole.wire.convert`, the CLI) before it reaches the pipeline; the
pipeline only checks what depends on the method (`anymole.pipeline.composer.check_spec`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch

from anymole.rig import Character, Keyframes, Motion

__all__ = ["DEFAULT_CHUNK_FRAMES", "JobInfo", "JobSpec", "JobState", "key_error_deg"]

DEFAULT_CHUNK_FRAMES = 30
"""Frames per `MotionChunk` when the request leaves it to the server (one second at 30 fps)."""


# ---------------------------------------------------------------------------------------------- the job
@dataclass(frozen=True, eq=False)
class JobSpec:
    """One validated in-betweening request.

    Attributes:
        character_id: content id of the character (``"sha256:…"``).
        character: the character itself; its skeleton fixes the joint order ``J``.
        context: known motion, timeline frames ``0 .. C-1``; ``rotations (C, J, 4)`` unit xyzw,
            ``root_translation (C, 3)`` m, at ``context.fps``.
        keyframes: ``K`` keys at strictly increasing timeline frames, each in ``C .. total_frames-1``; their
            poses ``rotations (K, J, 4)`` unit xyzw, ``root_translation (K, 3)`` m and, only with
            ``context.translations``, optional ``translations (K, J, 3)`` m (``None``: the last context
            frame's are held).
        total_frames: timeline length ``T`` (context plus gap).
        method: a method name of the pipeline (``"interp"``).
        preset: a preset of that method (``""`` = its default).
        chunk_frames: frames per streamed `MotionChunk` (> 0).
        seed: seed of every random generator the job uses.
        label: free-form label for listings.
    """

    character_id: str
    character: Character
    context: Motion
    keyframes: Keyframes
    total_frames: int
    method: str = "interp"
    preset: str = ""
    chunk_frames: int = DEFAULT_CHUNK_FRAMES
    seed: int = 0
    label: str = ""

    @property
    def num_joints(self) -> int:
        return self.character.skeleton.num_joints

    @property
    def context_frames(self) -> int:
        return self.context.num_frames


def key_error_deg(result: Motion, keys: Keyframes) -> float:
    """Largest angle (degrees) between the result and the requested keyframe rotations, over keys and joints.

    Args:
        result: the whole timeline, ``rotations (T, J, 4)``.
        keys: ``K`` keys on that timeline, ``poses.rotations (K, J, 4)`` unit xyzw.
    """
    # float64 and 4·atan2(|a − b|, |a + b|) with b on a's hemisphere: exactly 0 for keys that come back as sent
    # (acos of a float32 dot read 0.06° there) and accurate near 0 and 180°, where acos is not.
    a = result.rotations[list(keys.frames)].to(torch.float64)
    b = keys.poses.rotations.to(torch.float64)
    b = torch.where((a * b).sum(-1, keepdim=True) < 0, -b, b)
    angle = 4.0 * torch.atan2(torch.linalg.vector_norm(a - b, dim=-1), torch.linalg.vector_norm(a + b, dim=-1))
    return float(torch.rad2deg(angle).max())


class JobState(enum.Enum):
    """Lifecycle of a job (mirrors ``anymole.v1.JobState``)."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    # Client side only: a state a newer server reports that this client's protocol version does not know
    # (clients ignore what they do not know instead of failing; the server never sets it).
    UNKNOWN = "unknown"

    @property
    def terminal(self) -> bool:
        return self not in (JobState.QUEUED, JobState.RUNNING, JobState.UNKNOWN)


@dataclass(frozen=True)
class JobInfo:
    """One row of a job listing (`anymole.service.jobs.JobManager.list`, ``ListJobs``)."""

    job_id: str
    state: JobState
    character_id: str
    method: str
    preset: str
    label: str
    created: float
    position: int
    last_seq: int
    total_frames: int
    client_tags: dict[str, str] = field(default_factory=dict)
