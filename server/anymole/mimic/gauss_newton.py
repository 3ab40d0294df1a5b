"""Levenberg–Marquardt solve of one mimicking phase: the same objective as the reference's Adam loop, solved.

The joint, depth, root and rotation terms are least squares, so each frame's problem is ``min_x Σ r(x)²`` over
``x = (δ (J·3), root (3))``, the rotation vectors ``δ`` applied to the start (``q = q0 ⊗ exp(δ)``). A Gauss–Newton
step solves ``(JᵀJ + λ D) Δ = −Jᵀr`` and changes nothing along directions the residuals do not see (twist about
a bone, a turn that a zero-length child undoes) but what the regulariser asks, whereas Adam's per-coordinate
steps wander along them. The silhouette term, an image, enters through its gradient only (its curvature is left
out of the normal equations); every step is kept only where it lowers the whole loss, silhouette included.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import jacfwd, vmap

from anymole.mimic.config import REFERENCE_HEIGHT, MimicConfig
from anymole.mimic.losses import posed_silhouette_loss
from anymole.render.cameras import Cameras
from anymole.render.soft import EdgeTable, Window
from anymole.rig import Skeleton, SkinnedMesh
from anymole.rig.fk import forward_kinematics
from anymole.rig.quat import axis_angle_to_unitquat, quat_align_sign, quat_conj, quat_identity, quat_mul

__all__ = ["solve_lm"]


def _pose(x: torch.Tensor, q0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x (..., 3J + 3)`` → local quaternions ``(..., J, 4)`` and root ``(..., 3)``."""
    j = q0.shape[-2]
    delta = x[..., : 3 * j].reshape(*x.shape[:-1], j, 3)
    return quat_mul(q0, axis_angle_to_unitquat(delta)), x[..., 3 * j :]


def solve_lm(
    q0: torch.Tensor,
    r0: torch.Tensor,
    root_target: torch.Tensor,
    skeleton: Skeleton,
    offsets: torch.Tensor,
    camera: Cameras,
    tgt_px: torch.Tensor,
    tgt_d: torch.Tensor,
    cfg: MimicConfig,
    prior: torch.Tensor | None,
    silhouette: tuple[SkinnedMesh, EdgeTable, Cameras, torch.Tensor, Window | None] | None = None,
    fill: torch.Tensor | None = None,
    confidence: torch.Tensor | None = None,
    on_iteration: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve a batch of ``B`` frames.

    Args:
        q0: ``(B, J, 4)`` start (and the regulariser's centre); r0: ``(B, 3)`` start root (m).
        root_target: ``(B, 3)`` the root's pull (m).
        offsets: ``(B, J, 3)`` per-frame offsets (m).
        tgt_px, tgt_d: ``(B, J, 2)`` px and ``(B, J)`` m, the targets.
        prior: ``(J, 3, 3)`` precision of the rotation regulariser (`anymole.mimic.prior`), or ``None`` (identity:
            the reference's isotropic regulariser).
        silhouette: ``(mesh, its edge_table, small camera, masks (B, h, w), window)`` for the image term (``masks``
            of the ``window`` of the small camera's image, `posed_silhouette_loss`), or ``None``.
        fill: ``(B, J, 4)`` the first guess at these frames, centre of the ``w_fill`` regulariser (default ``q0``).
        confidence: ``(J, 2)`` weights of each joint's 2D and depth residuals (`MimicTargets.confidence`), or ``None``.
        on_iteration: called with the number of iterations done after each one; raising (a cancel) stops the solve.

    Returns:
        ``(quats (B, J, 4), root (B, 3))``.
    """
    b, j = q0.shape[:2]
    dt = q0.dtype
    scale = REFERENCE_HEIGHT / camera.height
    zbar = tgt_d.mean(-1, keepdim=True).clamp_min(1e-6)  # (B, 1)
    n_j = 3 * j
    eye3 = torch.eye(3, dtype=dt, device=q0.device).expand(j, 3, 3)
    chol = torch.linalg.cholesky(prior.to(q0)) if prior is not None else eye3  # P = L Lᵀ
    conf = torch.ones(j, 2, dtype=dt, device=q0.device) if confidence is None else confidence.to(q0)
    w_j = (cfg.w_joints / n_j) ** 0.5 * conf[:, 0].sqrt()  # (J,)
    w_z = (cfg.w_joints / n_j) ** 0.5 * conf[:, 1].sqrt() * cfg.w_depth**0.5 * camera.focal * scale
    w_r = (cfg.w_root / 3) ** 0.5
    w_q = (cfg.w_rot / (16 * j)) ** 0.5
    w_f = (cfg.w_fill / (16 * j)) ** 0.5
    anchor = fill if fill is not None else q0
    ident = quat_identity(dtype=dt, device=q0.device)

    def residual(x: torch.Tensor, q0f: torch.Tensor, off: torch.Tensor, tpx: torch.Tensor, td: torch.Tensor,
                 zb: torch.Tensor, rt: torch.Tensor, qa: torch.Tensor) -> torch.Tensor:  # fmt: skip
        q, root = _pose(x, q0f)
        to_fill = 2.0 * quat_align_sign(quat_mul(quat_conj(qa), q), ident)[:, :3]  # (J, 3) ≈ rotation vector
        _, gp = forward_kinematics(q, off, skeleton.parents, root)
        px, depth = camera.project(gp)
        delta = x[:n_j].reshape(j, 3)
        reg = torch.einsum("jik,ji->jk", chol, delta)  # Lᵀ δ per joint
        return torch.cat((
            (w_j[:, None] * scale * (px[0] - tpx)).flatten(),
            w_z * (depth[0] - td) / zb,
            w_r * (root - rt),
            w_q * reg.flatten(),
            w_f * torch.einsum("jik,ji->jk", chol, to_fill).flatten(),
        ))  # fmt: skip

    args = (q0, offsets, tgt_px, tgt_d, zbar, root_target, anchor)
    res_b = vmap(residual)
    def residual_twice(x: torch.Tensor, *a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = residual(x, *a)
        return r, r

    # the Jacobian pass computes the residuals too: take them from it (aux) rather than evaluating them again
    jac_res_b = vmap(jacfwd(residual_twice, has_aux=True))

    def sil_loss(x: torch.Tensor) -> torch.Tensor:  # (B,)
        assert silhouette is not None
        mesh, edges, small, masks, window = silhouette
        q, root = _pose(x, q0)
        gq, gp = forward_kinematics(q, offsets, skeleton.parents, root)
        return cfg.w_silhouette * posed_silhouette_loss(mesh, gq, gp, small, masks, cfg.sigma_px, edges, window)

    def total(x: torch.Tensor) -> torch.Tensor:
        loss = res_b(x, *args).square().sum(-1)
        return loss + sil_loss(x) if silhouette is not None else loss

    x = torch.cat((torch.zeros(b, n_j, dtype=dt, device=q0.device), r0), -1)
    lam = torch.full((b, 1, 1), cfg.lm_damping, dtype=dt, device=q0.device)
    with torch.no_grad():
        cur = total(x)
    for it in range(cfg.steps):
        with torch.no_grad():
            jac, r = jac_res_b(x, *args)  # (B, M, N), (B, M)
        g = torch.einsum("bmn,bm->bn", jac, r)
        if silhouette is not None:
            xg = x.clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(sil_loss(xg).sum(), xg)
            g = g + 0.5 * grad
        h = jac.transpose(1, 2) @ jac
        diag = torch.diag_embed(h.diagonal(dim1=-2, dim2=-1) + 1e-9)
        # solve_ex, not solve: solve checks for a singular system on the host, a device sync every iteration.
        # A singular frame's step (inf/nan) is refused below and its damping raised, as for a step that fails.
        sol, info = torch.linalg.solve_ex(h + lam * diag, g.unsqueeze(-1))
        step = -sol.squeeze(-1)
        with torch.no_grad():
            new = total(x + step)
            ok = (new < cur) & (info == 0)
            x = torch.where(ok[:, None], x + step, x)
            cur = torch.where(ok, new, cur)
            lam = torch.where(ok[:, None, None], lam / 3, lam * 4).clamp(1e-9, 1e9)
        if on_iteration is not None:
            on_iteration(it + 1)
    q, root = _pose(x, q0)
    return q.detach(), root.detach()
