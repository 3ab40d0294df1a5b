"""Forward kinematics against a naive per-joint reference, FK∘IK, multiple roots, gradients, Motion FK."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from anymole.rig import Motion, Skeleton
from anymole.rig.fk import fk_motion, forward_kinematics, global_to_local
from anymole.rig.quat import axis_angle_to_unitquat, quat_identity, quat_normalize, unitquat_to_rotmat


@st.composite
def hierarchies(draw: st.DrawFn) -> tuple[int, ...]:
    """Random topological parent lists; joint 0 is a root, later joints may be extra roots."""
    n = draw(st.integers(1, 9))
    return (-1, *(draw(st.integers(-1, j - 1)) for j in range(1, n)))


def _naive_fk(
    lq: torch.Tensor, offsets: torch.Tensor, parents: tuple[int, ...], root: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-joint loop with rotation matrices: the textbook definition."""
    R = unitquat_to_rotmat(lq)
    gR: list[torch.Tensor] = []
    gp: list[torch.Tensor] = []
    for j, p in enumerate(parents):
        off = offsets[..., j, :].expand(*lq.shape[:-2], 3)
        if p < 0:
            gR.append(R[..., j, :, :])
            gp.append(root if (j == 0 and root is not None) else off)
        else:
            gR.append(gR[p] @ R[..., j, :, :])
            gp.append(gp[p] + (gR[p] @ off[..., None])[..., 0])
    return torch.stack(gR, dim=-3), torch.stack(gp, dim=-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(parents=hierarchies(), seed=st.integers(0, 2**16), use_root=st.booleans(), per_frame=st.booleans())
def test_fk_matches_naive_reference(
    dtype: torch.dtype, parents: tuple[int, ...], seed: int, use_root: bool, per_frame: bool
) -> None:
    g = torch.Generator().manual_seed(seed)
    J = len(parents)
    lq = quat_normalize(torch.randn(2, 3, J, 4, generator=g, dtype=dtype))  # (batch, frames, J, 4)
    offsets = torch.randn(*((2, 3) if per_frame else ()), J, 3, generator=g, dtype=dtype)
    root = torch.randn(2, 3, 3, generator=g, dtype=dtype) if use_root else None
    gq, gp = forward_kinematics(lq, offsets, parents, root)
    assert gq.shape == (2, 3, J, 4) and gp.shape == (2, 3, J, 3)
    refR, refp = _naive_fk(lq, offsets, parents, root)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(unitquat_to_rotmat(gq), refR, atol=tol, rtol=0)
    torch.testing.assert_close(gp, refp, atol=tol, rtol=0)
    # parents as a tensor give the same result
    gq2, gp2 = forward_kinematics(lq, offsets, torch.tensor(parents), root)
    torch.testing.assert_close(gq2, gq)
    torch.testing.assert_close(gp2, gp)


@given(parents=hierarchies(), seed=st.integers(0, 2**16))
def test_fk_ik_round_trips(parents: tuple[int, ...], seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    J = len(parents)
    lq = quat_normalize(torch.randn(4, J, 4, generator=g, dtype=torch.float64))
    offsets = torch.randn(J, 3, generator=g, dtype=torch.float64)
    gq, _ = forward_kinematics(lq, offsets, parents)
    torch.testing.assert_close(global_to_local(gq, parents), lq)  # IK∘FK (exact sign: products only)
    G = quat_normalize(torch.randn(4, J, 4, generator=g, dtype=torch.float64))
    torch.testing.assert_close(forward_kinematics(global_to_local(G, parents), offsets, parents)[0], G)  # FK∘IK


def test_fk_hand_computed_chain_and_multiple_roots() -> None:
    # 0 (root at origin) → 1 (0.5 m up +Y) → 2 (0.3 m up); joint 3 is a second root at (2, 0, 0).
    parents = (-1, 0, 1, -1)
    offsets = torch.tensor([[9.0, 9, 9], [0, 0.5, 0], [0, 0.3, 0], [2.0, 0, 0]])
    lq = quat_identity(4).clone()
    lq[0] = axis_angle_to_unitquat(torch.tensor([0, 0, math.pi / 2]))  # 90° about Z: +Y → -X
    lq[1] = axis_angle_to_unitquat(torch.tensor([0, 0, -math.pi / 2]))  # undo it for the child
    gq, gp = forward_kinematics(lq, offsets, parents, root_pos=torch.tensor([1.0, 0, 0]))
    torch.testing.assert_close(gp[0], torch.tensor([1.0, 0, 0]))  # root_pos overrides offsets[0]
    torch.testing.assert_close(gp[1], torch.tensor([0.5, 0, 0]))  # 1 - 0.5 along X
    torch.testing.assert_close(gp[2], torch.tensor([0.5, 0.3, 0]))  # back to +Y for the grandchild
    torch.testing.assert_close(gp[3], torch.tensor([2.0, 0, 0]))  # other root keeps its offset
    torch.testing.assert_close(gq[2], quat_identity(()))
    # without root_pos, joint 0 sits at its offset
    torch.testing.assert_close(forward_kinematics(lq, offsets, parents)[1][0], offsets[0])


def test_fk_gradcheck() -> None:
    g = torch.Generator().manual_seed(0)
    parents = (-1, 0, 1, 0, 3)
    lq = quat_normalize(torch.randn(2, 5, 4, generator=g, dtype=torch.float64)).requires_grad_(True)
    off = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    root = torch.randn(2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: forward_kinematics(a, b, parents, c), (lq, off, root))


def test_fk_motion_uses_translations_when_present() -> None:
    sk = Skeleton(
        names=("root", "hip", "knee"),
        parents=(-1, 0, 1),
        offsets=torch.tensor([[0.0, 0, 0], [0, 1.0, 0], [0, -0.5, 0]]),
        rest_rotations=quat_identity(3),
    )
    F = 2
    rot = quat_identity((F, 3))
    root = torch.tensor([[0.0, 0, 0], [1.0, 0, 0]])
    gq, gp = fk_motion(sk, Motion(fps=30.0, rotations=rot, root_translation=root))
    assert gq.shape == (F, 3, 4)
    torch.testing.assert_close(gp[1, 2], torch.tensor([1.0, 0.5, 0]))
    tr = sk.offsets.expand(F, 3, 3).clone()
    tr[:, 0] = root
    tr[1, 1] = torch.tensor([0.0, 2.0, 0])  # the hip is animated on frame 1
    _, gp2 = fk_motion(sk, Motion(fps=30.0, rotations=rot, root_translation=root, translations=tr))
    torch.testing.assert_close(gp2[1, 2], torch.tensor([1.0, 1.5, 0]))
    torch.testing.assert_close(gp2[0], gp[0])


def test_fk_shape_errors_name_the_argument() -> None:
    q = quat_identity((2, 3))
    with pytest.raises(ValueError, match=r"^offsets:"):
        forward_kinematics(q, torch.zeros(4, 3), (-1, 0, 1))
    with pytest.raises(ValueError, match=r"^parents:"):
        forward_kinematics(q, torch.zeros(3, 3), (-1, 0))
    with pytest.raises(ValueError, match=r"^parents:"):
        forward_kinematics(q, torch.zeros(3, 3), (-1, 2, 0))
    with pytest.raises(ValueError, match=r"^local_quats:"):
        forward_kinematics(torch.zeros(3, 3), torch.zeros(3, 3), (-1, 0, 1))
    with pytest.raises(ValueError, match=r"^root_pos:"):
        forward_kinematics(q, torch.zeros(3, 3), (-1, 0, 1), torch.zeros(2, 2))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    from anymole.rig.quat import unitquat_slerp
    from anymole.rig.skinning import linear_blend_skinning

    g = torch.Generator().manual_seed(5)
    parents = (-1, 0, 1, 1, 0)
    lq = quat_normalize(torch.randn(3, 5, 4, generator=g))
    off = torch.randn(5, 3, generator=g)
    root = torch.randn(3, 3, generator=g)
    cpu = forward_kinematics(lq, off, parents, root)
    gpu = forward_kinematics(lq.cuda(), off.cuda(), parents, root.cuda())
    for a, b in zip(cpu, gpu, strict=True):
        torch.testing.assert_close(b.cpu(), a, atol=1e-5, rtol=0)
    torch.testing.assert_close(unitquat_slerp(lq.cuda(), lq.flip(0).cuda(), 0.3).cpu(), unitquat_slerp(lq, lq.flip(0), 0.3))
    verts = torch.randn(6, 3, generator=g)
    idx = torch.randint(0, 5, (6, 2), generator=g)
    w = torch.full((6, 2), 0.5)
    ib = torch.eye(4).expand(5, 4, 4)
    ref = linear_blend_skinning(verts, idx, w, ib, *cpu)
    out = linear_blend_skinning(verts.cuda(), idx.cuda(), w.cuda(), ib.cuda(), *gpu)
    torch.testing.assert_close(out.cpu(), ref, atol=1e-5, rtol=0)
