"""Rig math on the bundled characters: the importer's bind matrices agree with our FK and skinning."""

from __future__ import annotations

import pytest
import torch

from anymole.rig import Character, fk_motion, forward_kinematics, joint_matrices, linear_blend_skinning
from asset_files import cached_load


@pytest.fixture(scope="module", params=["CesiumMan.glb", "Fox.glb"])
def character(request: pytest.FixtureRequest) -> Character:
    return cached_load(request.param)


def test_rest_pose_fk_is_the_bind_pose(character: Character) -> None:
    sk, mesh = character.skeleton, character.mesh
    assert mesh is not None
    gq, gp = forward_kinematics(sk.rest_rotations, sk.offsets, sk.parents)
    M = joint_matrices(gq, gp) @ mesh.inverse_bind
    scale = float(mesh.vertices.abs().max())  # CesiumMan is ~1.5 m tall, the Fox ~88 units long
    torch.testing.assert_close(M[:, :3, :3], torch.eye(3).expand(sk.num_joints, 3, 3), atol=1e-5, rtol=0)
    assert float((M[:, :3, 3]).abs().max()) < 1e-6 * scale
    v = linear_blend_skinning(mesh.vertices, mesh.joint_indices, mesh.joint_weights, mesh.inverse_bind, gq, gp)
    assert float((v - mesh.vertices).abs().max()) < 1e-6 * scale


def test_animated_skinning_is_finite_and_bounded(character: Character) -> None:
    sk, mesh = character.skeleton, character.mesh
    assert mesh is not None
    motion = next(iter(character.motions.values()))
    gq, gp = fk_motion(sk, motion)
    v = linear_blend_skinning(mesh.vertices, mesh.joint_indices, mesh.joint_weights, mesh.inverse_bind, gq, gp)
    assert v.shape == (motion.num_frames, mesh.num_vertices, 3)
    assert bool(torch.isfinite(v).all())
    # a rigid-ish character keeps its size: the posed bounding box diagonal stays within 2× the bind one
    diag = lambda x: float((x.amax(-2) - x.amin(-2)).norm(dim=-1).max())  # noqa: E731
    assert diag(v) < 2 * diag(mesh.vertices)
