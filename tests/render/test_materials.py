"""Every material renders: a character with several materials (one textured through its second UV set, one
tinted by vertex colours), built in the test and loaded from glTF, shows each region in its file's colour."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anymole.io import load_character
from anymole.render import GLRasterizer, Style, orbit_cameras, render_motion
from anymole.rig import Motion
from multi_material import REGIONS, build


@pytest.fixture(scope="module", params=[".glb", ".gltf"])
def robot(request, tmp_path_factory):
    return load_character(build(tmp_path_factory.mktemp("robot") / f"robot{request.param}"))


def _rest(character) -> Motion:
    return Motion(
        30.0, character.skeleton.rest_rotations[None].clone(), character.skeleton.offsets[:1].clone()
    )


def test_each_region_shows_its_materials_colour(robot):
    rest = _rest(robot)
    cams = orbit_cameras(
        robot.mesh.vertices[None], 1, width=256, height=256, azimuth_deg=0.0, elevation_deg=0.0
    )
    flat = Style(
        ground=False, ambient=1.0, background=(0.5, 0.5, 1.0)
    )  # unshaded: pixels are the base colour
    with GLRasterizer(256, 256) as gl:
        out = render_motion(robot, rest, cameras=cams, style=flat, rasterizer=gl, with_depth=False)
    points = torch.tensor([[p for _, p in REGIONS.values()]])
    px = cams.project(points)[0][0, 0].round().long()
    for (name, (rgb, _)), (x, y) in zip(REGIONS.items(), px.tolist(), strict=True):
        assert out.mask[0, 0, y, x], name
        got = out.rgb[0, 0, y, x].astype(int)
        want = np.round(np.asarray(rgb) * 255).astype(int)
        assert np.abs(got - want).max() <= 3, (name, got, want)
