"""The conversion test vectors (tests/data/conversions, issue 15.10) are what the formulas give, and the
formulas are right: forward kinematics on the converted local poses lands on the converted world positions,
and the converted inverse bind matrices map the converted points to the converted joint-space points."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _module():
    spec = importlib.util.spec_from_file_location(
        "conversion_vectors", ROOT / "scripts" / "conversion_vectors.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


cv = _module()
COMMITTED = json.loads((ROOT / "tests" / "data" / "conversions" / "vectors.json").read_text())


def test_committed_vectors_match_the_formulas():
    assert COMMITTED == cv.build(), "run `.venv/bin/python scripts/conversion_vectors.py` and commit"


def _fk(parents, rest_t, rots, root_t):
    """World rotation matrices and positions ``(J, 3, 3), (J, 3)`` of one frame (local rotations ``rots``,
    non-root joints at their rest translations)."""
    world_r, world_p = [], []
    for j, p in enumerate(parents):
        r = cv._rot(np.asarray(rots[j]))
        t = np.asarray(root_t if p < 0 else rest_t[j])
        if p < 0:
            world_r.append(r)
            world_p.append(t)
        else:
            world_r.append(world_r[p] @ r)
            world_p.append(world_p[p] + world_r[p] @ t)
    return np.stack(world_r), np.stack(world_p)


@pytest.mark.parametrize(
    ("space", "mirror", "scale"), [("unity", cv.UNITY, 1.0), ("unreal", cv.UNREAL, 100.0)]
)
def test_forward_kinematics_agrees_in_every_space(space, mirror, scale):
    c, e = COMMITTED["canonical"], COMMITTED[space]
    for f in range(len(c["rotations"])):
        rc, pc = _fk(
            c["parent_indices"], c["rest_translations"], c["rotations"][f], c["root_translations"][f]
        )
        re, pe = _fk(
            c["parent_indices"], e["rest_translations"], e["rotations"][f], e["root_translations"][f]
        )
        np.testing.assert_allclose(pe, scale * pc @ mirror.T, atol=1e-9 * scale)
        np.testing.assert_allclose(re, mirror @ rc @ mirror, atol=1e-9)
    for j in range(len(c["parent_indices"])):
        for pc, pe in zip(c["points"], e["points"], strict=True):
            joint_c = (np.asarray(c["inverse_bind_matrices"][j]) @ [*pc, 1.0])[:3]
            joint_e = (np.asarray(e["inverse_bind_matrices"][j]) @ [*pe, 1.0])[:3]
            np.testing.assert_allclose(joint_e, scale * mirror @ joint_c, atol=1e-9 * scale)


def test_each_mapping_is_its_own_inverse_up_to_scale():
    c = COMMITTED["canonical"]
    for mirror, scale in ((cv.UNITY, 1.0), (cv.UNREAL, 100.0)):
        q = np.asarray(c["rotations"])
        assert np.array_equal(cv.convert_quats(cv.convert_quats(q, mirror), mirror), q)
        p = np.asarray(c["points"])
        np.testing.assert_allclose(
            cv.convert_points(cv.convert_points(p, mirror, scale), mirror, 1 / scale), p, rtol=1e-15
        )
    # the stated component formulas
    x, y, z, w = c["rotations"][1][1]
    assert COMMITTED["unity"]["rotations"][1][1] == [x, -y, -z, w]
    assert COMMITTED["unreal"]["rotations"][1][1] == [-x, -z, -y, w]
    px, py, pz = c["points"][0]
    assert COMMITTED["unity"]["points"][0] == [-px, py, pz]
    assert COMMITTED["unreal"]["points"][0] == [100 * px, 100 * pz, 100 * py]
