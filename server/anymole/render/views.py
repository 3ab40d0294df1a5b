"""Multi-view renders of a character's motion: the pipeline's ``render_views`` stage and the CLI's sheets."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import torch

from anymole.errors import InvalidInput
from anymole.render.cameras import DEFAULT_HEIGHT, DEFAULT_WIDTH, Cameras, orbit_cameras
from anymole.render.gl import GLRasterizer, Renders, Style
from anymole.render.mesh import pose_mesh, stick_figure
from anymole.rig import Character, Motion, SkinnedMesh
from anymole.rig.fk import fk_motion

__all__ = ["character_mesh", "pose_motion", "render_motion", "scene_style"]

Frames = slice | Sequence[int] | None


def character_mesh(character: Character) -> SkinnedMesh:
    """The character's skinned mesh, or a capsule body (`stick_figure`) when it has none."""
    return character.mesh if character.mesh is not None else stick_figure(character.skeleton)


def _select(motion: Motion, frames: Frames) -> Motion:
    if frames is None:
        return motion
    idx = torch.arange(motion.num_frames)[frames] if isinstance(frames, slice) else torch.as_tensor(frames)
    if idx.numel() == 0:
        raise InvalidInput("frames", f"select no frame of the {motion.num_frames}-frame clip")
    if idx.min() < -motion.num_frames or idx.max() >= motion.num_frames:
        raise InvalidInput("frames", f"index outside the clip's {motion.num_frames} frames")
    return _map_tensors(motion, lambda t: t[idx])


def _map_tensors(motion: Motion, fn: Callable[[torch.Tensor], torch.Tensor]) -> Motion:
    """``motion`` with ``fn`` applied to each of its tensors (a frame selection, a device move)."""
    return Motion(
        fps=motion.fps,
        rotations=fn(motion.rotations),
        root_translation=fn(motion.root_translation),
        translations=None if motion.translations is None else fn(motion.translations),
        name=motion.name,
    )


def pose_motion(
    character: Character,
    motion: Motion,
    mesh: SkinnedMesh | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Posed joints and surface of every frame.

    Args:
        character: skeleton (and mesh, unless ``mesh`` is given).
        motion: the clip.
        mesh: the mesh to skin; `character_mesh` by default.
        device: where FK and skinning run (e.g. ``"cuda"``: a 300-frame clip skins in milliseconds there);
            the motion's device by default.

    Returns:
        ``(joints (F, J, 3), positions (F, V, 3), normals (F, V, 3))`` in world space (m), on ``device``.
    """
    mesh = mesh or character_mesh(character)
    skeleton = character.skeleton
    if device is not None:
        skeleton = skeleton.to(device)
        mesh = replace(
            mesh,
            **{
                k: getattr(mesh, k).to(device)
                for k in ("vertices", "faces", "joint_indices", "joint_weights", "inverse_bind", "normals")
                if getattr(mesh, k) is not None
            },
        )
        motion = _map_tensors(motion, lambda t: t.to(device))
    gq, gp = fk_motion(skeleton, motion)
    positions, normals = pose_mesh(mesh, gq, gp)
    return gp, positions, normals


def scene_style(points: torch.Tensor, **overrides: object) -> Style:
    """A `Style` whose floor fits the motion: under its lowest point (or y = 0, whichever is lower, as the
    reference's floor at y = 0), centred under it, several body sizes wide, checker squares a third of the
    body's size so that root motion shows at any scale (the Fox comes in centimetres).

    Args:
        points: ``(F, N, 3)`` posed vertices (m).
        overrides: any `Style` field.
    """
    flat = points.detach().reshape(-1, 3)
    lo, hi = flat.amin(0), flat.amax(0)
    body = float((points[0].amax(0) - points[0].amin(0)).max().clamp_min(1e-6))
    travel = float((hi - lo)[[0, 2]].max())
    centre = 0.5 * (lo + hi)
    style = Style(
        ground_y=min(0.0, float(lo[1])),
        ground_center=(float(centre[0]), float(centre[2])),
        ground_half_size=0.5 * travel + 4.0 * body,
        checker_size=body / 3.0,
    )
    return replace(style, **overrides)  # type: ignore[arg-type]


def render_motion(
    character: Character,
    motion: Motion,
    *,
    views: int = 4,
    frames: Frames = None,
    cameras: Cameras | None = None,
    width: int | None = None,
    height: int | None = None,
    style: Style | None = None,
    rasterizer: GLRasterizer | None = None,
    with_depth: bool = True,
    device: torch.device | str | None = None,
) -> Renders:
    """Render ``motion`` on ``character`` from orbit views, with 2D joint labels.

    Args:
        character: the rig and its mesh (a capsule body is drawn when it has no mesh).
        motion: the clip; its joint count must match the skeleton.
        views: number of orbit views when ``cameras`` is not given (see `orbit_cameras`).
        frames: which frames to render (slice or indices; all by default). Cameras are fitted to the
            selected frames only.
        cameras: fixed cameras instead of fitted ones (e.g. to render a generated motion like its context).
        width, height: image size (px) for fitted cameras: the rasteriser's if one is given, else 512×320.
        style: looks; default `scene_style` of the posed motion.
        rasterizer: a `GLRasterizer` to reuse (its size must match); one is created and released otherwise.
        with_depth: also return depth images.
        device: where FK and skinning run (see `pose_motion`); labels come back on the CPU.

    Returns:
        `Renders` with ``(C, F, ...)`` images and ``joints_px`` / ``joints_depth`` labels.
    """
    clip = _select(motion, frames)
    mesh = character_mesh(character)
    joints, positions, normals = pose_motion(character, clip, mesh, device)
    if cameras is None:
        w = width or (rasterizer.width if rasterizer is not None else DEFAULT_WIDTH)
        h = height or (rasterizer.height if rasterizer is not None else DEFAULT_HEIGHT)
        cameras = orbit_cameras(torch.cat((joints, positions), dim=1), views, width=w, height=h)
    style = style or scene_style(positions)
    own = rasterizer is None
    gl = GLRasterizer(cameras.width, cameras.height) if rasterizer is None else rasterizer
    try:
        out = gl.render(
            positions, normals, mesh.faces, cameras,
            uvs=mesh.uvs, materials=mesh.materials, face_materials=mesh.face_materials, colors=mesh.colors,
            style=style, with_depth=with_depth,
        )  # fmt: skip
    finally:
        if own:
            gl.release()
    px, depth = cameras.project(joints.cpu())
    return replace(out, joints_px=px, joints_depth=depth)
