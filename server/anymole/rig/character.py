"""`Character`: a skeleton, its skinned mesh and material, and the clips that came with it."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from anymole.rig.motion import Motion
from anymole.rig.skeleton import Skeleton

__all__ = ["Character", "SkinnedMesh"]


@dataclass(frozen=True, eq=False)
class SkinnedMesh:
    """A triangle mesh bound to a skeleton (all sub-meshes merged).

    Attributes:
        vertices: ``(V, 3)`` float, bind-pose positions in world space (m).
        faces: ``(T, 3)`` int64 vertex indices, counter-clockwise front faces.
        joint_indices: ``(V, K)`` int64 influencing joints (pad with 0 and weight 0).
        joint_weights: ``(V, K)`` float, non-negative, each row sums to 1 (normalised at import).
        inverse_bind: ``(J, 4, 4)`` float, world → joint-local transform at bind time.
        normals: optional ``(V, 3)`` unit bind-pose normals.
        uvs: optional ``(V, 2)`` texture coordinates (glTF convention: v down from the image top).
        base_color: ``(4,)`` RGBA in [0, 1] (material base colour factor).
        texture: optional ``(H, W, 3|4)`` uint8 base-colour image.
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    joint_indices: torch.Tensor
    joint_weights: torch.Tensor
    inverse_bind: torch.Tensor
    normals: torch.Tensor | None = None
    uvs: torch.Tensor | None = None
    base_color: torch.Tensor = field(default_factory=lambda: torch.tensor([0.8, 0.8, 0.8, 1.0]))
    texture: torch.Tensor | None = None

    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])


@dataclass(frozen=True, eq=False)
class Character:
    """Everything known about one rigged character.

    Attributes:
        name: human-readable name (file stem by default).
        skeleton: the joint hierarchy and rest pose.
        mesh: the skinned mesh, or ``None`` for skeleton-only assets (BVH); renderers then draw a stick body.
        motions: clips shipped with the asset, by name, in file order.
        source: the path it was loaded from, if any.
    """

    name: str
    skeleton: Skeleton
    mesh: SkinnedMesh | None = None
    motions: dict[str, Motion] = field(default_factory=dict)
    source: str | None = None
