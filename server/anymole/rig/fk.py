"""Forward kinematics (local → global joint transforms) and its rotational inverse, batched in torch.

The hierarchy is processed one depth level at a time: all joints of a level are updated by one gathered
quaternion product, so the Python loop runs ``max_depth + 1`` times, never once per joint or per frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from anymole.errors import InvalidInput
from anymole.rig.motion import Motion
from anymole.rig.quat import quat_apply, quat_conj, quat_mul
from anymole.rig.skeleton import Skeleton, joint_depths

__all__ = ["fk_motion", "forward_kinematics", "global_to_local"]


@dataclass(frozen=True)
class _Plan:
    """Index tensors for a level-by-level FK over one hierarchy (on one device).

    ``levels[k]``: joint indices at depth k (ascending). ``parent_slot[k]`` (k >= 1): for each joint of
    level k, the position of its parent inside ``levels[k - 1]``. ``inverse``: maps the concatenation of
    all levels back to joint order.
    """

    levels: tuple[torch.Tensor, ...]
    parent_slot: tuple[torch.Tensor, ...]
    inverse: torch.Tensor


def _as_parents(parents: tuple[int, ...] | list[int] | torch.Tensor) -> tuple[int, ...]:
    p = tuple(int(x) for x in (parents.tolist() if isinstance(parents, torch.Tensor) else parents))
    for j, pj in enumerate(p):
        if not -1 <= pj < j:
            raise InvalidInput(
                "parents", f"parents[{j}] = {pj}: joints must be in topological order (parent < index, root -1)"
            )
    return p


@lru_cache(maxsize=64)
def _plan(parents: tuple[int, ...], device: torch.device) -> _Plan:
    depth = joint_depths(parents)
    levels_py = [[j for j, d in enumerate(depth) if d == k] for k in range(max(depth) + 1)]
    slots = []
    for k in range(1, len(levels_py)):
        where = {j: i for i, j in enumerate(levels_py[k - 1])}
        slots.append(torch.tensor([where[parents[j]] for j in levels_py[k]], dtype=torch.long, device=device))
    order = torch.tensor([j for lvl in levels_py for j in lvl], dtype=torch.long, device=device)
    return _Plan(
        levels=tuple(torch.tensor(lvl, dtype=torch.long, device=device) for lvl in levels_py),
        parent_slot=tuple(slots),
        inverse=torch.argsort(order),
    )


def forward_kinematics(
    local_quats: torch.Tensor,
    offsets: torch.Tensor,
    parents: tuple[int, ...] | list[int] | torch.Tensor,
    root_pos: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Global joint rotations and positions from local ones.

    For joint ``j`` with parent ``p``: ``G_q[j] = G_q[p] ⊗ local_quats[j]`` and
    ``G_p[j] = G_p[p] + G_q[p] · offsets[j]``. Roots (parent -1) have ``G_q = local_quats`` and
    ``G_p = offsets`` (their world position), except joint 0, which takes ``root_pos`` when given.

    Args:
        local_quats: ``(..., J, 4)`` unit, xyzw, parent-relative rotations.
        offsets: ``(J, 3)`` or ``(..., J, 3)`` local translations (m) in the parent frame (broadcast
            against ``local_quats``' batch dimensions).
        parents: ``J`` parent indices, topological (``parents[j] < j``, roots ``-1``); tuple, list or tensor.
        root_pos: optional ``(..., 3)`` world position (m) of joint 0, overriding ``offsets[0]``.

    Returns:
        ``(global_quats (..., J, 4), global_pos (..., J, 3))`` in world space; differentiable in every
        tensor input.
    """
    if local_quats.ndim < 2 or local_quats.shape[-1] != 4:
        raise InvalidInput("local_quats", f"must have shape (..., J, 4), got {tuple(local_quats.shape)}")
    J = local_quats.shape[-2]
    if offsets.ndim < 2 or tuple(offsets.shape[-2:]) != (J, 3):
        raise InvalidInput("offsets", f"must have shape ({J}, 3) or (..., {J}, 3), got {tuple(offsets.shape)}")
    par = _as_parents(parents)
    if len(par) != J:
        raise InvalidInput("parents", f"has {len(par)} entries but local_quats has {J} joints")
    if root_pos is not None and (root_pos.ndim < 1 or root_pos.shape[-1] != 3):
        raise InvalidInput("root_pos", f"must have shape (..., 3), got {tuple(root_pos.shape)}")

    plan = _plan(par, local_quats.device)
    batch = torch.broadcast_shapes(
        local_quats.shape[:-2], offsets.shape[:-2], () if root_pos is None else root_pos.shape[:-1]
    )
    lq = local_quats.expand(*batch, J, 4)
    off = offsets.to(local_quats.dtype).expand(*batch, J, 3)

    roots = plan.levels[0]
    gq = lq[..., roots, :]
    gp = off[..., roots, :]
    if root_pos is not None:
        # Joint 0 is always a root and sorts first in level 0.
        gp = torch.cat((root_pos.to(gp.dtype).expand(*batch, 3).unsqueeze(-2), gp[..., 1:, :]), dim=-2)
    out_q, out_p = [gq], [gp]
    for joints, slot in zip(plan.levels[1:], plan.parent_slot, strict=True):
        pq = gq[..., slot, :]
        gp = gp[..., slot, :] + quat_apply(pq, off[..., joints, :])
        gq = quat_mul(pq, lq[..., joints, :])
        out_q.append(gq)
        out_p.append(gp)
    global_quats = torch.cat(out_q, dim=-2)[..., plan.inverse, :]
    global_pos = torch.cat(out_p, dim=-2)[..., plan.inverse, :]
    return global_quats, global_pos


def fk_motion(skeleton: Skeleton, motion: Motion) -> tuple[torch.Tensor, torch.Tensor]:
    """FK of a clip: ``(global_quats (F, J, 4), global_pos (F, J, 3))``.

    Uses ``motion.translations`` as per-frame offsets when present, else ``skeleton.offsets``; joint 0 is
    placed at ``motion.root_translation``.
    """
    if motion.num_joints != skeleton.num_joints:
        raise InvalidInput(
            "motion.rotations", f"has {motion.num_joints} joints, the skeleton has {skeleton.num_joints}"
        )
    offsets = skeleton.offsets if motion.translations is None else motion.translations
    return forward_kinematics(motion.rotations, offsets, skeleton.parents, motion.root_translation)


def global_to_local(
    global_quats: torch.Tensor, parents: tuple[int, ...] | list[int] | torch.Tensor
) -> torch.Tensor:
    """Inverse of FK for rotations: ``local[j] = conj(G[parent[j]]) ⊗ G[j]``; roots keep ``G``.

    Args:
        global_quats: ``(..., J, 4)`` unit xyzw world rotations.
        parents: ``J`` topological parent indices.

    Returns:
        ``(..., J, 4)`` unit local rotations; FK of them reproduces ``global_quats`` (up to rounding).
    """
    if global_quats.ndim < 2 or global_quats.shape[-1] != 4:
        raise InvalidInput("global_quats", f"must have shape (..., J, 4), got {tuple(global_quats.shape)}")
    par = _as_parents(parents)
    if len(par) != global_quats.shape[-2]:
        raise InvalidInput("parents", f"has {len(par)} entries but global_quats has {global_quats.shape[-2]} joints")
    idx = torch.tensor([p if p >= 0 else j for j, p in enumerate(par)], dtype=torch.long, device=global_quats.device)
    is_root = torch.tensor([p < 0 for p in par], device=global_quats.device).unsqueeze(-1)
    rel = quat_mul(quat_conj(global_quats[..., idx, :]), global_quats)
    return torch.where(is_root, global_quats, rel)
