"""Asset import and export: FBX, glTF/GLB, BVH and Collada → `anymole.rig.Character`; GLB and BVH out.

Public API::

    load_character(path, *, scale=None, clip=None, fps=None) -> Character
    write_glb(path, character, motions=None)
    write_bvh(path, skeleton, motion, *, order="ZYX", unit_scale=1.0)
    write_fill(path, character, clip, motion, *, replace_clip=False, units=None) -> (name, summary)
    add_clip_to_gltf(path, source, character, motion, name, *, replace=None, unit_scale=1.0)
    bvh_rotation_orders(path) -> list[str]
    describe(character) -> dict

Native parsing (libassimp) runs in a reusable child process (`anymole.io._isolate`), so a crash in it
becomes an `AssetError` instead of taking the server down. Names resolve lazily: ``import anymole.io``
loads neither torch nor libassimp, which keeps the CLI's ``--help`` and the import worker fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from anymole.io._bvh import bvh_rotation_orders, guess_bvh_scale, read_bvh, write_bvh
    from anymole.io._describe import describe
    from anymole.io._export import write_fill
    from anymole.io._gltf import write_glb
    from anymole.io._gltf_edit import add_clip_to_gltf
    from anymole.io._keys import clip_grid
    from anymole.io._load import SUPPORTED_FORMATS, load_character

__all__ = [
    "SUPPORTED_FORMATS",
    "add_clip_to_gltf",
    "bvh_rotation_orders",
    "clip_grid",
    "describe",
    "guess_bvh_scale",
    "load_character",
    "read_bvh",
    "write_bvh",
    "write_fill",
    "write_glb",
]

_HOME = {
    "SUPPORTED_FORMATS": "_load",
    "add_clip_to_gltf": "_gltf_edit",
    "bvh_rotation_orders": "_bvh",
    "clip_grid": "_keys",
    "describe": "_describe",
    "guess_bvh_scale": "_bvh",
    "load_character": "_load",
    "read_bvh": "_bvh",
    "write_bvh": "_bvh",
    "write_fill": "_export",
    "write_glb": "_gltf",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f"anymole.io.{_HOME[name]}"), name)
    raise AttributeError(f"module 'anymole.io' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
