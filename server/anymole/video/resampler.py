"""Perceiver Resampler (``image_proj_model``): CLIP image tokens → a fixed set of context tokens.

Learned queries (``latents``, ``queries_per_frame × frames`` of them) attend to ``[image tokens ; queries]``
in each layer, so the UNet gets ``queries_per_frame`` image tokens per frame (16 × 16 = 256 for
DynamiCrafter 512). Names follow the checkpoint: ``layers.i.0`` attention, ``layers.i.1`` feed-forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from anymole.video.attention import multihead_attention

__all__ = ["Resampler", "ResamplerConfig"]


@dataclass(frozen=True)
class ResamplerConfig:
    """Resampler sizes (defaults: DynamiCrafter 512).

    Attributes:
        dim: width of the queries (1024).
        depth: attention + feed-forward layers (4).
        heads / head_dim: attention heads (12 × 64 = 768 inner width).
        queries_per_frame / frames: the learned queries are ``queries_per_frame · frames`` (16 · 16).
        embedding_dim: width of the incoming image tokens (1280, the ViT-H width).
        output_dim: width of the produced context tokens (the UNet's ``context_dim``, 1024).
        ff_mult: feed-forward expansion (4).
    """

    dim: int = 1024
    depth: int = 4
    heads: int = 12
    head_dim: int = 64
    queries_per_frame: int = 16
    frames: int = 16
    embedding_dim: int = 1280
    output_dim: int = 1024
    ff_mult: int = 4

    @property
    def num_queries(self) -> int:
        return self.queries_per_frame * self.frames


class PerceiverAttention(nn.Module):
    """Queries attend to ``[x ; queries]`` (both layer-normed); bias-free projections."""

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """``x (B, N, dim)``, ``latents (B, Q, dim)`` → ``(B, Q, dim)``."""
        x, latents = self.norm1(x), self.norm2(latents)
        k, v = self.to_kv(torch.cat([x, latents], dim=1)).chunk(2, dim=-1)
        return self.to_out(multihead_attention(self.to_q(latents), k, v, self.heads))


class Resampler(nn.Module):
    """``image tokens (B, N, embedding_dim)`` → ``(B, num_queries, output_dim)``."""

    def __init__(self, cfg: ResamplerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.latents = nn.Parameter(torch.empty(1, cfg.num_queries, cfg.dim))
        self.proj_in = nn.Linear(cfg.embedding_dim, cfg.dim)
        self.proj_out = nn.Linear(cfg.dim, cfg.output_dim)
        self.norm_out = nn.LayerNorm(cfg.output_dim)
        inner = cfg.dim * cfg.ff_mult
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    PerceiverAttention(cfg.dim, cfg.heads, cfg.head_dim),
                    nn.Sequential(
                        nn.LayerNorm(cfg.dim),
                        nn.Linear(cfg.dim, inner, bias=False),
                        nn.GELU(),
                        nn.Linear(inner, cfg.dim, bias=False),
                    ),
                ]
            )
            for _ in range(cfg.depth)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.latents.normal_(0.0, self.cfg.dim**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        latents = self.latents.expand(x.shape[0], -1, -1)
        x = self.proj_in(x)
        for layer in self.layers:
            attn, ff = cast(nn.ModuleList, layer)  # [attention, feed-forward]
            latents = latents + attn(x, latents)
            latents = latents + ff(latents)
        return self.norm_out(self.proj_out(latents))
