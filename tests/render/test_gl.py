"""Hard renders through moderngl/EGL: masks, depth, joint labels, framing, determinism, looks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anymole.errors import InvalidInput
from anymole.render import GLRasterizer, Style, orbit_cameras, render_motion, stick_figure, vertex_normals
from anymole.rig import Character, Material, Motion

W, H = 128, 80  # the size of the `gl` fixture (conftest.py)


@pytest.fixture(scope="module")
def renders(character, gl):
    return render_motion(character, character.motions["walk"], views=4, rasterizer=gl)


def test_shapes_and_types(renders, character):
    f, j = character.motions["walk"].num_frames, character.skeleton.num_joints
    assert renders.rgb.shape == (4, f, H, W, 3) and renders.rgb.dtype == np.uint8
    assert renders.mask.shape == (4, f, H, W) and renders.mask.dtype == bool
    assert (
        renders.depth is not None
        and renders.depth.shape == (4, f, H, W)
        and renders.depth.dtype == np.float32
    )
    assert renders.joints_px is not None and renders.joints_px.shape == (4, f, j, 2)
    assert renders.joints_depth is not None and renders.joints_depth.shape == (4, f, j)
    img = renders.images()
    assert img.shape == (4, f, 3, H, W) and float(img.min()) >= 0.0 and float(img.max()) <= 1.0


def test_projected_joints_fall_inside_the_mask(renders):
    px = renders.joints_px
    assert px is not None
    col = px[..., 0].floor().long().clamp(0, W - 1)
    row = px[..., 1].floor().long().clamp(0, H - 1)
    c, f, j = col.shape
    vi = torch.arange(c).view(-1, 1, 1).expand(c, f, j)
    fi = torch.arange(f).view(1, -1, 1).expand(c, f, j)
    # A capsule body of 3% radius is ≥ 1 px wide here: every joint lands on the character.
    assert torch.from_numpy(renders.mask)[vi, fi, row, col].all()


def test_depth_at_joints_matches_the_label(renders, character):
    """Each joint sits inside its joint sphere, so the visible surface at its pixel is in front of it (never
    behind), and for unoccluded joints (most of them) less than a sphere radius in front."""
    px, jd = renders.joints_px, renders.joints_depth
    assert px is not None and jd is not None and renders.depth is not None
    col = px[..., 0].floor().long().clamp(0, W - 1)
    row = px[..., 1].floor().long().clamp(0, H - 1)
    c, f, j = col.shape
    vi = torch.arange(c).view(-1, 1, 1).expand(c, f, j)
    fi = torch.arange(f).view(1, -1, 1).expand(c, f, j)
    surface = torch.from_numpy(renders.depth)[vi, fi, row, col]
    diff = jd - surface  # > 0: the surface is in front of the joint
    mesh_radius = 1.15 * 0.03 * 1.8  # stick_figure: 3% of the ~1.8 m rest extent, spheres 15% larger
    assert float(diff.min()) > -0.01
    assert 0.5 * mesh_radius < float(diff.median()) < 1.1 * mesh_radius


def test_views_cover_the_motion(renders):
    px = renders.joints_px
    assert px is not None
    # Default margin: 10% of the half size on every side, for joints and surface alike.
    assert (px[..., 0] > 0.1 * W / 2 - 0.5).all() and (px[..., 0] < W - 0.1 * W / 2 + 0.5).all()
    assert (px[..., 1] > 0.1 * H / 2 - 0.5).all() and (px[..., 1] < H - 0.1 * H / 2 + 0.5).all()
    m = renders.mask
    border = np.concatenate([m[..., 0, :], m[..., -1, :], m[..., :, 0], m[..., :, -1]], axis=-1)
    assert not border.any()
    assert m.any(axis=(2, 3)).all()  # the character is visible in every image


def test_renders_are_deterministic(character, gl, renders):
    again = render_motion(character, character.motions["walk"], views=4, rasterizer=gl)
    assert np.array_equal(again.rgb, renders.rgb)
    assert np.array_equal(again.mask, renders.mask)
    assert renders.depth is not None and again.depth is not None
    assert np.array_equal(again.depth, renders.depth)


def test_other_contexts_do_not_disturb_a_rasterizer(character, gl, renders):
    import moderngl

    # Creating and releasing a context leaves none current on this thread.
    moderngl.create_standalone_context(backend="egl", require=330).release()
    again = render_motion(character, character.motions["walk"], views=4, rasterizer=gl)
    assert np.array_equal(again.rgb, renders.rgb)

def test_background_floor_and_depth_outside_the_mask(character, gl):
    motion = character.motions["walk"]
    bare = render_motion(
        character, motion, views=2, rasterizer=gl, style=Style(background=(0.0, 0.0, 1.0), ground=False)
    )
    off = ~bare.mask
    assert (bare.rgb[off] == np.array([0, 0, 255], np.uint8)).all()
    assert bare.depth is not None and (bare.depth[off] == 0).all() and (bare.depth[bare.mask] > 0).all()
    floored = render_motion(character, motion, views=2, rasterizer=gl, cameras=bare.cameras)
    # Same cameras, same mask; the floor fills the lower part of the image with two checker greys.
    assert np.array_equal(floored.mask, bare.mask)
    bottom = floored.rgb[:, :, -5:][~floored.mask[:, :, -5:]]
    assert (bottom != np.array([255, 255, 255], np.uint8)).any(axis=-1).all()
    assert bottom[:, 0].min() < 130 and bottom[:, 0].max() > 170


def test_texture_and_base_colour(gl):
    # A two-triangle quad facing the camera, left half of the texture red, right half green.
    v = torch.tensor([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 1.0, 0.0]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    uvs = torch.tensor([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    tex = np.zeros((64, 64, 3), np.uint8)
    tex[:, :32] = (255, 0, 0)
    tex[:, 32:] = (0, 255, 0)
    cams = orbit_cameras(v, 1, width=W, height=H, azimuth_deg=0.0, elevation_deg=0.0)
    pos = v[None]
    nrm = vertex_normals(pos, faces)
    style = Style(ground=False, ambient=1.0)
    white = (1.0, 1.0, 1.0, 1.0)
    out = gl.render(pos, nrm, faces, cams, uvs=uvs, materials=[Material(torch.tensor(white), torch.from_numpy(tex))], style=style)
    rows = out.mask[0, 0].any(axis=1)
    mid = out.rgb[0, 0][rows][:, out.mask[0, 0][rows].any(axis=0)]
    n = mid.shape[1]
    # Away from the seams, where bilinear filtering (and the repeat wrap at the borders) blends texels.
    left, right = mid[:, n // 8 : 3 * n // 8], mid[:, 5 * n // 8 : 7 * n // 8]
    assert (left[..., 0] > 200).all() and (left[..., 1] < 30).all()
    assert (right[..., 1] > 200).all() and (right[..., 0] < 30).all()
    half = gl.render(
        pos, nrm, faces, cams, uvs=uvs, materials=[Material(torch.tensor([0.5, 0.5, 0.5, 1.0]), torch.from_numpy(tex))],
        style=style,
    )  # fmt: skip
    assert abs(int(half.rgb[0, 0][out.mask[0, 0]][:, :2].max()) - 128) <= 2


def test_materials_per_face_and_vertex_colours(gl):
    # The same quad, its two triangles in two materials (one textured), then vertex colours on top.
    v = torch.tensor([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 1.0, 0.0]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])  # lower-right and upper-left halves
    uvs = torch.zeros(4, 2)
    blue = torch.zeros(4, 4, 3, dtype=torch.uint8)
    blue[..., 2] = 255
    mats = [Material(torch.tensor([1.0, 0.5, 0.0, 1.0])), Material(torch.tensor([1.0, 1.0, 1.0, 1.0]), blue)]
    cams = orbit_cameras(v, 1, width=W, height=H, azimuth_deg=0.0, elevation_deg=0.0)
    pos = v[None]
    nrm = vertex_normals(pos, faces)
    style = Style(ground=False, ambient=1.0)
    out = gl.render(pos, nrm, faces, cams, uvs=uvs, materials=mats, face_materials=torch.tensor([0, 1]), style=style)
    px = cams.project(torch.tensor([[[0.6, 0.2, 0.0], [-0.6, 0.8, 0.0]]]))[0][0, 0].round().long()
    lower_right, upper_left = (out.rgb[0, 0, int(y), int(x)] for x, y in px)
    assert np.abs(lower_right.astype(int) - (255, 128, 0)).max() <= 2
    assert np.abs(upper_left.astype(int) - (0, 0, 255)).max() <= 2
    half = torch.full((4, 4), 0.5)
    tinted = gl.render(pos, nrm, faces, cams, uvs=uvs, materials=mats, face_materials=torch.tensor([0, 1]),
                       colors=half, style=style)  # fmt: skip
    x, y = px[0]
    assert np.abs(tinted.rgb[0, 0, int(y), int(x)].astype(int) - (128, 64, 0)).max() <= 2
    with pytest.raises(InvalidInput, match="face_materials"):
        gl.render(pos, nrm, faces, cams, materials=mats[:1], face_materials=torch.tensor([0, 1]))


def test_bad_inputs_raise(gl, character):
    mesh = stick_figure(character.skeleton)
    cams = orbit_cameras(mesh.vertices, 1, width=W, height=H)
    pos = mesh.vertices[None]
    with pytest.raises(InvalidInput, match="faces"):
        gl.render(pos, pos, mesh.faces + 10_000, cams)
    with pytest.raises(InvalidInput, match="cameras"):
        gl.render(pos, pos, mesh.faces, cams.resized(64, 40))
    with pytest.raises(InvalidInput, match="uvs"):
        gl.render(pos, pos, mesh.faces, cams, materials=[Material(texture=torch.zeros((2, 2, 3), dtype=torch.uint8))])
    with pytest.raises(InvalidInput, match="frames"):
        render_motion(character, character.motions["walk"], frames=[99], rasterizer=gl)


def test_large_calls_split_into_framebuffer_chunks(character):
    """More images than one framebuffer holds: same pixels as rendering in one go."""
    motion: Motion = character.motions["walk"]
    with GLRasterizer(W, H, max_tiles=5) as small:
        split = render_motion(character, motion, views=2, rasterizer=small)
    with GLRasterizer(W, H) as big:
        whole = render_motion(character, motion, views=2, rasterizer=big, cameras=split.cameras)
    # Same coverage; a tile's position in the framebuffer shifts window coordinates, which may flip the
    # rounding of a few shaded pixels (seen: 0.03%), never the mask.
    assert np.array_equal(split.mask, whole.mask)
    assert (split.rgb != whole.rgb).any(axis=-1).mean() < 2e-3
    assert split.depth is not None and whole.depth is not None
    np.testing.assert_allclose(split.depth, whole.depth, atol=1e-3)


def test_frames_beyond_one_vertex_texture_render_in_groups(character, gl, renders, monkeypatch):
    """Huge meshes split their frames across uploads: the joined result is the one-upload result."""
    monkeypatch.setattr(gl, "max_tex_rows", 1)  # 4096 texels per upload: one or two frames of this body
    split = render_motion(character, character.motions["walk"], views=4, rasterizer=gl, cameras=renders.cameras)
    assert split.rgb.shape == renders.rgb.shape and np.array_equal(split.mask, renders.mask)
    # Fewer images per group move tiles within the framebuffer (see the test above): rounding only.
    assert (split.rgb != renders.rgb).any(axis=-1).mean() < 2e-3
    assert split.depth is not None and renders.depth is not None
    np.testing.assert_allclose(split.depth, renders.depth, atol=1e-3)

def test_skeleton_only_character_gets_a_capsule_body(character):
    mesh = stick_figure(character.skeleton)
    assert mesh.joint_indices.shape == (mesh.num_vertices, 1)
    assert int(mesh.faces.max()) < mesh.num_vertices
    # Rest pose skins to itself: inverse binds are the rest transforms' inverses.
    from anymole.render import pose_mesh
    from anymole.rig.fk import forward_kinematics

    gq, gp = forward_kinematics(
        character.skeleton.rest_rotations, character.skeleton.offsets, character.skeleton.parents
    )
    pos, _ = pose_mesh(mesh, gq, gp)
    torch.testing.assert_close(pos, mesh.vertices, atol=1e-5, rtol=0)
    assert isinstance(Character(name="x", skeleton=character.skeleton).mesh, type(None))


def test_a_failed_constructor_releases_its_context(monkeypatch):
    import moderngl

    made: list[moderngl.Context] = []
    create = moderngl.create_standalone_context

    def recording(*args, **kwargs):
        made.append(create(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(moderngl, "create_standalone_context", recording)
    with pytest.raises(InvalidInput, match="limit"):
        GLRasterizer(100_000, H)
    assert len(made) == 1 and isinstance(made[0].mglo, moderngl.InvalidObject)
