"""Extra estimator samples from the gaps' first guess (`anymole.pipeline.fromvideo.gap_poses`, issue 14.1)."""

from __future__ import annotations

import pytest
import torch

from anymole.pipeline.fromvideo import gap_poses, training_set
from anymole.pipeline.oracle import OracleScene, oracle_scene
from anymole.rig.fk import fk_motion
from asset_files import cached_load


@pytest.fixture(scope="module")
def scene() -> OracleScene:
    return oracle_scene(cached_load("131_01_30fps.bvh"), "131_01_30fps", (0, 61), [90], (128, 80, 2))


def test_gap_poses_render_the_fill_then_perturbed_copies(scene: OracleScene) -> None:
    ch = cached_load("131_01_30fps.bvh")
    extra = gap_poses(ch, scene.fill, scene.timeline, scene.renders.cameras, copies=2, noise_deg=15.0, seed=3)
    g = 29  # request frames 61..89: inside the gap, context and key excluded
    assert extra.images.shape == (2 * 2 * g, 3, 80, 128) and extra.joints_px.shape == (2 * 2 * g, 31, 2)
    # labels are the fill's joints seen by the scene's cameras: view-major, the unperturbed copy first
    _, joints = fk_motion(ch.skeleton, scene.fill.slice(61, 90))
    px, depth = scene.renders.cameras.project(joints)  # (V, g, J, 2), (V, g, J)
    labels = extra.joints_px.view(2, 2, g, 31, 2)  # (V, copies, g, J, 2)
    torch.testing.assert_close(labels[:, 0], px.float(), atol=1e-3, rtol=0)
    torch.testing.assert_close(extra.joints_depth.view(2, 2, g, 31)[:, 0], depth.float(), atol=1e-4, rtol=0)
    # the perturbed copy moves the joints (15° per axis on every rotation: many pixels), same seed same poses
    moved = (labels[:, 1] - labels[:, 0]).norm(dim=-1).mean()
    assert 1.0 < float(moved) < 40.0
    again = gap_poses(ch, scene.fill, scene.timeline, scene.renders.cameras, copies=2, noise_deg=15.0, seed=3)
    assert torch.equal(again.joints_px, extra.joints_px)
    # the character is drawn where its labels say: the image differs from the unperturbed copy's
    assert float((extra.images.view(2, 2, g, 3, 80, 128)[:, 1] - extra.images.view(2, 2, g, 3, 80, 128)[:, 0]).abs().amax()) > 0.1


def test_training_set_appends_extra_samples_at_weight_one(scene: OracleScene) -> None:
    ch = cached_load("131_01_30fps.bvh")
    extra = gap_poses(ch, scene.fill, scene.timeline, scene.renders.cameras, copies=1, noise_deg=0.0)
    base = training_set(scene.renders)
    images, joints, depths, weights = training_set(scene.renders, extra)
    n = base[0].shape[0]
    assert images.shape[0] == n + extra.images.shape[0] and torch.equal(images[:n], base[0])
    assert torch.equal(joints[n:], extra.joints_px) and torch.equal(depths[n:], extra.joints_depth)
    assert weights[n:].eq(1.0).all() and torch.equal(weights[:n], base[3])
