"""Batched quaternion and rotation-representation math (torch, differentiable).

Conventions:
    * Quaternions are ``(..., 4)`` tensors in **xyzw** order (scalar last), Hamilton product.
    * Rotation matrices ``(..., 3, 3)`` act on column vectors: ``v' = R @ v``.
    * A unit quaternion ``q`` and ``-q`` are the same rotation; functions whose name starts with
      ``unitquat_`` assume (and do not re-normalise) unit input, the others accept any quaternion.
    * ``quat_log``/``quat_exp`` use the **half-angle** convention: ``log(q) = axis * angle / 2`` so that
      ``exp(log(q)) = q``; ``unitquat_to_axis_angle`` returns ``axis * angle`` (the full angle).
    * 6D rotations are the **first two columns** of the rotation matrix, concatenated ``(c0, c1)``.
    * Euler ``order`` strings follow BVH: ``"ZYX"`` means ``R = Rz(a[...,0]) @ Ry(a[...,1]) @ Rx(a[...,2])``
      (intrinsic rotations applied left to right), angles in radians.

Every function broadcasts over leading dimensions and never loops over frames in Python. Shape errors raise
`anymole.errors.InvalidInput` (a `ValueError`) naming the argument; values (unit norm, NaN) are not checked
here because a data-dependent check forces a GPU sync — that happens at the edges (io, service).
"""

from __future__ import annotations

import torch

from anymole.errors import InvalidInput

__all__ = [
    "axis_angle_to_unitquat",
    "euler_to_unitquat",
    "quat_align_sign",
    "quat_apply",
    "quat_canonical",
    "quat_conj",
    "quat_continuity",
    "quat_exp",
    "quat_identity",
    "quat_inverse",
    "quat_log",
    "quat_mul",
    "quat_normalize",
    "rot6d_to_rotmat",
    "rotmat_to_rot6d",
    "rotmat_to_unitquat",
    "unitquat_angle",
    "unitquat_slerp",
    "unitquat_to_axis_angle",
    "unitquat_to_euler",
    "unitquat_to_rotmat",
]

# Below this squared norm of the vector part, log/exp switch to their Taylor expansions, which keeps
# values and gradients finite at the identity (the exact formulas divide 0 by 0 there).
_SMALL_SQ = 1e-12


def _check(x: torch.Tensor, last: tuple[int, ...], name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise InvalidInput(name, f"expected a torch.Tensor, got {type(x).__name__}")
    k = len(last)
    if x.ndim < k or tuple(x.shape[-k:]) != last:
        want = "(..., " + ", ".join(str(n) for n in last) + ")"
        raise InvalidInput(name, f"must have shape {want}, got {tuple(x.shape)}")


def quat_identity(
    shape: int | tuple[int, ...] | torch.Size = (),
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Identity quaternions ``(0, 0, 0, 1)`` of shape ``(*shape, 4)``."""
    if isinstance(shape, int):
        shape = (shape,)
    q = torch.zeros((*shape, 4), dtype=dtype, device=device)
    q[..., 3] = 1.0
    return q


def quat_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product ``a ⊗ b`` of ``(..., 4)`` xyzw quaternions (any norm); rotation ``b`` then ``a``."""
    _check(a, (4,), "a")
    _check(b, (4,), "b")
    ax, ay, az, aw = a.unbind(-1)
    bx, by, bz, bw = b.unbind(-1)
    return torch.stack(
        (
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ),
        dim=-1,
    )


def quat_conj(q: torch.Tensor) -> torch.Tensor:
    """Conjugate ``(-x, -y, -z, w)`` of ``(..., 4)`` quaternions; the inverse of a unit quaternion."""
    _check(q, (4,), "q")
    return torch.cat((-q[..., :3], q[..., 3:]), dim=-1)


def quat_inverse(q: torch.Tensor) -> torch.Tensor:
    """Multiplicative inverse ``conj(q) / |q|²`` of ``(..., 4)`` quaternions of any non-zero norm."""
    return quat_conj(q) / (q * q).sum(-1, keepdim=True)


def quat_normalize(q: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``q / max(|q|, eps)`` for ``(..., 4)`` quaternions."""
    _check(q, (4,), "q")
    return q / q.norm(dim=-1, keepdim=True).clamp_min(eps)


def quat_apply(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Rotate ``(..., 3)`` vectors ``v`` by **unit** ``(..., 4)`` quaternions ``q`` (``q v q*``); broadcasts."""
    _check(q, (4,), "q")
    _check(v, (3,), "v")
    u = q[..., :3]
    w = q[..., 3:]
    # v + 2w (u × v) + 2 u × (u × v): two cross products instead of two quaternion products.
    t = 2.0 * torch.linalg.cross(u, v, dim=-1)
    return v + w * t + torch.linalg.cross(u, t, dim=-1)


def quat_canonical(q: torch.Tensor) -> torch.Tensor:
    """The representative with ``w >= 0`` of each ``(..., 4)`` quaternion (``q`` or ``-q``)."""
    _check(q, (4,), "q")
    return torch.where(q[..., 3:] < 0, -q, q)


def quat_align_sign(q: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Flip each ``(..., 4)`` quaternion of ``q`` to the hemisphere of ``ref`` (``<q, ref> >= 0``); broadcasts."""
    _check(q, (4,), "q")
    _check(ref, (4,), "ref")
    dot = (q * ref).sum(-1, keepdim=True)
    return torch.where(dot < 0, -q, q)


def quat_continuity(q: torch.Tensor, dim: int = -3) -> torch.Tensor:
    """Flip signs along ``dim`` so that consecutive quaternions have a non-negative dot product.

    Args:
        q: ``(..., 4)`` quaternions, e.g. ``(F, J, 4)`` with frames on ``dim=-3``.
        dim: the time axis of ``q`` (not the last one). The first element along it is kept as is.

    Returns:
        Same shape; each element is ``±q``. Vectorised: the flips are a cumulative product of the signs
        of consecutive dot products.
    """
    _check(q, (4,), "q")
    d = dim if dim >= 0 else q.ndim + dim
    if not 0 <= d < q.ndim - 1:
        raise InvalidInput("dim", f"must index a non-component axis of q with shape {tuple(q.shape)}, got {dim}")
    n = q.shape[d]
    if n < 2:
        return q
    dots = (q.narrow(d, 1, n - 1) * q.narrow(d, 0, n - 1)).sum(-1, keepdim=True)
    flips = torch.where(dots < 0, -1.0, 1.0).to(q.dtype)
    signs = torch.cat((torch.ones_like(flips.narrow(d, 0, 1)), flips), dim=d).cumprod(dim=d)
    return q * signs


def quat_log(q: torch.Tensor) -> torch.Tensor:
    """Logarithm of **unit** ``(..., 4)`` quaternions: ``(..., 3)`` = ``axis * angle / 2``.

    For ``q = (sin(h) n, cos(h))`` this returns ``h n`` with ``h = atan2(|xyz|, w)`` in ``[0, π]``, so
    ``quat_exp(quat_log(q)) == q`` for either sign — except exactly ``q = (0, 0, 0, -1)``, whose axis is
    undefined: it maps to 0, i.e. back to ``+1``, the same rotation. Apply `quat_canonical` first for the
    short rotation. Finite gradients everywhere, including the identity.
    """
    _check(q, (4,), "q")
    xyz = q[..., :3]
    w = q[..., 3:]
    n2 = (xyz * xyz).sum(-1, keepdim=True)
    # Near +1, atan2(n, w)/n → 1/w (Taylor); near -1 it blows up like π/n, which the exact formula
    # handles for any n > 0, so only n = 0 itself needs a safe stand-in (its xyz is 0 anyway).
    taylor = (n2 < _SMALL_SQ) & (w > 0)
    n = torch.sqrt(torch.where(taylor | (n2 == 0), torch.ones_like(n2), n2))
    w_safe = torch.where(taylor, w, torch.ones_like(w))
    factor = torch.where(taylor, 1.0 / w_safe, torch.atan2(n, w) / n)
    return xyz * factor


def quat_exp(v: torch.Tensor) -> torch.Tensor:
    """Exponential of ``(..., 3)`` pure quaternions ``v = axis * angle / 2`` → unit ``(..., 4)`` xyzw."""
    _check(v, (3,), "v")
    h2 = (v * v).sum(-1, keepdim=True)
    small = h2 < _SMALL_SQ
    h = torch.sqrt(torch.where(small, torch.ones_like(h2), h2))
    sinc = torch.where(small, 1.0 - h2 / 6.0, torch.sin(h) / h)
    cos = torch.where(small, 1.0 - h2 / 2.0, torch.cos(h))
    return torch.cat((v * sinc, cos), dim=-1)


def axis_angle_to_unitquat(aa: torch.Tensor) -> torch.Tensor:
    """``(..., 3)`` axis-angle vectors (unit axis × angle in rad) → unit ``(..., 4)`` xyzw quaternions."""
    _check(aa, (3,), "aa")
    return quat_exp(0.5 * aa)


def unitquat_to_axis_angle(q: torch.Tensor) -> torch.Tensor:
    """Unit ``(..., 4)`` quaternions → ``(..., 3)`` axis × angle, angle in ``[0, π]`` (short rotation)."""
    return 2.0 * quat_log(quat_canonical(q))


def unitquat_angle(q: torch.Tensor) -> torch.Tensor:
    """Rotation angle in ``[0, π]`` (rad) of unit ``(..., 4)`` quaternions, shape ``(...)``."""
    _check(q, (4,), "q")
    return 2.0 * torch.atan2(q[..., :3].norm(dim=-1), q[..., 3].abs())


def unitquat_to_rotmat(q: torch.Tensor) -> torch.Tensor:
    """Unit ``(..., 4)`` xyzw quaternions → ``(..., 3, 3)`` rotation matrices (no normalisation)."""
    _check(q, (4,), "q")
    x, y, z, w = q.unbind(-1)
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz = x * y, x * z, y * z
    wx, wy, wz = w * x, w * y, w * z
    rows = (
        1 - 2 * (yy + zz), 2 * (xy - wz), 2 * (xz + wy),
        2 * (xy + wz), 1 - 2 * (xx + zz), 2 * (yz - wx),
        2 * (xz - wy), 2 * (yz + wx), 1 - 2 * (xx + yy),
    )  # fmt: skip
    return torch.stack(rows, dim=-1).unflatten(-1, (3, 3))


def _sqrt_pos(x: torch.Tensor) -> torch.Tensor:
    """``sqrt(max(x, 0))`` whose gradient is 0 (not inf/NaN) where ``x <= 0``."""
    pos = x > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, x, torch.ones_like(x))), torch.zeros_like(x))


def rotmat_to_unitquat(R: torch.Tensor) -> torch.Tensor:
    """``(..., 3, 3)`` rotation matrices → unit ``(..., 4)`` xyzw quaternions with ``w >= 0``.

    Each of ``|x|, |y|, |z|, |w|`` can be read from the diagonal; the largest of the four is at least 1/2,
    so solving for the others by dividing by it is well conditioned (no catastrophic cancellation near
    180°, unlike the trace-only formula). All four candidates are computed and the best is selected per
    element, so gradients stay finite.
    """
    _check(R, (3, 3), "R")
    m = R.flatten(-2)
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m.unbind(-1)
    # 2|w|, 2|x|, 2|y|, 2|z|
    two_abs = _sqrt_pos(
        torch.stack(
            (
                1 + m00 + m11 + m22,
                1 + m00 - m11 - m22,
                1 - m00 + m11 - m22,
                1 - m00 - m11 + m22,
            ),
            dim=-1,
        )
    )
    a_w, a_x, a_y, a_z = two_abs.unbind(-1)
    # Candidate k solves for the other components assuming component k is positive; each is a quaternion
    # scaled by 2*(2|q_k|), normalised below, so dividing by 4|q_k| is replaced by one normalisation.
    cands = torch.stack(
        (
            torch.stack((m21 - m12, m02 - m20, m10 - m01, a_w * a_w), dim=-1),
            torch.stack((a_x * a_x, m01 + m10, m02 + m20, m21 - m12), dim=-1),
            torch.stack((m01 + m10, a_y * a_y, m12 + m21, m02 - m20), dim=-1),
            torch.stack((m02 + m20, m12 + m21, a_z * a_z, m10 - m01), dim=-1),
        ),
        dim=-2,
    )  # (..., 4 candidates, 4)
    cands = cands / (2.0 * two_abs.clamp_min(0.1)).unsqueeze(-1)
    best = two_abs.argmax(dim=-1, keepdim=True)  # (..., 1)
    q = torch.gather(cands, -2, best.unsqueeze(-1).expand(*best.shape, 4)).squeeze(-2)
    return quat_canonical(quat_normalize(q))


def unitquat_slerp(q0: torch.Tensor, q1: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """Spherical linear interpolation along the shortest arc between unit quaternions.

    Args:
        q0: ``(..., 4)`` start, unit xyzw.
        q1: ``(..., 4)`` end, unit xyzw; flipped to ``q0``'s hemisphere first (shortest path).
        t: scalar or tensor broadcastable to ``q0.shape[:-1]`` (and ``q1``'s); 0 gives ``q0``, 1 gives
            ``±q1`` (the sign-aligned one). Values outside ``[0, 1]`` extrapolate.

    Returns:
        ``(..., 4)`` unit quaternions ``q0 ⊗ exp(t · log(q0* ⊗ q1))``; differentiable in all inputs,
        finite gradients when ``q0 == q1``.
    """
    _check(q0, (4,), "q0")
    _check(q1, (4,), "q1")
    t_ = torch.as_tensor(t, dtype=q0.dtype, device=q0.device).unsqueeze(-1)
    rel = quat_mul(quat_conj(q0), quat_align_sign(q1, q0))  # w = <q0, q1> >= 0: the short way round
    return quat_mul(q0, quat_exp(t_ * quat_log(rel)))


def rotmat_to_rot6d(R: torch.Tensor) -> torch.Tensor:
    """``(..., 3, 3)`` → ``(..., 6)``: the first two **columns** ``(R[:, 0], R[:, 1])`` concatenated."""
    _check(R, (3, 3), "R")
    return torch.cat((R[..., :, 0], R[..., :, 1]), dim=-1)


def rot6d_to_rotmat(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(..., 6)`` → ``(..., 3, 3)`` by Gram–Schmidt on the two **column** vectors ``x[:3]``, ``x[3:]``.

    Inverse of `rotmat_to_rot6d` on rotation matrices; any non-degenerate input maps to a rotation.
    """
    _check(x, (6,), "x")
    a1, a2 = x[..., :3], x[..., 3:]
    b1 = a1 / a1.norm(dim=-1, keepdim=True).clamp_min(eps)
    a2 = a2 - (b1 * a2).sum(-1, keepdim=True) * b1
    b2 = a2 / a2.norm(dim=-1, keepdim=True).clamp_min(eps)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-1)


_AXES = {"X": 0, "Y": 1, "Z": 2}


def _parse_order(order: str) -> tuple[int, int, int]:
    o = order.upper() if isinstance(order, str) else ""
    if len(o) != 3 or sorted(o) != ["X", "Y", "Z"]:
        raise InvalidInput("order", f"must be a permutation of 'XYZ' such as 'ZYX' (BVH channel order), got {order!r}")
    return _AXES[o[0]], _AXES[o[1]], _AXES[o[2]]


def _axis_quat(angle: torch.Tensor, axis: int) -> torch.Tensor:
    half = 0.5 * angle
    zero = torch.zeros_like(half)
    comps = [zero, zero, zero, torch.cos(half)]
    comps[axis] = torch.sin(half)
    return torch.stack(comps, dim=-1)


def euler_to_unitquat(angles: torch.Tensor, order: str) -> torch.Tensor:
    """``(..., 3)`` Euler angles (rad) → unit ``(..., 4)`` xyzw quaternions.

    ``order`` is a permutation of ``"XYZ"`` in BVH convention: ``order="ZYX"`` gives
    ``R = Rz(angles[..., 0]) @ Ry(angles[..., 1]) @ Rx(angles[..., 2])``.
    """
    _check(angles, (3,), "angles")
    a, b, c = _parse_order(order)
    qa = _axis_quat(angles[..., 0], a)
    qb = _axis_quat(angles[..., 1], b)
    qc = _axis_quat(angles[..., 2], c)
    return quat_mul(quat_mul(qa, qb), qc)


def unitquat_to_euler(q: torch.Tensor, order: str) -> torch.Tensor:
    """Unit ``(..., 4)`` quaternions → ``(..., 3)`` Euler angles (rad) for ``order`` (see `euler_to_unitquat`).

    The middle angle is in ``[-π/2, π/2]``, the outer two in ``(-π, π]``. At gimbal lock (``|cos(middle)|``
    below ~``sqrt(dtype eps)``) only the sum/difference of the outer angles is defined: the last angle is
    then set to 0 and the first absorbs the rotation, so the result still reproduces the rotation.
    """
    a, b, c = _parse_order(order)
    R = unitquat_to_rotmat(q)
    # s = +1 for cyclic orders (XYZ, YZX, ZXY), -1 for the others.
    s = 1.0 if (b - a) % 3 == 1 else -1.0
    r_ac = R[..., a, c]
    cos_mid = torch.sqrt(R[..., a, a] ** 2 + R[..., a, b] ** 2)
    mid = torch.atan2(s * r_ac, cos_mid)
    first = torch.atan2(-s * R[..., b, c], R[..., c, c])
    last = torch.atan2(-s * R[..., a, b], R[..., a, a])
    # Gimbal lock: R = Ra(first) Rb(mid) with last = 0, so R e_b = Ra(first) e_b.
    first_locked = torch.atan2(s * R[..., c, b], R[..., b, b])
    # sqrt(eps) balances the two errors: the general formula loses ~eps/cos_mid, the locked one ~cos_mid.
    locked = cos_mid < torch.finfo(q.dtype).eps ** 0.5
    first = torch.where(locked, first_locked, first)
    last = torch.where(locked, torch.zeros_like(last), last)
    return torch.stack((first, mid, last), dim=-1)
