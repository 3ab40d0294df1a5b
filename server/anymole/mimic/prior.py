"""A per-joint prior on how each local rotation moves, taken from the context, for mimicking's rotation regulariser.

Joint positions do not see every rotation: twist about a bone, and rotations that a child can undo (a joint
whose children all sit at its own position, such as a BVH's ``LHipJoint`` under ``Hips``), leave every joint
where it is. The reference's regulariser holds every joint equally near its start, so the fit spreads a turn of
the pelvis over the hips and their zero-length children alike, and a joint that should follow its targets is
held as hard as one that cannot be seen. The context shows how this character moves: the covariance of each
joint's frame-to-frame rotation there is small along axes it does not turn about (a knee's twist, a clavicle
that never moves) and large along those it does, so its inverse makes a regulariser that is strong where the
context is still and weak where it moves (a Gaussian prior on the rotation step, per joint and axis).
"""

from __future__ import annotations

import torch

from anymole.errors import InvalidInput
from anymole.rig.quat import quat_align_sign, quat_conj, quat_identity, quat_log, quat_mul

__all__ = ["prior_rotation_loss", "rotation_prior"]

#: Mean per-axis variance (rad²) of the context's rotation steps under which it counts as still.
_STILL = 1e-12


def rotation_prior(rotations: torch.Tensor, floor: float) -> torch.Tensor:
    """Precision of each joint's local rotation step, from a clip (the context), scaled to mean 1 over joints and axes.

    Args:
        rotations: ``(F, J, 4)`` unit xyzw local rotations, ``F ≥ 2`` frames.
        floor: added to every covariance as ``floor · s² · I`` (``s²``: the mean per-axis variance over joints), so
            that a joint the context never moves weighs at most ``1 / floor`` times an average one.

    Returns:
        ``(J, 3, 3)`` symmetric positive definite ``s² (Σ_j + floor · s² · I)⁻¹``, free of the clip's overall speed:
        a joint that moves like the average along an axis weighs about 1 there, as in the reference's regulariser.
        A context that never moves (``s²`` under a microradian squared) gives the identity.
    """
    if rotations.ndim != 3 or rotations.shape[-1] != 4 or rotations.shape[0] < 2:
        raise InvalidInput("rotations", f"must have shape (F ≥ 2, J, 4), got {tuple(rotations.shape)}")
    if floor <= 0:
        raise InvalidInput("floor", f"must be > 0, got {floor}")
    q = rotations.double()
    step = quat_mul(quat_conj(q[:-1]), q[1:])  # (F-1, J, 4) rotation from each frame to the next, joint frame
    v = 2.0 * quat_log(quat_align_sign(step, quat_identity(dtype=q.dtype, device=q.device)))  # (F-1, J, 3) rad
    v = v - v.mean(0)
    cov = torch.einsum("fji,fjk->jik", v, v) / v.shape[0]  # (J, 3, 3)
    s2 = cov.diagonal(dim1=-2, dim2=-1).mean()
    eye = torch.eye(3, dtype=q.dtype, device=q.device)
    # A context that never moves (steps under a microradian: rounding) shows no axis freer than another: the
    # isotropic regulariser, not 1/floor on every joint (the still joints' weight relative to an average one).
    # torch.where, not an if: no sync with the device.
    return torch.where(s2 < _STILL, eye, s2 * torch.linalg.inv(cov + floor * s2.clamp_min(_STILL) * eye)).to(rotations.dtype)


def prior_rotation_loss(quats: torch.Tensor, init: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """``(B,)`` Mahalanobis form of the rotation regulariser: ``mean_j δ_jᵀ P_j δ_j / 16``.

    ``δ_j = 2 vec(q0_j⁻¹ q_j)`` (≈ the rotation vector away from the start, in the joint's frame) and the 1/16
    makes ``P = I`` agree with `anymole.mimic.losses.rotation_loss` for small angles (``|q − q0|² / 4 ≈ θ² / 16``
    per joint).

    Args:
        quats, init: ``(B, J, 4)`` unit xyzw.
        precision: ``(J, 3, 3)`` (`rotation_prior`).
    """
    d = quat_align_sign(quat_mul(quat_conj(init), quats), quat_identity(dtype=quats.dtype, device=quats.device))
    delta = 2.0 * d[..., :3]  # (B, J, 3): 2 sin(θ/2) · axis, smooth at the start
    return torch.einsum("bji,jik,bjk->bj", delta, precision.to(delta), delta).mean(-1) / 16.0
