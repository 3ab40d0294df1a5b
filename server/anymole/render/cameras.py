"""Pinhole cameras orbiting a motion, auto-fitted so that every frame stays in view.

Conventions (one place for the whole renderer):

* World space is glTF's: right-handed, +Y up, metres.
* Camera space is OpenGL's: +X right, +Y up, the camera looks down −Z. ``world_to_camera`` maps world
  points there (the extrinsics).
* Pixels: x to the right, y **down**, origin at the top-left corner of the image; the centre of pixel
  ``(row i, column j)`` is ``(j + 0.5, i + 0.5)``. ``intrinsics`` is the usual ``K`` in that convention.
* Depth is metric: the distance along the viewing axis (−z in camera space), in metres. The reference
  implementation labels joints with pytorch3d's NDC depth instead, which depends on the clip planes; metric
  depth does not, and a consumer that wants NDC can compute it from ``znear``/``zfar``.

Views follow the reference renders (anymole_reference_code.md §2): a main ``frame`` view, ``left`` and
``right`` at −5°/+5° azimuth, and ``back`` at −179°, all with the same distance, elevation and look-at.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from anymole.errors import InvalidInput

__all__ = ["DEFAULT_HEIGHT", "DEFAULT_WIDTH", "Cameras", "orbit_cameras", "view_layout"]

DEFAULT_WIDTH = 512
DEFAULT_HEIGHT = 320

# Azimuth offsets (degrees) from the main view, by view count; the reference's 4-view layout and its
# prefixes (N=3 for the joint estimator, N=1 for mimicking). Other counts spread views evenly.
_LAYOUTS: dict[int, tuple[tuple[str, float], ...]] = {
    1: (("frame", 0.0),),
    2: (("frame", 0.0), ("back", -179.0)),
    3: (("frame", 0.0), ("left", -5.0), ("right", 5.0)),
    4: (("frame", 0.0), ("left", -5.0), ("right", 5.0), ("back", -179.0)),
}


def view_layout(views: int) -> tuple[tuple[str, float], ...]:
    """Names and azimuth offsets (degrees, about +Y) of ``views`` orbit cameras, main view first."""
    if views < 1:
        raise InvalidInput("views", f"need at least one view, got {views}")
    if views in _LAYOUTS:
        return _LAYOUTS[views]
    return tuple((f"view{k}", 360.0 * k / views) for k in range(views))


@dataclass(frozen=True, eq=False)
class Cameras:
    """A batch of ``C`` pinhole cameras sharing one image size and field of view.

    Attributes:
        world_to_camera: ``(C, 4, 4)`` float32, rigid world → camera (OpenGL axes) transforms (extrinsics).
        fov_y: vertical field of view (rad).
        width: image width (px).
        height: image height (px).
        znear: near clip distance (m): the GL depth range starts here, and soft renders drop triangles
            with a vertex nearer than this.
        zfar: far clip distance (m): the GL depth range ends here; soft renders normalise depth by it.
        names: ``C`` view names, e.g. ``("frame", "left", "right", "back")``.
    """

    world_to_camera: torch.Tensor
    fov_y: float
    width: int
    height: int
    znear: float
    zfar: float
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        c = len(self.names)
        if tuple(self.world_to_camera.shape) != (c, 4, 4):
            raise ValueError(
                f"world_to_camera must have shape ({c}, 4, 4) for {c} names, got {tuple(self.world_to_camera.shape)}"
            )
        if not 0.0 < self.fov_y < math.pi:
            raise ValueError(f"fov_y must be in (0, pi) rad, got {self.fov_y}")
        if self.width < 1 or self.height < 1:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")
        if not 0.0 < self.znear < self.zfar:
            raise ValueError(f"need 0 < znear < zfar, got {self.znear}, {self.zfar}")

    def __len__(self) -> int:
        return len(self.names)

    @property
    def focal(self) -> float:
        """Focal length in pixels (square pixels): ``(H / 2) / tan(fov_y / 2)``."""
        return 0.5 * self.height / math.tan(0.5 * self.fov_y)

    @property
    def intrinsics(self) -> torch.Tensor:
        """``(C, 3, 3)`` pixel-space ``K`` (y down, principal point at the image centre)."""
        f = self.focal
        k = torch.tensor([[f, 0.0, 0.5 * self.width], [0.0, f, 0.5 * self.height], [0.0, 0.0, 1.0]])
        return k.to(self.world_to_camera).expand(len(self), 3, 3).clone()

    @property
    def extrinsics(self) -> torch.Tensor:
        """``(C, 4, 4)`` world → camera transforms; the same tensor as ``world_to_camera``."""
        return self.world_to_camera

    @property
    def positions(self) -> torch.Tensor:
        """``(C, 3)`` camera centres in world space (m)."""
        r = self.world_to_camera[:, :3, :3]
        t = self.world_to_camera[:, :3, 3]
        return -(r.transpose(-1, -2) @ t.unsqueeze(-1)).squeeze(-1)

    def gl_projection(self, flip_y: bool = False) -> torch.Tensor:
        """``(4, 4)`` OpenGL clip matrix matching `intrinsics` (``flip_y`` puts image row 0 at GL's y = 0)."""
        n, f = self.znear, self.zfar
        sy = 1.0 / math.tan(0.5 * self.fov_y)
        sx = sy * self.height / self.width
        p = torch.tensor(
            [
                [sx, 0.0, 0.0, 0.0],
                [0.0, -sy if flip_y else sy, 0.0, 0.0],
                [0.0, 0.0, -(f + n) / (f - n), -2.0 * f * n / (f - n)],
                [0.0, 0.0, -1.0, 0.0],
            ]
        )
        return p.to(self.world_to_camera)

    def project(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project world points into every camera.

        Args:
            points: ``(..., 3)`` world positions (m); differentiable.

        Returns:
            ``(pixels (C, ..., 2), depth (C, ...))``: pixel coordinates (x right, y down, top-left origin)
            and metric depth along each camera's axis (m, positive in front of the camera).
        """
        if points.shape[-1] != 3:
            raise ValueError(f"points must have shape (..., 3), got {tuple(points.shape)}")
        batch = points.shape[:-1]
        flat = points.reshape(1, -1, 3)
        m = self.world_to_camera.to(points)
        cam = flat @ m[:, :3, :3].transpose(-1, -2) + m[:, None, :3, 3]  # (C, N, 3)
        depth = -cam[..., 2]
        f = self.focal
        # Guard the division only: points behind the camera still get a (meaningless) finite pixel.
        z = depth.clamp_min(1e-6)
        px = torch.stack(
            (0.5 * self.width + f * cam[..., 0] / z, 0.5 * self.height - f * cam[..., 1] / z), -1
        )
        c = len(self)
        return px.reshape(c, *batch, 2), depth.reshape(c, *batch)

    def resized(self, width: int, height: int) -> Cameras:
        """The same views at another image size (same vertical field of view; keep the aspect to keep the
        framing), e.g. a low-resolution copy for soft silhouettes."""
        return replace(self, width=width, height=height)

    def to(self, device: torch.device | str) -> Cameras:
        """The same views with ``world_to_camera`` on ``device``."""
        return replace(self, world_to_camera=self.world_to_camera.to(device))

    def select(self, index: int | Sequence[int]) -> Cameras:
        """The cameras at ``index`` (one int or a sequence), as a new batch."""
        idx = [index] if isinstance(index, int) else list(index)
        return replace(self, world_to_camera=self.world_to_camera[idx], names=tuple(self.names[i] for i in idx))


def _look_from(direction: torch.Tensor, target: torch.Tensor, distance: float) -> torch.Tensor:
    """``(C, 4, 4)`` world → camera for cameras at ``target + distance·direction`` looking at ``target``.

    ``direction`` is ``(C, 3)`` unit, never parallel to +Y (orbit elevations stay inside ±89°).
    """
    back = direction  # camera +Z points away from the target
    up_world = torch.tensor([0.0, 1.0, 0.0], dtype=direction.dtype).expand_as(back)
    right = torch.nn.functional.normalize(torch.cross(up_world, back, dim=-1), dim=-1)
    up = torch.cross(back, right, dim=-1)
    rot = torch.stack((right, up, back), dim=-2)  # rows = camera axes in world coordinates
    eye = target + distance * direction
    m = torch.zeros(direction.shape[0], 4, 4, dtype=direction.dtype)
    m[:, :3, :3] = rot
    m[:, :3, 3] = -(rot @ eye.unsqueeze(-1)).squeeze(-1)
    m[:, 3, 3] = 1.0
    return m


def _travel_azimuth(points: torch.Tensor) -> float | None:
    """Azimuth (deg) of the main horizontal travel direction of ``(F, N, 3)`` points, or ``None`` if they stay put.

    A side view of the travel shows the most root motion (the reference's example is a side view of a walk).
    """
    centres = points.mean(dim=1)[:, [0, 2]]  # (F, 2): x, z of each frame's centroid
    spread = centres - centres.mean(dim=0)
    body = (points[0].amax(0) - points[0].amin(0)).norm()
    if spread.norm(dim=-1).amax() < 0.25 * body:
        return None
    # Principal horizontal axis of the trajectory (sign-free: the side view is the same either way round).
    _, _, v = torch.linalg.svd(spread, full_matrices=False)
    dx, dz = float(v[0, 0]), float(v[0, 1])
    return math.degrees(math.atan2(dx, dz)) + 90.0


def orbit_cameras(
    points: torch.Tensor,
    views: int = 4,
    *,
    width: int = DEFAULT_WIDTH,
    height: int = DEFAULT_HEIGHT,
    fov_y_deg: float = 30.0,
    elevation_deg: float = 10.0,
    azimuth_deg: float | None = None,
    margin: float = 0.1,
) -> Cameras:
    """Orbit cameras around ``points`` (all frames of a motion) with every point inside every image.

    The look-at is the centre of the points' bounding box. The distance is the smallest at which every point
    of every frame projects at least ``margin`` (a fraction of the half-width/half-height) inside the image
    of every view; it is solved in closed form, per point, and shared by all views (as in the reference).

    Args:
        points: ``(F, N, 3)`` or ``(N, 3)`` world positions (m): posed joints, or mesh vertices for a tighter
            fit of the body's surface.
        views: number of views; see `view_layout`.
        width, height: image size (px); the reference uses 512×320.
        fov_y_deg: vertical field of view (deg).
        elevation_deg: camera elevation above the look-at (deg, within ±80); positive looks down, so the
            ground plane and the root's path over it stay visible.
        azimuth_deg: azimuth of the main view about +Y, measured from +Z towards +X (deg). ``None``: a side
            view of the main horizontal travel direction, or, when the motion stays in place, 45° (a
            three-quarter view: it shows limb swing whether the character faces +Z, as glTF asks, or ±X).
        margin: free border kept around the points, as a fraction of the image's half size, in [0, 0.9].

    Returns:
        `Cameras` with ``views`` cameras.
    """
    if points.ndim == 2:
        points = points.unsqueeze(0)
    if points.ndim != 3 or points.shape[-1] != 3 or points.shape[0] * points.shape[1] == 0:
        raise InvalidInput("points", f"need a non-empty (F, N, 3) tensor, got {tuple(points.shape)}")
    if not torch.isfinite(points).all():
        raise InvalidInput("points", "contain NaN or Inf; check the motion and the skinning")
    if not 0.0 <= margin <= 0.9:
        raise InvalidInput("margin", f"must be in [0, 0.9], got {margin}")
    if not -80.0 <= elevation_deg <= 80.0:
        raise InvalidInput("elevation_deg", f"must be within ±80°, got {elevation_deg}")
    if not 1.0 <= fov_y_deg <= 150.0:
        raise InvalidInput("fov_y_deg", f"must be in [1, 150] degrees, got {fov_y_deg}")
    pts = points.detach().cpu().to(torch.float64)
    layout = view_layout(views)
    if azimuth_deg is None:
        travel = _travel_azimuth(pts)
        azimuth_deg = 45.0 if travel is None else travel

    flat = pts.reshape(-1, 3)
    target = 0.5 * (flat.amin(0) + flat.amax(0))
    az = torch.tensor([math.radians(azimuth_deg + off) for _, off in layout], dtype=torch.float64)
    el = math.radians(elevation_deg)
    direction = torch.stack(
        (torch.sin(az) * math.cos(el), torch.full_like(az, math.sin(el)), torch.cos(az) * math.cos(el)), -1
    )
    unit = _look_from(direction, target, 1.0)  # rotations are what matter here
    q = flat - target
    cam = q @ unit[:, :3, :3].transpose(-1, -2)  # (C, N, 3): right, up, back components
    tan_y = math.tan(math.radians(0.5 * fov_y_deg)) * (1.0 - margin)
    tan_x = tan_y * width / height
    # A point at camera offset (x, y, b) with the camera at distance d has depth d − b; it is in frame when
    # |x| <= tan_x (d − b) and |y| <= tan_y (d − b), i.e. d >= |x| / tan_x + b (same for y).
    need = torch.maximum(cam[..., 0].abs() / tan_x, cam[..., 1].abs() / tan_y) + cam[..., 2]
    extent = float((flat.amax(0) - flat.amin(0)).norm().clamp_min(1e-3))
    distance = max(float(need.max()), float(cam[..., 2].max()) + 0.05 * extent)
    closest = distance - float(cam[..., 2].max())
    # Clip planes: generous so a ground plane a few body sizes wide fits, tight enough for 24-bit depth.
    znear = max(1e-4, 0.25 * closest)
    zfar = distance + 20.0 * extent
    return Cameras(
        world_to_camera=_look_from(direction, target, distance).to(torch.float32),
        fov_y=math.radians(fov_y_deg),
        width=width,
        height=height,
        znear=znear,
        zfar=zfar,
        names=tuple(n for n, _ in layout),
    )
