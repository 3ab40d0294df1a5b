"""Extra estimator samples from the gaps' first guess (`gap_poses`, issue 14.1) and targets corrected by the
estimator's own error on a render of it (`relative_targets`, issue 14.2), `anymole.pipeline.fromvideo`."""

from __future__ import annotations

import math

import pytest
import torch

from anymole.estimator import EstimatorConfig, SceneEstimator
from anymole.mimic import MimicConfig, MimicTargets
from anymole.pipeline.fromvideo import gap_poses, train_estimator, training_set
from anymole.pipeline.oracle import OracleScene, oracle_scene
from anymole.rig.fk import fk_motion
from anymole.video.sampler import RENDER_FPS
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
    images, joints, depths, weights, masks = training_set(scene.renders, extra)
    n = base[0].shape[0]
    assert images.shape[0] == n + extra.images.shape[0] and torch.equal(images[:n], base[0])
    assert torch.equal(joints[n:], extra.joints_px) and torch.equal(depths[n:], extra.joints_depth)
    assert weights[n:].eq(1.0).all() and torch.equal(weights[:n], base[3])
    assert torch.equal(masks[n:], extra.masks) and torch.equal(masks[:n], base[4]) and masks.shape == images[:, 0].shape


@pytest.fixture(scope="module")
def estimator(scene: OracleScene) -> SceneEstimator:
    return train_estimator(scene.renders, EstimatorConfig.draft(steps=3, batch_size=4))


def _fill_joints(scene: OracleScene) -> torch.Tensor:
    """``(F, J, 2)`` the fill's joints at the video's frames, seen from view 0."""
    tl = scene.timeline
    pos = (tl.context_frames - 1) + (scene.render_frames - tl.render_context_end).double() / RENDER_FPS * tl.fps
    _, joints = fk_motion(cached_load("131_01_30fps.bvh").skeleton, scene.fill.sample(pos, RENDER_FPS / 2))
    return scene.renders.cameras.select(0).project(joints)[0][0].float()


def test_relative_targets_cancel_the_estimators_error_where_the_video_shows_the_fill(
    scene: OracleScene, estimator: SceneEstimator
) -> None:
    ch = cached_load("131_01_30fps.bvh")
    f, j = scene.joints_px.shape[:2]
    zero = MimicTargets(torch.zeros(f, j, 2), torch.zeros(f, j), None)
    # trust without limit: every target gains the estimator's error on the fill's render, P_fill − E(fill)
    err = scene.relative(estimator, zero, ch, MimicConfig(fill_trust_px=1e12, fill_deadband_px=0.0)).joints_px
    reading = _fill_joints(scene) - err  # E(fill): what the estimator reads on the fill's render
    assert float((reading - _fill_joints(scene)).norm(dim=-1).mean()) > 1.0  # a 3-step estimator is far off
    # a video that shows the fill: the estimator reads the same, and the corrected targets are the fill's joints
    same = scene.relative(estimator, MimicTargets(reading, torch.zeros(f, j), None), ch, MimicConfig(fill_deadband_px=0.0))
    torch.testing.assert_close(same.joints_px, _fill_joints(scene), atol=1e-3, rtol=0)
    # a reading that moved less than the dead band (0.3 px of this 80-px image: 1.2 px of a 320-px one < 2 px)
    # is noise: its relative target is the fill's joint; without the dead band the move passes through.
    # Either is then blended with the plain reading at exp(-(1.2 / 6)^2).
    nudged = reading + torch.tensor([0.3, 0.0])
    w = math.exp(-((0.3 * 4 / 6.0) ** 2))
    for band, moved in ((2.0, 0.0), (0.0, 0.3)):
        out = scene.relative(estimator, MimicTargets(nudged, torch.zeros(f, j), None), ch, MimicConfig(fill_deadband_px=band))
        want = w * (_fill_joints(scene) + torch.tensor([moved, 0.0])) + (1 - w) * nudged
        torch.testing.assert_close(out.joints_px, want, atol=2e-3, rtol=0)
    # a video far from the fill (100 px away, ~400 px of a 320-px image): the plain estimate stands
    far = MimicTargets(reading + 100.0, torch.ones(f, j), None)
    out = scene.relative(estimator, far, ch, MimicConfig())
    torch.testing.assert_close(out.joints_px, far.joints_px)
    torch.testing.assert_close(out.depth, far.depth)
    assert scene.relative(estimator, far, ch, MimicConfig(fill_trust_px=0.0)) is far  # 0: off


def test_relative_targets_weigh_joints_by_the_estimators_miss_on_the_fill(
    scene: OracleScene, estimator: SceneEstimator
) -> None:
    """``confidence_px``: a joint the estimator misses by ``e`` (px of a 320-px image) on the fill's renders weighs
    ``1 / (1 + (e / confidence_px)²)`` in 2D (its miss on the frames next to a key: inside the gap the fill's poses
    are ones the estimator never saw) and ``exp(−(e / confidence_px)²)`` in depth (its miss on every frame, in pixels
    at each frame's mean depth); 0 leaves it out. The depth's Gaussian drops a depth missed
    by several scales, where the 2D's inverse variance would keep (1 + m²)⁻¹ of it (CMU: 0.92x -> 0.63x interp)."""
    ch = cached_load("131_01_30fps.bvh")
    f, j = scene.joints_px.shape[:2]
    zero = MimicTargets(torch.zeros(f, j, 2), torch.zeros(f, j), None)
    unlimited = MimicConfig(fill_trust_px=1e12, fill_deadband_px=0.0, confidence_px=4.0)
    out = scene.relative(estimator, zero, ch, unlimited)
    assert out.confidence is not None and out.confidence.shape == (j, 2)
    err = out.joints_px.norm(dim=-1) * (320 / 80)  # (F, J) the targets gained exactly the error on the fill
    # 2D: the miss on the frames next to the key and the context's end only (the fill's realistic poses)
    near = torch.zeros(f, dtype=torch.bool)
    near[[1, f - 2]] = True
    assert f == 16 and not torch.allclose(err[near].mean(0), err.mean(0), atol=0.5, rtol=0)
    torch.testing.assert_close(out.confidence[:, 0], 1 / (1 + (err[near].mean(0) / 4.0) ** 2), atol=1e-5, rtol=0)
    # the depth targets gained the depth error on the fill (m); in pixels at the fill's mean depth of each frame
    cam = scene.renders.cameras.select(0)
    fill = scene.fill.sample(scene.timeline.request_positions(scene.render_frames), RENDER_FPS / 2)
    _, joints = fk_motion(ch.skeleton, fill)
    _, depth = cam.project(joints)  # (1, F, J)
    z_bar = depth[0].mean(-1, keepdim=True).float()
    miss_z = (out.depth.abs() * cam.focal / z_bar).mean(0) * (320 / 80)
    assert float(miss_z.amax()) > 8.0  # a 3-step estimator misses depth by several scales: the forms differ
    torch.testing.assert_close(out.confidence[:, 1], torch.exp(-((miss_z / 4.0) ** 2)), atol=1e-4, rtol=0)
    assert bool((out.confidence >= 0).all() and (out.confidence <= 1).all())
    assert scene.relative(estimator, zero, ch, MimicConfig(fill_trust_px=1e12)).confidence is None


def test_the_joints_confidence_holds_without_the_fills_correction(scene: OracleScene, estimator: SceneEstimator) -> None:
    """``fill_trust_px=0`` turns the correction off but not ``confidence_px``: the targets stay as estimated and the
    confidence is the one the correction's run gives (before: the early return for trust 0 dropped it, so such a
    config weighed every joint 1)."""
    ch = cached_load("131_01_30fps.bvh")
    f, j = scene.joints_px.shape[:2]
    targets = MimicTargets(torch.rand(f, j, 2, generator=torch.Generator().manual_seed(3)) * 80, torch.full((f, j), 3.0))
    both = scene.relative(estimator, targets, ch, MimicConfig(confidence_px=4.0))
    alone = scene.relative(estimator, targets, ch, MimicConfig(fill_trust_px=0.0, confidence_px=4.0))
    assert both.confidence is not None and alone.confidence is not None
    torch.testing.assert_close(alone.confidence, both.confidence, rtol=0, atol=0)
    assert torch.equal(alone.joints_px, targets.joints_px) and torch.equal(alone.depth, targets.depth)
    assert not torch.equal(both.joints_px, targets.joints_px)  # the correction does act where it is on
