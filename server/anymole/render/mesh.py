"""Geometry the renderers draw: posed skinned meshes, their normals, and a capsule body for bare skeletons."""

from __future__ import annotations

import math

import torch

from anymole.errors import InvalidInput
from anymole.rig import Material, Skeleton, SkinnedMesh
from anymole.rig.fk import forward_kinematics
from anymole.rig.quat import unitquat_to_rotmat
from anymole.rig.skinning import inverse_bind_matrices, linear_blend_skinning, skin_normals

__all__ = ["pose_mesh", "stick_figure", "vertex_normals"]


def vertex_normals(positions: torch.Tensor, faces: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Area-weighted unit vertex normals of a triangle mesh.

    Args:
        positions: ``(..., V, 3)`` vertex positions.
        faces: ``(T, 3)`` int vertex indices, counter-clockwise front faces.

    Returns:
        ``(..., V, 3)`` unit normals (zero for vertices in no face); differentiable.
    """
    tri = positions[..., faces.long(), :]  # (..., T, 3, 3)
    face_n = torch.cross(tri[..., 1, :] - tri[..., 0, :], tri[..., 2, :] - tri[..., 0, :], dim=-1)  # 2·area
    n = torch.zeros_like(positions)
    idx = faces.long().reshape(-1)
    n = n.index_add(-2, idx, face_n.repeat_interleave(3, dim=-2))
    return n / n.norm(dim=-1, keepdim=True).clamp_min(eps)


def pose_mesh(
    mesh: SkinnedMesh, global_quats: torch.Tensor, global_pos: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Skin ``mesh`` to joint world transforms.

    Args:
        mesh: the bind-pose skinned mesh.
        global_quats: ``(..., J, 4)`` unit xyzw world joint rotations (from FK).
        global_pos: ``(..., J, 3)`` world joint positions (m).

    Returns:
        ``(positions (..., V, 3), normals (..., V, 3))``; normals are skinned when the mesh has bind normals,
        else recomputed from the posed faces.
    """
    args = (mesh.joint_indices, mesh.joint_weights, mesh.inverse_bind, global_quats, global_pos)
    positions = linear_blend_skinning(mesh.vertices, *args)
    if mesh.normals is not None:
        normals = skin_normals(mesh.normals, *args)
    else:
        normals = vertex_normals(positions, mesh.faces)
    return positions, normals


def _frames_along(d: torch.Tensor) -> torch.Tensor:
    """``(N, 3, 3)`` orthonormal bases whose third column is the unit direction ``d`` ``(N, 3)``."""
    d = torch.nn.functional.normalize(d, dim=-1)
    # Any helper axis not parallel to d: pick the world axis with the smallest |component|.
    helper = torch.eye(3, dtype=d.dtype)[d.abs().argmin(dim=-1)]
    a = torch.nn.functional.normalize(torch.cross(helper, d, dim=-1), dim=-1)
    b = torch.cross(d, a, dim=-1)
    return torch.stack((a, b, d), dim=-1)


def _ring_faces(rings: int, segments: int) -> torch.Tensor:
    """Quads between ``rings`` consecutive rings of ``segments`` vertices, as ``(2·(rings−1)·segments, 3)``."""
    r = torch.arange(rings - 1).view(-1, 1)
    s = torch.arange(segments).view(1, -1)
    a = r * segments + s
    b = r * segments + (s + 1) % segments
    c, d = a + segments, b + segments
    return torch.cat((torch.stack((a, b, d), -1), torch.stack((a, d, c), -1)), dim=1).reshape(-1, 3)


def stick_figure(
    skeleton: Skeleton,
    radius: float | None = None,
    segments: int = 10,
    color: tuple[float, float, float, float] = (0.85, 0.55, 0.3, 1.0),
) -> SkinnedMesh:
    """A capsule body for a skeleton without a mesh: a cylinder per bone and a sphere per joint.

    Every piece is bound rigidly (weight 1) to one joint, so the result skins like any mesh and the
    differentiable path works on skeleton-only characters too. Zero-length bones (common in BVH) get no
    cylinder. End sites get a bone to their tip.

    Args:
        skeleton: the rig; its rest pose is the bind pose.
        radius: capsule radius (m); default 3% of the rest pose's bounding-box diagonal.
        segments: vertices around each cylinder and sphere ring.
        color: RGBA base colour.

    Returns:
        A `SkinnedMesh` with ``K = 1`` influence per vertex.
    """
    if segments < 3:
        raise InvalidInput("segments", f"need at least 3, got {segments}")
    rest_q, rest_p = forward_kinematics(
        skeleton.rest_rotations.float(), skeleton.offsets.float(), skeleton.parents
    )  # (J, 4), (J, 3)
    rest_r = unitquat_to_rotmat(rest_q)
    n_joints = skeleton.num_joints

    # Bone segments (start, end, bound joint): joint → child bones, and joint → end-site tips.
    starts, ends, owner = [], [], []
    for j, p in enumerate(skeleton.parents):
        if p >= 0:
            starts.append(rest_p[p])
            ends.append(rest_p[j])
            owner.append(p)
    end_tips = [rest_p[j] + rest_r[j] @ off.float() for j, off in skeleton.end_sites.items()]
    starts.extend(rest_p[j] for j in skeleton.end_sites)
    ends.extend(end_tips)
    owner.extend(skeleton.end_sites)
    tips = torch.cat((rest_p, *(t[None] for t in end_tips)))
    extent = float((tips.amax(0) - tips.amin(0)).norm().clamp_min(1e-6))
    r = radius if radius is not None else 0.03 * extent
    if r <= 0:
        raise InvalidInput("radius", f"must be > 0, got {r}")

    ang = torch.arange(segments, dtype=torch.float32) * (2.0 * math.pi / segments)
    circle = torch.stack((torch.cos(ang), torch.sin(ang), torch.zeros_like(ang)), -1)  # (S, 3)

    verts, normals, faces, owners = [], [], [], []
    count = 0
    if starts:
        s, e = torch.stack(starts), torch.stack(ends)
        keep = (e - s).norm(dim=-1) > 1e-3 * extent
        s, e = s[keep], e[keep]
        bone_owner = torch.tensor(owner, dtype=torch.long)[keep]
        if len(s):
            basis = _frames_along(e - s)  # (B, 3, 3)
            radial = circle @ basis.transpose(-1, -2)  # (B, S, 3)
            cyl = torch.stack((s[:, None] + r * radial, e[:, None] + r * radial), 1)  # (B, 2, S, 3)
            n_b = len(s)
            verts.append(cyl.reshape(-1, 3))
            normals.append(radial[:, None].expand(n_b, 2, segments, 3).reshape(-1, 3))
            per = 2 * segments
            f = _ring_faces(2, segments)
            faces.append((f[None] + per * torch.arange(n_b).view(-1, 1, 1)).reshape(-1, 3))
            owners.append(bone_owner.repeat_interleave(per))
            count = n_b * per
    # Spheres: latitude rings (poles included as degenerate rings so one face template serves all).
    lat = torch.linspace(0.0, math.pi, segments // 2 + 2)
    sphere = torch.cat(
        [
            torch.stack(
                (
                    torch.sin(t) * circle[:, 0],
                    torch.sin(t) * circle[:, 1],
                    torch.full_like(ang, -math.cos(t)),
                ),
                -1,
            )
            for t in lat
        ]
    )  # (R·S, 3), unit
    per = sphere.shape[0]
    verts.append((rest_p[:, None] + r * 1.15 * sphere).reshape(-1, 3))
    normals.append(sphere.expand(n_joints, per, 3).reshape(-1, 3))
    f = _ring_faces(len(lat), segments)
    faces.append((count + f[None] + per * torch.arange(n_joints).view(-1, 1, 1)).reshape(-1, 3))
    owners.append(torch.arange(n_joints).repeat_interleave(per))

    idx = torch.cat(owners).unsqueeze(-1)
    return SkinnedMesh(
        vertices=torch.cat(verts),
        faces=torch.cat(faces),
        joint_indices=idx,
        joint_weights=torch.ones(idx.shape),
        inverse_bind=inverse_bind_matrices(rest_q, rest_p),
        normals=torch.cat(normals),
        materials=(Material(base_color=torch.tensor(color)),),
    )
