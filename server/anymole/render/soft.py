"""Differentiable soft silhouettes (and flat-shaded soft images) in plain torch, for motion video mimicking.

Each triangle covers a pixel with probability ``sigmoid(d·|d| / sigma²)``, where ``d`` is the pixel's
signed distance (px) to the projected triangle, positive inside; the silhouette is ``1 − Π_t (1 − p_t)``
(the soft rasteriser of Liu et al., "Soft Rasterizer", ICCV 2019; squared distance as in pytorch3d's
SoftSilhouetteShader, whose Gaussian-like tail keeps the many triangles stacked behind an edge from
fattening the silhouette).
Gradients flow from every pixel near an edge to the triangle's vertices, hence through skinning and FK to
joint rotations and the root translation.

Cost is dense: pixels × triangles per image. Triangles are processed in chunks (with activation
checkpointing when gradients are needed), so memory stays bounded; render at a reduced resolution
(`Cameras.resized`) for meshes of thousands of triangles, as mimicking only needs the silhouette's shape.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from anymole.errors import InvalidInput
from anymole.render.cameras import Cameras

__all__ = ["soft_render", "soft_silhouette"]


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
    e = a.roll(-1, dims=-2) - a  # (..., T, 3, 2) edges a_i → a_{i+1}
    area2 = e[..., 0, 0] * e[..., 1, 1] - e[..., 0, 1] * e[..., 1, 0]  # (..., T)
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


def _project_triangles(
    vertices: torch.Tensor, faces: torch.Tensor, cameras: Cameras
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(tri_px (C, B, T, 3, 2), tri_depth (C, B, T), visible (C, B, T))`` of ``(B, V, 3)`` vertices."""
    px, depth = cameras.project(vertices)  # (C, B, V, 2), (C, B, V)
    f = faces.long()
    tri_px = px[:, :, f]  # (C, B, T, 3, 2)
    tri_depth = depth[:, :, f]
    visible = (tri_depth > cameras.znear).all(-1)
    return tri_px, tri_depth.mean(-1), visible


def _pixel_grid(cameras: Cameras, like: torch.Tensor) -> torch.Tensor:
    ys, xs = torch.meshgrid(
        torch.arange(cameras.height, dtype=like.dtype, device=like.device) + 0.5,
        torch.arange(cameras.width, dtype=like.dtype, device=like.device) + 0.5,
        indexing="ij",
    )
    return torch.stack((xs, ys), -1).reshape(-1, 2)


def _chunk(n_pix: int, batch: int, budget: int) -> int:
    """Triangles per chunk so that pixels × triangles × batch stays within ``budget`` pairs."""
    return max(1, budget // max(1, n_pix * batch))


def soft_silhouette(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    cameras: Cameras,
    *,
    sigma: float = 1.0,
    pairs_per_chunk: int = 1 << 23,
) -> torch.Tensor:
    """Soft silhouettes of posed meshes from every camera.

    Args:
        vertices: ``(B, V, 3)`` world positions (m), e.g. skinned from optimised joint rotations.
        faces: ``(T, 3)`` vertex indices.
        cameras: ``C`` cameras; their image size sets the output size.
        sigma: edge softness (px); larger widens the gradients' reach.
        pairs_per_chunk: pixel × triangle × batch pairs evaluated at once (memory ≈ 100 bytes a pair).

    Returns:
        ``(C, B, H, W)`` coverage in [0, 1]; differentiable in ``vertices``.
    """
    if vertices.ndim != 3 or vertices.shape[-1] != 3:
        raise InvalidInput("vertices", f"need (B, V, 3), got {tuple(vertices.shape)}")
    if sigma <= 0:
        raise InvalidInput("sigma", f"must be > 0 px, got {sigma}")
    tri_px, _, visible = _project_triangles(vertices, faces, cameras)
    pix = _pixel_grid(cameras, vertices)
    c, b, n_tri = visible.shape
    step = _chunk(pix.shape[0], c * b, pairs_per_chunk)

    def log_miss(tri: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        # log Π (1 − p) = Σ log sigmoid(−d/σ): stable for any distance.
        d = _signed_distance(pix, tri)
        lm = torch.nn.functional.logsigmoid(-d * d.abs() / sigma**2)
        return (lm * vis.unsqueeze(-2)).sum(-1)  # (C, B, P)

    total = torch.zeros(c, b, pix.shape[0], dtype=vertices.dtype, device=vertices.device)
    for a in range(0, n_tri, step):
        args = (tri_px[:, :, a : a + step], visible[:, :, a : a + step].to(vertices.dtype))
        if torch.is_grad_enabled() and vertices.requires_grad:
            total = total + checkpoint(log_miss, *args, use_reentrant=False)
        else:
            total = total + log_miss(*args)
    return (1.0 - total.exp()).reshape(c, b, cameras.height, cameras.width)


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
    """Flat-shaded soft images: Soft Rasterizer's depth-weighted colour aggregation.

    Each triangle's colour is ``face_colors · (ambient + (1 − ambient)·|n·l|)`` with the same headlight as
    the GL renderer; pixels blend triangles by ``p_t · exp((z_far_rel − z_t)/γ)`` (nearer wins as γ → 0)
    plus the background at weight ``exp(ε/γ)``.

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
    if vertices.ndim != 3 or vertices.shape[-1] != 3:
        raise InvalidInput("vertices", f"need (B, V, 3), got {tuple(vertices.shape)}")
    tri_px, tri_z, visible = _project_triangles(vertices, faces, cameras)
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
    znorm = (cameras.zfar - tri_z) / (cameras.zfar - cameras.znear)  # 1 near, 0 far
    pix = _pixel_grid(cameras, vertices)
    n_pix = pix.shape[0]
    step = _chunk(n_pix, c * b, pairs_per_chunk)
    bg = torch.tensor(background, dtype=vertices.dtype, device=vertices.device)
    eps = 1e-3

    # Softmax over triangles and the background, accumulated in chunks with a running maximum.
    def chunk_terms(
        tri: torch.Tensor, z: torch.Tensor, vis: torch.Tensor, colr: torch.Tensor
    ) -> torch.Tensor:
        d = _signed_distance(pix, tri)
        d = d * d.abs() / sigma**2  # (C, B, P, t)
        logp = torch.nn.functional.logsigmoid(d)
        logit = torch.where(
            vis.unsqueeze(-2) > 0, logp + z.unsqueeze(-2) / gamma, torch.full_like(logp, -1e30)
        )
        m = logit.amax(-1, keepdim=True)
        w = (logit - m).exp()
        lm = (torch.nn.functional.logsigmoid(-d) * vis.unsqueeze(-2)).sum(-1, keepdim=True)
        return torch.cat((m, w.sum(-1, keepdim=True), w @ colr, lm), -1)  # (C, B, P, 6)

    m_acc = torch.full((c, b, n_pix, 1), eps / gamma, dtype=vertices.dtype, device=vertices.device)
    s_acc = torch.ones_like(m_acc)  # the background's weight exp(eps/γ − m) with m = eps/γ
    rgb_acc = bg.expand(c, b, n_pix, 3).clone()
    lm_acc = torch.zeros_like(m_acc)
    for a in range(0, n_tri, step):
        sl = slice(a, a + step)
        args = (tri_px[:, :, sl], znorm[:, :, sl], visible[:, :, sl].to(vertices.dtype), col[:, :, sl])
        if torch.is_grad_enabled() and vertices.requires_grad:
            t = checkpoint(chunk_terms, *args, use_reentrant=False)
        else:
            t = chunk_terms(*args)
        m_new = torch.maximum(m_acc, t[..., :1])
        old, new = (m_acc - m_new).exp(), (t[..., :1] - m_new).exp()
        s_acc = s_acc * old + t[..., 1:2] * new
        rgb_acc = rgb_acc * old + t[..., 2:5] * new
        m_acc = m_new
        lm_acc = lm_acc + t[..., 5:6]
    rgb = (rgb_acc / s_acc).reshape(c, b, cameras.height, cameras.width, 3).permute(0, 1, 4, 2, 3)
    sil = (1.0 - lm_acc.exp()).reshape(c, b, cameras.height, cameras.width)
    return rgb, sil
