"""Differentiable soft silhouettes (and flat-shaded soft images) in plain torch, for motion video mimicking.

A pixel's coverage is ``sigmoid(D / sigma)``, with ``D`` its signed distance (px, positive inside) to the
*outline* of the projected mesh. The outline is made of the mesh's contour edges (between a front- and a
back-facing triangle in that view, or on an open boundary) whose outer side no triangle covers. Inside or
outside comes from an exact coverage test against every triangle (no gradient needed there); the
distance, and so the gradient, from the outline segments, which move with their vertices and so, through
skinning and FK, with joint rotations and the root translation.

Why not Soft Rasterizer's per-triangle blend (Liu et al., ICCV 2019; pytorch3d's SoftSilhouetteShader),
``1 − Π_t (1 − sigmoid(d_t/σ))``: every triangle stacked behind an edge (both sides of a closed surface,
overlapping limbs) adds coverage outside the outline, which fattens it by up to a pixel, and pixels
near the internal edges of a fine tessellation stay below 1 inside the body. Here the 0.5 level is the
hard outline (the GL mask) and the inside saturates.

Cost: the coverage test is pixels × triangles and the nearest-edge search pixels × outline edges (a few
hundred), both in chunks and without autograd; only each pixel's nearest edge is differentiated. For meshes
of thousands of triangles, render at a reduced resolution (`Cameras.resized`): mimicking needs the
outline's shape only.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch.utils.checkpoint import checkpoint

from anymole.errors import InvalidInput
from anymole.render.cameras import Cameras

__all__ = ["EdgeTable", "Window", "edge_table", "soft_render", "soft_silhouette"]

#: ``(x0, y0, width, height)``: a rectangle of whole pixels inside the image.
Window = tuple[int, int, int, int]


def _edges(tri: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Edges ``a_i → a_{i+1}`` ``(..., T, 3, 2)`` of 2D triangles ``(..., T, 3, 2)`` and twice their signed
    areas ``(..., T)`` (positive: counter-clockwise in pixel coordinates)."""
    e = tri.roll(-1, dims=-2) - tri
    return e, e[..., 0, 0] * e[..., 1, 1] - e[..., 0, 1] * e[..., 1, 0]


def _signed_distance(pix: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
    """Signed distance (px, positive inside) from pixels to 2D triangles.

    Inside a triangle the distance to its nearest edge line is exact. Outside, the exact distance needs
    per-pair segment projections (several times the memory traffic), so it is bounded from below by the
    larger of the farthest violated edge line and the distance to the triangle's bounding box: exact
    along edges and beyond axis-aligned corners, and it keeps thin triangles from growing long spikes
    beyond their sharp tips. Edge lines are one matmul over all triangles.

    Args:
        pix: ``(P, 2)`` pixel centres.
        tri: ``(..., T, 3, 2)`` projected triangles.

    Returns:
        ``(..., P, T)``; degenerate (zero-area) triangles are far outside.
    """
    a = tri
    e, area2 = _edges(a)
    orient = torch.sign(area2).unsqueeze(-1)
    inv_len = e.square().sum(-1).clamp_min(1e-12).rsqrt()
    # Line i, positive inside: orient · cross(e_i, p − a_i) / |e_i| = A x + B y + C.
    coef_a = -orient * e[..., 1] * inv_len
    coef_b = orient * e[..., 0] * inv_len
    coef_c = -(coef_a * a[..., 0] + coef_b * a[..., 1])
    lines = torch.stack((coef_a, coef_b, coef_c), -3).flatten(-2)  # (..., 3, T·3)
    hom = torch.cat((pix, torch.ones_like(pix[:, :1])), -1)  # (P, 3)
    d_line = (hom @ lines).unflatten(-1, (-1, 3)).amin(-1)  # (..., P, T)
    lo, hi = a.amin(-2).unsqueeze(-3), a.amax(-2).unsqueeze(-3)  # (..., 1, T, 2)
    p = pix[:, None, :]
    gap = torch.maximum(lo - p, p - hi).clamp_min(0.0)  # (..., P, T, 2)
    sq = gap.square().sum(-1)
    outside_box = sq > 0
    d_box = torch.where(outside_box, sq, torch.ones_like(sq)).sqrt()  # sqrt'(0) would poison gradients
    d = torch.where(outside_box, torch.minimum(d_line, -d_box), d_line)
    return torch.where(area2.unsqueeze(-2).abs() > 1e-9, d, torch.full_like(d, -1e4))


def _project(
    vertices: torch.Tensor, faces: torch.Tensor, cameras: Cameras, sigma: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check the inputs and project ``(B, V, 3)`` vertices: ``(px (C, B, V, 2), tri_px (C, B, T, 3, 2),
    tri_depth (C, B, T, 3) (m), live (C, B, T))``, live meaning wholly in front of the near plane."""
    if vertices.ndim != 3 or vertices.shape[-1] != 3:
        raise InvalidInput("vertices", f"need (B, V, 3), got {tuple(vertices.shape)}")
    if sigma <= 0:
        raise InvalidInput("sigma", f"must be > 0 px, got {sigma}")
    px, depth = cameras.project(vertices)  # (C, B, V, 2), (C, B, V)
    f = faces.long()
    tri_depth = depth[:, :, f]
    return px, px[:, :, f], tri_depth, (tri_depth > cameras.znear).all(-1)


def _pixel_grid(cameras: Cameras, like: torch.Tensor, window: Window | None = None) -> torch.Tensor:
    """``(P, 2)`` pixel centres, row-major, of the image or of ``window`` in it."""
    x0, y0, w, h = window if window is not None else (0, 0, cameras.width, cameras.height)
    ys, xs = torch.meshgrid(
        torch.arange(y0, y0 + h, dtype=like.dtype, device=like.device) + 0.5,
        torch.arange(x0, x0 + w, dtype=like.dtype, device=like.device) + 0.5,
        indexing="ij",
    )
    return torch.stack((xs, ys), -1).reshape(-1, 2)


def _chunk(n_pix: int, batch: int, budget: int) -> int:
    """Items per chunk so that pixels × items × batch stays within ``budget`` pairs."""
    return max(1, budget // max(1, n_pix * batch))


class EdgeTable(NamedTuple):
    """Undirected edges of a triangle mesh with their (up to two) faces (`edge_table`).

    Attributes:
        edges: ``(E, 2)`` vertex indices.
        faces: ``(E, 2)`` adjacent face indices (``-1``: an open boundary; further faces of non-manifold edges
            are ignored).
        opposite: ``(E, 2)`` for each of those faces, its vertex that is not on the edge (``-1`` with the face).
    """

    edges: torch.Tensor
    faces: torch.Tensor
    opposite: torch.Tensor


def edge_table(faces: torch.Tensor) -> EdgeTable:
    """The `EdgeTable` of a ``(T, 3)`` triangle mesh.

    Building it waits for the device twice (the largest index and the number of distinct edges are read on
    the host): a caller that draws the same mesh again and again (a solver's iterations) builds it once and
    passes it to `soft_silhouette`.
    """
    f = faces.long()
    a, b = f, f.roll(-1, dims=1)  # half-edge i of face t: f[t, i] → f[t, i+1]
    lo, hi = torch.minimum(a, b).reshape(-1), torch.maximum(a, b).reshape(-1)
    key = lo * (int(f.max()) + 1) + hi
    order = torch.argsort(key, stable=True)
    _, counts = torch.unique_consecutive(key[order], return_counts=True)
    start = torch.cumsum(counts, 0) - counts
    first = order[start]  # half-edge ids t·3 + i
    second = torch.where(counts > 1, order[(start + 1).clamp_max(len(order) - 1)], -1)
    halves = torch.stack((first, second), -1)  # (E, 2)
    ok = halves >= 0
    h = halves.clamp_min(0)
    edge_faces = torch.where(ok, h // 3, -1)
    opposite = torch.where(ok, f.reshape(-1)[(h // 3) * 3 + (h % 3 + 2) % 3], -1)
    edges = torch.stack((lo[first], hi[first]), -1)
    return EdgeTable(edges, edge_faces, opposite)


def _inside_any(pix: torch.Tensor, tri: torch.Tensor, live: torch.Tensor, budget: int) -> torch.Tensor:
    """``(..., P)`` bool: is each point inside any live triangle? ``pix (..., P, 2)`` or ``(P, 2)``, no gradient."""
    with torch.no_grad():
        e, area2 = _edges(tri)
        orient = torch.sign(area2).unsqueeze(-1)
        coef = torch.stack(
            (
                -orient * e[..., 1],
                orient * e[..., 0],
                orient * (e[..., 1] * tri[..., 0] - e[..., 0] * tri[..., 1]),
            ),
            -2,
        )  # (..., T, 3 coefficients, 3 edges): A x + B y + C > 0 inside (unnormalised)
        # Dead (behind the camera) and degenerate triangles get the line 0·x + 0·y − 1: never inside. (Written
        # with where, not a constant tensor: a tensor from host data is a copy that waits for the device.)
        dead = ~(live & (area2.abs() > 1e-9))
        row = torch.arange(3, device=coef.device).view(3, 1)  # A, B, C
        coef = torch.where(dead[..., None, None], torch.where(row == 2, -1.0, 0.0).to(coef.dtype), coef)
        hom = torch.cat((pix, torch.ones_like(pix[..., :1])), -1)
        n_pix, n_tri = pix.shape[-2], tri.shape[-3]
        batch = math.prod(tri.shape[:-3])
        step = _chunk(n_pix, batch, budget)
        best = torch.full((*tri.shape[:-3], n_pix), -1.0, dtype=coef.dtype, device=coef.device)
        for a in range(0, n_tri, step):
            c = coef[..., a : a + step, :, :].movedim(-2, -3).flatten(-2)  # (..., 3 coefficients, t·3 edges)
            lines = hom @ c  # (..., P, t·3)
            # Inside a triangle: all three lines positive, i.e. the smallest is; inside any: the largest such.
            best = torch.maximum(best, lines.unflatten(-1, (-1, 3)).amin(-1).amax(-1))
        return best > 0


def _point_segment_sq(px: torch.Tensor, py: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
    """Squared distance from points ``(px, py)`` to segments ``seg (..., 2 ends, 2)`` (broadcast)."""
    x0, y0, x1, y1 = seg[..., 0, 0], seg[..., 0, 1], seg[..., 1, 0], seg[..., 1, 1]
    ex, ey = x1 - x0, y1 - y0
    ax, ay = px - x0, py - y0
    t = ((ax * ex + ay * ey) / (ex * ex + ey * ey).clamp_min(1e-12)).clamp(0.0, 1.0)
    dx, dy = ax - t * ex, ay - t * ey
    return dx * dx + dy * dy


def _outline_distance(pix: torch.Tensor, seg: torch.Tensor, valid: torch.Tensor, budget: int) -> torch.Tensor:
    """``(C, B, P)`` distance (px) from pixels ``(P, 2)`` to the nearest valid segment of ``(C, B, K, 2, 2)``.

    The search over segments runs without autograd; only the nearest segment's distance is recomputed
    with it. Same value and gradient as a differentiable ``min`` (whose gradient is the argmin's), at the
    cost of P gathers instead of a P × K backward.
    """
    c, b, k = valid.shape
    with torch.no_grad():
        far = torch.where(
            valid[..., None, None], seg.detach(), torch.full_like(seg, 1e6)
        )  # invalid: far away
        px, py = pix[:, 0, None], pix[:, 1, None]  # (P, 1)
        best = torch.full((c, b, pix.shape[0]), float("inf"), dtype=seg.dtype, device=seg.device)
        arg = torch.zeros(c, b, pix.shape[0], dtype=torch.long, device=seg.device)
        step = _chunk(pix.shape[0], c * b, budget)
        for a in range(0, k, step):
            sq = _point_segment_sq(px, py, far[:, :, None, a : a + step])  # (C, B, P, k)
            m, i = sq.min(-1)
            better = m < best
            best = torch.where(better, m, best)
            arg = torch.where(better, i + a, arg)
    near = torch.gather(seg, 2, arg[..., None, None].expand(c, b, -1, 2, 2))  # (C, B, P, 2, 2)
    sq = _point_segment_sq(pix[:, 0], pix[:, 1], near)
    # The sqrt's gradient is infinite at 0: a pixel centre exactly on the outline gets a zero gradient.
    return torch.where(sq > 1e-12, sq, torch.ones_like(sq)).sqrt() * (sq > 1e-12)


def _outline(
    px: torch.Tensor, tri_px: torch.Tensor, live: torch.Tensor, table: EdgeTable, budget: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Outline segments of each image: ``(segments (C, B, K, 2, 2), valid (C, B, K))``.

    Args:
        px: ``(C, B, V, 2)`` projected vertices.
        tri_px: ``(C, B, T, 3, 2)`` projected triangles.
        live: ``(C, B, T)`` triangles in front of the near plane.
        table: the mesh's `edge_table`.
    """
    edges, edge_faces, opposite = table
    _, area2 = _edges(tri_px)  # (C, B, T)
    side = torch.where(live, torch.sign(area2), torch.zeros_like(area2))
    f0, f1 = edge_faces[:, 0], edge_faces[:, 1]
    s0 = side[..., f0]
    s1 = torch.where(f1 >= 0, side[..., f1.clamp_min(0)], torch.zeros_like(s0))
    # A contour edge: a live face whose neighbour faces away, is dead (behind the camera, degenerate) or
    # missing (an open boundary).
    contour = ((s0 != 0) | (s1 != 0)) & (s0 * s1 <= 0)
    # The one wait for the device in a call: the search below costs pixels × K, and a fixed K (all E edges)
    # would cost E / K times as much (2-9x on the bundled meshes' contours).
    k = max(1, int(contour.sum(-1).max()))
    pick = torch.topk(contour.to(px.dtype), k, dim=-1).indices  # (C, B, K): contour edges first
    valid = torch.gather(contour, -1, pick)
    with torch.no_grad():
        ends = px.detach()[:, :, edges]  # (C, B, E, 2, 2)
        ends = torch.gather(ends, 2, pick[..., None, None].expand(*pick.shape, 2, 2))
        # The third vertex of the live face says which side of the edge the surface lies on.
        opp = torch.where(s0 != 0, opposite[:, 0], opposite[:, 1].clamp_min(0))  # (C, B, E)
        opp = torch.gather(opp, -1, pick)
        other = torch.gather(px.detach(), 2, opp[..., None].expand(*opp.shape, 2))
        d = ends[..., 1, :] - ends[..., 0, :]
        normal = torch.stack((-d[..., 1], d[..., 0]), -1)
        normal = normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        towards_face = ((other - ends[..., 0, :]) * normal).sum(-1, keepdim=True) > 0
        normal = torch.where(towards_face, -normal, normal)
        # Half a pixel outside the edge's midpoint: covered means the edge is an inner contour.
        probe = 0.5 * (ends[..., 0, :] + ends[..., 1, :]) + 0.5 * normal  # (C, B, K, 2)
        valid = valid & ~_inside_any(probe, tri_px.detach(), live, budget)
    segments = torch.gather(px[:, :, edges], 2, pick[..., None, None].expand(*pick.shape, 2, 2))
    return segments, valid


def soft_silhouette(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    cameras: Cameras,
    *,
    sigma: float = 1.0,
    pairs_per_chunk: int = 1 << 23,
    edges: EdgeTable | None = None,
    window: Window | None = None,
) -> torch.Tensor:
    """Soft silhouettes of posed meshes from every camera.

    Args:
        vertices: ``(B, V, 3)`` world positions (m), e.g. skinned from optimised joint rotations.
        faces: ``(T, 3)`` vertex indices.
        cameras: ``C`` cameras; their image size sets the output size.
        sigma: edge softness (px); larger widens the gradients' reach.
        pairs_per_chunk: pixel × item × batch pairs evaluated at once (memory ≈ 50 bytes a pair).
        edges: ``edge_table(faces)``, built here when omitted; pass it when drawing the same mesh again and
            again, since building it waits for the device.
        window: ``(x0, y0, w, h)``: draw only these pixels of the image (the cost is pixels × triangles, and
            a character often covers a small part of its frame); the whole image when omitted.

    Returns:
        ``(C, B, H, W)`` coverage in [0, 1], 0.5 on the outline (``(C, B, h, w)`` of ``window``);
        differentiable in ``vertices``.
    """
    if window is not None:
        x0, y0, w, h = window
        if w < 1 or h < 1 or x0 < 0 or y0 < 0 or x0 + w > cameras.width or y0 + h > cameras.height:
            raise InvalidInput("window", f"{window} is not a rectangle of pixels inside the "
                               f"{cameras.width}×{cameras.height} image")  # fmt: skip
    px, tri_px, _, live = _project(vertices, faces, cameras, sigma)
    c, b = live.shape[:2]
    table = edges if edges is not None else edge_table(faces)
    coverage = _coverage(px, tri_px, live, table, cameras, sigma, pairs_per_chunk, window)
    _, _, w, h = window if window is not None else (0, 0, cameras.width, cameras.height)
    return coverage.reshape(c, b, h, w)


def _coverage(
    px: torch.Tensor,
    tri_px: torch.Tensor,
    live: torch.Tensor,
    table: EdgeTable,
    cameras: Cameras,
    sigma: float,
    budget: int,
    window: Window | None = None,
) -> torch.Tensor:
    """``(C, B, P)`` soft coverage of the image's (or ``window``'s) pixels, row-major, from `_project`'s outputs."""
    pix = _pixel_grid(cameras, px, window)
    inside = _inside_any(pix, tri_px.detach(), live, budget)  # (C, B, P)
    segments, valid = _outline(px, tri_px, live, table, budget)
    dist = _outline_distance(pix, segments, valid, budget)
    return torch.sigmoid(torch.where(inside, dist, -dist) / sigma)


def soft_render(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    cameras: Cameras,
    face_colors: torch.Tensor,
    *,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    sigma: float = 1.0,
    gamma: float = 1e-2,
    ambient: float = 0.35,
    pairs_per_chunk: int = 1 << 22,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat-shaded soft images: Soft Rasterizer's depth-weighted colour blend over the soft silhouette.

    Each triangle's colour is ``face_colors · (ambient + (1 − ambient)·|n·l|)`` with the same headlight as
    the GL renderer. Triangles blend by ``sigmoid(d_t/σ) · exp(z_t/γ)`` with ``z_t`` the normalised
    nearness (1 at the near plane, 0 at the far one), so the nearest covering triangle wins as γ → 0;
    the blend is laid over the background with the `soft_silhouette` coverage as alpha.

    Args:
        vertices: ``(B, V, 3)`` world positions (m).
        faces: ``(T, 3)`` vertex indices.
        cameras: ``C`` cameras.
        face_colors: ``(T, 3)`` or ``(B, T, 3)`` RGB in [0, 1].
        background: RGB in [0, 1].
        sigma: edge softness (px).
        gamma: depth sharpness, relative to the normalised depth range [0, 1].
        ambient: share of unlit colour.
        pairs_per_chunk: as in `soft_silhouette`.

    Returns:
        ``(rgb (C, B, 3, H, W), silhouette (C, B, H, W))``; differentiable in ``vertices``.
    """
    px, tri_px, tri_depth, visible = _project(vertices, faces, cameras, sigma)
    c, b, n_tri = visible.shape
    # Flat headlight shading in camera space (same light direction as the GL shader).
    f = faces.long()
    tri_w = vertices[:, f]  # (B, T, 3, 3)
    n = torch.cross(tri_w[..., 1, :] - tri_w[..., 0, :], tri_w[..., 2, :] - tri_w[..., 0, :], dim=-1)
    rot = cameras.world_to_camera[:, :3, :3].to(vertices)
    n_cam = torch.nn.functional.normalize(torch.einsum("cij,btj->cbti", rot, n), dim=-1)
    light = torch.nn.functional.normalize(torch.tensor([0.35, 0.6, 1.0], dtype=vertices.dtype), dim=0)
    shade = ambient + (1.0 - ambient) * (n_cam @ light.to(vertices.device)).abs()  # (C, B, T)
    col = face_colors.to(vertices).expand(b, n_tri, 3).unsqueeze(0) * shade.unsqueeze(-1)  # (C, B, T, 3)
    znorm = (cameras.zfar - tri_depth.mean(-1)) / (cameras.zfar - cameras.znear)  # 1 near, 0 far
    pix = _pixel_grid(cameras, vertices)
    n_pix = pix.shape[0]
    step = _chunk(n_pix, c * b, pairs_per_chunk)
    bg = torch.tensor(background, dtype=vertices.dtype, device=vertices.device)

    def chunk_terms(
        tri: torch.Tensor, z: torch.Tensor, vis: torch.Tensor, colr: torch.Tensor
    ) -> torch.Tensor:
        d = _signed_distance(pix, tri)  # (C, B, P, t)
        d = torch.where(vis.unsqueeze(-2), d, torch.full_like(d, -1e4))
        logit = torch.nn.functional.logsigmoid(d / sigma) + z.unsqueeze(-2) / gamma
        m = logit.amax(-1, keepdim=True)
        w = (logit - m).exp()
        return torch.cat((m, w.sum(-1, keepdim=True), w @ colr), -1)  # (C, B, P, 5)

    # A softmax over all triangles, accumulated chunk by chunk with a running maximum (log-sum-exp).
    m_acc = torch.full((c, b, n_pix, 1), -1e30, dtype=vertices.dtype, device=vertices.device)
    s_acc = torch.zeros_like(m_acc)
    rgb_acc = torch.zeros(c, b, n_pix, 3, dtype=vertices.dtype, device=vertices.device)
    for a in range(0, n_tri, step):
        sl = slice(a, a + step)
        args = (tri_px[:, :, sl], znorm[:, :, sl], visible[:, :, sl], col[:, :, sl])
        if torch.is_grad_enabled() and vertices.requires_grad:
            t = checkpoint(chunk_terms, *args, use_reentrant=False)
        else:
            t = chunk_terms(*args)
        m_new = torch.maximum(m_acc, t[..., :1])
        old, new = (m_acc - m_new).exp(), (t[..., :1] - m_new).exp()
        s_acc = s_acc * old + t[..., 1:2] * new
        rgb_acc = rgb_acc * old + t[..., 2:5] * new
        m_acc = m_new
    alpha = _coverage(px, tri_px, visible, edge_table(faces), cameras, sigma, pairs_per_chunk).unsqueeze(-1)
    rgb = alpha * rgb_acc / s_acc.clamp_min(1e-30) + (1.0 - alpha) * bg
    rgb = rgb.reshape(c, b, cameras.height, cameras.width, 3).permute(0, 1, 4, 2, 3)
    return rgb, alpha.reshape(c, b, cameras.height, cameras.width)
