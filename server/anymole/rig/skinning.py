"""Linear blend skinning (LBS), batched over frames and differentiable in the joint transforms.

Joint transforms are rigid (rotation + translation, no scale), as produced by `anymole.rig.fk`. A vertex
moves by the weighted sum of its joints' skinning matrices ``M_j = T_j @ inverse_bind_j``, where ``T_j`` is
the joint's current world transform; at the bind pose ``T_j = inverse_bind_j⁻¹`` and every ``M_j = I``.
"""

from __future__ import annotations

import torch

from anymole.errors import InvalidInput
from anymole.rig.quat import quat_apply, quat_conj, unitquat_to_rotmat

__all__ = [
    "inverse_bind_matrices",
    "joint_matrices",
    "linear_blend_skinning",
    "skin_normals",
    "skinning_matrices",
]


def joint_matrices(global_quats: torch.Tensor, global_pos: torch.Tensor) -> torch.Tensor:
    """World transforms ``[[R, p], [0, 1]]`` of joints.

    Args:
        global_quats: ``(..., J, 4)`` unit xyzw world rotations.
        global_pos: ``(..., J, 3)`` world positions (m); batch dims broadcast with ``global_quats``.

    Returns:
        ``(..., J, 4, 4)`` homogeneous matrices (column-vector convention).
    """
    if global_quats.ndim < 2 or global_quats.shape[-1] != 4:
        raise InvalidInput("global_quats", f"must have shape (..., J, 4), got {tuple(global_quats.shape)}")
    if global_pos.ndim < 2 or tuple(global_pos.shape[-2:]) != (global_quats.shape[-2], 3):
        raise InvalidInput(
            "global_pos", f"must have shape (..., {global_quats.shape[-2]}, 3), got {tuple(global_pos.shape)}"
        )
    R = unitquat_to_rotmat(global_quats)
    batch = torch.broadcast_shapes(R.shape[:-2], global_pos.shape[:-1])
    top = torch.cat((R.expand(*batch, 3, 3), global_pos.expand(*batch, 3).unsqueeze(-1)), dim=-1)
    bottom = torch.zeros(*batch, 1, 4, dtype=top.dtype, device=top.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat((top, bottom), dim=-2)


def inverse_bind_matrices(global_quats: torch.Tensor, global_pos: torch.Tensor) -> torch.Tensor:
    """``(..., J, 4, 4)`` inverses of `joint_matrices` (rigid: ``(q, p)⁻¹ = (q*, −q*·p)``), i.e. the
    ``inverse_bind`` of a mesh bound with its joints at these world rotations and positions (m)."""
    inv = quat_conj(global_quats)
    return joint_matrices(inv, -quat_apply(inv, global_pos))


def skinning_matrices(
    global_quats: torch.Tensor, global_pos: torch.Tensor, inverse_bind: torch.Tensor
) -> torch.Tensor:
    """``(..., J, 3, 4)``: the top three rows of ``T_j @ inverse_bind_j`` (bind space → posed world space).

    Args:
        global_quats: ``(..., J, 4)`` unit xyzw world rotations.
        global_pos: ``(..., J, 3)`` world positions (m).
        inverse_bind: ``(J, 4, 4)`` world → joint-local transforms at bind time.
    """
    J = global_quats.shape[-2] if global_quats.ndim >= 2 else -1
    if inverse_bind.ndim != 3 or tuple(inverse_bind.shape) != (J, 4, 4):
        raise InvalidInput("inverse_bind", f"must have shape ({J}, 4, 4), got {tuple(inverse_bind.shape)}")
    T = joint_matrices(global_quats, global_pos)
    return (T @ inverse_bind.to(T.dtype))[..., :3, :]


def _blended(
    vertices: torch.Tensor,
    joint_indices: torch.Tensor,
    joint_weights: torch.Tensor,
    inverse_bind: torch.Tensor,
    global_quats: torch.Tensor,
    global_pos: torch.Tensor,
) -> torch.Tensor:
    """``(..., V, 3, 4)`` per-vertex blended skinning matrices ``Σ_k w_vk M_{idx_vk}``."""
    if vertices.ndim != 2 or vertices.shape[-1] != 3:
        raise InvalidInput("vertices", f"must have shape (V, 3), got {tuple(vertices.shape)}")
    V = vertices.shape[0]
    if joint_indices.ndim != 2 or joint_indices.shape[0] != V:
        raise InvalidInput("joint_indices", f"must have shape ({V}, K), got {tuple(joint_indices.shape)}")
    if tuple(joint_weights.shape) != tuple(joint_indices.shape):
        raise InvalidInput(
            "joint_weights", f"must have the shape of joint_indices {tuple(joint_indices.shape)}, "
            f"got {tuple(joint_weights.shape)}"
        )
    M = skinning_matrices(global_quats, global_pos, inverse_bind)  # (..., J, 3, 4)
    J = M.shape[-3]
    # A dense (V, J) weight matrix turns the blend into one matmul over joints: far less memory than
    # gathering (..., V, K, 3, 4) per-influence matrices, and BLAS-fast on CPU and GPU.
    W = torch.zeros(V, J, dtype=M.dtype, device=M.device)
    W = W.scatter_add(1, joint_indices.long(), joint_weights.to(M.dtype))
    return (W @ M.flatten(-2)).unflatten(-1, (3, 4))


def linear_blend_skinning(
    vertices: torch.Tensor,
    joint_indices: torch.Tensor,
    joint_weights: torch.Tensor,
    inverse_bind: torch.Tensor,
    global_quats: torch.Tensor,
    global_pos: torch.Tensor,
) -> torch.Tensor:
    """Posed vertex positions ``v' = Σ_k w_k (T_{j_k} @ inverse_bind_{j_k}) [v; 1]``.

    Args:
        vertices: ``(V, 3)`` bind-pose positions (m), world space.
        joint_indices: ``(V, K)`` int joint indices (padding entries carry weight 0).
        joint_weights: ``(V, K)`` non-negative weights, rows summing to 1 (not re-normalised here).
        inverse_bind: ``(J, 4, 4)`` world → joint-local at bind time.
        global_quats: ``(..., J, 4)`` unit xyzw world joint rotations (e.g. from FK).
        global_pos: ``(..., J, 3)`` world joint positions (m).

    Returns:
        ``(..., V, 3)`` posed positions; gradients flow to ``global_quats``, ``global_pos``, ``vertices``
        and ``joint_weights``.
    """
    B = _blended(vertices, joint_indices, joint_weights, inverse_bind, global_quats, global_pos)
    v = vertices.to(B.dtype)
    return (B[..., :3] @ v.unsqueeze(-1)).squeeze(-1) + B[..., 3]


def skin_normals(
    normals: torch.Tensor,
    joint_indices: torch.Tensor,
    joint_weights: torch.Tensor,
    inverse_bind: torch.Tensor,
    global_quats: torch.Tensor,
    global_pos: torch.Tensor,
    eps: float = 1e-12,
) -> torch.Tensor:
    """Posed unit normals: the blended 3×3 part applied to ``(V, 3)`` bind normals, then re-normalised.

    Uses the blended matrix instead of its inverse transpose — exact when the skinning matrices are
    rigid and the usual LBS approximation otherwise. Returns ``(..., V, 3)``.
    """
    B = _blended(normals, joint_indices, joint_weights, inverse_bind, global_quats, global_pos)
    n = (B[..., :3] @ normals.to(B.dtype).unsqueeze(-1)).squeeze(-1)
    return n / n.norm(dim=-1, keepdim=True).clamp_min(eps)
