"""Orbit cameras: framing of the whole motion, projection conventions, layout."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from anymole.errors import InvalidInput
from anymole.render import orbit_cameras, pose_motion
from anymole.render.cameras import view_layout


def _cloud(seed: int, frames: int, scale: float, travel: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    body = torch.rand(frames, 30, 3, generator=g) * torch.tensor([0.5, 1.7, 0.4]) * scale
    path = torch.linspace(0.0, travel, frames)[:, None, None] * torch.tensor([0.6, 0.0, 0.8])
    return body + path


@given(
    seed=st.integers(0, 10_000),
    scale=st.floats(0.01, 100.0),
    travel=st.floats(0.0, 5.0),
    views=st.integers(1, 6),
    margin=st.floats(0.0, 0.5),
    elevation=st.floats(-30.0, 60.0),
)
def test_every_point_of_every_frame_is_inside_the_margin(seed, scale, travel, views, margin, elevation):
    pts = _cloud(seed, 8, scale, travel * scale)
    cams = orbit_cameras(pts, views, width=512, height=320, margin=margin, elevation_deg=elevation)
    px, depth = cams.project(pts)
    assert px.shape == (views, 8, 30, 2) and depth.shape == (views, 8, 30)
    mx, my = margin * 256, margin * 160
    tol = 1e-3 * 512
    assert (depth > cams.znear).all()
    assert (px[..., 0] >= mx - tol).all() and (px[..., 0] <= 512 - mx + tol).all()
    assert (px[..., 1] >= my - tol).all() and (px[..., 1] <= 320 - my + tol).all()
    # The distance is the smallest that fits: some point of some view touches the margin.
    gap = torch.stack((px[..., 0] - mx, 512 - mx - px[..., 0], px[..., 1] - my, 320 - my - px[..., 1]))
    assert float(gap.min()) < 0.5


def test_projection_matches_intrinsics_extrinsics_and_gl_matrix():
    pts = _cloud(0, 4, 1.0, 1.0)
    cams = orbit_cameras(pts, 4)
    px, depth = cams.project(pts)
    flat = pts.reshape(-1, 3)
    hom = torch.cat((flat, torch.ones(len(flat), 1)), -1)
    cam = hom @ cams.extrinsics.transpose(-1, -2)  # (C, N, 4) camera space, OpenGL axes
    # OpenCV-style K acts on (x, -y, -z): camera looks down -Z with +Y up, pixels have y down.
    k_in = torch.stack((cam[..., 0], -cam[..., 1], -cam[..., 2]), -1)
    uvw = k_in @ cams.intrinsics.transpose(-1, -2)
    torch.testing.assert_close(uvw[..., :2] / uvw[..., 2:], px.reshape(4, -1, 2), rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(-cam[..., 2], depth.reshape(4, -1), rtol=1e-5, atol=1e-5)
    # The GL clip matrix maps to the same pixels (NDC y up → pixel y down).
    clip = cam @ cams.gl_projection().T
    ndc = clip[..., :2] / clip[..., 3:]
    gl_px = torch.stack(((ndc[..., 0] + 1) * 256, (1 - ndc[..., 1]) * 160), -1)
    torch.testing.assert_close(gl_px, px.reshape(4, -1, 2), rtol=1e-4, atol=1e-2)


def test_reference_layout_shares_distance_and_elevation():
    pts = _cloud(1, 6, 1.0, 0.0)
    cams = orbit_cameras(pts, 4, elevation_deg=15.0)
    assert cams.names == ("frame", "left", "right", "back")
    flat = pts.reshape(-1, 3)
    target = 0.5 * (flat.amin(0) + flat.amax(0))
    rel = cams.positions - target
    dist = rel.norm(dim=-1)
    torch.testing.assert_close(dist, dist[:1].expand(4), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        torch.asin(rel[:, 1] / dist), torch.full((4,), math.radians(15.0)), atol=1e-5, rtol=0
    )
    az = torch.rad2deg(torch.atan2(rel[:, 0], rel[:, 2]))
    rel_az = (az - az[0] + 180.0) % 360.0 - 180.0
    torch.testing.assert_close(rel_az, torch.tensor([0.0, -5.0, 5.0, -179.0]), atol=1e-3, rtol=0)
    assert [n for n, _ in view_layout(3)] == ["frame", "left", "right"]
    assert len(view_layout(7)) == 7


def test_main_view_is_a_side_view_of_the_travel(character):
    joints, _, _ = pose_motion(character, character.motions["walk"])  # walks along +Z
    cams = orbit_cameras(joints, 1)
    # The camera looks perpendicular to the travel: its viewing axis has no Z component.
    view_axis = cams.world_to_camera[0, 2, :3]
    assert abs(float(view_axis[2])) < 1e-4
    # A clip that stays in place gets a three-quarter view (45° azimuth).
    still = orbit_cameras(joints[:1].expand(5, -1, -1), 1, elevation_deg=0.0)
    rel = still.positions[0] - 0.5 * (joints[0].amin(0) + joints[0].amax(0))
    assert math.degrees(math.atan2(float(rel[0]), float(rel[2]))) == pytest.approx(45.0, abs=1e-3)


def test_resized_keeps_the_framing():
    pts = _cloud(2, 3, 1.0, 1.0)
    cams = orbit_cameras(pts, 2)
    small = cams.resized(128, 80)
    px, _ = cams.project(pts)
    spx, _ = small.project(pts)
    torch.testing.assert_close(spx * 4.0, px, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"points": torch.full((2, 3, 3), float("nan"))}, "points"),
        ({"points": torch.zeros(0, 3)}, "points"),
        ({"points": torch.zeros(4, 3), "margin": 0.95}, "margin"),
        ({"points": torch.zeros(4, 3), "elevation_deg": 89.0}, "elevation_deg"),
        ({"points": torch.zeros(4, 3), "views": 0}, "views"),
    ],
)
def test_bad_arguments_name_the_field(kwargs, field):
    with pytest.raises(InvalidInput) as err:
        orbit_cameras(**kwargs)
    assert err.value.field == field
