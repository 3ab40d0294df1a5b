"""Motion in-betweening metrics: L2Q, HL2Q, L2P and NPSS.

Definitions follow the LaFAN1 benchmark (Harvey et al. 2020, "Robust motion in-betweening") and AnyMoLe's
HL2Q (supplementary Table 2). Conventions shared by every function:

* Quaternions are ``(..., F, J, 4)`` xyzw; leading ``...`` dims are sequences. Before differencing, each
  predicted quaternion is flipped to the hemisphere of its ground-truth counterpart (``q`` and ``-q`` are
  the same rotation), so a sign flip alone costs nothing. LaFAN1 itself does not align; it relies on
  sign-continuous data, which this makes irrelevant.
* Two reductions, chosen by name:

  - ``"lafan1"``: per frame, the Euclidean norm over the selected joints × components,
    ``sqrt(Σ_j Σ_c (q̂_fjc − q_fjc)²)``, then the mean over frames and sequences (LaFAN1 L2Q/L2P).
  - ``"per_joint_mse"``: torch's MSE over the selected entries, ``mean_{seq,f,j,c} (q̂_fjc − q_fjc)²``,
    the mean over sequences, frames, selected joints *and* components, as the AnyMoLe reference computes
    every loss (``F.mse_loss``). For a rotation error of angle θ this is ``sin²(θ/4)`` (a quaternion
    distance ``|q̂ − q|² = 4 sin²(θ/4)`` spread over 4 components). This is the per-joint mean scale on
    which AnyMoLe's figures (≈ 0.001) are plausible.

* `evaluate` works on whole clips: global quaternions from FK by default (``space="global"``, LaFAN1's
  choice), or the clips' local rotations (``space="local"``); positions are always global.

All functions return 0-dim tensors (differentiable), except `evaluate`, which returns Python floats.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from anymole.errors import InvalidInput
from anymole.rig.fk import fk_motion
from anymole.rig.motion import Motion
from anymole.rig.quat import quat_align_sign, quat_continuity
from anymole.rig.skeleton import Skeleton

__all__ = ["HL2Q_THRESHOLDS", "evaluate", "hl2q", "hl2q_joints", "l2p", "l2q", "npss"]

Reduction = Literal["lafan1", "per_joint_mse"]
Space = Literal["global", "local"]
Joints = Sequence[int] | torch.Tensor | None

#: HL2Q thresholds reported by AnyMoLe (supplementary Table 2); ``1/2`` is the main paper's "HL2Q".
HL2Q_THRESHOLDS: dict[str, float] = {"1_4": 0.25, "1_2": 0.5, "3_4": 0.75, "full": 1.0}


def _check_pair(pred: torch.Tensor, gt: torch.Tensor, comps: int | None) -> None:
    if pred.shape != gt.shape:
        raise InvalidInput("pred", f"shape {tuple(pred.shape)} differs from gt {tuple(gt.shape)}")
    if pred.ndim < 3 or (comps is not None and pred.shape[-1] != comps):
        c = "C" if comps is None else str(comps)
        raise InvalidInput("pred", f"must have shape (..., F, J, {c}), got {tuple(pred.shape)}")
    if pred.shape[-3] == 0:
        raise InvalidInput("pred", "has no frames: evaluate at least one frame")


def _select(x: torch.Tensor, joints: Joints) -> torch.Tensor:
    """Restrict ``(..., J, C)`` to ``joints`` (indices or a ``(J,)`` bool mask)."""
    if joints is None:
        return x
    idx = torch.as_tensor(joints, device=x.device)
    if idx.dtype == torch.bool:
        if idx.shape != (x.shape[-2],):
            raise InvalidInput("joints", f"a mask must have shape ({x.shape[-2]},), got {tuple(idx.shape)}")
        idx = torch.nonzero(idx).flatten()
    if idx.numel() == 0:
        raise InvalidInput("joints", "selects no joint")
    return x[..., idx.long(), :]


def _reduce(diff: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    """``diff``: ``(..., F, J, C)`` differences → scalar, by the module's named reductions."""
    if reduction == "lafan1":
        return diff.square().sum(dim=(-2, -1)).sqrt().mean()
    if reduction == "per_joint_mse":
        return diff.square().mean()
    raise InvalidInput("reduction", f"must be 'lafan1' or 'per_joint_mse', got {reduction!r}")


def l2q(
    pred: torch.Tensor, gt: torch.Tensor, *, reduction: Reduction = "lafan1", joints: Joints = None
) -> torch.Tensor:
    """Quaternion error between ``(..., F, J, 4)`` xyzw rotations (pass the transition frames only).

    ``lafan1``: ``mean_{seq,f} sqrt(Σ_{j∈joints} Σ_c (align(q̂)−q)²)``; ``per_joint_mse``:
    ``mean_{seq,f,j∈joints,c} (align(q̂)−q)²``, where ``align`` flips ``q̂`` to ``q``'s hemisphere.

    Args:
        pred: predicted rotations (global for LaFAN1's L2Q).
        gt: ground truth, same shape.
        reduction: ``"lafan1"`` or ``"per_joint_mse"``.
        joints: optional joint indices or ``(J,)`` bool mask to restrict the error to.
    """
    _check_pair(pred, gt, 4)
    diff = quat_align_sign(pred, gt) - gt
    return _reduce(_select(diff, joints), reduction)


def hl2q_joints(depths: Sequence[int] | torch.Tensor, tau: float) -> torch.Tensor:
    """``(J,)`` bool mask of the joints HL2Q(τ) keeps: ``depth <= τ · max(depths)`` (root depth 0)."""
    d = torch.as_tensor(depths)
    if d.ndim != 1 or d.numel() == 0:
        raise InvalidInput("depths", f"must be a non-empty (J,) sequence, got shape {tuple(d.shape)}")
    if not 0.0 <= tau <= 1.0:
        raise InvalidInput("tau", f"must lie in [0, 1], got {tau}")
    # A tiny slack keeps e.g. τ = 1/3 of depth 3 from losing depth 1 to rounding.
    return d.to(torch.float64) <= tau * float(d.max()) + 1e-9


def hl2q(
    pred: torch.Tensor,
    gt: torch.Tensor,
    depths: Sequence[int] | torch.Tensor,
    tau: float = 0.5,
    *,
    reduction: Reduction = "lafan1",
) -> torch.Tensor:
    """AnyMoLe's hierarchical L2Q: `l2q` over the joints with ``depth <= τ × max_depth``.

    ``τ = 1`` is plain L2Q; ``τ = 1/2`` is the main paper's HL2Q; ``τ = 0`` keeps only the roots. The
    depth filter is our reading of the paper's "filtering threshold" (its exact filter is not published in
    the material we have).

    Args:
        pred, gt: ``(..., F, J, 4)`` xyzw rotations.
        depths: ``(J,)`` joint depths, root = 0 (`Skeleton.depths`).
        tau: threshold in ``[0, 1]``.
        reduction: as in `l2q`.
    """
    _check_pair(pred, gt, 4)
    mask = hl2q_joints(depths, tau)
    if mask.shape[0] != pred.shape[-2]:
        raise InvalidInput("depths", f"has {mask.shape[0]} entries, pred has {pred.shape[-2]} joints")
    return l2q(pred, gt, reduction=reduction, joints=mask)


def l2p(
    pred_pos: torch.Tensor,
    gt_pos: torch.Tensor,
    *,
    mean: torch.Tensor | None = None,
    std: torch.Tensor | None = None,
    reduction: Reduction = "lafan1",
    joints: Joints = None,
) -> torch.Tensor:
    """Global-position error between ``(..., F, J, 3)`` joint positions (m).

    LaFAN1 normalises positions by training-set statistics, ``x ↦ (x − mean) / std`` (``mean``/``std``
    broadcastable to ``(J, 3)``, typically per joint-coordinate), then applies the ``lafan1`` reduction.
    Without ``std`` the error is in metres. The ``mean`` cancels in the difference; it is accepted so
    callers can pass LaFAN1-style statistics unchanged.
    """
    _check_pair(pred_pos, gt_pos, 3)
    diff = pred_pos - gt_pos
    del mean  # (x̂ − μ)/σ − (x − μ)/σ = (x̂ − x)/σ
    if std is not None:
        diff = diff / std.to(diff)
    return _reduce(_select(diff, joints), reduction)


def npss(pred: torch.Tensor, gt: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Normalised Power Spectrum Similarity (LaFAN1 / Gopalakrishnan et al. 2019), lower is better.

    Each feature (joint × component) of each sequence is a signal over the ``F`` frames:

    1. ``P = Re(FFT_t(x))²`` — LaFAN1 squares the *real part* of the DFT (not ``|X|²``); kept for parity.
    2. ``p = P / Σ_t P`` (normalised spectrum), ``c = cumsum_t p`` (its CDF).
    3. ``emd = Σ_t |c_pred − c_gt|`` (1-D earth mover's distance = L1 between CDFs).
    4. NPSS = ``Σ emd · W / Σ W`` over features and sequences, with ``W = Σ_t P_gt`` (GT total power).

    Args:
        pred, gt: ``(..., F, J, C)`` (quaternions: sign-continuous over time and aligned to GT, as
            `evaluate` prepares them).
        eps: guards the normalisation of all-zero signals (their GT weight is 0 anyway).
    """
    _check_pair(pred, gt, None)
    x_p = pred.flatten(-2)  # (..., F, D)
    x_g = gt.flatten(-2)
    p_pow = torch.fft.fft(x_p, dim=-2).real.square()
    g_pow = torch.fft.fft(x_g, dim=-2).real.square()
    p_tot = p_pow.sum(-2, keepdim=True)
    g_tot = g_pow.sum(-2, keepdim=True)
    emd = (torch.cumsum(p_pow / p_tot.clamp_min(eps), -2) - torch.cumsum(g_pow / g_tot.clamp_min(eps), -2)).abs().sum(-2)
    w = g_tot.squeeze(-2)
    return (emd * w).sum() / w.sum().clamp_min(eps)


def evaluate(
    skeleton: Skeleton,
    pred: Motion,
    gt: Motion,
    frames: slice | Sequence[int] | torch.Tensor,
    *,
    space: Space = "global",
    hl2q_reduction: Reduction = "per_joint_mse",
    pos_std: torch.Tensor | None = None,
) -> dict[str, float]:
    """Score ``pred`` against ``gt`` on ``frames`` (the in-between frames; both clips on ``skeleton``).

    Quaternions: global ones from FK (``space="global"``) or the local rotations (``space="local"``); GT
    is made sign-continuous over time (`quat_continuity`) and each prediction aligned to GT per frame
    and joint.

    Returns:
        ``l2q`` (``lafan1`` reduction), ``l2q_per_joint_mse``, ``hl2q_1_4``, ``hl2q_1_2``, ``hl2q_3_4``,
        ``hl2q_full`` (HL2Q at τ = 1/4, 1/2, 3/4, 1 with ``hl2q_reduction``, by default the per-joint
        mean scale of AnyMoLe's table, so ``hl2q_full == l2q_per_joint_mse``), ``l2p`` (``lafan1``
        reduction of global positions; in metres unless ``pos_std`` (broadcastable to ``(J, 3)``) gives
        LaFAN1-style normalisation) and ``npss`` (on the quaternions of ``space``).
    """
    if pred.num_joints != skeleton.num_joints or gt.num_joints != skeleton.num_joints:
        raise InvalidInput(
            "pred", f"pred has {pred.num_joints} joints, gt {gt.num_joints}, skeleton {skeleton.num_joints}"
        )
    if pred.num_frames != gt.num_frames:
        raise InvalidInput("pred", f"has {pred.num_frames} frames, gt has {gt.num_frames}")
    if space not in ("global", "local"):
        raise InvalidInput("space", f"must be 'global' or 'local', got {space!r}")
    with torch.no_grad():
        pq, pp = fk_motion(skeleton, pred)
        gq, gp = fk_motion(skeleton, gt)
        if space == "local":
            pq, gq = pred.rotations, gt.rotations
        sel = frames if isinstance(frames, slice) else torch.as_tensor(frames, dtype=torch.long)
        pq, gq, pp, gp = pq[sel], quat_continuity(gq, dim=-3)[sel], pp[sel], gp[sel]
        pq = quat_align_sign(pq.to(gq.dtype), gq)
        out = {
            "l2q": l2q(pq, gq, reduction="lafan1"),
            "l2q_per_joint_mse": l2q(pq, gq, reduction="per_joint_mse"),
            **{
                f"hl2q_{k}": hl2q(pq, gq, skeleton.depths, tau, reduction=hl2q_reduction)
                for k, tau in HL2Q_THRESHOLDS.items()
            },
            "l2p": l2p(pp.to(gp.dtype), gp, std=pos_std, reduction="lafan1"),
            "npss": npss(pq, gq),
        }
    return {k: float(v) for k, v in out.items()}
