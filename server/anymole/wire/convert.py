"""The one place that sees both `anymole.v1` protos and domain types, in both directions.

Every proto → domain conversion validates as it goes and raises `InvalidInput(field, reason)` naming the
offending field (``"context.rotations"``, ``"keyframes[2].frame"``…): counts against the skeleton, finite
values, unit quaternions (normalised within `Limits.quat_tolerance`, rejected beyond), hierarchy order and
cycles, keyframe order and range, frame rates, sizes. Domain → proto conversions serve the server (events,
results) and the headless client (characters, requests).

The conversions live by topic (`limits`, `characters`, `events`); this module holds motion and requests
and re-exports the others, so that `convert.<name>` reaches every conversion.

Packed layout (proto comments): rotations ``F*J*4`` float32 xyzw, translations ``F*3`` float32, row-major.
"""

from __future__ import annotations

import numpy as np
import torch

from anymole.errors import InvalidInput
from anymole.pipeline import (
    DEFAULT_CHUNK_FRAMES,
    JobSpec,
)
from anymole.rig import MAX_FPS, Character, Keyframes, Motion
from anymole.wire.characters import (
    character_from_asset_bytes,
    character_to_asset,
    skeleton_from_proto,
    skeleton_to_proto,
)
from anymole.wire.events import (
    event_from_proto,
    event_to_proto,
    job_info_from_proto,
    job_info_to_proto,
    motion_chunk_to_proto,
    motion_to_chunks,
    state_from_proto,
    state_to_proto,
)
from anymole.wire.limits import (
    DEFAULT_RECEIVE_BYTES,
    Limits,
    _budget_check,
    _count_check,
    _flat,
    _floats,
    _unit_quats,
    check_label,
    frames_per_message,
    receive_budget,
)
from anymole.wire.proto.anymole.v1 import anymole_pb2 as pb

__all__ = [
    "DEFAULT_RECEIVE_BYTES",
    "MOTION_RESULT_SUFFIX",
    "RESULT_SUFFIX",
    "VIDEO_RESULT_SUFFIX",
    "Limits",
    "character_from_asset_bytes",
    "character_to_asset",
    "check_label",
    "clip_to_motion",
    "event_from_proto",
    "event_to_proto",
    "frames_per_message",
    "inbetween_request",
    "job_info_from_proto",
    "job_info_to_proto",
    "motion_chunk_to_proto",
    "motion_to_chunks",
    "motion_to_clip",
    "receive_budget",
    "skeleton_from_proto",
    "skeleton_to_proto",
    "spec_from_proto",
    "state_from_proto",
    "state_to_proto",
]


MOTION_RESULT_SUFFIX: dict[pb.ResultFormat.ValueType, str] = {
    pb.RESULT_FORMAT_GLB: ".glb",
    pb.RESULT_FORMAT_BVH: ".bvh",
    pb.RESULT_FORMAT_NPZ: ".npz",
}
"""The file formats of a motion result (jobs of methods such as ``interp``), with their suffixes."""

VIDEO_RESULT_SUFFIX: dict[pb.ResultFormat.ValueType, str] = {pb.RESULT_FORMAT_MP4: ".mp4"}
"""The file format of a video result (jobs of method ``video``)."""

RESULT_SUFFIX: dict[pb.ResultFormat.ValueType, str] = {**MOTION_RESULT_SUFFIX, **VIDEO_RESULT_SUFFIX}
"""Every result file format the server writes, with the suffix of its file."""


# ---------------------------------------------------------------------------------------------- motion
def clip_to_motion(clip: pb.Clip, num_joints: int, limits: Limits, field: str = "context") -> Motion:
    """Validated `Motion` from a packed clip of a ``num_joints`` skeleton."""
    fps = clip.fps
    if not (np.isfinite(fps) and 0 < fps <= MAX_FPS):
        raise InvalidInput(f"{field}.fps", f"must be a frame rate in (0, {MAX_FPS:g}] frames per second, got {fps:g}")
    f = clip.frame_count
    if f == 0:
        raise InvalidInput(f"{field}.frame_count", "the context is empty; send at least one frame of known motion")
    _count_check(f, limits.max_frames, f"{field}.frame_count", "frames")
    n = len(clip.rotations)
    if n != f * num_joints * 4 and n % (f * 4) == 0:
        raise InvalidInput(
            f"{field}.rotations",
            f"carries {n // (f * 4)} joints per frame but the character has {num_joints}; "
            "send every joint of the uploaded skeleton, in its order",
        )
    rot = _floats(clip.rotations, f * num_joints * 4, f"{field}.rotations", f"{f} frames × {num_joints} joints × 4")
    rot = _unit_quats(rot.reshape(f, num_joints, 4), f"{field}.rotations", limits.quat_tolerance)
    root = _floats(clip.root_translations, f * 3, f"{field}.root_translations", f"{f} frames × 3").reshape(f, 3)
    translations = None
    if len(clip.translations):
        tr = _floats(clip.translations, f * num_joints * 3, f"{field}.translations", f"{f} frames × {num_joints} joints × 3")
        tr = tr.reshape(f, num_joints, 3).copy()
        tr[:, 0] = root  # the root's column always equals root_translations
        translations = torch.from_numpy(tr)
    return Motion(
        fps=float(fps),
        rotations=torch.from_numpy(rot.astype(np.float32)),
        root_translation=torch.from_numpy(root.copy()),
        translations=translations,
    )


def motion_to_clip(motion: Motion) -> pb.Clip:
    return pb.Clip(
        fps=motion.fps,
        frame_count=motion.num_frames,
        rotations=_flat(motion.rotations),
        root_translations=_flat(motion.root_translation),
        translations=_flat(motion.translations),
    )


def spec_from_proto(req: pb.InbetweenRequest, character: Character, limits: Limits) -> JobSpec:
    """Validated `JobSpec` from a request whose ``character_id`` resolved to ``character``."""
    j = character.skeleton.num_joints
    check_label(req.label, limits)
    if not req.HasField("context"):
        raise InvalidInput("context", "the context is empty; send at least one frame of known motion")
    keys = list(req.keyframes)
    if not keys:
        raise InvalidInput("keyframes", "send at least one keyframe to in-between towards")
    _count_check(len(keys), limits.max_keyframes, "keyframes", "keyframes")
    total = req.total_frames or keys[-1].frame + 1
    _count_check(total, limits.max_frames, "total_frames", "frames")
    _budget_check(max(total, req.context.frame_count), j, limits)  # before the context is decoded
    context = clip_to_motion(req.context, j, limits, "context")
    c = context.num_frames
    frames: list[int] = []
    rots = np.empty((len(keys), j, 4), dtype=np.float32)
    roots = np.empty((len(keys), 3), dtype=np.float32)
    with_tr = [len(k.translations) > 0 for k in keys]
    if any(with_tr) and context.translations is None:
        i = with_tr.index(True)
        raise InvalidInput(f"keyframes[{i}].translations", "send context.translations too, or no keyframe translations")
    if any(with_tr) and not all(with_tr):
        i = with_tr.index(False)
        raise InvalidInput(f"keyframes[{i}].translations", "give translations on every keyframe or on none")
    trs = np.empty((len(keys), j, 3), dtype=np.float32) if all(with_tr) else None
    # Order before range: with total_frames 0 the timeline ends at the last key, so unsorted keys would read
    # as "outside the gap" instead of what is wrong with them.
    for i in range(1, len(keys)):
        if keys[i].frame <= keys[i - 1].frame:
            raise InvalidInput(
                f"keyframes[{i}].frame",
                f"frame {keys[i].frame} does not come after keyframes[{i - 1}].frame = {keys[i - 1].frame}; "
                "sort keyframes by frame (each frame once)",
            )
    for i, k in enumerate(keys):
        f = f"keyframes[{i}]"
        if not c <= k.frame < total:
            raise InvalidInput(
                f"{f}.frame",
                f"frame {k.frame} is outside the gap {c}..{total - 1} (after the {c} context frames, before "
                f"total_frames = {total})",
            )
        frames.append(k.frame)
        n = len(k.rotations)
        if n != j * 4 and n % 4 == 0:
            raise InvalidInput(f"{f}.rotations", f"carries {n // 4} joints but the character has {j}")
        rots[i] = _unit_quats(
            _floats(k.rotations, j * 4, f"{f}.rotations", f"{j} joints × 4").reshape(j, 4),
            f"{f}.rotations",
            limits.quat_tolerance,
            ("joint",),
        )
        roots[i] = _floats(k.root_translation, 3, f"{f}.root_translation", "x, y, z")
        if trs is not None:
            trs[i] = _floats(k.translations, j * 3, f"{f}.translations", f"{j} joints × 3").reshape(j, 3)
            trs[i, 0] = roots[i]
    budget = receive_budget(req.max_receive_message_bytes, limits, "max_receive_message_bytes")
    fitting = frames_per_message(budget, j, context.translations is not None)
    chunk = min(req.chunk_frames or DEFAULT_CHUNK_FRAMES, fitting)
    return JobSpec(
        character_id=req.character_id,
        character=character,
        context=context,
        keyframes=Keyframes(
            tuple(frames),
            Motion(
                fps=context.fps,
                rotations=torch.from_numpy(rots),
                root_translation=torch.from_numpy(roots),
                translations=None if trs is None else torch.from_numpy(trs),
            ),
        ),
        total_frames=int(total),
        method=req.method or "interp",
        preset=req.preset,
        chunk_frames=int(chunk),
        seed=int(req.seed),
        label=req.label,
    )


def inbetween_request(
    character_id: str,
    context: Motion,
    keys: Keyframes,
    total_frames: int = 0,
    method: str = "interp",
    preset: str = "",
    chunk_frames: int = 0,
    seed: int = 0,
    label: str = "",
    client_tags: dict[str, str] | None = None,
    max_receive_message_bytes: int = 0,
) -> pb.InbetweenRequest:
    """Build a request (client side). ``keys.poses``: ``rotations (K, J, 4)`` xyzw, ``root_translation (K, 3)`` m,
    optional ``translations (K, J, 3)`` m (only with ``context.translations``); ``client_tags`` find the job again
    in `ListJobs`; ``max_receive_message_bytes`` sizes its motion events (0: 4 MiB)."""
    poses = keys.poses
    kr = poses.rotations.detach().cpu().float().numpy()
    kt = poses.root_translation.detach().cpu().float().numpy()
    ktr = None if poses.translations is None else poses.translations.detach().cpu().float().numpy()
    return pb.InbetweenRequest(
        character_id=character_id,
        context=motion_to_clip(context),
        keyframes=[
            pb.Keyframe(
                frame=int(f),
                rotations=kr[i].ravel().tolist(),
                root_translation=kt[i].tolist(),
                translations=[] if ktr is None else ktr[i].ravel().tolist(),
            )
            for i, f in enumerate(keys.frames)
        ],
        total_frames=total_frames,
        method=method,
        preset=preset,
        chunk_frames=chunk_frames,
        seed=seed,
        label=label,
        client_tags=client_tags or {},
        max_receive_message_bytes=max_receive_message_bytes,
    )
