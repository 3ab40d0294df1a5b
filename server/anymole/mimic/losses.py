"""Per-frame loss terms of motion video mimicking (paper Eq. 3), each ``(B,)`` over a batch of frames, and
the character mask that the silhouette term matches.

Every term is a mean squared error (torch's convention, as the reference computes them) so that the
reference's weights (`MimicConfig`) apply unchanged.
"""

from __future__ import annotations

import torch

from anymole.errors import InvalidInput
from anymole.mimic.config import REFERENCE_HEIGHT
from anymole.render.cameras import Cameras
from anymole.render.soft import EdgeTable, soft_silhouette
from anymole.rig import SkinnedMesh
from anymole.rig.quat import quat_align_sign
from anymole.rig.skinning import linear_blend_skinning

__all__ = ["character_mask", "joint_loss", "posed_silhouette_loss", "root_loss", "rotation_loss", "silhouette_loss"]


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
) -> torch.Tensor:
    """`silhouette_loss` of ``mesh`` skinned to a batch of poses, seen by one camera.

    Args:
        mesh: the character's skinned mesh (or a capsule body of its skeleton).
        global_quats: ``(B, J, 4)`` xyzw and global_pos ``(B, J, 3)`` (m): the poses (`forward_kinematics`).
        camera: one camera; its image size is the silhouette's ``(h, w)``.
        mask: ``(B, h, w)`` in [0, 1].
        sigma: the soft silhouette's edge softness (px).
        edges: ``edge_table(mesh.faces)``: a solver builds it once, not at every iteration (it waits for the device).

    Returns:
        ``(B,)``, differentiable in the poses.
    """
    verts = linear_blend_skinning(mesh.vertices.to(global_pos), mesh.joint_indices, mesh.joint_weights,
                                  mesh.inverse_bind.to(global_pos), global_quats, global_pos)  # fmt: skip
    return silhouette_loss(soft_silhouette(verts, mesh.faces, camera, sigma=sigma, edges=edges)[0], mask)


def root_loss(root: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE (m²) of ``(B, 3)`` roots against their ``(B, 3)`` interpolation between keys: ``(B,)``."""
    return (root - target).square().mean(-1)


def rotation_loss(quats: torch.Tensor, init: torch.Tensor) -> torch.Tensor:
    """MSE of ``(B, J, 4)`` rotations against their ``(B, J, 4)`` initialisation (sign-aligned): ``(B,)``."""
    return (quat_align_sign(quats, init) - init).square().mean(dim=(-2, -1))
