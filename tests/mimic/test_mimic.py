"""Motion video mimicking: pose recovery from exact targets, gap scheduling, exact keys, smoothing, losses."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from anymole.baseline import interpolate
from anymole.errors import InvalidInput, JobCancelled
from anymole.metrics import evaluate
from anymole.mimic import (
    MimicConfig,
    MimicTargets,
    character_mask,
    find_gaps,
    joint_loss,
    mimic,
    phases,
    smooth_keep_known,
)
from anymole.mimic.gauss_newton import solve_lm
from anymole.mimic.losses import mask_window, posed_silhouette_loss
from anymole.mimic.prior import prior_rotation_loss, rotation_prior
from anymole.render import Cameras, orbit_cameras, pose_motion, render_motion, soft_silhouette
from anymole.render.mesh import stick_figure
from anymole.rig import Character, Motion, Skeleton
from anymole.rig.fk import fk_motion, forward_kinematics
from anymole.rig.quat import axis_angle_to_unitquat, quat_conj, quat_mul, quat_normalize, unitquat_angle
from anymole.rig.skinning import linear_blend_skinning
from asset_files import cached_load
from device_waits import DeviceWaits


def walker() -> Skeleton:
    """A 13-joint biped whose limbs bend, so that every non-leaf rotation moves a joint below it."""
    names = ("hips", "spine", "chest", "head", "l_sh", "l_el", "l_wr", "r_sh", "r_el", "r_wr", "l_hip", "l_kn", "l_an")
    parents = (-1, 0, 1, 2, 2, 4, 5, 2, 7, 8, 0, 10, 11)
    offsets = torch.tensor([
        [0, 0.9, 0], [0, 0.25, 0], [0, 0.25, 0], [0, 0.25, 0.05],
        [0.2, 0.1, 0], [0.25, 0, 0.05], [0.22, 0, 0.05],
        [-0.2, 0.1, 0], [-0.25, 0, 0.05], [-0.22, 0, 0.05],
        [0.1, -0.05, 0], [0, -0.42, 0.04], [0, -0.42, -0.04],
    ])  # fmt: skip
    return Skeleton(names, parents, offsets, torch.tensor([[0.0, 0.0, 0.0, 1.0]] * 13))


def _angles(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Degrees between ``(..., 4)`` rotations."""
    return torch.rad2deg(unitquat_angle(quat_mul(quat_conj(a), b)))


def _targets(ch: Character, motion: Motion, cams: Cameras, silhouette: bool) -> MimicTargets:
    r = render_motion(ch, motion, cameras=cams)
    assert r.joints_px is not None and r.joints_depth is not None
    mask = torch.from_numpy(r.mask[0]).float() if silhouette else None
    return MimicTargets(r.joints_px[0], r.joints_depth[0], mask)


def _perturbed_scene() -> tuple[Skeleton, Character, Motion, Motion, list[int], Cameras]:
    """Three frames of the walker, the middle one started 20° off on every joint with a bone below it
    (about an axis across that bone, so that the joints below move)."""
    sk = walker()
    ch = Character("walker", sk)
    g = torch.Generator().manual_seed(0)
    aa = torch.zeros(3, 13, 3)
    aa[:, [4, 7], 2] = torch.tensor([-1.0, 1.0])  # arms down
    aa[:, [5, 8], 1] = torch.tensor([0.6, -0.6])  # elbows bent
    aa[:, 11, 0] = 0.5  # knee bent
    aa += 0.05 * torch.randn(3, 13, 3, generator=g)
    root = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.02], [0.0, 0.0, 0.04]])
    truth = Motion(30.0, axis_angle_to_unitquat(aa), root)
    perturbed = [1, 2, 4, 5, 7, 8, 10, 11]
    across = torch.cross(sk.offsets[[j + 1 for j in perturbed]], torch.randn(8, 3, generator=g), dim=-1)
    turn = axis_angle_to_unitquat(torch.nn.functional.normalize(across, dim=-1) * math.radians(20))
    rot = truth.rotations.clone()
    rot[1, perturbed] = quat_normalize(quat_mul(rot[1, perturbed], turn))
    joints, verts, _ = pose_motion(ch, truth)
    cams = orbit_cameras(torch.cat((joints, verts), 1), 1, width=128, height=80, azimuth_deg=30.0)
    return sk, ch, truth, Motion(30.0, rot, root), perturbed, cams


@pytest.mark.parametrize("silhouette", [False, True])
def test_mimicking_recovers_a_perturbed_pose(silhouette: bool) -> None:
    sk, ch, truth, init, perturbed, cams = _perturbed_scene()
    known = torch.tensor([True, False, True])
    before = _angles(init.rotations[1, perturbed], truth.rotations[1, perturbed])
    torch.testing.assert_close(before, torch.full((8,), 20.0), atol=1e-3, rtol=0)
    targets = _targets(ch, truth, cams, silhouette)
    # the rotation regulariser at 1/100 of the reference's (see MimicConfig.w_rot), no smoothing: the solve alone
    cfg = MimicConfig.quality(w_rot=300.0, lr=1e-2, smooth_sigma=0.0)
    out = mimic(sk, cams, init, known, targets, cfg)
    after = _angles(out.rotations[1, perturbed], truth.rotations[1, perturbed])
    # measured 3.3° mean, 5.5° worst (the rest is twist that no joint position shows), joints within 1 cm
    assert float(after.mean()) < 4.5 and float(after.max()) < 8.0, after
    _, gp = fk_motion(sk, out)
    _, tp = fk_motion(sk, truth)
    assert float((gp[1] - tp[1]).norm(dim=-1).max()) < 0.015  # m
    assert torch.equal(out.rotations[known], init.rotations[known])


def test_the_reference_rotation_weight_holds_a_solve_near_its_start() -> None:
    """At the reference's weights a 20° start error mostly stays: the regulariser outweighs the joints there."""
    sk, ch, truth, init, perturbed, cams = _perturbed_scene()
    reference = MimicConfig(lr=1e-2, smooth_sigma=0.0, silhouette_pixels=64 * 40)  # the class defaults: the reference's
    out = mimic(sk, cams, init, torch.tensor([True, False, True]), _targets(ch, truth, cams, False), reference)
    after = float(_angles(out.rotations[1, perturbed], truth.rotations[1, perturbed]).mean())
    assert 10.0 < after < 18.0  # measured 14.7°


def test_the_presets_solve_a_perturbed_pose_where_the_reference_holds_it() -> None:
    """The presets' Levenberg–Marquardt solve reaches the pose that the reference's 100 Adam steps leave 14.7° off."""
    sk, ch, truth, init, perturbed, cams = _perturbed_scene()
    out = mimic(sk, cams, init, torch.tensor([True, False, True]), _targets(ch, truth, cams, False),
                MimicConfig.quality(smooth_sigma=0.0))  # fmt: skip
    after = _angles(out.rotations[1, perturbed], truth.rotations[1, perturbed])
    assert float(after.mean()) < 4.5, after  # measured 3.0° (the rest is twist that no joint position shows)


def test_the_draft_preset_recovers_a_walk_gap_from_exact_joints() -> None:
    """The CMU walk's 1 s gap (frames 60-90) from exact 2D joints and depths, with the context's rotation prior:
    global HL2Q(1/2) at most 0.1 of the SLERP fill's (measured 0.078; the reference's weights and solver at the
    draft's 40 steps: 0.33; the presets with the reference's root pull 0.20, without the context's prior 0.124)."""
    ch = cached_load("131_01_30fps.bvh")
    full = ch.motions["131_01_30fps"]
    clip = full.slice(60, 91)
    known = torch.zeros(31, dtype=torch.bool)
    known[[0, 30]] = True
    init = interpolate(clip, known)
    joints, verts, _ = pose_motion(ch, clip)
    cams = orbit_cameras(torch.cat((joints, verts), 1), 1, width=128, height=80)
    out = mimic(ch.skeleton, cams, init, known, _targets(ch, clip, cams, False), MimicConfig.draft(),
                prior=rotation_prior(full.rotations[:61], MimicConfig.draft().prior_floor))  # fmt: skip
    score = {name: evaluate(ch.skeleton, m, clip, slice(1, 30))["hl2q_1_2"] for name, m in (("slerp", init), ("mimic", out))}
    assert score["mimic"] < 0.1 * score["slerp"], score
    assert torch.equal(out.rotations[known], clip.rotations[known])


def test_mimicking_a_walk_gap_beats_its_slerp_fill() -> None:
    """The bundled CMU walk, a 1 s gap: from the SLERP fill and exact targets, the joints land within a few cm."""
    ch = cached_load("131_01_30fps.bvh")
    clip = ch.motions["131_01_30fps"].slice(60, 91)
    known = torch.zeros(31, dtype=torch.bool)
    known[[0, 15, 30]] = True  # two gaps of different lengths (14 frames each), batched together
    init = interpolate(clip, known)
    joints, verts, _ = pose_motion(ch, clip)
    cams = orbit_cameras(torch.cat((joints, verts), 1), 1, width=128, height=80)
    fractions: list[float] = []
    out = mimic(ch.skeleton, cams, init, known, _targets(ch, clip, cams, False), MimicConfig.draft(),
                on_step=lambda stage, f: fractions.append(f))  # fmt: skip
    # 7 phases from both keys toward the middle, a report after each of the draft's 10 iterations of each
    assert fractions == pytest.approx([k / 70 for k in range(1, 71)], rel=0, abs=1e-12)
    _, tp = fk_motion(ch.skeleton, clip)
    err = {name: (fk_motion(ch.skeleton, m)[1] - tp).norm(dim=-1)[~known].mean() for name, m in (("slerp", init), ("mimic", out))}
    # measured: 0.084 m for the SLERP fill, 0.023 m after mimicking (the draft preset)
    assert float(err["mimic"]) < 0.4 * float(err["slerp"]) and float(err["mimic"]) < 0.035
    assert torch.equal(out.rotations[known], clip.rotations[known])
    assert torch.equal(out.root_translation[known], clip.root_translation[known])
    assert torch.allclose(out.rotations.norm(dim=-1), torch.ones(31, 31), atol=1e-5)


def test_gaps_and_phases_fill_from_both_keys() -> None:
    known = torch.tensor([1, 0, 0, 0, 0, 1, 1, 0, 0, 1], dtype=torch.bool)
    gaps = find_gaps(known)
    assert gaps == [(0, 5), (6, 9)]
    plan = phases(gaps)
    rows = [list(zip(p.frames.tolist(), p.prev.tolist(), p.other.tolist(), strict=True)) for p in plan]
    assert rows == [[(1, 0, -1), (4, 5, -1), (7, 6, -1), (8, 9, -1)], [(2, 1, -1), (3, 4, -1)]]
    odd = phases([(0, 4)])
    assert [p.frames.tolist() for p in odd] == [[1, 3], [2]] and odd[1].other.tolist() == [3]
    with pytest.raises(InvalidInput, match=r"^known:"):
        find_gaps(torch.tensor([False, True, True]))


@given(st.lists(st.booleans(), min_size=1, max_size=30), st.integers(0, 2**16))
def test_every_unknown_frame_is_solved_once_after_its_neighbour(inner: list[bool], seed: int) -> None:
    known = torch.tensor([True, *inner, True])
    solved = known.clone()
    for p in phases(find_gaps(known)):
        assert bool(solved[p.prev].all()) and not bool(solved[p.frames].any())
        assert bool(solved[p.other[p.other >= 0]].all())
        solved[p.frames] = True
    assert bool(solved.all())


@given(st.integers(0, 2**16), st.sampled_from([0.5, 1.0, 2.0]))
def test_smoothing_keeps_known_frames_and_ignores_quaternion_signs(seed: int, sigma: float) -> None:
    g = torch.Generator().manual_seed(seed)
    f = 12
    q = quat_normalize(torch.tensor([0.0, 0.0, 0.0, 1.0]) + 0.2 * torch.randn(f, 3, 4, generator=g, dtype=torch.float64))
    root = torch.randn(f, 3, generator=g, dtype=torch.float64)
    known = torch.zeros(f, dtype=torch.bool)
    known[[0, 5, 11]] = True
    flipped = torch.where(torch.rand(f, 3, 1, generator=g) < 0.5, -q, q)
    a, ra = smooth_keep_known(q, root, known, sigma)
    b, rb = smooth_keep_known(flipped, root, known, sigma)
    assert torch.equal(b[known], flipped[known]) and torch.equal(rb[known], root[known])  # bit for bit
    # flipping signs of the input changes nothing but the known frames' own signs
    torch.testing.assert_close(_angles(a[~known], b[~known]), torch.zeros_like(a[~known][..., 0]), atol=1e-4, rtol=0)
    torch.testing.assert_close(ra, rb)
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(f, 3, dtype=torch.float64))
    # a filter of a constant is the constant
    c, rc = smooth_keep_known(q[:1].expand(f, 3, 4), root[:1].expand(f, 3), known, sigma)
    torch.testing.assert_close(c, q[:1].expand(f, 3, 4))
    torch.testing.assert_close(rc, root[:1].expand(f, 3))


def test_joint_loss_is_in_reference_pixels() -> None:
    px = torch.zeros(1, 2, 2)
    d = torch.full((1, 2), 2.0)
    # 1 px off in x on an image 160 px tall is 2 px of a 320 px one: (2²) / (2 joints · 3 components)
    moved = px.clone()
    moved[0, 0, 0] = 1.0
    assert float(joint_loss(moved, d, px, d, focal=100.0, height=160)) == pytest.approx(4.0 / 6)
    # depth: 0.02 m at 2 m with focal 100 px is 1 px (2 reference px), like the lateral move
    deeper = d.clone()
    deeper[0, 1] = 2.02
    assert float(joint_loss(px, deeper, px, d, focal=100.0, height=160)) == pytest.approx(4.0 / 6, rel=2e-2)
    assert float(joint_loss(px, deeper, px, d, focal=100.0, height=160, w_depth=0.0)) == 0.0


def test_character_mask_separates_the_known_background() -> None:
    bg = torch.rand(3, 8, 10)
    frames = bg.expand(2, 3, 8, 10).clone()
    frames[0, :, 2:4, 3:6] = 1 - bg[:, 2:4, 3:6].round()  # a character: at least 0.5 off the background
    m = character_mask(frames, bg)
    assert m.shape == (2, 8, 10)
    assert float(m[0, 2:4, 3:6].min()) == 1.0 and float(m[0].sum()) == 6.0 and float(m[1].sum()) == 0.0
    with pytest.raises(InvalidInput, match=r"^background:"):
        character_mask(frames, bg[:, :4])


def test_the_context_prior_holds_still_joints_and_frees_the_axes_that_move() -> None:
    """A joint the context never turns weighs 1/floor of an average one; a joint turning about x only is free about
    x and held about y and z; the loss is the reference's for P = I (small angles)."""
    f = 40
    t = torch.linspace(0, 3, f, dtype=torch.float64)
    aa = torch.zeros(f, 3, 3, dtype=torch.float64)
    aa[:, 1, 0] = 0.6 * torch.sin(t)  # joint 1 swings about x
    aa[:, 2] = 0.3 * torch.stack((torch.sin(1.3 * t), torch.cos(0.7 * t), torch.sin(0.5 * t)), -1)  # joint 2: all axes
    prior = rotation_prior(axis_angle_to_unitquat(aa), floor=0.01)
    assert prior.shape == (3, 3, 3)
    torch.testing.assert_close(prior, prior.transpose(-1, -2))
    assert bool((torch.linalg.eigvalsh(prior) > 0).all())
    torch.testing.assert_close(torch.diagonal(prior[0]), torch.full((3,), 100.0, dtype=torch.float64))  # still: 1/floor
    d1 = torch.diagonal(prior[1])
    assert float(d1[0]) < 1.0 and float(d1[1]) == pytest.approx(100.0) and float(d1[2]) == pytest.approx(100.0)
    # P = I: the reference's quaternion MSE to second order
    q0 = axis_angle_to_unitquat(0.3 * torch.randn(2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    q = quat_mul(q0, axis_angle_to_unitquat(torch.full((2, 3, 3), 0.01, dtype=torch.float64)))
    eye = torch.eye(3, dtype=torch.float64).expand(3, 3, 3)
    from anymole.mimic import rotation_loss

    torch.testing.assert_close(prior_rotation_loss(q, q0, eye), rotation_loss(q, q0), rtol=1e-4, atol=0)
    with pytest.raises(InvalidInput, match=r"^floor:"):
        rotation_prior(axis_angle_to_unitquat(aa), floor=0.0)


def test_a_joint_of_zero_confidence_does_not_pull_the_solve() -> None:
    """``MimicTargets.confidence``: a wrist target 15 px off turns the elbow when it counts, and at weight 0 the
    solve is the same as with the true wrist at weight 0."""
    sk, ch, truth, init, _, cams = _perturbed_scene()
    known = torch.tensor([True, False, True])
    exact = _targets(ch, truth, cams, False)
    wrong = exact.joints_px.clone()
    wrong[1, 6] += torch.tensor([15.0, 0.0])  # the left wrist
    conf = torch.ones(13, 2)
    conf[6] = 0.0
    cfg = MimicConfig.quality(smooth_sigma=0.0)

    def solve(joints: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        return mimic(sk, cams, init, known, MimicTargets(joints, exact.depth, None, c), cfg).rotations[1]

    assert float(_angles(solve(wrong, None)[5], solve(exact.joints_px, None)[5])) > 5.0
    torch.testing.assert_close(solve(wrong, conf), solve(exact.joints_px, conf), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "device",
    ["meta", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))],
)
def test_the_context_prior_and_a_levenberg_marquardt_solve_stay_on_their_inputs_device(device: str) -> None:
    """Every tensor the prior and the solver make is made on their inputs' device: on ``meta`` a CPU tensor
    meeting a meta one raises, so this checks the device handling without a GPU (a CUDA job built the prior's
    identity quaternion and eye on the CPU before)."""
    sk, ch, truth, init, _, cams = _perturbed_scene()
    exact = _targets(ch, truth, cams, False)
    prior = rotation_prior(truth.rotations.to(device), floor=0.01)
    assert prior.device.type == device and prior.shape == (13, 3, 3)
    q0, r0 = init.rotations[1:2].to(device), init.root_translation[1:2].to(device)
    q, r = solve_lm(q0, r0, r0, sk.to(device), sk.offsets.to(device).expand(1, -1, -1), cams.to(device),
                    exact.joints_px[1:2].to(device), exact.depth[1:2].to(device), MimicConfig.quality(steps=2), prior,
                    fill=q0, confidence=torch.ones(13, 2, device=device))  # fmt: skip
    assert (q.device.type, r.device.type) == (device, device) and q.shape == (1, 13, 4) and r.shape == (1, 3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_context_that_never_moves_gives_the_isotropic_regulariser(dtype: torch.dtype) -> None:
    """A context held exactly still (or still up to rounding) says nothing about how the character moves: its prior
    is the identity (the reference's regulariser, at the presets' weights), as for a context that moves every joint
    alike, not ``1 / floor`` on every joint (before: 100 I, which held a 20° start error at 15°, as the reference's
    weights do, where the same solve without a prior gets within 3°)."""
    pose = axis_angle_to_unitquat(0.4 * torch.randn(1, 13, 3, generator=torch.Generator().manual_seed(2))).to(dtype)
    still = rotation_prior(pose.expand(20, -1, -1), floor=0.01)
    assert still.dtype == dtype
    torch.testing.assert_close(still, torch.eye(3, dtype=dtype).expand(13, 3, 3), rtol=0, atol=0)
    sk, ch, truth, init, perturbed, cams = _perturbed_scene()
    known, exact = torch.tensor([True, False, True]), _targets(ch, truth, cams, False)
    cfg = MimicConfig.quality(smooth_sigma=0.0)
    out = mimic(sk, cams, init, known, exact, cfg, prior=rotation_prior(truth.rotations[[0, 0, 0]], cfg.prior_floor))
    assert float(_angles(out.rotations[1, perturbed], truth.rotations[1, perturbed]).mean()) < 4.5


@pytest.mark.parametrize("shape", [(12, 2), (13,), (3, 13, 2), (13, 1)])
def test_a_confidence_of_the_wrong_shape_names_the_field(shape: tuple[int, ...]) -> None:
    """``MimicTargets.confidence`` is one ``(J, 2)`` weight per joint: another shape is refused up front, naming the
    field, rather than failing to broadcast or to index inside the solver."""
    sk, ch, truth, init, _, cams = _perturbed_scene()
    exact = _targets(ch, truth, cams, False)
    bad = MimicTargets(exact.joints_px, exact.depth, None, torch.ones(shape))
    with pytest.raises(InvalidInput, match=r"^targets\.confidence: must have shape \(13, 2\)"):
        mimic(sk, cams, init, torch.tensor([True, False, True]), bad, MimicConfig.draft(smooth_sigma=0.0))


def _solve_frame(cfg: MimicConfig) -> tuple[torch.Tensor, torch.Tensor, Motion, Skeleton]:
    """``solve_lm`` on the middle frame of the perturbed scene, from exact targets: ``(quats, root, truth, rig)``."""
    sk, ch, truth, init, _, cams = _perturbed_scene()
    exact = _targets(ch, truth, cams, False)
    q0, r0 = init.rotations[1:2], init.root_translation[1:2]
    q, r = solve_lm(q0, r0, r0, sk, sk.offsets.expand(1, -1, -1), cams, exact.joints_px[1:2], exact.depth[1:2], cfg,
                    None, fill=q0)  # fmt: skip
    return q, r, truth, sk


def test_the_levenberg_marquardt_loop_solves_without_the_host_checked_solve(monkeypatch: pytest.MonkeyPatch) -> None:
    """``torch.linalg.solve`` checks every system for singularity on the host (a CUDA sync each iteration): the
    loop uses ``solve_ex`` and gets what ``solve`` gave on the perturbed pose."""
    cfg = MimicConfig.quality(smooth_sigma=0.0)

    def checked(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.linalg.solve(a, b), torch.zeros(a.shape[:-2], dtype=torch.int32)

    with monkeypatch.context() as m:
        m.setattr(torch.linalg, "solve_ex", checked)
        q_before, r_before, _, _ = _solve_frame(cfg)

    def host_checked(*_: object) -> torch.Tensor:
        raise AssertionError("torch.linalg.solve syncs on the host")

    monkeypatch.setattr(torch.linalg, "solve", host_checked)
    q, r, _, _ = _solve_frame(cfg)
    torch.testing.assert_close(q, q_before, atol=1e-6, rtol=0)
    torch.testing.assert_close(r, r_before, atol=1e-6, rtol=0)


def test_a_singular_step_is_refused_and_the_solve_goes_on() -> None:
    """With no rotation regulariser nothing pulls a leaf joint's rotation (it moves no joint), so at a vanishing
    damping the normal equations are exactly singular: that step is refused, the damping raised, and the solve
    still moves toward the pose (before: ``solve`` raised for the whole batch)."""
    cfg = MimicConfig.quality(smooth_sigma=0.0, w_rot=0.0, w_fill=0.0, lm_damping=1e-40)
    q, r, truth, sk = _solve_frame(cfg)
    assert bool(torch.isfinite(q).all()) and bool(torch.isfinite(r).all())
    _, gp = forward_kinematics(q, sk.offsets, sk.parents, r)
    _, tp = fk_motion(sk, truth)
    # the start is 15 cm off on average; measured 1.2 cm after (unregularised, from a damping of 1e-9)
    assert float((gp[0] - tp[1]).norm(dim=-1).mean()) < 0.03  # m


@pytest.mark.parametrize("solver", ["lm", "adam"])
def test_a_cancel_stops_mimicking_within_one_iteration(monkeypatch: pytest.MonkeyPatch, solver: str) -> None:
    """``on_step`` is called after every iteration of a solve, so a cancel (a raising ``on_step``, as the job's
    `ProgressReporter` raises `JobCancelled`) stops the solve after the iteration it arrived in, not at the end of
    the phase; the fractions reported before it grow within the phase."""
    sk, ch, truth, init, _, cams = _perturbed_scene()
    iterations = 0
    if solver == "lm":
        solve_ex = torch.linalg.solve_ex

        def counted(*a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            nonlocal iterations
            iterations += 1
            return solve_ex(*a)

        monkeypatch.setattr(torch.linalg, "solve_ex", counted)
    else:
        step = torch.optim.Adam.step

        def counted_step(self: torch.optim.Adam, *a: object) -> object:
            nonlocal iterations
            iterations += 1
            return step(self, *a)

        monkeypatch.setattr(torch.optim.Adam, "step", counted_step)
    fractions: list[float] = []

    def on_step(stage: str, fraction: float, *_: object, **__: object) -> None:
        fractions.append(fraction)
        if len(fractions) == 3:
            raise JobCancelled("cancelled by a client")

    cfg = MimicConfig.quality(smooth_sigma=0.0, solver=solver, steps=12)
    with pytest.raises(JobCancelled):
        mimic(sk, cams, init, torch.tensor([True, False, True]), _targets(ch, truth, cams, False), cfg, on_step)
    assert iterations == 3
    assert fractions == pytest.approx([1 / 12, 2 / 12, 3 / 12])  # one phase: the middle frame


def test_the_posed_silhouette_loss_is_zero_on_its_own_silhouette_and_grows_away_from_the_pose() -> None:
    """`posed_silhouette_loss`, the one skinning + soft silhouette + MSE that both solvers call: 0 against the
    pose's own soft silhouette, lower at the true pose than at the perturbed start against the rendered mask, and
    differentiable in the pose."""
    sk, ch, truth, init, _, cams = _perturbed_scene()
    small = cams.resized(64, 40)
    mask = torch.nn.functional.interpolate(_targets(ch, truth, cams, True).mask[1:2, None], size=(40, 64), mode="area")[:, 0]
    body = stick_figure(sk, segments=6)
    gq, gp = forward_kinematics(truth.rotations[1:2], sk.offsets, sk.parents, truth.root_translation[1:2])
    verts = linear_blend_skinning(body.vertices, body.joint_indices, body.joint_weights, body.inverse_bind, gq, gp)
    own = soft_silhouette(verts, body.faces, small, sigma=1.0)[0]
    assert float(posed_silhouette_loss(body, gq, gp, small, own, 1.0)) == 0.0
    root = init.root_translation[1:2].clone().requires_grad_(True)
    gq0, gp0 = forward_kinematics(init.rotations[1:2], sk.offsets, sk.parents, root)
    start = posed_silhouette_loss(body, gq0, gp0, small, mask, 1.0)
    assert start.shape == (1,)
    assert float(posed_silhouette_loss(body, gq, gp, small, mask, 1.0)) < 0.7 * float(start)
    (grad,) = torch.autograd.grad(start.sum(), root)
    assert bool(torch.isfinite(grad).all()) and float(grad.norm()) > 0


def test_the_silhouette_term_drawn_in_the_masks_window_equals_the_whole_images() -> None:
    """`mask_window` bounds every frame's mask with its margin, and `posed_silhouette_loss` over that window (the
    solvers' case) equals the whole image's loss, value and gradient, while drawing a fraction of the pixels."""
    sk, ch, truth, init, _, cams = _perturbed_scene()
    small = cams.resized(64, 40)
    masks = torch.nn.functional.interpolate(_targets(ch, truth, cams, True).mask[:, None], size=(40, 64), mode="area")[:, 0]
    window = mask_window(masks, margin=0.25)
    assert window is not None
    x0, y0, w, h = window
    cover = (masks > 0.5).any(0)
    rows, cols = cover.any(1).nonzero().flatten(), cover.any(0).nonzero().flatten()
    grow = max(2, math.ceil(0.25 * max(int(rows[-1] - rows[0]) + 1, int(cols[-1] - cols[0]) + 1)))
    assert (x0, y0) == (max(0, int(cols[0]) - grow), max(0, int(rows[0]) - grow))
    assert (x0 + w, y0 + h) == (min(64, int(cols[-1]) + 1 + grow), min(40, int(rows[-1]) + 1 + grow))
    assert w * h < 0.6 * 64 * 40
    assert mask_window(torch.zeros(2, 40, 64)) is None  # nothing to bound: the caller draws the whole image
    body = stick_figure(sk, segments=6)
    root = init.root_translation[1:2].clone().requires_grad_(True)
    gq, gp = forward_kinematics(init.rotations[1:2], sk.offsets, sk.parents, root)
    whole = posed_silhouette_loss(body, gq, gp, small, masks[1:2], 1.0)
    part = posed_silhouette_loss(body, gq, gp, small, masks[1:2, y0 : y0 + h, x0 : x0 + w], 1.0, window=window)
    assert float(whole) > 0
    torch.testing.assert_close(part, whole, rtol=1e-5, atol=0)
    (g_whole,) = torch.autograd.grad(whole.sum(), root, retain_graph=True)
    (g_part,) = torch.autograd.grad(part.sum(), root)
    torch.testing.assert_close(g_part, g_whole, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("solver", ["lm", "adam"])
def test_a_silhouette_solve_waits_for_the_device_only_for_its_outlines_edge_count(solver: str) -> None:
    """Per iteration of a solve with the silhouette term (the fast and quality presets), the host reads one
    value per soft silhouette (its outline's edge count: two a Levenberg-Marquardt iteration, its gradient's and
    its trial step's; one an Adam step) and nothing else of the silhouette's: the mesh's edge table (a data-sized
    `unique` and an index read) is built once a fit, and no tensor is made from host data."""
    sk, ch, truth, init, _, cams = _perturbed_scene()
    targets = _targets(ch, truth, cams, True)
    counts = []
    for steps in (2, 4):
        with DeviceWaits() as waits:
            mimic(sk, cams, init, torch.tensor([True, False, True]), targets,
                  MimicConfig.quality(smooth_sigma=0.0, solver=solver, steps=steps))  # fmt: skip
        counts.append(waits.counts)
    per_step = {kind: (counts[1][kind] - counts[0][kind]) / 2 for kind in ("read", "shape", "upload")}
    # Adam on the CPU reads its step counts (2 parameters), host tensors whatever the device
    expected_reads = 2 if solver == "lm" else 1 + 2
    assert per_step == {"read": expected_reads, "shape": 0, "upload": 0}


def test_the_presets_draw_the_silhouette_at_a_pixel_budget_whatever_the_frames_size() -> None:
    """`silhouette_pixels` is a budget, not a fraction: a 512 × 320 frame and a 128 × 80 one are both drawn at
    128 × 80 px by `draft` (the soft render costs pixels × triangles), and a budget under 8 × 8 is refused."""
    sk, ch, truth, init, _, cams = _perturbed_scene()
    sizes = []
    for w, h in ((128, 80), (512, 320)):
        cam = cams.resized(w, h)
        targets = _targets(ch, truth, cam, True)
        drawn: list[tuple[int, int]] = []

        def spy(*args: object, drawn: list[tuple[int, int]] = drawn, **kwargs: object) -> torch.Tensor:
            camera = args[2]
            assert isinstance(camera, Cameras)
            drawn.append((camera.width, camera.height))
            return soft_silhouette(*args, **kwargs)  # type: ignore[arg-type]

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("anymole.mimic.losses.soft_silhouette", spy)
            mimic(sk, cam, init, torch.tensor([True, False, True]), targets, MimicConfig.draft(steps=1))
        sizes.append(set(drawn))
    assert sizes == [{(128, 80)}, {(128, 80)}]
    assert MimicConfig.draft().w_silhouette > 0 and MimicConfig.quality().silhouette_pixels == 256 * 160
    with pytest.raises(InvalidInput, match=r"^silhouette_pixels:"):
        MimicConfig(silhouette_pixels=63)
