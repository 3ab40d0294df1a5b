"""Differentiable soft silhouettes: agreement with the hard renders, gradients, pose recovery."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from anymole.errors import InvalidInput
from anymole.render import GLRasterizer, orbit_cameras, pose_mesh, soft_render, soft_silhouette, stick_figure
from anymole.rig import Skeleton
from anymole.rig.fk import forward_kinematics
from anymole.rig.quat import axis_angle_to_unitquat
from device_waits import DeviceWaits


def tee() -> Skeleton:
    """Root, a 'spine' joint, and two branches: every rotation of the spine joint changes the silhouette."""
    offsets = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.4, 0.0], [0.3, 0.0, 0.0], [0.0, 0.0, 0.25]])
    return Skeleton(
        names=("root", "spine", "arm", "nose"),
        parents=(-1, 0, 1, 1),
        offsets=offsets,
        rest_rotations=torch.tensor([[0.0, 0.0, 0.0, 1.0]] * 4),
        end_sites={2: torch.tensor([0.25, 0.0, 0.0]), 3: torch.tensor([0.0, 0.0, 0.15])},
    )


def posed(sk: Skeleton, mesh, spine_aa: torch.Tensor, root: torch.Tensor):
    aa = torch.zeros(1, 4, 3, dtype=spine_aa.dtype)
    aa = torch.cat((aa[:, :1], spine_aa.view(1, 1, 3), aa[:, 2:]), dim=1)
    gq, gp = forward_kinematics(axis_angle_to_unitquat(aa), sk.offsets, sk.parents, root.view(1, 3))
    verts, _ = pose_mesh(mesh, gq, gp)
    return verts, gp


def test_soft_silhouette_matches_the_hard_mask():
    sk = tee()
    mesh = stick_figure(sk, radius=0.05, segments=8)
    verts, _ = posed(sk, mesh, torch.tensor([0.0, 0.4, 0.3]), torch.tensor([0.0, 1.0, 0.0]))
    cams = orbit_cameras(verts, 8, width=80, height=48).select([0, 2])
    sil = soft_silhouette(verts, mesh.faces, cams, sigma=0.5)
    assert sil.shape == (2, 1, 48, 80) and float(sil.min()) >= 0.0 and float(sil.max()) <= 1.0
    with GLRasterizer(80, 48) as gl:
        hard = gl.render(verts, verts, mesh.faces, cams).mask[:, :, :, :]
    soft = (sil > 0.5).numpy()
    iou = (soft & hard).sum() / (soft | hard).sum()
    assert iou > 0.98  # the 0.5 level of the soft silhouette is the hard outline
    # Winding does not matter (no back-face culling anywhere).
    flipped = soft_silhouette(verts, mesh.faces.flip(-1), cams, sigma=0.5)
    torch.testing.assert_close(flipped, sil)


def test_soft_render_blends_colour_and_background():
    sk = tee()
    mesh = stick_figure(sk, radius=0.15, segments=6)
    verts, _ = posed(sk, mesh, torch.zeros(3), torch.tensor([0.0, 1.0, 0.0]))
    cams = orbit_cameras(verts, 1, width=64, height=40)
    colors = torch.tensor([0.9, 0.2, 0.1]).expand(mesh.num_faces, 3)
    rgb, sil = soft_render(verts, mesh.faces, cams, colors, background=(0.0, 1.0, 0.0), sigma=0.3)
    assert rgb.shape == (1, 1, 3, 40, 64)
    torch.testing.assert_close(sil, soft_silhouette(verts, mesh.faces, cams, sigma=0.3), atol=1e-5, rtol=0)
    bg = sil[0, 0] < 1e-4
    on = sil[0, 0] > 0.999
    assert bg.sum() > 100 and on.sum() > 100
    green = torch.tensor([0.0, 1.0, 0.0]).view(3, 1).expand(3, int(bg.sum()))
    torch.testing.assert_close(rgb[0, 0][:, bg], green, atol=2e-4, rtol=0)  # alpha < 1e-4 there
    # On the body: the face colour times a shade in [ambient, 1], no background green.
    body = rgb[0, 0][:, on]
    assert (body[0] > 0.9 * 0.35 - 1e-3).all() and (body[0] <= 0.9 + 1e-3).all()
    torch.testing.assert_close(body[1] / body[0], torch.full_like(body[0], 0.2 / 0.9), atol=5e-3, rtol=0)


def test_pose_is_recovered_from_its_own_soft_silhouettes():
    torch.manual_seed(0)
    sk = tee()
    mesh = stick_figure(sk, radius=0.05, segments=6)
    true_aa, true_root = torch.tensor([0.2, 0.5, 0.3]), torch.tensor([0.0, 1.0, 0.0])
    with torch.no_grad():
        target_verts, target_joints = posed(sk, mesh, true_aa, true_root)
    cams = orbit_cameras(target_verts, 8, width=80, height=48, margin=0.25).select([0, 2])  # 90° apart
    target = soft_silhouette(target_verts, mesh.faces, cams)

    aa = (true_aa + torch.tensor([0.25, -0.3, 0.2])).requires_grad_(True)
    root = (true_root + torch.tensor([0.06, -0.05, 0.05])).requires_grad_(True)
    _, start_joints = posed(sk, mesh, aa.detach(), root.detach())
    start_err = float((start_joints - target_joints).norm(dim=-1).max())

    # Gradients reach both the joint rotation and the root translation.
    verts, _ = posed(sk, mesh, aa, root)
    loss = (soft_silhouette(verts, mesh.faces, cams) - target).square().mean()
    g_aa, g_root = torch.autograd.grad(loss, (aa, root))
    assert (
        g_aa.norm() > 0 and g_root.norm() > 0 and torch.isfinite(g_aa).all() and torch.isfinite(g_root).all()
    )

    opt = torch.optim.Adam([aa, root], lr=0.03)
    for _ in range(50):
        opt.zero_grad()
        verts, _ = posed(sk, mesh, aa, root)
        loss = (soft_silhouette(verts, mesh.faces, cams) - target).square().mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        _, joints = posed(sk, mesh, aa, root)
    err = float((joints - target_joints).norm(dim=-1).max())
    assert start_err > 0.1
    assert err < 0.012, (start_err, err)  # seen: 0.13 m → 4 mm
    np.testing.assert_allclose(root.detach().numpy(), true_root.numpy(), atol=0.01)


def test_soft_silhouette_of_a_real_mesh_matches_the_gl_mask():
    """CesiumMan (4672 triangles, open seams): the 0.5 level is the rasterised mask."""
    from pathlib import Path

    from anymole.io import load_character
    from anymole.render import pose_motion

    character = load_character(Path(__file__).resolve().parents[2] / "assets" / "CesiumMan.glb")
    motion = next(iter(character.motions.values())).slice(10, 11)
    _, pos, nrm = pose_motion(character, motion)
    assert character.mesh is not None
    cams = orbit_cameras(pos, 2, width=64, height=40)
    sil = soft_silhouette(pos, character.mesh.faces, cams)
    with GLRasterizer(64, 40) as gl:
        hard = gl.render(pos, nrm, character.mesh.faces, cams).mask
    soft = (sil > 0.5).numpy()
    assert (soft & hard).sum() / (soft | hard).sum() > 0.98  # seen: 0.995


def test_a_given_edge_table_changes_nothing_and_leaves_one_device_wait_a_call():
    """The mesh's `edge_table` built once and passed in gives the same silhouette and gradient as building it in
    the call, and the call then reads one value on the host (its outline's edge count, which sizes the
    nearest-edge search) where building the table reads two values (one of them a data-sized `unique`)."""
    from anymole.io import load_character
    from anymole.render import edge_table, pose_motion

    fox = load_character(Path(__file__).resolve().parents[2] / "assets" / "Fox.glb")
    assert fox.mesh is not None
    _, pos, _ = pose_motion(fox, next(iter(fox.motions.values())).slice(0, 3))
    cams = orbit_cameras(pos.reshape(-1, 3), 2, width=48, height=32)
    verts = pos.clone().requires_grad_(True)
    table = edge_table(fox.mesh.faces)
    with DeviceWaits() as given:
        sil = soft_silhouette(verts, fox.mesh.faces, cams, edges=table)
    with DeviceWaits() as built:
        ref = soft_silhouette(verts, fox.mesh.faces, cams)
    assert torch.equal(sil, ref) and float(sil.detach().max()) > 0.99  # the fox is in view
    (g,) = torch.autograd.grad(sil.square().sum(), verts)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), verts)
    assert torch.equal(g, g_ref) and float(g.abs().max()) > 0
    assert given.counts == {"read": 1}
    assert built.counts == {"read": 2, "shape": 1}


def test_a_window_draws_the_same_pixels_as_the_whole_image():
    """`soft_silhouette(window=…)` is the crop of the whole image's silhouette, values and gradients, and a window
    that leaves the image is refused naming ``window``."""
    sk = tee()
    mesh = stick_figure(sk, radius=0.05, segments=8)
    aa = torch.tensor([0.0, 0.4, 0.3], dtype=torch.float64, requires_grad=True)
    verts, _ = posed(sk, mesh, aa, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    cams = orbit_cameras(verts.detach().float(), 8, width=80, height=48).select([0, 2])
    whole = soft_silhouette(verts, mesh.faces, cams, sigma=0.7)
    x0, y0, w, h = 21, 9, 30, 25
    part = soft_silhouette(verts, mesh.faces, cams, sigma=0.7, window=(x0, y0, w, h))
    assert part.shape == (2, 1, h, w)
    crop = whole[..., y0 : y0 + h, x0 : x0 + w]
    assert 0.05 < float(crop.detach().mean()) < 0.95  # the window holds outline, not only body or background
    torch.testing.assert_close(part, crop, atol=1e-12, rtol=0)
    weights = torch.rand_like(crop, dtype=torch.float64)
    (g_part,) = torch.autograd.grad((part * weights).sum(), aa, retain_graph=True)
    (g_crop,) = torch.autograd.grad((crop * weights).sum(), aa)
    torch.testing.assert_close(g_part, g_crop, atol=1e-10, rtol=1e-8)
    assert float(g_part.norm()) > 0
    for bad in ((70, 0, 20, 10), (-1, 0, 5, 5), (0, 0, 0, 5)):
        with pytest.raises(InvalidInput) as err:
            soft_silhouette(verts, mesh.faces, cams, window=bad)
        assert err.value.field == "window"
