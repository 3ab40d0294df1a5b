"""Quaternion and rotation conversions: round trips up to sign, conventions, gradients, shape errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from anymole.rig import quat as Q

DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: 2e-5, torch.float64: 1e-10}

quat_arrays = arrays(np.float64, st.tuples(st.integers(1, 6), st.just(4)), elements=st.floats(-1, 1))


def _unit(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    n = np.linalg.norm(a, axis=-1, keepdims=True)
    assume(bool((n > 1e-3).all()))
    return torch.tensor(a / n, dtype=dtype)


def _dist_up_to_sign(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.minimum((a - b).norm(dim=-1), (a + b).norm(dim=-1)).max()


def _random_unit(n: int, dtype: torch.dtype = torch.float64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return Q.quat_normalize(torch.randn(n, 4, generator=g, dtype=dtype))


def _axis_rotmat(axis: int, angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    R = torch.eye(3, dtype=torch.float64)
    R[i, i], R[i, j], R[j, i], R[j, j] = c, -s, s, c
    return R


# Rotations the generic generator rarely hits: identity, 180° about each axis and a diagonal, tiny angles.
SPECIAL = torch.tensor(
    [
        [0.0, 0.0, 0.0, 1.0],
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
        [0.57735027, 0.57735027, 0.57735027, 0.0],
        [1e-7, 0.0, 0.0, 1.0],
        [0.0, -3e-5, 2e-5, -1.0],
    ],
    dtype=torch.float64,
)
SPECIAL = SPECIAL / SPECIAL.norm(dim=-1, keepdim=True)


@pytest.mark.parametrize("dtype", DTYPES)
@given(a=quat_arrays)
def test_mul_and_apply_match_rotation_matrices(dtype: torch.dtype, a: np.ndarray) -> None:
    q = _unit(a, dtype)
    r = q.flip(0)
    v = torch.tensor([[0.3, -1.2, 2.0]], dtype=dtype)
    Rq, Rr = Q.unitquat_to_rotmat(q), Q.unitquat_to_rotmat(r)
    torch.testing.assert_close(Q.unitquat_to_rotmat(Q.quat_mul(q, r)), Rq @ Rr, atol=TOL[dtype] * 10, rtol=0)
    torch.testing.assert_close(Q.quat_apply(q, v), (Rq @ v[..., None])[..., 0], atol=TOL[dtype] * 10, rtol=0)
    # rotation matrices are orthonormal with det +1
    eye = torch.eye(3, dtype=dtype).expand_as(Rq)
    torch.testing.assert_close(Rq @ Rq.transpose(-1, -2), eye, atol=TOL[dtype] * 10, rtol=0)


def test_mul_hand_computed() -> None:
    i = torch.tensor([1.0, 0, 0, 0])
    j = torch.tensor([0, 1.0, 0, 0])
    k = torch.tensor([0, 0, 1.0, 0])
    torch.testing.assert_close(Q.quat_mul(i, j), k)  # ij = k
    torch.testing.assert_close(Q.quat_mul(j, i), -k)  # ji = -k
    torch.testing.assert_close(Q.quat_mul(i, i), torch.tensor([0, 0, 0, -1.0]))  # i² = -1
    # 90° about Z maps x to y
    qz = Q.axis_angle_to_unitquat(torch.tensor([0, 0, math.pi / 2]))
    torch.testing.assert_close(Q.quat_apply(qz, torch.tensor([1.0, 0, 0])), torch.tensor([0, 1.0, 0]))


@given(a=quat_arrays, scale=st.floats(0.1, 10))
def test_inverse_of_any_norm(a: np.ndarray, scale: float) -> None:
    q = _unit(a, torch.float64) * scale
    ident = Q.quat_identity(q.shape[:-1], dtype=torch.float64)
    torch.testing.assert_close(Q.quat_mul(q, Q.quat_inverse(q)), ident)
    torch.testing.assert_close(Q.quat_mul(Q.quat_inverse(q), q), ident)


def test_identity_shape_and_value() -> None:
    q = Q.quat_identity((2, 3), dtype=torch.float64)
    assert q.shape == (2, 3, 4) and q.dtype == torch.float64
    assert torch.equal(q[1, 2], torch.tensor([0, 0, 0, 1.0], dtype=torch.float64))
    assert Q.quat_identity(5).shape == (5, 4)


@pytest.mark.parametrize("dtype", DTYPES)
@given(a=quat_arrays)
def test_rotmat_round_trip(dtype: torch.dtype, a: np.ndarray) -> None:
    q = _unit(a, dtype)
    q2 = Q.rotmat_to_unitquat(Q.unitquat_to_rotmat(q))
    assert _dist_up_to_sign(q, q2) < TOL[dtype] * 5
    assert bool((q2[..., 3] >= 0).all())


@pytest.mark.parametrize("dtype", DTYPES)
def test_rotmat_round_trip_special_cases(dtype: torch.dtype) -> None:
    q = SPECIAL.to(dtype)
    assert _dist_up_to_sign(q, Q.rotmat_to_unitquat(Q.unitquat_to_rotmat(q))) < TOL[dtype] * 5


def test_rotmat_to_unitquat_gradients() -> None:
    R = Q.unitquat_to_rotmat(SPECIAL).requires_grad_(True)
    Q.rotmat_to_unitquat(R).sum().backward()
    assert R.grad is not None and bool(torch.isfinite(R.grad).all())
    Rg = Q.unitquat_to_rotmat(_random_unit(3)).requires_grad_(True)
    assert torch.autograd.gradcheck(Q.rotmat_to_unitquat, (Rg,))


@pytest.mark.parametrize("dtype", DTYPES)
@given(a=quat_arrays)
def test_rot6d_round_trip_and_columns(dtype: torch.dtype, a: np.ndarray) -> None:
    R = Q.unitquat_to_rotmat(_unit(a, dtype))
    x = Q.rotmat_to_rot6d(R)
    assert x.shape == (*R.shape[:-2], 6)
    torch.testing.assert_close(x[..., :3], R[..., :, 0])  # first column, not row
    torch.testing.assert_close(x[..., 3:], R[..., :, 1])
    torch.testing.assert_close(Q.rot6d_to_rotmat(x), R, atol=TOL[dtype] * 10, rtol=0)


def test_rot6d_any_input_gives_rotation() -> None:
    x = torch.randn(50, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    R = Q.rot6d_to_rotmat(x)
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand_as(R))
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(50, dtype=torch.float64))
    # the first column keeps the direction of the first 3-vector
    torch.testing.assert_close(R[:, :, 0], x[:, :3] / x[:, :3].norm(dim=-1, keepdim=True))


ORDERS = ["XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX"]


@pytest.mark.parametrize("order", ORDERS)
def test_euler_matches_bvh_matrix_convention(order: str) -> None:
    angles = torch.tensor([0.3, -0.7, 1.9], dtype=torch.float64)
    axes = ["XYZ".index(c) for c in order]
    expected = _axis_rotmat(axes[0], 0.3) @ _axis_rotmat(axes[1], -0.7) @ _axis_rotmat(axes[2], 1.9)
    torch.testing.assert_close(Q.unitquat_to_rotmat(Q.euler_to_unitquat(angles, order)), expected)
    torch.testing.assert_close(Q.unitquat_to_euler(Q.euler_to_unitquat(angles, order), order), angles)
    assert torch.allclose(Q.euler_to_unitquat(angles, order.lower()), Q.euler_to_unitquat(angles, order))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("order", ORDERS)
@given(a=quat_arrays)
def test_euler_round_trip(dtype: torch.dtype, order: str, a: np.ndarray) -> None:
    q = _unit(a, dtype)
    e = Q.unitquat_to_euler(q, order)
    assert bool((e[..., 1].abs() <= math.pi / 2 + 1e-6).all())
    # near gimbal lock the achievable accuracy is ~sqrt(eps), not eps (see unitquat_to_euler)
    tol = 1e-3 if dtype == torch.float32 else 1e-7
    assert _dist_up_to_sign(q, Q.euler_to_unitquat(e, order)) < tol


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("order", ["ZYX", "XYZ", "YZX"])
def test_euler_near_gimbal_lock(dtype: torch.dtype, order: str) -> None:
    # middle angle at ±90° and within 1e-9..1e-2 rad of it; outer angles arbitrary
    deltas = torch.tensor([0.0, 1e-9, 1e-7, 1e-5, 1e-3, 1e-2], dtype=torch.float64)
    mids = torch.cat([math.pi / 2 - deltas, -math.pi / 2 + deltas])
    n = mids.shape[0]
    angles = torch.stack([torch.full((n,), 0.8), mids, torch.full((n,), -2.1)], dim=-1).to(torch.float64)
    q = Q.euler_to_unitquat(angles, order).to(dtype)
    e = Q.unitquat_to_euler(q, order)
    assert bool(torch.isfinite(e).all())
    # Angles are not unique at the lock, but the rotation must be reproduced: error ~sqrt(eps).
    tol = 1e-3 if dtype == torch.float32 else 1e-7
    assert _dist_up_to_sign(q, Q.euler_to_unitquat(e, order)) < tol


@pytest.mark.parametrize("dtype", DTYPES)
@given(a=quat_arrays)
def test_log_exp_and_axis_angle_round_trips(dtype: torch.dtype, a: np.ndarray) -> None:
    q = _unit(a, dtype)
    back = Q.quat_exp(Q.quat_log(q))
    exact = (q - Q.quat_identity((), dtype=dtype) * -1).norm(dim=-1) > 1e-3  # q = -1 maps to +1
    torch.testing.assert_close(back[exact], q[exact], atol=TOL[dtype] * 10, rtol=0)
    assert _dist_up_to_sign(q, back) < TOL[dtype] * 10
    aa = Q.unitquat_to_axis_angle(q)
    angle = aa.norm(dim=-1)
    assert bool((angle <= math.pi + 1e-5).all())
    torch.testing.assert_close(angle, Q.unitquat_angle(q), atol=TOL[dtype] * 10, rtol=0)
    assert _dist_up_to_sign(q, Q.axis_angle_to_unitquat(aa)) < TOL[dtype] * 10


def test_log_exp_conventions_and_identity_gradients() -> None:
    # 90° about Y: log = axis * angle / 2
    q = Q.axis_angle_to_unitquat(torch.tensor([0, math.pi / 2, 0], dtype=torch.float64))
    torch.testing.assert_close(Q.quat_log(q), torch.tensor([0, math.pi / 4, 0], dtype=torch.float64))
    torch.testing.assert_close(q, torch.tensor([0, math.sin(math.pi / 4), 0, math.cos(math.pi / 4)], dtype=torch.float64))
    ident = Q.quat_identity(2, dtype=torch.float64).requires_grad_(True)
    Q.quat_log(ident).sum().backward()
    assert ident.grad is not None and bool(torch.isfinite(ident.grad).all())
    v = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    Q.quat_exp(v).sum().backward()
    assert v.grad is not None and bool(torch.isfinite(v.grad).all())
    torch.testing.assert_close(Q.quat_exp(v.detach()), Q.quat_identity(2, dtype=torch.float64))
    # near -1 the log is the long way round (half-angle → π), exact for any tiny vector part
    q_neg = torch.tensor([[1e-9, 0.0, 0.0, -1.0], [0.0, 0.0, 0.0, -1.0]], dtype=torch.float64).requires_grad_(True)
    lg = Q.quat_log(q_neg)
    torch.testing.assert_close(lg[0], torch.tensor([math.pi, 0, 0], dtype=torch.float64))
    torch.testing.assert_close(lg[1], torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(Q.quat_exp(lg[0]), q_neg[0].detach())
    lg.sum().backward()
    assert q_neg.grad is not None and bool(torch.isfinite(q_neg.grad).all())
    assert torch.autograd.gradcheck(Q.quat_log, (_random_unit(4).requires_grad_(True),))
    assert torch.autograd.gradcheck(Q.quat_exp, (torch.randn(4, 3, dtype=torch.float64, requires_grad=True),))


@pytest.mark.parametrize("dtype", DTYPES)
@given(a=quat_arrays, t=st.floats(0, 1))
def test_slerp_endpoints_norm_and_shortest_path(dtype: torch.dtype, a: np.ndarray, t: float) -> None:
    q0 = _unit(a, dtype)
    q1 = q0.roll(1, dims=0) if q0.shape[0] > 1 else Q.quat_identity(1, dtype=dtype)
    tol = TOL[dtype] * 10
    torch.testing.assert_close(Q.unitquat_slerp(q0, q1, 0.0), q0, atol=tol, rtol=0)
    torch.testing.assert_close(Q.unitquat_slerp(q0, q1, 1.0), Q.quat_align_sign(q1, q0), atol=tol, rtol=0)
    qt = Q.unitquat_slerp(q0, q1, t)
    torch.testing.assert_close(qt.norm(dim=-1), torch.ones(q0.shape[0], dtype=dtype), atol=tol, rtol=0)
    # the sign of either endpoint does not change the path (except at the tie <q0, q1> = 0)
    clear = (q0 * q1).sum(-1).abs() > 1e-3
    torch.testing.assert_close(Q.unitquat_slerp(q0, -q1, t)[clear], qt[clear], atol=tol, rtol=0)
    # constant angular speed along the short arc: angle(q0, q_t) = t * angle(q0, q1) <= t * π
    rel_t = Q.unitquat_angle(Q.quat_mul(Q.quat_conj(q0), qt))
    rel_1 = Q.unitquat_angle(Q.quat_mul(Q.quat_conj(q0), q1))
    torch.testing.assert_close(rel_t, t * rel_1, atol=1e-3 if dtype == torch.float32 else 1e-8, rtol=0)


def test_slerp_hand_computed_and_broadcast() -> None:
    q0 = Q.quat_identity(1, dtype=torch.float64)
    q1 = Q.axis_angle_to_unitquat(torch.tensor([[0, 0, math.pi / 2]], dtype=torch.float64))
    t = torch.tensor([[0.0], [0.5], [1.0]], dtype=torch.float64)  # (3, 1) against (1, 4) quats
    out = Q.unitquat_slerp(q0, q1, t)
    assert out.shape == (3, 1, 4)
    torch.testing.assert_close(Q.unitquat_to_axis_angle(out[1, 0]), torch.tensor([0, 0, math.pi / 4], dtype=torch.float64))


def test_slerp_gradcheck() -> None:
    q0 = _random_unit(3, seed=1).requires_grad_(True)
    q1 = _random_unit(3, seed=2).requires_grad_(True)
    t = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(Q.unitquat_slerp, (q0, q1, t))
    # identical endpoints: finite gradient
    q = _random_unit(2, seed=3).requires_grad_(True)
    Q.unitquat_slerp(q, q.detach(), 0.5).sum().backward()
    assert q.grad is not None and bool(torch.isfinite(q.grad).all())


def test_continuity_and_align_sign() -> None:
    g = torch.Generator().manual_seed(4)
    # a smooth track (F=20, J=3), then random sign flips per frame/joint
    aa = torch.linspace(0, 3.0, 20, dtype=torch.float64)[:, None, None] * torch.randn(1, 3, 3, generator=g, dtype=torch.float64)
    smooth = Q.axis_angle_to_unitquat(aa)
    flips = torch.where(torch.rand(20, 3, 1, generator=g) < 0.5, -1.0, 1.0).to(torch.float64)
    fixed = Q.quat_continuity(smooth * flips, dim=0)
    dots = (fixed[1:] * fixed[:-1]).sum(-1)
    assert bool((dots >= 0).all())
    # equal to the smooth track up to one global sign per joint (that of the first frame)
    torch.testing.assert_close(fixed, smooth * flips[:1])
    # dim=-3 default on (F, J, 4) is the frame axis; batched leading dims work
    torch.testing.assert_close(Q.quat_continuity((smooth * flips)[None]), fixed[None])
    ref = smooth
    aligned = Q.quat_align_sign(smooth * flips, ref)
    torch.testing.assert_close(aligned, smooth)


def test_canonical() -> None:
    q = torch.tensor([[0.0, 0.6, 0.0, -0.8], [0.6, 0.0, 0.0, 0.8]])
    torch.testing.assert_close(Q.quat_canonical(q), torch.tensor([[0.0, -0.6, 0.0, 0.8], [0.6, 0.0, 0.0, 0.8]]))


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: Q.quat_mul(torch.zeros(3), torch.zeros(4)), "a"),
        (lambda: Q.quat_apply(torch.zeros(4), torch.zeros(4)), "v"),
        (lambda: Q.rotmat_to_unitquat(torch.zeros(3, 4)), "R"),
        (lambda: Q.rot6d_to_rotmat(torch.zeros(5)), "x"),
        (lambda: Q.euler_to_unitquat(torch.zeros(3), "XXY"), "order"),
        (lambda: Q.quat_continuity(torch.zeros(5, 4), dim=-1), "dim"),
        (lambda: Q.unitquat_slerp(torch.zeros(4), torch.zeros(2), 0.5), "q1"),
    ],
)
def test_shape_errors_name_the_argument(call, name: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=rf"^{name}:"):
        call()
