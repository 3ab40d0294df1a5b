"""What every conversion checks against: `Limits` (the server's published bounds), the shared field checks
(finite floats, unit quaternions, counts, hierarchy order, the memory budget) and message sizing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from anymole.errors import InvalidInput, OverBudget
from anymole.wire.proto.anymole.v1 import anymole_pb2 as pb

__all__ = [
    "DEFAULT_RECEIVE_BYTES",
    "MIN_RECEIVE_BYTES",
    "Limits",
    "MiB",
    "check_label",
    "frames_per_message",
    "receive_budget",
]

MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Request limits, advertised in `Capabilities.limits` and enforced here.

    Attributes:
        max_message_bytes: gRPC message size limit of both directions (bytes).
        max_character_bytes: largest uploaded character payload (bytes).
        upload_chunk_bytes: recommended UploadCharacter chunk size (bytes).
        max_joints: most joints in a skeleton.
        max_frames: most frames in a job timeline.
        max_keyframes: most keyframes in a job.
        max_queue: most queued jobs.
        quat_tolerance: largest accepted ``| |q| - 1 |``; within it quaternions are normalised.
        max_label_bytes: longest job label (UTF-8 bytes).
        memory_budget_bytes: memory the server gives jobs (bytes); 0 = no budget (the next three unbounded).
            The server derives it and the next three with `anymole.service.budget.budget_limits`.
        max_frame_joints: most ``total_frames × joints`` of one job; 0 = unbounded.
        max_queued_frame_joints: most frame-joints of all queued and running jobs; 0 = unbounded.
        max_upload_bytes_in_flight: most upload bytes held at once across clients; 0 = unbounded.
    """

    max_message_bytes: int = 256 * MiB
    max_character_bytes: int = 256 * MiB
    upload_chunk_bytes: int = 1 * MiB
    max_joints: int = 1024
    max_frames: int = 100_000
    max_keyframes: int = 1024
    max_queue: int = 64
    quat_tolerance: float = 0.05
    max_label_bytes: int = 1024
    memory_budget_bytes: int = 0
    max_frame_joints: int = 0
    max_queued_frame_joints: int = 0
    max_upload_bytes_in_flight: int = 0

    @classmethod
    def from_proto(cls, msg: pb.Limits) -> Limits:
        """Client side: the limits a server advertises."""
        return cls(
            max_message_bytes=msg.max_message_bytes,
            max_character_bytes=msg.max_character_bytes,
            upload_chunk_bytes=msg.upload_chunk_bytes,
            max_joints=msg.max_joints,
            max_frames=msg.max_frames,
            max_keyframes=msg.max_keyframes,
            max_queue=msg.max_queue,
            quat_tolerance=msg.quaternion_norm_tolerance,
            max_label_bytes=msg.max_label_bytes,
            memory_budget_bytes=msg.memory_budget_bytes,
            max_frame_joints=msg.max_frame_joints,
            max_queued_frame_joints=msg.max_queued_frame_joints,
            max_upload_bytes_in_flight=msg.max_upload_bytes_in_flight,
        )

    def to_proto(self) -> pb.Limits:
        return pb.Limits(
            max_message_bytes=self.max_message_bytes,
            max_character_bytes=self.max_character_bytes,
            upload_chunk_bytes=self.upload_chunk_bytes,
            max_joints=self.max_joints,
            max_frames=self.max_frames,
            max_keyframes=self.max_keyframes,
            max_queue=self.max_queue,
            quaternion_norm_tolerance=self.quat_tolerance,
            max_label_bytes=self.max_label_bytes,
            memory_budget_bytes=self.memory_budget_bytes,
            max_frame_joints=self.max_frame_joints,
            max_queued_frame_joints=self.max_queued_frame_joints,
            max_upload_bytes_in_flight=self.max_upload_bytes_in_flight,
        )


# ---------------------------------------------------------------------------------------------- checks
def _floats(values: Sequence[float], count: int, field: str, what: str) -> np.ndarray:
    """``values`` as a float32 array of exactly ``count`` finite numbers."""
    arr = np.asarray(values, dtype=np.float32)
    if arr.size != count:
        raise InvalidInput(field, f"has {arr.size} floats, expected {count} ({what})")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise InvalidInput(field, f"contains NaN or infinite values (first at flat index {int(np.argmax(bad))})")
    return arr


def _unit_quats(arr: np.ndarray, field: str, tol: float, names: tuple[str, ...] = ("frame", "joint")) -> np.ndarray:
    """Normalise ``(..., 4)`` quaternions whose norm is within ``tol`` of 1; `InvalidInput` naming the worst."""
    norm = np.linalg.norm(arr.astype(np.float64), axis=-1)  # float64: huge inputs must not overflow
    dev = np.abs(norm - 1.0)
    if dev.size and dev.max() > tol:
        idx = np.unravel_index(int(np.argmax(dev)), dev.shape)
        where = ", ".join(f"{n} {i}" for n, i in zip(names[-len(idx) :], idx, strict=True))
        raise InvalidInput(
            field,
            f"quaternion at {where} has norm {float(norm[idx]):.4g}; send unit xyzw quaternions "
            f"(norms within ±{tol} are normalised)",
        )
    # Quaternions already unit to float32 precision pass bit-exact (engines send back what they read).
    return (arr / np.where(dev > 1e-6, norm, 1.0)[..., None]).astype(np.float32)


DEFAULT_RECEIVE_BYTES = 4 * MiB
"""What a client receives per message unless it says otherwise: gRPC C++'s and grpc-dotnet's default."""

MIN_RECEIVE_BYTES = 64 * 1024
"""The smallest receive limit a client may state: one frame of a 1024-joint skeleton with translations fits."""


def receive_budget(requested: int, limits: Limits, field: str, default: int = DEFAULT_RECEIVE_BYTES) -> int:
    """The message size to fit replies to: a client's ``max_receive_message_bytes`` (``default`` when 0), at
    most the server's own limit; `InvalidInput` naming ``field`` below `MIN_RECEIVE_BYTES`."""
    if requested and requested < MIN_RECEIVE_BYTES:
        raise InvalidInput(field, f"{requested} bytes is too small; state at least {MIN_RECEIVE_BYTES} (64 KiB)")
    return min(requested or default, limits.max_message_bytes)


def frames_per_message(message_bytes: int, num_joints: int, with_translations: bool) -> int:
    """Most motion frames of a ``num_joints`` skeleton one `MotionChunk` may carry when a message holds at most
    ``message_bytes``: every chunk must fit one message, or no watcher could receive it nor replay past it.
    Half the message size, the rest is headroom for the framing around the floats."""
    frame_bytes = 4 * (num_joints * 4 + 3 + (num_joints * 3 if with_translations else 0))
    return max(1, message_bytes // (2 * frame_bytes))


def check_label(label: str, limits: Limits, field: str = "label") -> None:
    """`InvalidInput` naming ``field`` when ``label`` is longer than `Limits.max_label_bytes` UTF-8 bytes."""
    n = len(label.encode("utf-8"))
    if n > limits.max_label_bytes:
        raise InvalidInput(field, f"{n} bytes exceeds this server's limit of {limits.max_label_bytes} (UTF-8 bytes)")


def _budget_check(frames: int, joints: int, limits: Limits) -> None:
    """`OverBudget` naming ``total_frames`` when a timeline of ``frames × joints`` exceeds what this server's
    memory budget affords one job (`Limits.max_frame_joints`; 0 = no budget)."""
    cost = frames * joints
    if limits.max_frame_joints and cost > limits.max_frame_joints:
        raise OverBudget(
            "total_frames",
            f"{frames} frames × {joints} joints = {cost} frame-joints exceeds the {limits.max_frame_joints} one job "
            f"may have on this server (Limits.max_frame_joints, from its memory budget of "
            f"{limits.memory_budget_bytes} bytes); split the timeline into shorter jobs",
        )


def _count_check(n: int, limit: int, field: str, what: str) -> None:
    if n > limit:
        raise InvalidInput(field, f"{n} {what} exceeds this server's limit of {limit}")


def _check_hierarchy(parents: list[int], field: str) -> None:
    """Parents in range, no cycles, and each parent before its child."""
    n = len(parents)
    for j, p in enumerate(parents):
        if not -1 <= p < n:
            raise InvalidInput(f"{field}[{j}]", f"parent index {p} is out of range [-1, {n - 1}]")
    # Walk up from each joint until a root, a joint already known to reach one, or a repeat (a cycle).
    # Remembering the joints that reach a root keeps this O(J): a 1024-joint chain took 2.2 s without it.
    reaches_root: set[int] = set()
    for j in range(n):
        path, on_path = [j], {j}
        p = parents[j]
        while p != -1 and p not in reaches_root:
            if p in on_path:
                cycle = " -> ".join(str(i) for i in [*path[path.index(p) :], p])
                raise InvalidInput(f"{field}[{j}]", f"the hierarchy has a cycle through joints {cycle}")
            path.append(p)
            on_path.add(p)
            p = parents[p]
        reaches_root.update(path)
    for j, p in enumerate(parents):
        if p >= j:
            raise InvalidInput(
                f"{field}[{j}]",
                f"parent {p} comes after joint {j}; order joints so that every parent precedes its children",
            )


def _flat(t: torch.Tensor | None) -> list[float]:
    return [] if t is None else t.detach().cpu().float().numpy().ravel().tolist()
