"""Motion as JSON, for headless clients in any language (issue 15.9): what ``anymole fill --out result.json``
and ``anymole convert ASSET --out clip.json`` write.

The document is the wire contract's canonical space (glTF: right-handed, +Y up, +Z forward, metres;
quaternions x, y, z, w; local joint transforms), not packed::

    {"format": "anymole.motion.v1", "fps": 30.0, "joint_names": ["Hips", ...],
     "rotations": [[[x, y, z, w] per joint] per frame],        # F × J × 4
     "root_translations": [[x, y, z] per frame],              # F × 3
     "translations": [[[x, y, z] per joint] per frame]}       # F × J × 3, only when the clip animates them

Values are the float32 numbers of the motion written as JSON numbers (shortest round-trip form of each
float32's double value), so reading a file back gives the same float32 tensors bit for bit.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from anymole.errors import InvalidInput
from anymole.rig import Motion

__all__ = ["FORMAT", "motion_from_json", "motion_to_json", "read_motion_json", "write_motion_json"]

FORMAT = "anymole.motion.v1"


def motion_to_json(motion: Motion, joint_names: Sequence[str]) -> dict[str, Any]:
    """The JSON document of ``motion`` (``rotations (F, J, 4)``) for a skeleton with ``joint_names``."""
    if motion.rotations.shape[1] != len(joint_names):
        raise InvalidInput("joint_names", f"{len(joint_names)} names for {motion.rotations.shape[1]} joints")
    doc: dict[str, Any] = {
        "format": FORMAT,
        "fps": float(motion.fps),
        "joint_names": list(joint_names),
        "rotations": motion.rotations.detach().cpu().float().double().tolist(),
        "root_translations": motion.root_translation.detach().cpu().float().double().tolist(),
    }
    if motion.translations is not None:
        doc["translations"] = motion.translations.detach().cpu().float().double().tolist()
    return doc


def motion_from_json(doc: dict[str, Any]) -> tuple[list[str], Motion]:
    """``(joint_names, motion)`` of a document; `InvalidInput` naming the key that is wrong."""
    if doc.get("format") != FORMAT:
        raise InvalidInput("format", f"expected {FORMAT!r}, got {doc.get('format')!r}")
    names = [str(n) for n in doc.get("joint_names", [])]
    try:
        rot = torch.tensor(doc["rotations"], dtype=torch.float32)
        root = torch.tensor(doc["root_translations"], dtype=torch.float32)
        tr = torch.tensor(doc["translations"], dtype=torch.float32) if "translations" in doc else None
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput("rotations", f"cannot read the arrays ({exc})") from None
    f, j = (rot.shape[0], rot.shape[1]) if rot.dim() == 3 else (0, 0)
    if rot.dim() != 3 or rot.shape[2] != 4 or j != len(names):
        raise InvalidInput("rotations", f"expected F × {len(names)} × 4, got {tuple(rot.shape)}")
    if tuple(root.shape) != (f, 3):
        raise InvalidInput("root_translations", f"expected {f} × 3, got {tuple(root.shape)}")
    if tr is not None and tuple(tr.shape) != (f, j, 3):
        raise InvalidInput("translations", f"expected {f} × {j} × 3, got {tuple(tr.shape)}")
    return names, Motion(fps=float(doc["fps"]), rotations=rot, root_translation=root, translations=tr)


def write_motion_json(path: str | Path, motion: Motion, joint_names: Sequence[str]) -> None:
    Path(path).write_text(json.dumps(motion_to_json(motion, joint_names)) + "\n")


def read_motion_json(path: str | Path) -> tuple[list[str], Motion]:
    return motion_from_json(json.loads(Path(path).read_text()))
