"""The one attention kernel of the `video` package.

Every attention layer (UNet spatial/temporal transformers, OpenCLIP towers, resampler, the VAE's mid-block
attention through `video.vae.VAEAttnProcessor`) calls `attention`, so trying another kernel is one switch here
(`set_backend`), never a fork of a model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["attention", "get_backend", "multihead_attention", "set_backend"]

_BACKENDS = ("sdpa", "math")
_backend = "sdpa"


def set_backend(name: str) -> None:
    """Select the kernel: ``"sdpa"`` (`F.scaled_dot_product_attention`, flash / memory-efficient where the
    device has them) or ``"math"`` (explicit softmax(QKᵀ/√d)V in float32, the reference for tests)."""
    global _backend
    if name not in _BACKENDS:
        raise ValueError(f"attention backend must be one of {_BACKENDS}, got {name!r}")
    _backend = name


def get_backend() -> str:
    """The kernel `attention` uses now."""
    return _backend


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False) -> torch.Tensor:
    """Scaled dot-product attention with scale ``1/√D``.

    Args:
        q: ``(B, H, Lq, D)`` queries.
        k: ``(B, H, Lk, D)`` keys.
        v: ``(B, H, Lk, D)`` values.
        causal: mask keys after each query (``Lq == Lk``), as the CLIP text tower does.

    Returns:
        ``(B, H, Lq, D)``, dtype of ``q``.
    """
    if _backend == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    scores = torch.einsum("bhqd,bhkd->bhqk", q.float(), k.float()) / math.sqrt(q.shape[-1])
    if causal:
        mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(mask, float("-inf"))
    return torch.einsum("bhqk,bhkd->bhqd", scores.softmax(dim=-1), v.float()).to(q.dtype)


def multihead_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, *, causal: bool = False
) -> torch.Tensor:
    """`attention` on packed heads: ``q (B, Lq, H·D)``, ``k, v (B, Lk, H·D)`` → ``(B, Lq, H·D)``."""
    b, lq, inner = q.shape
    d = inner // heads

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], x.shape[1], heads, d).transpose(1, 2)

    out = attention(split(q), split(k), split(v), causal=causal)
    return out.transpose(1, 2).reshape(b, lq, inner)
