"""`load_character`: one entry point for every supported asset format."""

from __future__ import annotations

from pathlib import Path

import torch

from anymole.errors import AssetError, InvalidInput
from anymole.io._bvh import read_bvh
from anymole.io._isolate import DEFAULT_IMPORT_TIMEOUT_S, read_scene
from anymole.io._scene import scene_to_character
from anymole.rig.character import Character

__all__ = ["SUPPORTED_FORMATS", "load_character"]

SUPPORTED_FORMATS = {".fbx": "FBX", ".glb": "glTF 2.0 binary", ".gltf": "glTF 2.0", ".bvh": "BVH", ".dae": "Collada"}


def load_character(
    path: str | Path,
    *,
    scale: float | None = None,
    clip: str | None = None,
    fps: float | None = None,
    timeout: float = DEFAULT_IMPORT_TIMEOUT_S,
    refuse_non_uniform_scale: bool = False,
) -> Character:
    """Load a rigged character and its clips in canonical space (glTF: right-handed, +Y up, metres, xyzw).

    Args:
        path: an FBX, glTF/GLB, BVH or Collada (DAE) file.
        scale: metres per file unit, overriding the default: glTF and Collada 1 (their importers already
            give metres), FBX ``UnitScaleFactor / 100`` from the file (Blender's centimetre FBX: 0.01),
            BVH a guess from the rest pose's size (see `anymole.io.guess_bvh_scale`).
        clip: load only the clip of this name (names as in ``Character.motions``; unnamed clips are
            ``animation_<i>``, a BVH clip is named after the file stem).
        fps: sample every clip at this rate instead of its own (see `anymole.io.clip_grid`).
        timeout: seconds the native importer may take before it is stopped.
        refuse_non_uniform_scale: refuse a skeleton node with a non-uniform scale (AssetError naming it)
            instead of approximating it by a uniform one; the server does (the wire has no joint scale).

    Returns:
        A `Character`: skin joints only (helper nodes above the skeleton are folded into the root), the
        merged skinned mesh with normalised weights (``None`` for BVH), and every clip in file order.

    Raises:
        InvalidInput: ``fps`` or ``scale`` is not positive.
        AssetError: missing, empty, unsupported, malformed or truncated file; no skeleton; unbound
            vertices; the importer crashed or timed out. The message names the file and the reason.
        ModelUnavailable: libassimp/pyassimp missing or of an unverified version (FBX, glTF, DAE only).
    """
    # Argument errors first: they are the caller's, not the file's.
    if fps is not None and not fps > 0:
        raise InvalidInput("fps", f"must be > 0 (frames per second to resample every clip at), got {fps}")
    if scale is not None and not scale > 0:
        raise InvalidInput("scale", f"must be > 0 (metres per file unit), got {scale}")
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in SUPPORTED_FORMATS:
        supported = ", ".join(sorted(SUPPORTED_FORMATS))
        raise AssetError(p, f"unsupported format {ext or '(no extension)'!r}; supported: {supported}")
    if not p.is_file():
        raise AssetError(p, "no such file" if not p.exists() else "not a regular file")
    if p.stat().st_size == 0:
        raise AssetError(p, "the file is empty")
    if ext == ".bvh":
        character = read_bvh(p, scale=scale, fps=fps)
        if clip is not None and clip not in character.motions:
            raise AssetError(p, f"no clip {clip!r}; the file has {list(character.motions)}")
        return character
    raw = read_scene(p, timeout=timeout)
    character = scene_to_character(
        raw, p, fmt=ext, scale=scale, fps=fps, clip=clip, refuse_non_uniform_scale=refuse_non_uniform_scale
    )
    _check_finite(character, p)
    return character


def _check_finite(character: Character, path: Path) -> None:
    """NaN/inf anywhere means a corrupt file that assimp accepted: refuse it rather than pass garbage on."""
    tensors = {"joint offsets": character.skeleton.offsets, "rest rotations": character.skeleton.rest_rotations}
    if character.mesh is not None:
        tensors["vertices"] = character.mesh.vertices
    for name, m in character.motions.items():
        tensors[f"clip {name!r}"] = m.rotations
        tensors[f"clip {name!r} translations"] = m.root_translation if m.translations is None else m.translations
    for what, t in tensors.items():
        if not bool(torch.isfinite(t).all()):
            raise AssetError(path, f"the file's {what} contain NaN or infinite values; re-export it")
