"""A character and one clip as a file of tensors and plain values, for a machine that cannot import the asset
(the GPU device has no libassimp): export it here, carry it there (`scripts/bench_render.py`, `anymole bench
pipeline --scene`)."""

from __future__ import annotations

from pathlib import Path

import torch

from anymole.rig import Character, Material, Motion, Skeleton, SkinnedMesh

__all__ = ["read_scene", "save_scene"]


def save_scene(path: Path, character: Character, motion: Motion) -> None:
    """Tensors and plain values only (``torch.load(weights_only=True)`` reads them back)."""
    sk, mesh = character.skeleton, character.mesh
    assert mesh is not None
    blob = {
        "name": character.name,
        "skeleton": {
            "names": list(sk.names),
            "parents": list(sk.parents),
            "offsets": sk.offsets,
            "rest_rotations": sk.rest_rotations,
        },
        "mesh": {k: getattr(mesh, k) for k in SkinnedMesh.__dataclass_fields__ if k != "materials"},
        "materials": [{"base_color": m.base_color, "texture": m.texture, "name": m.name} for m in mesh.materials],
        "motion": {
            "fps": motion.fps,
            "rotations": motion.rotations,
            "root_translation": motion.root_translation,
            "translations": motion.translations,
            "name": motion.name,
        },
    }
    torch.save(blob, path)


def read_scene(path: Path) -> tuple[Character, Motion]:
    """The character (its mesh and skeleton) and the clip `save_scene` wrote."""
    blob = torch.load(path, weights_only=True)
    s = blob["skeleton"]
    skeleton = Skeleton(tuple(s["names"]), tuple(s["parents"]), s["offsets"], s["rest_rotations"])
    materials = tuple(Material(**m) for m in blob["materials"])
    mesh = SkinnedMesh(**blob["mesh"], materials=materials)
    return Character(name=blob["name"], skeleton=skeleton, mesh=mesh), Motion(**blob["motion"])
