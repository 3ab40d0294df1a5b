"""Write the conversion test vectors the engine plugins' tests reproduce (issue 15.10).

    .venv/bin/python scripts/conversion_vectors.py    # rewrite tests/data/conversions/vectors.json

A small skeleton, a three-frame clip, a keyframe, mesh points and inverse bind matrices in the wire's canonical
space (glTF: right-handed, +Y up, +Z forward, metres; quaternions x, y, z, w), each with its Unity
(left-handed, +Y up, +Z forward, metres) and Unreal (left-handed, +Z up, +X forward, centimetres) equivalent,
by the formulas in tests/data/conversions/README.md (those of glTFast and of Epic's glTF importer, which the
plugins use). Canonical inputs are float32 values; the engine values are computed in float64 from them.
`tests/service/test_conversion_vectors.py` recomputes the file and checks the formulas geometrically
(forward kinematics in each space agree).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "tests" / "data" / "conversions" / "vectors.json"

# Unity: the mirror S = diag(-1, 1, 1). Unreal: swap Y and Z (a mirror too), then metres -> centimetres.
UNITY = np.diag([-1.0, 1.0, 1.0])
UNREAL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
UNREAL_SCALE = 100.0


def _quat(axis: list[float], degrees: float) -> list[float]:
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    h = np.radians(degrees) / 2
    return [float(np.float32(v)) for v in (*(a * np.sin(h)), np.cos(h))]


def convert_points(p: np.ndarray, mirror: np.ndarray, scale: float) -> np.ndarray:
    """``(..., 3)`` positions: ``scale · M · p``."""
    return scale * p @ mirror.T


def convert_quats(q: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    """``(..., 4)`` xyzw rotations R -> M R M (M a mirror, det -1): the axis becomes -M·axis, w stays."""
    return np.concatenate([-(q[..., :3] @ mirror.T), q[..., 3:]], axis=-1)


def convert_matrices(m: np.ndarray, mirror: np.ndarray, scale: float) -> np.ndarray:
    """``(..., 4, 4)`` affine maps of points (column vectors) -> ``P · m · P⁻¹`` with P the point map."""
    p = np.eye(4)
    p[:3, :3] = scale * mirror
    return p @ m @ np.linalg.inv(p)


def _canonical() -> dict[str, Any]:
    f32 = np.float32
    rest_t = [[0.0, 1.0, 0.0], [0.0, 0.1, 0.0], [0.0, 0.45, 0.05], [0.18, 0.35, 0.0]]
    rest_r = [_quat([0, 1, 0], 0), _quat([1, 0, 0], 10), _quat([1, 0, 0], -15), _quat([0, 0, 1], -80)]
    frames = [
        [
            _quat([0, 1, 0], 30 * f),
            _quat([1, 0.2, 0], 10 + 5 * f),
            _quat([0, 1, 1], -20 * f),
            _quat([0.3, 0, 1], -80 + 25 * f),
        ]
        for f in range(3)
    ]
    root = [[0.0, 1.0, 0.0], [0.05, 1.02, 0.1], [0.1, 1.0, 0.2]]
    points = [[0.1, 1.5, 0.05], [-0.2, 0.9, -0.1], [0.3, 1.2, 0.25]]
    # Inverse bind matrices of the rest pose (world -> joint), column-major like glTF.
    world = []
    for j, parent in enumerate([-1, 0, 1, 1]):
        local = np.eye(4)
        local[:3, :3] = _rot(np.asarray(rest_r[j]))
        local[:3, 3] = rest_t[j]
        world.append(local if parent < 0 else world[parent] @ local)
    ibm = [np.linalg.inv(w).astype(f32).astype(np.float64) for w in world]
    as32 = lambda x: np.asarray(x, dtype=f32).astype(np.float64)  # noqa: E731
    return {
        "joint_names": ["Hips", "Hips/Spine", "Hips/Spine/Head", "Hips/Spine/LeftArm"],
        "parent_indices": [-1, 0, 1, 1],
        "rest_translations": as32(rest_t),
        "rest_rotations": as32(rest_r),
        "fps": 30.0,
        "rotations": as32(frames),
        "root_translations": as32(root),
        "points": as32(points),
        "inverse_bind_matrices": np.stack(ibm),
    }


def _rot(q: np.ndarray) -> np.ndarray:
    x, y, z, w = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _space(c: dict[str, Any], mirror: np.ndarray, scale: float) -> dict[str, Any]:
    return {
        "rest_translations": convert_points(c["rest_translations"], mirror, scale),
        "rest_rotations": convert_quats(c["rest_rotations"], mirror),
        "rotations": convert_quats(c["rotations"], mirror),
        "root_translations": convert_points(c["root_translations"], mirror, scale),
        "points": convert_points(c["points"], mirror, scale),
        "inverse_bind_matrices": convert_matrices(c["inverse_bind_matrices"], mirror, scale),
    }


def _lists(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in d.items()}


def build() -> dict[str, Any]:
    """The vectors: canonical values and their Unity and Unreal equivalents (nested lists of floats)."""
    c = _canonical()
    return {
        "about": "see README.md: spaces, layouts and the exact formulas",
        "canonical": _lists(c),
        "unity": _lists(_space(c, UNITY, 1.0)),
        "unreal": _lists(_space(c, UNREAL, UNREAL_SCALE)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    args.out.write_text(json.dumps(build(), indent=1) + "\n")
    print(args.out)


if __name__ == "__main__":
    main()
