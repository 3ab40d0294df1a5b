"""Rasterising backend: OpenGL 3.3 through moderngl on a headless EGL context.

Why this backend: AnyMoLe needs thousands of plain, opaque renders (4 views × every context frame) with
RGB, a mask and depth, on CI machines without a GPU and fast on the CUDA server. OpenGL over EGL does both
with one code path: Mesa's llvmpipe rasterises on the CPU (no display, no X server), and the NVIDIA driver's
EGL does the same on the GPU at hardware speed (PLATFORM.md; the device README's loader recipe). A torch
rasteriser would be differentiable but needs per-pixel×per-triangle work that is far slower for hard
renders, and pytorch3d/nvdiffrast have no wheels here. The differentiable path lives in `anymole.render.soft`;
this module is for the hard renders only.

How it stays fast: posed vertex positions and normals of *all* frames are uploaded once as float textures
and fetched in the vertex shader by ``gl_VertexID``, so a draw is one uniform update; the images of a call
are stacked as tiles of one tall framebuffer and read back straight into the output arrays (no per-image
copies or flips: the projection flips y so that GL's bottom-up rows are the image's top-down rows).
The one Python loop issues one draw per (view, frame) tile and material (faces are sorted by material once,
so each material is one range of the index buffer) — the GL API has no cheaper way to address several
viewports from core 3.3 — at a few microseconds each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from anymole.errors import InvalidInput, ModelUnavailable
from anymole.render.cameras import Cameras
from anymole.rig.character import Material

if TYPE_CHECKING:
    import moderngl

__all__ = ["GLRasterizer", "Renders", "Style"]

_TEX_WIDTH = 4096  # texels per row of the vertex-data textures

_MESH_VS = """
#version 330
uniform sampler2D pos_tex;
uniform sampler2D nrm_tex;
uniform int base;
uniform mat4 view;
uniform mat4 proj;
in vec2 in_uv;
in vec4 in_color;
out vec3 v_normal;
out vec2 v_uv;
out vec4 v_color;
out float v_depth;
void main() {
    int k = base + gl_VertexID;
    ivec2 t = ivec2(k % %TEXW%, k / %TEXW%);
    vec4 pc = view * vec4(texelFetch(pos_tex, t, 0).xyz, 1.0);
    v_normal = mat3(view) * texelFetch(nrm_tex, t, 0).xyz;
    v_uv = in_uv;
    v_color = in_color;
    v_depth = -pc.z;
    gl_Position = proj * pc;
}
""".replace("%TEXW%", str(_TEX_WIDTH))

_MESH_FS = """
#version 330
uniform vec4 base_color;
uniform bool has_texture;
uniform sampler2D color_tex;
uniform float ambient;
in vec3 v_normal;
in vec2 v_uv;
in vec4 v_color;
in float v_depth;
layout(location = 0) out vec4 out_color;
layout(location = 1) out float out_depth;
void main() {
    // glTF's base colour: factor x texture x vertex colour. Headlight from above the camera's right
    // shoulder, two-sided (no back-face culling, as the reference).
    vec3 n = v_normal / max(length(v_normal), 1e-8);
    float diffuse = abs(dot(n, normalize(vec3(0.35, 0.6, 1.0))));
    vec3 c = base_color.rgb * v_color.rgb;
    if (has_texture) c *= texture(color_tex, v_uv).rgb;
    out_color = vec4(c * (ambient + (1.0 - ambient) * diffuse), 1.0);
    out_depth = v_depth;
}
"""

_GROUND_VS = """
#version 330
uniform mat4 view;
uniform mat4 proj;
in vec3 in_pos;
out vec2 v_xz;
void main() {
    v_xz = in_pos.xz;
    gl_Position = proj * (view * vec4(in_pos, 1.0));
}
"""

_GROUND_FS = """
#version 330
uniform float square;
uniform vec3 color_a;
uniform vec3 color_b;
in vec2 v_xz;
layout(location = 0) out vec4 out_color;
layout(location = 1) out float out_depth;
void main() {
    // Box-filtered checkerboard: the filter width follows the pixel footprint, so far squares fade to grey
    // instead of aliasing into moire (which a video model would read as motion).
    vec2 p = v_xz / square;
    vec2 w = fwidth(p) + 1e-4;
    vec2 i = 2.0 * (abs(fract((p - 0.5 * w) * 0.5) - 0.5) - abs(fract((p + 0.5 * w) * 0.5) - 0.5)) / w;
    out_color = vec4(mix(color_a, color_b, 0.5 - 0.5 * i.x * i.y), 0.0);
    out_depth = 0.0;
}
"""


@dataclass(frozen=True)
class Style:
    """How a scene looks (everything but the geometry and the cameras).

    Attributes:
        background: RGB in [0, 1] behind everything (the reference renders on white).
        ground: draw the checkerboard floor (needed to see root motion, see the issue).
        ground_y: height of the floor (m).
        ground_center: ``(x, z)`` centre of the floor square (m).
        ground_half_size: half the floor's side (m).
        checker_size: side of one checker square (m).
        checker_colors: the two square colours, RGB in [0, 1].
        ambient: share of light that does not depend on the surface orientation, in [0, 1].
    """

    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    ground: bool = True
    ground_y: float = 0.0
    ground_center: tuple[float, float] = (0.0, 0.0)
    ground_half_size: float = 5.0
    checker_size: float = 0.5
    checker_colors: tuple[tuple[float, float, float], tuple[float, float, float]] = (
        (0.78, 0.78, 0.78),
        (0.42, 0.42, 0.42),
    )
    ambient: float = 0.35


@dataclass(frozen=True, eq=False)
class Renders:
    """Images of ``F`` frames seen by ``C`` cameras.

    Attributes:
        rgb: ``(C, F, H, W, 3)`` uint8 shaded colour (character, floor, background).
        mask: ``(C, F, H, W)`` bool, True where the character covers the pixel.
        depth: ``(C, F, H, W)`` float32 metric depth of the character along the view axis (m), 0 elsewhere;
            ``None`` if not asked for.
        cameras: the cameras used.
        joints_px: ``(C, F, J, 2)`` float32 projected joints (px, y down) or ``None``.
        joints_depth: ``(C, F, J)`` float32 metric joint depth (m) or ``None``.
    """

    rgb: np.ndarray
    mask: np.ndarray
    depth: np.ndarray | None
    cameras: Cameras
    joints_px: torch.Tensor | None = None
    joints_depth: torch.Tensor | None = None

    def images(self) -> torch.Tensor:
        """``(C, F, 3, H, W)`` float32 in [0, 1]: the layout the video models take."""
        return torch.from_numpy(self.rgb).permute(0, 1, 4, 2, 3).float().div_(255.0)


@dataclass(frozen=True)
class _Draw:
    """One material's faces: a range of the sorted index buffer, drawn with its colour and texture."""

    first: int  # first index (3 per face)
    count: int  # number of indices
    color: tuple[float, ...]  # RGBA base colour factor
    texture: Any  # moderngl.Texture or None

    def render(self, vao: Any, prog: moderngl.Program) -> None:
        _uniform(prog, "base_color").value = self.color
        _uniform(prog, "has_texture").value = self.texture is not None
        if self.texture is not None:
            self.texture.use(location=2)
        vao.render(vertices=self.count, first=self.first)


def _uniform(prog: moderngl.Program, name: str) -> moderngl.Uniform:
    """``prog[name]`` typed as the uniform it is (moderngl's stubs return a union of member kinds)."""
    return cast("moderngl.Uniform", prog[name])


def _f32(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


def _ints(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.int64).reshape(-1)


class GLRasterizer:
    """A headless OpenGL context that renders posed meshes from many cameras in one call.

    Create one and reuse it (the context costs tens of ms). Create and use a rasteriser on one thread (e.g.
    the GPU worker's), never share it; each `render` makes its context current for the call, so other
    rasterisers and GL contexts on that thread do not disturb it. `release` (or a ``with`` block) frees
    the context and its GL objects; nothing frees them on garbage collection.

    Args:
        width, height: image size (px).
        max_tiles: most images rendered per framebuffer (bounded by the GL size limit and memory:
            each tile holds 12 bytes a pixel).
    """

    def __init__(self, width: int, height: int, *, max_tiles: int = 48) -> None:
        try:
            import moderngl
        except ImportError as exc:  # pragma: no cover - a dependency of the package
            raise ModelUnavailable(
                "moderngl", "pip install moderngl (it is in the package dependencies)"
            ) from exc
        try:
            self.ctx: moderngl.Context = moderngl.create_standalone_context(backend="egl", require=330)  # type: ignore[arg-type]
        except Exception as exc:
            raise ModelUnavailable(
                "opengl-egl",
                f"no headless OpenGL context ({exc}); install libegl1 libegl-mesa0 libgl1-mesa-dri "
                "(scripts/setup.sh) or, on a GPU machine, the NVIDIA driver's EGL libraries",
            ) from exc
        try:
            limit = min(int(self.ctx.info["GL_MAX_TEXTURE_SIZE"]), int(self.ctx.info["GL_MAX_RENDERBUFFER_SIZE"]))
            if width > limit or height > limit:
                raise InvalidInput("width/height", f"{width}x{height} exceeds this GL's limit of {limit} px")
            self.width, self.height = width, height
            self.max_tex_rows = limit
            self.tiles = max(1, min(max_tiles, limit // height))
            size = (width, height * self.tiles)
            self._color = self.ctx.texture(size, 4, dtype="f1")
            self._depth = self.ctx.texture(size, 1, dtype="f4")
            self._zbuf = self.ctx.depth_renderbuffer(size)
            self._fbo = self.ctx.framebuffer([self._color, self._depth], self._zbuf)
            # Separate clears: the colour target takes the background, the depth target zero.
            self._fbo_color = self.ctx.framebuffer([self._color])
            self._fbo_depth = self.ctx.framebuffer([self._depth], self._zbuf)
            self._mesh_prog = self.ctx.program(vertex_shader=_MESH_VS, fragment_shader=_MESH_FS)
            self._ground_prog = self.ctx.program(vertex_shader=_GROUND_VS, fragment_shader=_GROUND_FS)
        except BaseException:
            # No caller holds this object to release it, and moderngl never frees a context on its own.
            self.ctx.release()
            raise

    # ------------------------------------------------------------------ lifecycle
    def release(self) -> None:
        """Free every GL object and the context."""
        self.ctx.release()

    def __enter__(self) -> GLRasterizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    @property
    def renderer_name(self) -> str:
        """The GL renderer string, e.g. ``llvmpipe (LLVM 15.0.6, 256 bits)`` or ``NVIDIA H100 …/PCIe/SSE2``."""
        return str(self.ctx.info["GL_RENDERER"])

    # ------------------------------------------------------------------ rendering
    def render(
        self,
        positions: torch.Tensor | np.ndarray,
        normals: torch.Tensor | np.ndarray,
        faces: torch.Tensor | np.ndarray,
        cameras: Cameras,
        *,
        uvs: torch.Tensor | np.ndarray | None = None,
        materials: Sequence[Material] = (Material(),),
        face_materials: torch.Tensor | np.ndarray | None = None,
        colors: torch.Tensor | np.ndarray | None = None,
        style: Style | None = None,
        with_depth: bool = True,
    ) -> Renders:
        """Render ``F`` posed frames of one mesh from every camera, one draw per material.

        Args:
            positions: ``(F, V, 3)`` world vertex positions (m).
            normals: ``(F, V, 3)`` vertex normals (need not be unit).
            faces: ``(T, 3)`` vertex indices.
            cameras: ``C`` cameras of this rasteriser's image size.
            uvs: ``(V, 2)`` texture coordinates (glTF: v down from the image top); required when a material
                has a texture.
            materials: the mesh's materials (base colour factor and optional ``(h, w, 3|4)`` uint8 texture).
            face_materials: ``(T,)`` index into ``materials`` per face; all faces use the first by default.
            colors: ``(V, 4)`` RGBA vertex colours in [0, 1], multiplied with the material's colour.
            style: background, floor and light; `Style()` by default.
            with_depth: also read back the depth image (4 of the 8 bytes read back per pixel).

        Returns:
            `Renders` with ``(C, F, ...)`` images.
        """
        style = style or Style()
        pos, nrm = _f32(positions), _f32(normals)
        tri = np.ascontiguousarray(
            faces.cpu().numpy() if isinstance(faces, torch.Tensor) else faces, dtype=np.int32
        )
        if pos.ndim != 3 or pos.shape[-1] != 3 or nrm.shape != pos.shape:
            raise InvalidInput(
                "positions", f"need (F, V, 3) positions and normals, got {pos.shape}, {nrm.shape}"
            )
        if tri.ndim != 2 or tri.shape[1] != 3 or (tri.size and (tri.min() < 0 or tri.max() >= pos.shape[1])):
            raise InvalidInput("faces", f"need (T, 3) indices into {pos.shape[1]} vertices")
        if (cameras.width, cameras.height) != (self.width, self.height):
            raise InvalidInput(
                "cameras",
                f"are {cameras.width}x{cameras.height}, this rasteriser is {self.width}x{self.height}",
            )
        if uvs is None and any(m.texture is not None for m in materials):
            raise InvalidInput("uvs", "a texture needs per-vertex uvs")
        if not materials:
            raise InvalidInput("materials", "need at least one material")
        n_frames, n_verts = pos.shape[:2]
        per_upload = max(1, (_TEX_WIDTH * self.max_tex_rows) // max(n_verts, 1))
        if n_frames > per_upload:  # only for huge meshes: split the frames, then join
            parts = [
                self.render(
                    pos[a : a + per_upload], nrm[a : a + per_upload], tri, cameras, uvs=uvs, materials=materials,
                    face_materials=face_materials, colors=colors, style=style, with_depth=with_depth,
                )
                for a in range(0, n_frames, per_upload)
            ]  # fmt: skip
            depths = [p.depth for p in parts if p.depth is not None]
            depth = np.concatenate(depths, 1) if with_depth else None
            return Renders(
                rgb=np.concatenate([p.rgb for p in parts], 1),
                mask=np.concatenate([p.mask for p in parts], 1),
                depth=depth,
                cameras=cameras,
            )

        c, h, w = len(cameras), self.height, self.width
        rgba = np.empty((c, n_frames, h, w, 4), np.uint8)
        depth_out = np.empty((c, n_frames, h, w), np.float32) if with_depth else None
        objs: list[Any] = []
        # Creating or releasing any other context (another rasteriser, a failed one) changes which one is
        # current on this thread: make ours current for the call, and give the caller's back after.
        with self.ctx:
            try:
                mesh_vao, draws = self._setup_mesh(pos, nrm, tri, uvs, colors, materials, face_materials, style, objs)
                ground_vao = self._setup_ground(style, objs) if style.ground else None
                view_mats = [
                    m.T.contiguous().numpy().astype("f4").tobytes() for m in cameras.world_to_camera.cpu()
                ]
                proj = cameras.gl_projection(flip_y=True).T.contiguous().cpu().numpy().astype("f4").tobytes()
                _uniform(self._mesh_prog, "proj").write(proj)
                _uniform(self._ground_prog, "proj").write(proj)
                bg = (*style.background, 0.0)
                flat_rgba = rgba.reshape(c * n_frames, h, w, 4)
                flat_depth = None if depth_out is None else depth_out.reshape(c * n_frames, h, w)
                self.ctx.enable(self.ctx.DEPTH_TEST)
                total = c * n_frames
                for start in range(0, total, self.tiles):
                    count = min(self.tiles, total - start)
                    self._fbo_color.clear(*bg)
                    self._fbo_depth.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
                    self._fbo.use()
                    for t in range(count):
                        view, frame = divmod(start + t, n_frames)
                        self._fbo.viewport = (0, t * h, w, h)
                        self._fbo.scissor = (0, t * h, w, h)
                        _uniform(self._mesh_prog, "view").write(view_mats[view])
                        _uniform(self._mesh_prog, "base").value = frame * n_verts
                        for draw in draws:
                            draw.render(mesh_vao, self._mesh_prog)
                        if ground_vao is not None:
                            _uniform(self._ground_prog, "view").write(view_mats[view])
                            ground_vao.render()
                    self._fbo.scissor = None  # type: ignore[assignment]  # None = whole framebuffer (moderngl API)
                    rows = (0, 0, w, count * h)
                    self._fbo.read_into(
                        flat_rgba[start : start + count], viewport=rows, components=4, attachment=0
                    )
                    if flat_depth is not None:
                        self._fbo.read_into(
                            flat_depth[start : start + count],
                            viewport=rows,
                            components=1,
                            attachment=1,
                            dtype="f4",
                        )
            finally:
                for o in reversed(objs):
                    o.release()
        return Renders(rgb=rgba[..., :3], mask=rgba[..., 3] > 127, depth=depth_out, cameras=cameras)

    # ------------------------------------------------------------------ helpers
    def _data_texture(self, data: np.ndarray, objs: list[Any]) -> Any:
        """An RGB32F texture holding ``(N, 3)`` rows at texel ``k`` = ``(k % TEXW, k // TEXW)``."""
        rows = -(-data.shape[0] // _TEX_WIDTH)
        padded = np.zeros((rows * _TEX_WIDTH, 3), np.float32)
        padded[: data.shape[0]] = data
        tex = self.ctx.texture((_TEX_WIDTH, rows), 3, padded.tobytes(), dtype="f4")
        tex.filter = (self.ctx.NEAREST, self.ctx.NEAREST)
        objs.append(tex)
        return tex

    def _setup_mesh(
        self,
        pos: np.ndarray,
        nrm: np.ndarray,
        tri: np.ndarray,
        uvs: torch.Tensor | np.ndarray | None,
        colors: torch.Tensor | np.ndarray | None,
        materials: Sequence[Material],
        face_materials: torch.Tensor | np.ndarray | None,
        style: Style,
        objs: list[Any],
    ) -> tuple[Any, list[_Draw]]:
        """The mesh's vertex array, its faces sorted by material, and one `_Draw` per material used."""
        prog = self._mesh_prog
        n_verts = pos.shape[1]
        self._data_texture(pos.reshape(-1, 3), objs).use(location=0)
        self._data_texture(nrm.reshape(-1, 3), objs).use(location=1)
        _uniform(prog, "pos_tex").value = 0
        _uniform(prog, "nrm_tex").value = 1
        _uniform(prog, "color_tex").value = 2
        _uniform(prog, "ambient").value = float(style.ambient)
        uv = np.zeros((n_verts, 2), np.float32) if uvs is None else _f32(uvs)
        if uv.shape != (n_verts, 2):
            raise InvalidInput("uvs", f"need ({n_verts}, 2), got {uv.shape}")
        col = np.ones((n_verts, 4), np.float32) if colors is None else _f32(colors)
        if col.shape != (n_verts, 4):
            raise InvalidInput("colors", f"need ({n_verts}, 4), got {col.shape}")
        fm = np.zeros(len(tri), np.int64) if face_materials is None else _ints(face_materials)
        if fm.shape != (len(tri),) or (fm.size and (fm.min() < 0 or fm.max() >= len(materials))):
            raise InvalidInput("face_materials", f"need ({len(tri)},) indices into {len(materials)} materials")
        order = np.argsort(fm, kind="stable")  # faces grouped by material: one indexed range per draw
        counts = np.bincount(fm, minlength=len(materials))
        starts = np.cumsum(counts) - counts
        gl_textures: dict[int, Any] = {}
        draws = []
        for k, mat in enumerate(materials):
            if counts[k] == 0:
                continue
            tex = None
            if mat.texture is not None:
                if id(mat.texture) not in gl_textures:
                    gl_textures[id(mat.texture)] = self._color_texture(mat.texture, objs)
                tex = gl_textures[id(mat.texture)]
            color = tuple(float(v) for v in mat.base_color.tolist())
            draws.append(_Draw(first=3 * int(starts[k]), count=3 * int(counts[k]), color=color, texture=tex))
        vbo_uv = self.ctx.buffer(uv.tobytes())
        vbo_col = self.ctx.buffer(col.tobytes())
        ibo = self.ctx.buffer(np.ascontiguousarray(tri[order]).tobytes())
        vao = self.ctx.vertex_array(
            prog, [(vbo_uv, "2f", "in_uv"), (vbo_col, "4f", "in_color")], index_buffer=ibo, index_element_size=4
        )
        objs.extend((vbo_uv, vbo_col, ibo, vao))
        return vao, draws

    def _color_texture(self, texture: torch.Tensor, objs: list[Any]) -> Any:
        img = texture.detach().cpu().numpy()
        if img.ndim != 3 or img.shape[2] not in (3, 4) or img.dtype != np.uint8:
            raise InvalidInput("texture", f"need an (h, w, 3|4) uint8 image, got {img.shape} {img.dtype}")
        tex = self.ctx.texture((img.shape[1], img.shape[0]), img.shape[2], np.ascontiguousarray(img).tobytes())
        tex.build_mipmaps()
        tex.repeat_x = tex.repeat_y = True
        objs.append(tex)
        return tex

    def _setup_ground(self, style: Style, objs: list[Any]) -> Any:
        cx, cz = style.ground_center
        s, y = style.ground_half_size, style.ground_y
        quad = np.array(
            [[cx - s, y, cz - s], [cx + s, y, cz - s], [cx - s, y, cz + s], [cx + s, y, cz + s]], np.float32
        )
        prog = self._ground_prog
        _uniform(prog, "square").value = float(style.checker_size)
        _uniform(prog, "color_a").value = tuple(style.checker_colors[0])
        _uniform(prog, "color_b").value = tuple(style.checker_colors[1])
        vbo = self.ctx.buffer(quad.tobytes())
        vao = self.ctx.vertex_array(prog, [(vbo, "3f", "in_pos")])
        objs.extend((vbo, vao))
        vao.mode = self.ctx.TRIANGLE_STRIP
        return vao
