"""`write_fill`: a filled clip written back as the input file with that one clip changed, as far as the
output format allows.

* GLB from a glTF/GLB input: a copy of the input with the clip added (or replacing the source clip), every
  node, mesh, material, skin, morph target, other clip and extension as it was (`add_clip_to_gltf`).
* GLB from FBX, Collada or BVH: a new file holding what a `Character` holds (skeleton, the skinned mesh
  merged into one with every material and texture, every clip of the file resampled, and the filled one);
  the returned summary says what is not carried over, and the CLI prints it.
* BVH: in the input BVH's units and per-joint rotation orders (at the clip's frame time), or in metres and
  ``ZYX`` for another input; ``units`` picks other units.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from anymole.errors import AssetError, InvalidInput
from anymole.io._bvh import BVH_UNIT_CANDIDATES, bvh_rotation_orders, unit_name, write_bvh
from anymole.io._gltf import write_glb
from anymole.io._gltf_edit import add_clip_to_gltf
from anymole.rig.character import Character
from anymole.rig.motion import Motion

__all__ = ["splice", "write_fill"]

log = logging.getLogger(__name__)

_FORMAT_NAMES = {".fbx": "FBX", ".dae": "Collada", ".bvh": "BVH", ".glb": "GLB", ".gltf": "glTF"}


def _new_name(existing: list[str], clip: str) -> str:
    name, k = f"{clip}_filled", 1
    while name in existing:
        k += 1
        name = f"{clip}_filled{k}"
    return name


def splice(clip: Motion, part: Motion, start: int, offsets: torch.Tensor) -> Motion:
    """``clip`` with its frames ``start .. start + F - 1`` replaced by the ``F`` frames of ``part``;
    ``offsets (J, 3)`` are the skeleton's rest offsets (m), for a clip without per-joint translations.

    Raises:
        InvalidInput: ``part`` does not fit inside ``clip`` from ``start``, or has other joints or frame rate.
    """
    end = start + part.num_frames
    if not 0 <= start <= end <= clip.num_frames or part.num_joints != clip.num_joints:
        raise InvalidInput(
            "start",
            f"a {part.num_frames}-frame fill from frame {start} does not fit the {clip.num_frames}-frame clip",
        )
    if abs(part.fps - clip.fps) > 1e-6 * clip.fps:
        raise InvalidInput("motion", f"the fill is at {part.fps:g} fps, the clip at {clip.fps:g}")

    def join(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.cat((a[:start], b.to(a), a[end:]))

    def per_joint(m: Motion) -> torch.Tensor:
        if m.translations is not None:
            return m.translations
        out = offsets.to(m.root_translation).expand(m.num_frames, -1, -1).clone()
        out[:, 0] = m.root_translation
        return out

    translations = None
    if clip.translations is not None or part.translations is not None:
        translations = join(per_joint(clip), per_joint(part))
    return Motion(
        fps=clip.fps,
        rotations=join(clip.rotations, part.rotations),
        root_translation=join(clip.root_translation, part.root_translation),
        translations=translations,
        name=clip.name,
    )


def write_fill(
    path: str | Path,
    character: Character,
    clip: str,
    motion: Motion,
    *,
    replace_clip: bool = False,
    start: int = 0,
    units: str | None = None,
) -> tuple[str, str]:
    """Write ``motion``, a fill of ``character``'s clip ``clip``, to ``path`` (``.glb`` or ``.bvh``).

    Args:
        path: the output file.
        character: the loaded input (``character.source`` names the file to keep).
        clip: the source clip's name in ``character.motions``.
        motion: the filled clip.
        replace_clip: GLB: the source clip, with ``motion`` in place of its frames ``start ..
            start + F - 1``, is written under its own name and in its place (in a glTF its other channels,
            morph weights say, stay as they were: same timeline); otherwise ``motion`` is added as
            ``<clip>_filled``.
        start: the source clip's frame where ``motion`` begins (used with ``replace_clip``).
        units: BVH only: ``m``, ``cm``, ``mm``, ``inch`` or ``cmu``; default the input BVH's unit, else ``m``.

    Returns:
        ``(name, summary)``: the filled clip's name in the file, and one sentence saying what the file keeps.

    Raises:
        InvalidInput: ``units`` is unknown or given for a GLB.
        AssetError: the output cannot be written, or the input glTF cannot be edited.
    """
    path = Path(path)
    source = Path(character.source) if character.source else None
    src_ext = source.suffix.lower() if source else ""
    if path.suffix.lower() == ".bvh":
        return _write_bvh(path, character, motion, units, source if src_ext == ".bvh" else None)
    if units is not None:
        raise InvalidInput("--units", "units are for a .bvh output; a GLB is in glTF's metres")
    name = clip if replace_clip else _new_name(list(character.motions), clip)
    if replace_clip:
        motion = splice(character.motions[clip], motion, start, character.skeleton.offsets)
    if source is not None and src_ext in (".glb", ".gltf"):
        add_clip_to_gltf(
            path, source, character, motion, name, replace=clip if replace_clip else None,
            unit_scale=character.unit_scale,
        )  # fmt: skip
        verb = "replacing" if replace_clip else "added as"
        return name, (
            f"a copy of {source.name} with the filled clip {verb} {name!r}; its nodes, meshes, materials, "
            "skins, morph targets, other clips and extensions are kept as they were"
        )
    motions = dict(character.motions)
    motions[name] = motion  # replacing keeps the source clip's place in the order
    write_glb(path, character, motions)
    what = _FORMAT_NAMES.get(src_ext, "in-memory")
    mesh = character.mesh
    kept = (
        f"the skinned mesh merged into one with its {len(mesh.materials)} material(s) and "
        f"{len(mesh.textures)} texture(s)"
        if mesh is not None
        else "no mesh (the input has none)"
    )
    summary = (
        f"a new GLB from the {what} input: the skeleton, {kept}, and the input's {len(character.motions)} clip(s) "
        f"resampled plus {name!r}; not kept: the nodes above the skeleton, separate meshes, morph targets, "
        "cameras, lights, custom properties and the original key times"
    )
    log.info("%s: %s", path, summary)
    return name, summary


def _write_bvh(
    path: Path, character: Character, motion: Motion, units: str | None, source_bvh: Path | None
) -> tuple[str, str]:
    from_bvh = source_bvh is not None
    if units is None:
        metres_per_unit = character.unit_scale if from_bvh else 1.0
    elif units in BVH_UNIT_CANDIDATES:
        metres_per_unit = BVH_UNIT_CANDIDATES[units]
    else:
        raise InvalidInput("--units", f"unknown unit {units!r}; use one of {', '.join(BVH_UNIT_CANDIDATES)}")
    order: str | list[str] = "ZYX"
    if source_bvh is not None:
        order = bvh_rotation_orders(source_bvh)
        if len(order) != character.skeleton.num_joints:
            raise AssetError(source_bvh, "the BVH's joints changed since it was loaded; load it again")
    write_bvh(path, character.skeleton, motion, order=order, unit_scale=1.0 / metres_per_unit)
    orders_text = "the input's rotation orders" if from_bvh else "ZYX rotations"
    summary = (
        f"BVH in {unit_name(metres_per_unit)} ({metres_per_unit:g} m per unit), {orders_text}, "
        f"frame time {1.0 / motion.fps:.9g} s"
    )
    return Path(path).stem, summary
