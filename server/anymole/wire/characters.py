"""Characters on the wire: skeletons, skinned meshes with their materials and textures, and whole character
assets, in both directions, validated (`InvalidInput` names the field)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from google.protobuf.message import DecodeError

from anymole.errors import InvalidInput
from anymole.rig import Character, Material, Skeleton, SkinnedMesh
from anymole.wire.limits import Limits, _check_hierarchy, _count_check, _floats, _unit_quats
from anymole.wire.proto.anymole.v1 import anymole_pb2 as pb

__all__ = [
    "NON_UNIFORM_SCALE_TOLERANCE",
    "character_from_asset_bytes",
    "character_to_asset",
    "mesh_from_proto",
    "skeleton_from_proto",
    "skeleton_to_proto",
]


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
