"""The one place that sees both `anymole.v1` protos and domain types, in both directions.

Every proto → domain conversion validates as it goes and raises `InvalidInput(field, reason)` naming the
offending field (``"context.rotations"``, ``"keyframes[2].frame"``…): counts against the skeleton, finite
values, unit quaternions (normalised within `Limits.quat_tolerance`, rejected beyond), hierarchy order and
cycles, keyframe order and range, frame rates, sizes. Domain → proto conversions serve the server (events,
results) and the headless client (characters, requests).

Packed layout (proto comments): rotations ``F*J*4`` float32 xyzw, translations ``F*3`` float32, row-major.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from google.protobuf.message import DecodeError

from anymole.errors import InvalidInput, OverBudget
from anymole.pipeline import (
    DEFAULT_CHUNK_FRAMES,
    Cancelled,
    Completed,
    Event,
    Failed,
    Interrupted,
    JobInfo,
    JobSpec,
    JobState,
    MotionChunk,
    Preview,
    Progress,
    Queued,
    Stamped,
)
from anymole.rig import MAX_FPS, Character, Material, Motion, Skeleton, SkinnedMesh
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

MiB = 1 << 20

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


# ---------------------------------------------------------------------------------------------- characters
def skeleton_from_proto(msg: pb.Skeleton, limits: Limits, field: str = "skeleton") -> Skeleton:
    """Validated `Skeleton` from its packed message."""
    names = tuple(msg.joint_names)
    j = len(names)
    if j == 0:
        raise InvalidInput(f"{field}.joint_names", "the skeleton has no joints")
    _count_check(j, limits.max_joints, f"{field}.joint_names", "joints")
    if len(set(names)) != j:
        dup = sorted({x for x in names if names.count(x) > 1})[:5]
        raise InvalidInput(f"{field}.joint_names", f"joint names must be unique; repeated: {dup}")
    parents = list(msg.parent_indices)
    if len(parents) != j:
        raise InvalidInput(f"{field}.parent_indices", f"has {len(parents)} entries for {j} joints")
    _check_hierarchy(parents, f"{field}.parent_indices")
    offsets = _floats(msg.rest_translations, j * 3, f"{field}.rest_translations", f"{j} joints × 3").reshape(j, 3)
    rest = _floats(msg.rest_rotations, j * 4, f"{field}.rest_rotations", f"{j} joints × 4").reshape(j, 4)
    rest = _unit_quats(rest, f"{field}.rest_rotations", limits.quat_tolerance, ("joint",))
    return Skeleton(
        names=names,
        parents=tuple(parents),
        offsets=torch.from_numpy(offsets.copy()),
        rest_rotations=torch.from_numpy(rest.astype(np.float32)),
    )


def skeleton_to_proto(skeleton: Skeleton) -> pb.Skeleton:
    return pb.Skeleton(
        joint_names=list(skeleton.names),
        parent_indices=list(skeleton.parents),
        rest_translations=skeleton.offsets.detach().cpu().float().numpy().ravel().tolist(),
        rest_rotations=skeleton.rest_rotations.detach().cpu().float().numpy().ravel().tolist(),
    )


def _decode_texture(tex: pb.Texture, field: str) -> torch.Tensor:
    import io

    from PIL import Image, UnidentifiedImageError

    if tex.mime_type not in ("image/png", "image/jpeg"):
        raise InvalidInput(f"{field}.mime_type", f"unsupported texture type {tex.mime_type!r}; send image/png or image/jpeg")
    try:
        with Image.open(io.BytesIO(tex.data)) as img:
            arr = np.asarray(img.convert("RGBA" if img.mode in ("RGBA", "LA", "P") else "RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InvalidInput(f"{field}.data", f"cannot decode the {tex.mime_type} image: {exc}") from None
    return torch.from_numpy(arr.copy())


def _encode_png(image: torch.Tensor) -> pb.Texture:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image.cpu().numpy()).save(buf, format="PNG")
    return pb.Texture(mime_type="image/png", data=buf.getvalue())


NON_UNIFORM_SCALE_TOLERANCE = 1e-3
"""Largest relative spread of an inverse bind matrix's axis lengths still read as one uniform scale."""


def _check_uniform_scale(ibm: np.ndarray, names: Sequence[str], field: str) -> None:
    """``(J, 4, 4)`` inverse bind matrices (column vectors) must be rigid up to one uniform scale each: the
    contract has no joint scale, so a non-uniform one cannot be expressed (`InvalidInput` naming the joint)."""
    axes = np.linalg.norm(ibm[:, :3, :3].astype(np.float64), axis=-2)  # (J, 3): lengths of the 3 columns
    spread = axes.max(-1) / np.maximum(axes.min(-1), 1e-30) - 1.0
    if spread.size and spread.max() > NON_UNIFORM_SCALE_TOLERANCE:
        j = int(np.argmax(spread))
        name = names[j] if j < len(names) else str(j)
        raise InvalidInput(
            f"{field}[{j}]",
            f"joint {name!r} is bound with a non-uniform scale (axis lengths {', '.join(f'{a:.4g}' for a in axes[j])}); "
            "the contract has no joint scale: apply the scale to the mesh and skeleton in the editor (a uniform "
            "one is baked into the translations and inverse bind matrices) and upload again",
        )


def mesh_from_proto(
    msg: pb.SkinnedMesh, num_joints: int, field: str = "mesh", joint_names: Sequence[str] = ()
) -> SkinnedMesh:
    """Validated `SkinnedMesh` for a skeleton of ``num_joints`` joints (``joint_names`` name them in errors)."""
    n_pos = len(msg.positions)
    if n_pos == 0 or n_pos % 3:
        raise InvalidInput(f"{field}.positions", f"has {n_pos} floats; send V * 3 > 0")
    v = n_pos // 3
    pos = _floats(msg.positions, v * 3, f"{field}.positions", f"{v} vertices × 3").reshape(v, 3)
    normals = uvs = None
    if len(msg.normals):
        normals = torch.from_numpy(_floats(msg.normals, v * 3, f"{field}.normals", f"{v} vertices × 3").reshape(v, 3))
    if len(msg.uvs):
        uvs = torch.from_numpy(_floats(msg.uvs, v * 2, f"{field}.uvs", f"{v} vertices × 2").reshape(v, 2))
    tri = np.asarray(msg.triangle_indices, dtype=np.int64)
    if tri.size == 0 or tri.size % 3:
        raise InvalidInput(f"{field}.triangle_indices", f"has {tri.size} indices; send T * 3 > 0")
    if tri.max() >= v:
        raise InvalidInput(f"{field}.triangle_indices", f"index {int(tri.max())} is out of range for {v} vertices")
    k = msg.influences_per_vertex
    if k == 0:
        raise InvalidInput(f"{field}.influences_per_vertex", "must be at least 1")
    ji = np.asarray(msg.joint_indices, dtype=np.int64)
    if ji.size != v * k:
        raise InvalidInput(f"{field}.joint_indices", f"has {ji.size} entries, expected {v} vertices × {k}")
    if ji.max(initial=0) >= num_joints:
        raise InvalidInput(f"{field}.joint_indices", f"joint {int(ji.max())} is out of range for {num_joints} joints")
    w = _floats(msg.joint_weights, v * k, f"{field}.joint_weights", f"{v} vertices × {k}").reshape(v, k)
    if (w < 0).any():
        raise InvalidInput(f"{field}.joint_weights", "weights must be non-negative")
    sums = w.sum(-1, keepdims=True)
    if (sums <= 0).any():
        raise InvalidInput(f"{field}.joint_weights", f"vertex {int(np.argmin(sums))} has no weight on any joint")
    ibm = _floats(msg.inverse_bind_matrices, num_joints * 16, f"{field}.inverse_bind_matrices", f"{num_joints} × 16")
    ibm = ibm.reshape(num_joints, 4, 4).transpose(0, 2, 1)  # glTF stores columns
    _check_uniform_scale(ibm, joint_names, f"{field}.inverse_bind_matrices")
    colors = None
    if len(msg.colors):
        rgba = _floats(msg.colors, v * 4, f"{field}.colors", f"{v} vertices × 4").reshape(v, 4)
        if (rgba < 0).any() or (rgba > 1).any():
            raise InvalidInput(f"{field}.colors", "colours must lie in [0, 1]")
        colors = torch.from_numpy(rgba)
    materials, face_materials = _materials_from_proto(msg, tri.size // 3, uvs is not None, field)
    return SkinnedMesh(
        vertices=torch.from_numpy(pos.copy()),
        faces=torch.from_numpy(tri.reshape(-1, 3)),
        joint_indices=torch.from_numpy(ji.reshape(v, k)),
        joint_weights=torch.from_numpy(w / sums),
        inverse_bind=torch.from_numpy(np.ascontiguousarray(ibm)),
        normals=normals,
        uvs=uvs,
        colors=colors,
        materials=materials,
        face_materials=face_materials,
    )


def _color(values: Sequence[float], field: str) -> torch.Tensor:
    if not len(values):
        return torch.tensor([0.8, 0.8, 0.8, 1.0])
    return torch.from_numpy(_floats(values, 4, field, "RGBA"))


def _materials_from_proto(
    msg: pb.SkinnedMesh, n_tri: int, has_uvs: bool, field: str
) -> tuple[tuple[Material, ...], torch.Tensor | None]:
    """``materials`` and ``face_materials`` of a `SkinnedMesh`: from ``materials`` (1.2) or else from the
    one-material fields ``base_color`` / ``texture`` (1.1)."""
    if not msg.materials:
        texture = _decode_texture(msg.texture, f"{field}.texture") if msg.HasField("texture") else None
        if msg.triangle_materials:
            raise InvalidInput(f"{field}.triangle_materials", "index materials that are not sent; send `materials`")
        if texture is not None and not has_uvs:
            raise InvalidInput(f"{field}.uvs", "a textured mesh needs V * 2 uvs")
        return (Material(_color(msg.base_color, f"{field}.base_color"), texture),), None
    textures = [_decode_texture(t, f"{field}.textures[{i}]") for i, t in enumerate(msg.textures)]
    materials = []
    for i, m in enumerate(msg.materials):
        where = f"{field}.materials[{i}]"
        tex = None
        if m.HasField("texture"):
            if m.texture >= len(textures):
                raise InvalidInput(f"{where}.texture", f"index {m.texture} is out of range for {len(textures)} textures")
            if not has_uvs:
                raise InvalidInput(f"{field}.uvs", f"{where} is textured: send V * 2 uvs")
            tex = textures[m.texture]
        materials.append(Material(_color(m.base_color, f"{where}.base_color"), tex, m.name))
    face_materials = None
    if msg.triangle_materials:
        fm = np.asarray(msg.triangle_materials, dtype=np.int64)
        if fm.size != n_tri:
            raise InvalidInput(f"{field}.triangle_materials", f"has {fm.size} entries, expected one per triangle ({n_tri})")
        if fm.max() >= len(materials):
            raise InvalidInput(
                f"{field}.triangle_materials", f"material {int(fm.max())} is out of range for {len(materials)} materials"
            )
        face_materials = torch.from_numpy(fm)
    return tuple(materials), face_materials


def character_from_asset_bytes(payload: bytes | bytearray, name: str, limits: Limits) -> Character:
    """Parse and validate a serialised `CharacterAsset` (CHARACTER_FORMAT_PROTO uploads)."""
    try:
        asset = pb.CharacterAsset.FromString(payload)  # type: ignore[arg-type]  # any buffer; a bytes copy would double it
    except DecodeError as exc:
        raise InvalidInput("chunk", f"the payload is not a serialised anymole.v1.CharacterAsset ({exc})") from None
    if not asset.HasField("skeleton"):
        raise InvalidInput("skeleton", "a character needs a skeleton")
    skeleton = skeleton_from_proto(asset.skeleton, limits)
    mesh = mesh_from_proto(asset.mesh, skeleton.num_joints, joint_names=skeleton.names) if asset.HasField("mesh") else None
    return Character(name=name or asset.name or "character", skeleton=skeleton, mesh=mesh)


def character_to_asset(character: Character) -> pb.CharacterAsset:
    """The `CharacterAsset` message of a domain character (what the client uploads)."""
    asset = pb.CharacterAsset(name=character.name, skeleton=skeleton_to_proto(character.skeleton))
    m = character.mesh
    if m is not None:

        def flat(t: torch.Tensor) -> list[float]:
            return t.detach().cpu().float().numpy().ravel().tolist()

        asset.mesh.positions.extend(flat(m.vertices))
        if m.normals is not None:
            asset.mesh.normals.extend(flat(m.normals))
        if m.uvs is not None:
            asset.mesh.uvs.extend(flat(m.uvs))
        asset.mesh.triangle_indices.extend(m.faces.reshape(-1).tolist())
        asset.mesh.influences_per_vertex = int(m.joint_indices.shape[1])
        asset.mesh.joint_indices.extend(m.joint_indices.reshape(-1).tolist())
        asset.mesh.joint_weights.extend(flat(m.joint_weights))
        asset.mesh.inverse_bind_matrices.extend(flat(m.inverse_bind.transpose(-1, -2)))
        if m.colors is not None:
            asset.mesh.colors.extend(flat(m.colors))
        textures = {id(t): i for i, t in enumerate(m.textures)}
        asset.mesh.textures.extend(_encode_png(t) for t in m.textures)
        for mat in m.materials:
            entry = asset.mesh.materials.add(name=mat.name, base_color=flat(mat.base_color))
            if mat.texture is not None:
                entry.texture = textures[id(mat.texture)]
        if m.face_materials is not None:
            asset.mesh.triangle_materials.extend(m.face_materials.tolist())
    return asset


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


def _flat(t: torch.Tensor | None) -> list[float]:
    return [] if t is None else t.detach().cpu().float().numpy().ravel().tolist()


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
        key_frames=tuple(frames),
        key_rotations=torch.from_numpy(rots),
        key_root=torch.from_numpy(roots),
        total_frames=int(total),
        method=req.method or "interp",
        preset=req.preset,
        chunk_frames=int(chunk),
        seed=int(req.seed),
        label=req.label,
        key_translations=None if trs is None else torch.from_numpy(trs),
    )


def inbetween_request(
    character_id: str,
    context: Motion,
    key_frames: Sequence[int],
    key_rotations: torch.Tensor,
    key_root: torch.Tensor,
    total_frames: int = 0,
    method: str = "interp",
    preset: str = "",
    chunk_frames: int = 0,
    seed: int = 0,
    label: str = "",
    key_translations: torch.Tensor | None = None,
    client_tags: dict[str, str] | None = None,
    max_receive_message_bytes: int = 0,
) -> pb.InbetweenRequest:
    """Build a request (client side). ``key_rotations (K, J, 4)`` xyzw, ``key_root (K, 3)`` m, optional
    ``key_translations (K, J, 3)`` m (only with ``context.translations``); ``client_tags`` find the job again
    in `ListJobs`; ``max_receive_message_bytes`` sizes its motion events (0: 4 MiB)."""
    kr = key_rotations.detach().cpu().float().numpy()
    kt = key_root.detach().cpu().float().numpy()
    ktr = None if key_translations is None else key_translations.detach().cpu().float().numpy()
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
            for i, f in enumerate(key_frames)
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


# ---------------------------------------------------------------------------------------------- jobs
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
