"""Jobs on the wire: job states, job listings, and the events of a job's stream (motion chunks sized to the
client's receive limit) in both directions."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from anymole.errors import InvalidInput
from anymole.pipeline import (
    Cancelled,
    Completed,
    Event,
    Failed,
    Interrupted,
    JobInfo,
    JobState,
    MotionChunk,
    Preview,
    Progress,
    Queued,
    Stamped,
)
from anymole.rig import Motion
from anymole.wire.limits import _flat, frames_per_message
from anymole.wire.proto.anymole.v1 import anymole_pb2 as pb

__all__ = [
    "event_from_proto",
    "event_to_proto",
    "job_info_from_proto",
    "job_info_to_proto",
    "motion_chunk_to_proto",
    "motion_to_chunks",
    "state_from_proto",
    "state_to_proto",
]


_STATES = {
    JobState.QUEUED: pb.JOB_STATE_QUEUED,
    JobState.RUNNING: pb.JOB_STATE_RUNNING,
    JobState.COMPLETED: pb.JOB_STATE_COMPLETED,
    JobState.FAILED: pb.JOB_STATE_FAILED,
    JobState.CANCELLED: pb.JOB_STATE_CANCELLED,
    JobState.INTERRUPTED: pb.JOB_STATE_INTERRUPTED,
}
_STATES_BACK = {v: k for k, v in _STATES.items()}


def state_to_proto(state: JobState) -> pb.JobState.ValueType:
    return _STATES.get(state, pb.JOB_STATE_UNSPECIFIED)  # UNKNOWN, a client-side state, has no wire value


def state_from_proto(value: int, field: str = "states", unknown: JobState | None = None) -> JobState:
    """The `JobState` of a wire value. A value this build does not know (a newer server's, or unset) is
    ``unknown`` when given (clients pass `JobState.UNKNOWN`: forward compatibility), else `InvalidInput`
    naming ``field`` (the server: it cannot filter by a state it does not know)."""
    try:
        return _STATES_BACK[value]  # type: ignore[index]
    except KeyError:
        if unknown is not None:
            return unknown
        raise InvalidInput(field, f"unknown job state {value}") from None


def job_info_to_proto(info: JobInfo) -> pb.JobSummary:
    return pb.JobSummary(
        job_id=info.job_id,
        state=state_to_proto(info.state),
        character_id=info.character_id,
        method=info.method,
        preset=info.preset,
        label=info.label,
        created_unix=info.created,
        position=info.position,
        last_seq=info.last_seq,
        total_frames=info.total_frames,
        client_tags=info.client_tags,
    )


def job_info_from_proto(msg: pb.JobSummary) -> JobInfo:
    """Client side: inverse of `job_info_to_proto`."""
    return JobInfo(
        job_id=msg.job_id,
        state=state_from_proto(msg.state, unknown=JobState.UNKNOWN),
        character_id=msg.character_id,
        method=msg.method,
        preset=msg.preset,
        label=msg.label,
        created=msg.created_unix,
        position=msg.position,
        last_seq=msg.last_seq,
        total_frames=msg.total_frames,
        client_tags=dict(msg.client_tags),
    )


def motion_chunk_to_proto(ev: MotionChunk) -> pb.MotionChunk:
    return pb.MotionChunk(
        frame_start=ev.frame_start,
        frame_count=ev.frame_count,
        rotations=_flat(ev.rotations),
        root_translations=_flat(ev.root_translation),
        is_final=ev.is_final,
        translations=_flat(ev.translations),
        joint_count=int(ev.rotations.shape[1]),
    )


def motion_to_chunks(motion: Motion, message_bytes: int) -> Iterator[pb.MotionChunk]:
    """The whole of ``motion`` as final `MotionChunk` messages in frame order, each fitting a message of
    ``message_bytes``."""
    step = frames_per_message(message_bytes, int(motion.rotations.shape[1]), motion.translations is not None)
    tr = motion.translations
    for s in range(0, motion.num_frames, step):
        e = s + step
        chunk = MotionChunk(s, motion.rotations[s:e], motion.root_translation[s:e], True, None if tr is None else tr[s:e])
        yield motion_chunk_to_proto(chunk)


def event_to_proto(st: Stamped) -> pb.JobEvent:
    """A stamped domain event as the wire `JobEvent`."""
    msg = pb.JobEvent(job_id=st.job_id, seq=st.seq, time_unix=st.time)
    ev = st.event
    if isinstance(ev, Queued):
        msg.queued.position = ev.position
    elif isinstance(ev, Progress):
        msg.progress.CopyFrom(
            pb.Progress(stage=ev.stage, stage_fraction=ev.stage_fraction, fraction=ev.fraction, message=ev.message)
        )
        if ev.eta_seconds is not None:
            msg.progress.eta_seconds = ev.eta_seconds
    elif isinstance(ev, Preview):
        msg.preview.CopyFrom(
            pb.Preview(
                stage=ev.stage,
                frame=ev.frame,
                view=ev.view,
                mime_type=ev.mime_type,
                data=ev.data,
                width=ev.width,
                height=ev.height,
            )
        )
    elif isinstance(ev, MotionChunk):
        msg.motion.CopyFrom(motion_chunk_to_proto(ev))
    elif isinstance(ev, Completed):
        msg.completed.CopyFrom(
            pb.Completed(
                summary=ev.summary,
                timings=[pb.StageTiming(stage=s, seconds=t) for s, t in ev.timings],
                metrics=ev.metrics,
                total_frames=ev.total_frames,
            )
        )
    elif isinstance(ev, Failed):
        msg.failed.CopyFrom(pb.Failed(code=ev.code, message=ev.message, field=ev.field))
    elif isinstance(ev, Cancelled):
        msg.cancelled.reason = ev.reason
    elif isinstance(ev, Interrupted):
        msg.interrupted.reason = ev.reason
    else:  # a new event type without a wire form is a programming error
        raise TypeError(f"no wire form for event {type(ev).__name__}")
    return msg


def event_from_proto(msg: pb.JobEvent, num_joints: int = 0) -> Stamped | None:
    """Client side: a wire event as a stamped domain event (motion arrays reshaped to ``(n, J, 4)``), or
    ``None`` for an event of a kind this build does not know (a newer server's): clients skip those.

    ``num_joints`` ≤ 0 infers ``J`` from each motion chunk's size."""
    kind = msg.WhichOneof("kind")
    ev: Event
    if kind == "queued":
        ev = Queued(msg.queued.position)
    elif kind == "progress":
        p = msg.progress
        eta = p.eta_seconds if p.HasField("eta_seconds") else None
        ev = Progress(p.stage, p.stage_fraction, p.fraction, eta, p.message)
    elif kind == "preview":
        v = msg.preview
        ev = Preview(v.stage, v.frame, v.view, v.mime_type, v.data, v.width, v.height)
    elif kind == "motion":
        m = msg.motion
        if num_joints <= 0:  # joint_count since 1.2; older servers: from the chunk's size
            num_joints = m.joint_count or (len(m.rotations) // (4 * m.frame_count) if m.frame_count else 0)
        rot = np.asarray(m.rotations, dtype=np.float32).reshape(m.frame_count, num_joints, 4)
        root = np.asarray(m.root_translations, dtype=np.float32).reshape(m.frame_count, 3)
        tr = None
        if len(m.translations):
            tr = torch.from_numpy(np.asarray(m.translations, dtype=np.float32).reshape(m.frame_count, num_joints, 3))
        ev = MotionChunk(m.frame_start, torch.from_numpy(rot), torch.from_numpy(root), m.is_final, tr)
    elif kind == "completed":
        c = msg.completed
        ev = Completed(
            c.summary, tuple((t.stage, t.seconds) for t in c.timings), dict(c.metrics), c.total_frames
        )
    elif kind == "failed":
        ev = Failed(msg.failed.code, msg.failed.message, msg.failed.field)
    elif kind == "cancelled":
        ev = Cancelled(msg.cancelled.reason)
    elif kind == "interrupted":
        ev = Interrupted(msg.interrupted.reason)
    else:
        return None  # a kind added after this build's protocol version: ignore it (the proto's rule)
    return Stamped(msg.job_id, msg.seq, msg.time_unix, ev)
