"""`describe`: a JSON-ready summary of a `Character` (what ``anymole inspect`` prints)."""

from __future__ import annotations

from typing import Any

import torch

from anymole.io._bvh import unit_name
from anymole.rig.character import Character
from anymole.rig.fk import forward_kinematics

__all__ = ["describe"]


def describe(character: Character) -> dict[str, Any]:
    """Summarise a character: skeleton tree, mesh statistics and clips.

    Returns:
        A dict of plain Python values::

            name, source
            joint_count                  number of skeleton joints (the ``.joints`` sidecar value)
            units: {metres_per_unit (what the loader multiplied lengths by), name (e.g. "glTF units
                   (nominally m)", "cm", "cmu")}
            skeleton: roots (names), max_depth, joints: [{index, name, parent (name or None), depth,
                      children (names)}], rest_extent_m (x, y, z size of the rest pose, metres),
                      rest_extent_file (the same in the file's units), end_sites
            mesh: None, or {vertices, faces, influences (K slots per vertex), max_influences (most
                  non-zero weights on one vertex), has_normals, has_uvs, has_colors (vertex colours),
                  materials: [{name, base_color, texture ([H, W, C] or None), faces}], textures (distinct
                  images)}
            clips: [{name, frames, fps, seconds, duration_s}] in file order, where
                   ``seconds = (frames - 1) / fps`` is the time of the last frame (the same rule for every
                   format) and ``duration_s`` is the clip's length as its file format counts it (the
                   ``.clips`` sidecar value): for BVH ``Frames × Frame Time = frames / fps`` (each frame
                   lasts one Frame Time), for glTF, FBX and Collada the time of the last key, ``= seconds``.
                   The BVH rule assumes the clip is at the file's own rate (``load_character(fps=None)``).
    """
    sk = character.skeleton
    depths = sk.depths
    bvh = (character.source or "").lower().endswith(".bvh")
    joints = [
        {
            "index": j,
            "name": sk.names[j],
            "parent": sk.names[p] if p >= 0 else None,
            "depth": depths[j],
            "children": [sk.names[c] for c in sk.children(j)],
        }
        for j, p in enumerate(sk.parents)
    ]
    _, rest_pos = forward_kinematics(sk.rest_rotations.double(), sk.offsets.double(), sk.parents)
    extent = (rest_pos.max(0).values - rest_pos.min(0).values).tolist()
    scale = character.unit_scale
    mesh = character.mesh
    mesh_info = None
    if mesh is not None:
        counts = torch.bincount(mesh.material_of_faces().cpu(), minlength=len(mesh.materials))
        mesh_info = {
            "vertices": mesh.num_vertices,
            "faces": mesh.num_faces,
            "influences": int(mesh.joint_weights.shape[1]),
            "max_influences": int((mesh.joint_weights > 0).sum(1).max()) if mesh.num_vertices else 0,
            "has_normals": mesh.normals is not None,
            "has_uvs": mesh.uvs is not None,
            "has_colors": mesh.colors is not None,
            "materials": [
                {
                    "name": m.name,
                    "base_color": [round(float(c), 6) for c in m.base_color],
                    "texture": list(m.texture.shape) if m.texture is not None else None,
                    "faces": int(n),
                }
                for m, n in zip(mesh.materials, counts.tolist(), strict=True)
            ],
            "textures": len(mesh.textures),
        }
    return {
        "name": character.name,
        "source": character.source,
        "joint_count": sk.num_joints,
        "units": {"metres_per_unit": scale, "name": _unit_name(character.source, scale)},
        "skeleton": {
            "roots": [sk.names[r] for r in sk.roots],
            "max_depth": sk.max_depth,
            "rest_extent_m": [round(x, 6) for x in extent],
            "rest_extent_file": [round(x / scale, 6) for x in extent],
            "end_sites": len(sk.end_sites),
            "joints": joints,
        },
        "mesh": mesh_info,
        "clips": [
            {"name": name, "frames": m.num_frames, "fps": m.fps, "seconds": m.duration,
             "duration_s": m.num_frames / m.fps if bvh else m.duration}
            for name, m in character.motions.items()
        ],
    }



def _unit_name(source: str | None, metres_per_unit: float) -> str:
    if (source or "").lower().endswith((".glb", ".gltf")) and metres_per_unit == 1.0:
        return "glTF units (nominally m; the file may be authored at another scale)"
    return unit_name(metres_per_unit)
