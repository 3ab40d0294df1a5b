"""`Character`: a skeleton, its skinned mesh and materials, and the clips that came with it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from anymole.rig.motion import Motion
from anymole.rig.skeleton import Skeleton

__all__ = ["Character", "Material", "SkinnedMesh"]


def _grey() -> torch.Tensor:
    return torch.tensor([0.8, 0.8, 0.8, 1.0])


@dataclass(frozen=True, eq=False)
class Material:
    """How one sub-mesh looks: glTF's base colour (factor × texture × vertex colour).

    Attributes:
        base_color: ``(4,)`` RGBA in [0, 1], the base colour factor.
        texture: optional ``(H, W, 3|4)`` uint8 base-colour image, sampled at the mesh's ``uvs``. Materials
            that share an image in the file share the tensor object.
        name: the material's name in the file ("" when it has none).
    """

    base_color: torch.Tensor = field(default_factory=_grey)
    texture: torch.Tensor | None = None
    name: str = ""


@dataclass(frozen=True, eq=False)
class SkinnedMesh:
    """A triangle mesh bound to a skeleton: every sub-mesh merged into one vertex and face list, each face
    keeping its sub-mesh's material.

    Attributes:
        vertices: ``(V, 3)`` float, bind-pose positions in world space (m).
        faces: ``(T, 3)`` int64 vertex indices, counter-clockwise front faces.
        joint_indices: ``(V, K)`` int64 influencing joints (pad with 0 and weight 0).
        joint_weights: ``(V, K)`` float, non-negative, each row sums to 1 (normalised at import).
        inverse_bind: ``(J, 4, 4)`` float, world → joint-local transform at bind time.
        normals: optional ``(V, 3)`` unit bind-pose normals.
        uvs: optional ``(V, 2)`` texture coordinates (glTF convention: v down from the image top); each
            vertex carries the UV set its material's texture reads.
        materials: one or more `Material`; a mesh without one in its file gets a light grey.
        face_materials: optional ``(T,)`` int64 index into ``materials`` per face; ``None``: all use the first.
        colors: optional ``(V, 4)`` float RGBA in [0, 1] per vertex (glTF ``COLOR_0``), multiplied with the
            material's colour.
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    joint_indices: torch.Tensor
    joint_weights: torch.Tensor
    inverse_bind: torch.Tensor
    normals: torch.Tensor | None = None
    uvs: torch.Tensor | None = None
    materials: tuple[Material, ...] = field(default_factory=lambda: (Material(),))
    face_materials: torch.Tensor | None = None
    colors: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> SkinnedMesh:
        """The same mesh with its geometry and skinning tensors on ``device`` (materials' textures stay where
        they are: only the renderers read them)."""
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return replace(self, vertices=self.vertices.to(device), faces=self.faces.to(device),
                       joint_indices=self.joint_indices.to(device), joint_weights=self.joint_weights.to(device),
                       inverse_bind=self.inverse_bind.to(device), normals=move(self.normals), uvs=move(self.uvs),
                       face_materials=move(self.face_materials), colors=move(self.colors))  # fmt: skip

    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    @property
    def textures(self) -> list[torch.Tensor]:
        """The distinct texture images of the materials, in first-use order (shared ones once)."""
        seen: dict[int, torch.Tensor] = {}
        for m in self.materials:
            if m.texture is not None:
                seen.setdefault(id(m.texture), m.texture)
        return list(seen.values())

    def material_of_faces(self) -> torch.Tensor:
        """``(T,)`` int64 material index of every face (zeros when ``face_materials`` is ``None``)."""
        if self.face_materials is None:
            return torch.zeros(self.num_faces, dtype=torch.long, device=self.faces.device)
        return self.face_materials


@dataclass(frozen=True, eq=False)
class Character:
    """Everything known about one rigged character.

    Attributes:
        name: human-readable name (file stem by default).
        skeleton: the joint hierarchy and rest pose.
        mesh: the skinned mesh, or ``None`` for skeleton-only assets (BVH); renderers then draw a stick body.
        motions: clips shipped with the asset, by name, in file order.
        source: the path it was loaded from, if any.
        unit_scale: metres per file unit the loader multiplied lengths by (1 for glTF and for characters
            not loaded from a file; FBX ``UnitScaleFactor / 100``; a BVH's guessed or given unit), so that
            writers can give a file its own units back.
    """

    name: str
    skeleton: Skeleton
    mesh: SkinnedMesh | None = None
    motions: dict[str, Motion] = field(default_factory=dict)
    source: str | None = None
    unit_scale: float = 1.0
