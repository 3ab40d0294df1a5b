"""Linear blend skinning: bind pose identity, naive per-vertex reference, rigid motion, normals, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from anymole.rig.fk import forward_kinematics
from anymole.rig.quat import axis_angle_to_unitquat, quat_apply, quat_mul, quat_normalize, unitquat_to_rotmat
from anymole.rig.skinning import inverse_bind_matrices, joint_matrices, linear_blend_skinning, skin_normals

PARENTS = (-1, 0, 1, 1, 3)
J, V, K = 5, 7, 3


def _rig(dtype: torch.dtype = torch.float64, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    offsets = torch.randn(J, 3, generator=g, dtype=dtype)
    bind_q, bind_p = forward_kinematics(quat_normalize(torch.randn(J, 4, generator=g, dtype=dtype)), offsets, PARENTS)
    w = torch.rand(V, K, generator=g, dtype=dtype)
    w[0] = torch.tensor([1.0, 0.0, 0.0])  # a vertex bound to one joint, with zero-weight padding
    return {
        "offsets": offsets,
        "bind_q": bind_q,
        "bind_p": bind_p,
        "vertices": torch.randn(V, 3, generator=g, dtype=dtype),
        "normals": quat_normalize(torch.randn(V, 4, generator=g, dtype=dtype))[:, :3].contiguous(),
        "idx": torch.randint(0, J, (V, K), generator=g),
        "w": w / w.sum(-1, keepdim=True),
        "inverse_bind": torch.linalg.inv(joint_matrices(bind_q, bind_p)),
        "pose_q": quat_normalize(torch.randn(4, J, 4, generator=g, dtype=dtype)),  # 4 frames
        "pose_p": torch.randn(4, J, 3, generator=g, dtype=dtype),
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bind_pose_reproduces_bind_vertices(dtype: torch.dtype) -> None:
    r = _rig(dtype)
    q = r["bind_q"].expand(3, J, 4)  # three identical frames
    out = linear_blend_skinning(r["vertices"], r["idx"], r["w"], r["inverse_bind"], q, r["bind_p"])
    assert out.shape == (3, V, 3)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(out, r["vertices"].expand(3, V, 3), atol=tol, rtol=0)
    n = skin_normals(r["normals"], r["idx"], r["w"], r["inverse_bind"], q, r["bind_p"])
    torch.testing.assert_close(n, (r["normals"] / r["normals"].norm(dim=-1, keepdim=True)).expand(3, V, 3), atol=tol, rtol=0)


def test_matches_naive_per_vertex_loop() -> None:
    r = _rig()
    out = linear_blend_skinning(r["vertices"], r["idx"], r["w"], r["inverse_bind"], r["pose_q"], r["pose_p"])
    T = joint_matrices(r["pose_q"], r["pose_p"])
    for f in range(T.shape[0]):
        for v in range(V):
            hv = torch.cat((r["vertices"][v], torch.ones(1, dtype=torch.float64)))
            ref = sum(r["w"][v, k] * (T[f, r["idx"][v, k]] @ r["inverse_bind"][r["idx"][v, k]] @ hv) for k in range(K))
            torch.testing.assert_close(out[f, v], ref[:3])


def test_single_joint_vertex_moves_rigidly() -> None:
    # Joint 0 rotates 90° about Y and moves by (1, 2, 3) from its bind transform; vertex 0 is bound to it.
    r = _rig()
    j = int(r["idx"][0, 0])
    dq = axis_angle_to_unitquat(torch.tensor([0, math.pi / 2, 0], dtype=torch.float64))
    shift = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    q = r["bind_q"].clone()
    p = r["bind_p"].clone()
    q[j] = quat_mul(dq, r["bind_q"][j])
    p[j] = quat_apply(dq, r["bind_p"][j]) + shift
    out = linear_blend_skinning(r["vertices"], r["idx"], r["w"], r["inverse_bind"], q, p)
    torch.testing.assert_close(out[0], quat_apply(dq, r["vertices"][0]) + shift)
    n = skin_normals(r["normals"], r["idx"], r["w"], r["inverse_bind"], q, p)
    torch.testing.assert_close(n[0], unitquat_to_rotmat(dq) @ (r["normals"][0] / r["normals"][0].norm()))


def test_gradients_flow_to_rotations_and_positions() -> None:
    r = _rig()
    q = r["pose_q"][:2].clone().requires_grad_(True)
    p = r["pose_p"][:2].clone().requires_grad_(True)

    def f(q_: torch.Tensor, p_: torch.Tensor) -> torch.Tensor:
        return linear_blend_skinning(r["vertices"], r["idx"], r["w"], r["inverse_bind"], q_, p_)

    assert torch.autograd.gradcheck(f, (q, p), fast_mode=True)


def test_shape_errors_name_the_argument() -> None:
    r = _rig()
    args = [r["vertices"], r["idx"], r["w"], r["inverse_bind"], r["pose_q"], r["pose_p"]]
    with pytest.raises(ValueError, match=r"^joint_weights:"):
        linear_blend_skinning(*args[:2], r["w"][:, :2], *args[3:])
    with pytest.raises(ValueError, match=r"^inverse_bind:"):
        linear_blend_skinning(*args[:3], r["inverse_bind"][:3], *args[4:])
    with pytest.raises(ValueError, match=r"^vertices:"):
        linear_blend_skinning(r["vertices"][:, :2], *args[1:])
    with pytest.raises(ValueError, match=r"^global_pos:"):
        joint_matrices(r["pose_q"], r["pose_p"][..., :2, :])


def test_inverse_bind_matrices_invert_the_joint_matrices():
    r = _rig()
    torch.testing.assert_close(inverse_bind_matrices(r["bind_q"], r["bind_p"]), r["inverse_bind"])
