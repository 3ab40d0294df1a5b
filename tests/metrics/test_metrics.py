"""Metrics on hand-computed cases: zero error, sign flips, 90° errors, HL2Q joint subsets, L2P, NPSS."""

from __future__ import annotations

import math

import pytest
import torch

from anymole.metrics import HL2Q_THRESHOLDS, evaluate, hl2q, hl2q_joints, l2p, l2q, npss
from anymole.rig import Motion, Skeleton
from anymole.rig.quat import axis_angle_to_unitquat, quat_identity, quat_normalize

D90 = 2 - math.sqrt(2)  # squared quaternion distance of a 90° rotation from the identity: 4 sin²(22.5°)
M90 = D90 / 4  # per_joint_mse of one 90° joint: the mean over its 4 components, sin²(22.5°)
Q90X = axis_angle_to_unitquat(torch.tensor([math.pi / 2, 0, 0], dtype=torch.float64))


def _random_quats(*shape: int, seed: int = 0) -> torch.Tensor:
    return quat_normalize(torch.randn(*shape, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))


def test_zero_error_and_sign_flips_cost_nothing() -> None:
    gt = _random_quats(2, 5, 4)  # (sequences, frames, joints, 4)
    pred = gt.clone()
    pred[:, :, 2] *= -1  # one joint flipped in every frame
    pred[1, 3] *= -1  # a whole frame flipped
    for red in ("lafan1", "per_joint_mse"):
        assert l2q(gt, gt, reduction=red).item() == 0.0
        assert l2q(pred, gt, reduction=red).item() == pytest.approx(0.0, abs=1e-12)
        assert hl2q(pred, gt, (0, 1, 1, 2), reduction=red).item() == pytest.approx(0.0, abs=1e-12)
    assert npss(gt, gt).item() == 0.0


def test_l2q_known_90_degree_errors() -> None:
    gt = quat_identity((3, 2), dtype=torch.float64)  # 3 frames, 2 joints
    pred = gt.clone()
    pred[:, 1] = Q90X
    assert l2q(pred, gt).item() == pytest.approx(math.sqrt(D90))  # 0.7654 per frame
    assert l2q(pred, gt, reduction="per_joint_mse").item() == pytest.approx(M90 / 2)
    assert l2q(pred, gt, joints=[1]).item() == pytest.approx(math.sqrt(D90))
    assert l2q(pred, gt, joints=torch.tensor([True, False])).item() == 0.0
    # both joints wrong: the norm is over all joints, then averaged over frames
    pred[:, 0] = Q90X
    assert l2q(pred, gt).item() == pytest.approx(math.sqrt(2 * D90))
    # only one frame of three wrong: sqrt per frame first, then the mean
    pred[1:] = gt[1:]
    assert l2q(pred, gt).item() == pytest.approx(math.sqrt(2 * D90) / 3)
    # 180° is the worst case: |q̂ − q|² = 2 after alignment (w = 0, the sign is a tie), 2/4 a component
    pred180 = gt.clone()
    pred180[:, 0] = torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    assert l2q(pred180, gt, reduction="per_joint_mse").item() == pytest.approx(0.5 / 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_per_joint_mse_is_torch_mse_and_sin_squared_quarter_angle(dtype: torch.dtype) -> None:
    """``per_joint_mse`` is ``F.mse_loss`` of the sign-aligned tensors, and ``sin²(θ/4)`` for an error of θ."""
    gt = _random_quats(3, 7, 5, seed=1).to(dtype)
    pred = quat_normalize(gt + 0.3 * _random_quats(3, 7, 5, seed=2).to(dtype))
    pred[0, :, 1] *= -1  # a sign flip changes neither side
    aligned = torch.where((pred * gt).sum(-1, keepdim=True) < 0, -pred, pred)
    want = torch.nn.functional.mse_loss(aligned, gt)
    torch.testing.assert_close(l2q(pred, gt, reduction="per_joint_mse"), want)
    # exactly a quarter of the per-joint squared distance summed over components
    torch.testing.assert_close(l2q(pred, gt, reduction="per_joint_mse"), (aligned - gt).square().sum(-1).mean() / 4)
    theta = torch.linspace(0.0, math.pi, 9, dtype=dtype)
    q = axis_angle_to_unitquat(torch.stack([theta, torch.zeros_like(theta), torch.zeros_like(theta)], -1))
    for t, qi in zip(theta, q, strict=True):
        got = l2q(qi.reshape(1, 1, 4), quat_identity((1, 1), dtype=dtype), reduction="per_joint_mse")
        assert got.item() == pytest.approx(math.sin(t.item() / 4) ** 2, abs=1e-6)


def test_hl2q_joint_subsets_for_small_tree() -> None:
    # 0 ─ 1 ─ 2 ─ 3 and 0 ─ 4: depths (0, 1, 2, 3, 1), max depth 3
    depths = (0, 1, 2, 3, 1)
    tree = Skeleton(names=tuple("01234"), parents=(-1, 0, 1, 2, 0), offsets=torch.zeros(5, 3),
                    rest_rotations=quat_identity(5))  # fmt: skip
    assert tree.depths == depths and tree.max_depth == 3
    expected_sets = {0.25: [0], 0.5: [0, 1, 4], 0.75: [0, 1, 2, 4], 1.0: [0, 1, 2, 3, 4], 0.0: [0]}
    for tau, joints in expected_sets.items():
        assert torch.nonzero(hl2q_joints(depths, tau)).flatten().tolist() == joints
    gt = quat_identity((4, 5), dtype=torch.float64)
    pred = gt.clone()
    pred[:, 4] = Q90X  # an error on a depth-1 joint
    got = {t: hl2q(pred, gt, depths, t, reduction="per_joint_mse").item() for t in HL2Q_THRESHOLDS.values()}
    assert got[0.25] == 0.0
    assert got[0.5] == pytest.approx(M90 / 3)
    assert got[0.75] == pytest.approx(M90 / 4)
    assert got[1.0] == pytest.approx(M90 / 5)
    assert hl2q(pred, gt, depths, 1.0).item() == pytest.approx(l2q(pred, gt).item())
    pred = gt.clone()
    pred[:, 3] = Q90X  # only the deepest joint: invisible below τ = 1
    assert hl2q(pred, gt, depths, 0.75).item() == 0.0
    assert hl2q(pred, gt, depths, 1.0).item() == pytest.approx(math.sqrt(D90))


def test_l2p_hand_computed() -> None:
    gt = torch.zeros(2, 3, 3, dtype=torch.float64)  # 2 frames, 3 joints
    pred = gt.clone()
    pred[:, 1] = torch.tensor([3.0, 4.0, 0.0], dtype=torch.float64)
    assert l2p(pred, gt).item() == pytest.approx(5.0)
    assert l2p(pred, gt, reduction="per_joint_mse").item() == pytest.approx(25.0 / 9)  # over joints × xyz
    assert l2p(pred, gt, mean=torch.ones(3), std=torch.full((3,), 2.0)).item() == pytest.approx(2.5)


def test_npss_hand_computed() -> None:
    # one feature over 4 frames: a constant (all DC power) vs an alternating signal (all Nyquist power)
    gt = torch.ones(4, 1, 1, dtype=torch.float64)
    pred = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64).reshape(4, 1, 1)
    # CDFs [1,1,1,1] and [0,0,1,1] → EMD 2, weighted by the GT power 16 → 2
    assert npss(pred, gt).item() == pytest.approx(2.0)
    # normalised spectra: scaling the prediction changes nothing
    assert npss(3.0 * gt, gt).item() == pytest.approx(0.0, abs=1e-12)
    # weighting by GT power: a second, correct feature with 4× the GT power dilutes the error
    gt2 = torch.cat([gt, 2 * gt], dim=-1)  # GT powers 16 and 64
    pred2 = torch.cat([pred, 2 * gt], dim=-1)  # feature 0 wrong (EMD 2), feature 1 right (EMD 0)
    assert npss(pred2, gt2).item() == pytest.approx(2.0 * 16 / (16 + 64))


def _chain() -> Skeleton:
    return Skeleton(
        names=("root", "a", "b"),
        parents=(-1, 0, 1),
        offsets=torch.tensor([[0.0, 0, 0], [0, 1.0, 0], [0, 1.0, 0]], dtype=torch.float64),
        rest_rotations=quat_identity(3, dtype=torch.float64),
    )


def test_evaluate_global_and_local_conventions() -> None:
    sk = _chain()
    F = 6
    gt = Motion(
        fps=30.0,
        rotations=quat_identity((F, 3), dtype=torch.float64),
        root_translation=torch.zeros(F, 3, dtype=torch.float64),
    )
    rot = gt.rotations.clone()
    rot[2:4, 0] = axis_angle_to_unitquat(torch.tensor([0, 0, math.pi / 2], dtype=torch.float64))  # root +90° Z
    rot[:, 2] *= -1  # sign flips are free
    pred = Motion(fps=30.0, rotations=rot, root_translation=gt.root_translation)

    same = evaluate(sk, gt, gt, slice(1, 5))
    assert set(same) == {"l2q", "l2q_per_joint_mse", "hl2q_1_4", "hl2q_1_2", "hl2q_3_4", "hl2q_full", "l2p", "npss"}
    assert all(v == 0.0 for v in same.values())

    g = evaluate(sk, pred, gt, slice(2, 4))  # only the two wrong frames
    # global: all three joints inherit the 90° root error
    assert g["l2q"] == pytest.approx(math.sqrt(3 * D90))
    assert g["l2q_per_joint_mse"] == pytest.approx(M90)
    assert g["hl2q_full"] == pytest.approx(M90)
    assert g["hl2q_1_4"] == pytest.approx(M90)  # depths (0,1,2): τ=1/4 keeps the root only
    # joint a: (0,1,0) → (-1,0,0), joint b: (0,2,0) → (-2,0,0): sqrt(2 + 8) per frame
    assert g["l2p"] == pytest.approx(math.sqrt(10))
    loc = evaluate(sk, pred, gt, torch.tensor([2, 3]), space="local")
    assert loc["l2q_per_joint_mse"] == pytest.approx(M90 / 3)  # only the root's local rotation differs
    assert loc["hl2q_1_4"] == pytest.approx(M90)
    assert loc["hl2q_1_2"] == pytest.approx(M90 / 2)  # depth <= 1: root and a
    assert loc["l2p"] == g["l2p"]
    # frames as a slice, index list or tensor agree; the mix of right and wrong frames averages
    mixed = evaluate(sk, pred, gt, slice(1, 5))
    assert mixed == evaluate(sk, pred, gt, [1, 2, 3, 4])
    assert mixed["l2q"] == pytest.approx(math.sqrt(3 * D90) / 2)
    assert mixed["npss"] > 0.0


def test_errors_name_the_argument() -> None:
    gt = quat_identity((3, 2))
    with pytest.raises(ValueError, match=r"^pred:"):
        l2q(gt[:2], gt)
    with pytest.raises(ValueError, match=r"^reduction:"):
        l2q(gt, gt, reduction="mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^depths:"):
        hl2q(gt, gt, (0, 1, 2))
    with pytest.raises(ValueError, match=r"^tau:"):
        hl2q(gt, gt, (0, 1), tau=1.5)
    with pytest.raises(ValueError, match=r"^pred:"):
        l2q(gt[:0], gt[:0])
    with pytest.raises(ValueError, match=r"^space:"):
        sk = _chain()
        m = Motion(fps=30.0, rotations=quat_identity((2, 3)), root_translation=torch.zeros(2, 3))
        evaluate(sk, m, m, slice(0, 2), space="world")  # type: ignore[arg-type]
