"""Multi-view renders of a posed character: RGB, mask, depth, 2D joint labels; differentiable soft silhouettes.

Public API::

    orbit_cameras(points, views=4, ...) -> Cameras          # auto-fitted orbit views; Cameras.project(points)
    render_motion(character, motion, views=4, ...) -> Renders   # (C, F, H, W) rgb/mask/depth + joints_px/depth
    GLRasterizer(width, height).render(positions, normals, faces, cameras, ...) -> Renders
    soft_silhouette(vertices, faces, cameras, edges=edge_table(faces)) -> (C, B, H, W)   # differentiable (torch)
    soft_render(vertices, faces, cameras, face_colors) -> (rgb, silhouette)
    stick_figure(skeleton) -> SkinnedMesh; pose_mesh(mesh, global_quats, global_pos); vertex_normals(...)
    contact_sheet(renders) -> (C·H, n·W, 3) uint8; view_grid(renders) -> (F, h, w, 3) uint8 video frames

Importing this package creates no GL context (`GLRasterizer` does, when constructed).
"""

from anymole.render.cameras import DEFAULT_HEIGHT, DEFAULT_WIDTH, Cameras, orbit_cameras, view_layout
from anymole.render.gl import GLRasterizer, Renders, Style
from anymole.render.mesh import pose_mesh, stick_figure, vertex_normals
from anymole.render.sheet import contact_sheet, view_grid
from anymole.render.soft import EdgeTable, edge_table, soft_render, soft_silhouette
from anymole.render.views import character_mesh, pose_motion, render_motion, scene_style

__all__ = [
    "DEFAULT_HEIGHT",
    "DEFAULT_WIDTH",
    "Cameras",
    "EdgeTable",
    "GLRasterizer",
    "Renders",
    "Style",
    "character_mesh",
    "contact_sheet",
    "edge_table",
    "orbit_cameras",
    "pose_mesh",
    "pose_motion",
    "render_motion",
    "scene_style",
    "soft_render",
    "soft_silhouette",
    "stick_figure",
    "vertex_normals",
    "view_grid",
    "view_layout",
]
