"""Per-frame loss terms of motion video mimicking (paper Eq. 3), each ``(B,)`` over a batch of frames, and
the character mask that the silhouette term matches.

Every term is a mean squared error (torch's convention, as the reference computes them) so that the
reference's weights (`MimicConfig`) apply unchanged.
"""

from __future__ import annotations

import math

import torch

from anymole.errors import InvalidInput
from anymole.mimic.config import REFERENCE_HEIGHT
from anymole.render.cameras import Cameras
from anymole.render.soft import EdgeTable, Window, soft_silhouette
from anymole.rig import SkinnedMesh
from anymole.rig.quat import quat_align_sign
from anymole.rig.skinning import linear_blend_skinning

__all__ = ["character_mask", "joint_loss", "mask_window", "posed_silhouette_loss", "root_loss", "rotation_loss", "silhouette_loss"]


def character_mask(frames: torch.Tensor, background: torch.Tensor, threshold: float = 0.08) -> torch.Tensor:
    """Where a frame differs from the known background render: the character.

    The camera and the checkerboard floor are known, so the scene rendered without the character
    separates it from a generated frame. A soft ramp over ``[threshold/2, threshold]`` of the largest
    channel difference keeps anti-aliased edges partial.

    Args:
        frames: ``(F, 3, H, W)`` in [0, 1] (generated video frames).
        background: ``(3, H, W)`` or ``(F, 3, H, W)`` in [0, 1]: the same view without the character.
        threshold: colour difference (in [0, 1]) that counts as fully character.

    Returns:
        ``(F, H, W)`` float in [0, 1].
    """
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise InvalidInput("frames", f"must have shape (F, 3, H, W), got {tuple(frames.shape)}")
    if background.shape[-3:] != frames.shape[-3:]:
        raise InvalidInput("background", f"must match the frames' {tuple(frames.shape[-3:])}, got {tuple(background.shape)}")
    diff = (frames - background.to(frames)).abs().amax(1)
    return ((diff - 0.5 * threshold) / (0.5 * threshold)).clamp(0.0, 1.0)


def joint_loss(
    pixels: torch.Tensor,
    depth: torch.Tensor,
    target_pixels: torch.Tensor,
    target_depth: torch.Tensor,
    focal: float,
    height: int,
    w_depth: float = 1.0,
) -> torch.Tensor:
    """MSE of projected joints against the estimator's, in pixels of a `REFERENCE_HEIGHT` image.

    Depth errors (m) become pixels at the targets' mean depth ``z̄``: a depth change ``δ`` there moves a
    point as far, in the image, as a lateral move ``focal · δ / z̄`` does. The mean runs over joints and the
    three components (x, y, depth).

    Args:
        pixels, target_pixels: ``(B, J, 2)`` (px of an image ``height`` tall).
        depth, target_depth: ``(B, J)`` metric depths (m).
        focal: the camera's focal length (px).
        height: image height (px).
        w_depth: weight of the depth component.

    Returns:
        ``(B,)``.
    """
    scale = REFERENCE_HEIGHT / height
    xy = ((pixels - target_pixels) * scale).square().sum(-1)  # (B, J)
    z_bar = target_depth.mean(-1, keepdim=True).clamp_min(1e-6)
    z = ((depth - target_depth) * (focal * scale) / z_bar).square()
    return (xy + w_depth * z).mean(-1) / 3.0


def silhouette_loss(silhouette: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE between ``(B, h, w)`` soft silhouettes and ``(B, h, w)`` masks in [0, 1]: ``(B,)``."""
    return (silhouette - mask.to(silhouette)).square().mean(dim=(-2, -1))


def posed_silhouette_loss(
    mesh: SkinnedMesh,
    global_quats: torch.Tensor,
    global_pos: torch.Tensor,
    camera: Cameras,
    mask: torch.Tensor,
    sigma: float,
    edges: EdgeTable | None = None,
    window: Window | None = None,
) -> torch.Tensor:
    """`silhouette_loss` of ``mesh`` skinned to a batch of poses, seen by one camera.

    Args:
        mesh: the character's skinned mesh (or a capsule body of its skeleton).
        global_quats: ``(B, J, 4)`` xyzw and global_pos ``(B, J, 3)`` (m): the poses (`forward_kinematics`).
        camera: one camera; its image size is the silhouette's ``(h, w)``.
        mask: ``(B, h, w)`` in [0, 1].
        sigma: the soft silhouette's edge softness (px).
        edges: ``edge_table(mesh.faces)``: a solver builds it once, not at every iteration (it waits for the device).
        window: draw and compare only this rectangle of the image (`mask_window`); ``mask`` is then ``(B, h, w)`` of
            the window. The MSE keeps the whole image's scale (pixels outside count as matched), so a weight
            means the same with or without a window.

    Returns:
        ``(B,)``, differentiable in the poses.
    """
    verts = linear_blend_skinning(mesh.vertices.to(global_pos), mesh.joint_indices, mesh.joint_weights,
                                  mesh.inverse_bind.to(global_pos), global_quats, global_pos)  # fmt: skip
    loss = silhouette_loss(soft_silhouette(verts, mesh.faces, camera, sigma=sigma, edges=edges, window=window)[0], mask)
    if window is None:
        return loss
    return loss * (window[2] * window[3] / (camera.width * camera.height))


def mask_window(masks: torch.Tensor, margin: float = 0.25) -> Window | None:
    """The rectangle of pixels around every frame's mask (its pixels over 0.5: fainter ones beyond the margin,
    a limb thinner than a pixel after the downscale, count as matched), grown by ``margin`` of its larger side
    on each edge (at least 2 px) and clipped to the image: what the silhouette term needs to draw.

    The soft silhouette costs pixels × triangles, and a character often covers a small part of its frame (the
    CMU walker: 28 × 50 of 128 × 80 px). The margin leaves room for a pose that strays from the mask; pixels
    beyond it count as matched.

    Args:
        masks: ``(F, h, w)`` in [0, 1].

    Returns:
        ``(x0, y0, width, height)``, or ``None`` where no mask covers a pixel (draw the whole image).
    """
    if masks.ndim != 3:
        raise InvalidInput("masks", f"need (F, h, w), got {tuple(masks.shape)}")
    h, w = masks.shape[-2:]
    cover = (masks > 0.5).any(0).cpu()  # (h, w): one read per fit
    rows, cols = cover.any(1).nonzero().flatten(), cover.any(0).nonzero().flatten()
    if rows.numel() == 0:
        return None
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    grow = max(2, math.ceil(margin * max(y1 - y0, x1 - x0)))
    x0, y0, x1, y1 = max(0, x0 - grow), max(0, y0 - grow), min(w, x1 + grow), min(h, y1 + grow)
    return x0, y0, x1 - x0, y1 - y0


def root_loss(root: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE (m²) of ``(B, 3)`` roots against their ``(B, 3)`` interpolation between keys: ``(B,)``."""
    return (root - target).square().mean(-1)


def rotation_loss(quats: torch.Tensor, init: torch.Tensor) -> torch.Tensor:
    """MSE of ``(B, J, 4)`` rotations against their ``(B, J, 4)`` initialisation (sign-aligned): ``(B,)``."""
    return (quat_align_sign(quats, init) - init).square().mean(dim=(-2, -1))
