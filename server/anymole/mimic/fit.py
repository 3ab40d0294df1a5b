"""Motion video mimicking: fit joint rotations and the root to the estimator's joints and the character's
silhouette on every generated frame, all gaps batched, keys and context exact.

Per solve (a `Phase` of frames across all gaps) the parameters are unit quaternions kept normalised
(``q = p / |p|``) for every local rotation, root included, and the root translation. Each frame starts from
its solved neighbour moved by the initial motion's own step between the two frames (the initial motion is
the SLERP fill, so a fill that the video agrees with is kept), and the rotation regulariser holds it near
that start. The optimiser, its schedule and the adaptive resets follow the reference (`MimicConfig`); the
resets and the gradient clip act per frame, so batching changes no frame's result. The presets solve each phase
by Levenberg–Marquardt instead (`anymole.mimic.gauss_newton`), with the regulariser shaped by the context's
motion (`anymole.mimic.prior`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from anymole.errors import InvalidInput
from anymole.mimic.config import MimicConfig
from anymole.mimic.gauss_newton import solve_lm
from anymole.mimic.losses import joint_loss, mask_window, posed_silhouette_loss, root_loss, rotation_loss
from anymole.mimic.prior import prior_rotation_loss
from anymole.mimic.schedule import Phase, find_gaps, phases, smooth_keep_known
from anymole.render.cameras import Cameras
from anymole.render.mesh import stick_figure
from anymole.render.soft import EdgeTable, Window, edge_table
from anymole.rig import Motion, Skeleton, SkinnedMesh
from anymole.rig.fk import forward_kinematics
from anymole.rig.quat import quat_conj, quat_mul, quat_normalize, unitquat_slerp

__all__ = ["MimicTargets", "mimic"]

OnStep = Callable[..., None]


@dataclass(frozen=True)
class MimicTargets:
    """What each frame of the clip should look like (rows of known frames are ignored).

    Attributes:
        joints_px: ``(F, J, 2)`` the estimator's 2D joints (px).
        depth: ``(F, J)`` its joint depths (m).
        mask: ``(F, H, W)`` the character's mask in [0, 1] (`character_mask`), or ``None`` for no silhouette term.
        confidence: ``(J, 2)`` weight in [0, 1] of each joint's 2D target and of its depth
            (`anymole.pipeline.fromvideo.relative_targets` lowers it where the estimator misreads renders of the
            first guess), or ``None``: all 1.
    """

    joints_px: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor | None = None
    confidence: torch.Tensor | None = None


def _check(init: Motion, known: torch.Tensor, targets: MimicTargets, camera: Cameras) -> None:
    f, j = init.num_frames, init.num_joints
    if len(camera) != 1:
        raise InvalidInput("camera", f"mimicking uses one view, got {len(camera)} cameras")
    if tuple(known.shape) != (f,):
        raise InvalidInput("known", f"must have shape ({f},), got {tuple(known.shape)}")
    if tuple(targets.joints_px.shape) != (f, j, 2):
        raise InvalidInput("targets.joints_px", f"must have shape ({f}, {j}, 2), got {tuple(targets.joints_px.shape)}")
    if tuple(targets.depth.shape) != (f, j):
        raise InvalidInput("targets.depth", f"must have shape ({f}, {j}), got {tuple(targets.depth.shape)}")
    m = targets.mask
    if m is not None and tuple(m.shape) != (f, camera.height, camera.width):
        raise InvalidInput("targets.mask", f"must have shape ({f}, {camera.height}, {camera.width}), got {tuple(m.shape)}")
    c = targets.confidence
    if c is not None and tuple(c.shape) != (j, 2):
        raise InvalidInput("targets.confidence", f"must have shape ({j}, 2) (per joint: 2D, depth), got {tuple(c.shape)}")


def _start(phase: Phase, rot: torch.Tensor, root: torch.Tensor, init: Motion) -> tuple[torch.Tensor, torch.Tensor]:
    """Starting pose ``((B, J, 4), (B, 3))`` of each frame: its solved neighbour plus the initial motion's step."""

    def step_from(nb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        iq = init.rotations
        delta = quat_mul(quat_conj(iq[nb]), iq[phase.frames])  # local step of the SLERP fill, per joint
        q = quat_normalize(quat_mul(rot[nb], delta))
        r = root[nb] + init.root_translation[phase.frames] - init.root_translation[nb]
        return q, r

    q, r = step_from(phase.prev)
    middle = phase.other >= 0
    if bool(middle.any()):
        q2, r2 = step_from(torch.where(middle, phase.other, phase.prev))
        q = torch.where(middle[:, None, None], unitquat_slerp(q, q2, 0.5), q)
        r = torch.where(middle[:, None], 0.5 * (r + r2), r)
    return q, r


def _clip_per_frame(params: list[torch.Tensor], max_norm: float) -> None:
    """Scale each frame's gradient (over all ``params``, leading dim ``B``) to at most ``max_norm``."""
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.sqrt(sum(g.flatten(1).square().sum(1) for g in grads))  # type: ignore[arg-type]
    scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *([1] * (g.ndim - 1))))


def _solve(
    phase: Phase,
    q0: torch.Tensor,
    r0: torch.Tensor,
    root_target: torch.Tensor,
    skeleton: Skeleton,
    offsets: torch.Tensor,
    mesh: SkinnedMesh | None,
    edges: EdgeTable | None,
    camera: Cameras,
    sil_camera: Cameras,
    window: Window | None,
    targets: MimicTargets,
    masks: torch.Tensor | None,
    cfg: MimicConfig,
    prior: torch.Tensor | None,
    on_iteration: Callable[[int], None],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimise one phase's ``B`` frames; returns the best ``(quats (B, J, 4), root (B, 3))`` of each frame.
    ``on_iteration(steps done)`` after each step; raising (a cancel) stops the solve."""
    f = phase.frames
    p_q = q0.clone().requires_grad_(True)
    p_r = r0.clone().requires_grad_(True)
    opt = torch.optim.Adam([p_q, p_r], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CyclicLR(
        opt, base_lr=cfg.base_lr, max_lr=cfg.lr, step_size_up=cfg.cycle_up, mode="triangular2", cycle_momentum=False
    )
    tgt_px, tgt_d = targets.joints_px[f].to(q0), targets.depth[f].to(q0)
    mask = masks[f] if masks is not None else None
    best = torch.full((len(f),), float("inf"), dtype=q0.dtype, device=q0.device)
    best_q, best_r = q0.clone(), r0.clone()
    since = torch.zeros(len(f), dtype=torch.long, device=q0.device)
    for it in range(cfg.steps):
        q = quat_normalize(p_q)
        gq, gp = forward_kinematics(q, offsets[f], skeleton.parents, p_r)
        px, depth = camera.project(gp)
        loss = cfg.w_joints * joint_loss(px[0], depth[0], tgt_px, tgt_d, camera.focal, camera.height, cfg.w_depth)
        reg = rotation_loss(q, q0) if prior is None else prior_rotation_loss(q, q0, prior)
        loss = loss + cfg.w_root * root_loss(p_r, root_target) + cfg.w_rot * reg
        if mask is not None and mesh is not None:
            loss = loss + cfg.w_silhouette * posed_silhouette_loss(mesh, gq, gp, sil_camera, mask, cfg.sigma_px, edges, window)
        with torch.no_grad():
            better = loss < best
            best = torch.where(better, loss, best)
            best_q = torch.where(better[:, None, None], p_q, best_q)
            best_r = torch.where(better[:, None], p_r, best_r)
            since = torch.where(better, 0, since + 1)
            reset = (loss > cfg.reset_ratio * best) | (since >= cfg.patience)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        _clip_per_frame([p_q, p_r], cfg.grad_clip)
        opt.step()
        sched.step()
        with torch.no_grad():  # back to the best iterate where the run diverged or stalled
            p_q.copy_(torch.where(reset[:, None, None], best_q, p_q))
            p_r.copy_(torch.where(reset[:, None], best_r, p_r))
            since = torch.where(reset, 0, since)
        on_iteration(it + 1)
    # the loss of the final parameters was never measured: keep the best measured iterate
    return quat_normalize(best_q.detach()), best_r.detach()


def mimic(
    skeleton: Skeleton,
    camera: Cameras,
    init: Motion,
    known: torch.Tensor,
    targets: MimicTargets,
    config: MimicConfig,
    on_step: OnStep | None = None,
    *,
    mesh: SkinnedMesh | None = None,
    prior: torch.Tensor | None = None,
) -> Motion:
    """Fit the unknown frames of ``init`` to the generated video's targets.

    Args:
        skeleton: the rig.
        camera: the one view the video was generated from (`Cameras` of length 1).
        init: ``F`` frames at the video's frame rate: the known frames (context, keys) exact and a first
            guess (the SLERP fill) elsewhere.
        known: ``(F,)`` bool; the first and last frames must be known (every gap has a key on each side).
        targets: the estimator's joints and the character masks, per frame.
        config: weights, optimiser, smoothing.
        on_step: ``on_step("mimic", fraction)`` after each iteration of each phase's solve; raising (a cancel) stops
            the fit there.
        mesh: the character's skinned mesh for the silhouette term (a capsule body of the skeleton when omitted).
        prior: ``(J, 3, 3)`` precision of the rotation regulariser from the context's motion
            (`anymole.mimic.prior.rotation_prior`); ``None``: the reference's isotropic regulariser.

    Returns:
        The clip with every unknown frame solved and smoothed; known frames equal ``init``'s bit for bit.
    """
    _check(init, known, targets, camera)
    gaps = find_gaps(known)
    dev, dtype = init.rotations.device, init.rotations.dtype
    offsets = (init.translations if init.translations is not None
               else skeleton.offsets.to(dev, dtype).expand(init.num_frames, -1, -1))  # fmt: skip
    rot, root = init.rotations.clone(), init.root_translation.clone()
    # The root's pull: linear interpolation between each gap's two key roots.
    root_interp = init.root_translation.clone()
    for a, b in gaps:
        t = torch.arange(1, b - a, device=dev, dtype=dtype)[:, None] / (b - a)
        root_interp[a + 1 : b] = (1 - t) * root[a] + t * root[b]
    masks, sil_camera, body, edges, window = None, camera, mesh, None, None
    if targets.mask is not None and config.w_silhouette > 0:
        scale = min(1.0, math.sqrt(config.silhouette_pixels / (camera.height * camera.width)))
        h, w = max(8, round(camera.height * scale)), max(8, round(camera.width * scale))
        sil_camera = camera.resized(w, h)
        masks = torch.nn.functional.interpolate(targets.mask[:, None].to(dtype), size=(h, w), mode="area")[:, 0].to(dev)
        window = mask_window(masks[~known.bool().to(dev)])  # around the unknown frames' masks
        if window is not None:  # draw only around the character: the term costs pixels × triangles
            x0, y0, ww, wh = window
            masks = masks[:, y0 : y0 + wh, x0 : x0 + ww]
        body = mesh if mesh is not None else stick_figure(skeleton, segments=6)
        edges = edge_table(body.faces)  # once, not at each of the solves' iterations: building it waits for the device
    plan = phases(gaps)
    for i, phase in enumerate(plan):
        ph = phase.to(dev)
        q0, r0 = _start(ph, rot, root, init)

        def done(steps: int, i: int = i) -> None:
            if on_step is not None:
                on_step("mimic", (i + steps / config.steps) / len(plan))

        if config.solver == "lm":
            f = ph.frames
            sil = None if masks is None or body is None or edges is None else (body, edges, sil_camera, masks[f], window)
            q, r = solve_lm(q0, r0, root_interp[f], skeleton, offsets[f], camera, targets.joints_px[f].to(q0),
                            targets.depth[f].to(q0), config, prior, sil, init.rotations[f], targets.confidence, done)  # fmt: skip
        else:
            q, r = _solve(ph, q0, r0, root_interp[ph.frames], skeleton, offsets, body, edges, camera, sil_camera,
                          window, targets, masks, config, prior, done)  # fmt: skip
        rot[ph.frames], root[ph.frames] = q.to(dtype), r.to(dtype)
    rot, root = smooth_keep_known(rot, root, known, config.smooth_sigma)
    keep = known.bool().to(dev)
    rot = torch.where(keep[:, None, None], init.rotations, rot)
    root = torch.where(keep[:, None], init.root_translation, root)
    return Motion(fps=init.fps, rotations=rot, root_translation=root, translations=init.translations, name=init.name)
