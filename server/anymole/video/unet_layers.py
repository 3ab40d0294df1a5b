"""The layers of DynamiCrafter's spatio-temporal denoiser and its config: `UNet3DConfig`, the timestep embedding,
norms that keep half precision, residual and temporal convolution blocks, spatial and temporal transformers,
down- and upsampling. `anymole.video.unet3d.UNet3D` assembles them; module names follow the official checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from anymole.video.attention import multihead_attention
from anymole.video.dropout import Dropout

__all__ = [
    "Attention",
    "BasicTransformerBlock",
    "Downsample",
    "FeedForward",
    "GroupNorm",
    "LayerNorm",
    "ResBlock",
    "SpatialTransformer",
    "TemporalConvBlock",
    "TemporalTransformer",
    "UNet3DConfig",
    "Upsample",
    "timestep_embedding",
    "zero_",
]


@dataclass(frozen=True)
class UNet3DConfig:
    """Hyper-parameters of the 3D UNet (defaults: DynamiCrafter 512, ``configs/inference_512_v1.0.yaml``).

    Attributes:
        in_channels: noisy latent channels plus concatenated condition channels (4 + 4).
        out_channels: predicted channels (4).
        model_channels: width of the first level (320).
        channel_mult: width multiplier per level.
        num_res_blocks: ResBlocks per level on the way down (one more on the way up).
        attention_resolutions: down-sampling factors ``ds`` whose levels get a spatial and a temporal transformer.
        num_head_channels: width of one attention head (64).
        transformer_depth: transformer blocks per spatial/temporal transformer.
        context_dim: width of the cross-attention tokens (1024).
        text_context_len: leading context tokens that are text (77); the rest are image tokens.
        image_tokens_per_frame: image tokens per frame when the context carries one set per frame (16).
        image_cross_attention_scale: weight of the image cross-attention branch (1.0, fixed).
        init_attn_heads: heads of the ``init_attn`` temporal transformer after ``conv_in`` (8).
        norm_groups: GroupNorm groups (32).
        dropout: dropout of ResBlocks, temporal convs and transformer outputs (active only in training).
    """

    in_channels: int = 8
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (1, 2, 4)
    num_head_channels: int = 64
    transformer_depth: int = 1
    context_dim: int = 1024
    text_context_len: int = 77
    image_tokens_per_frame: int = 16
    image_cross_attention_scale: float = 1.0
    init_attn_heads: int = 8
    norm_groups: int = 32
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.model_channels % self.norm_groups or self.model_channels % 2:
            raise ValueError(
                f"model_channels={self.model_channels} must be even and divisible by norm_groups={self.norm_groups}"
            )
        for mult in self.channel_mult:
            if (mult * self.model_channels) % self.num_head_channels:
                raise ValueError(
                    f"level width {mult * self.model_channels} is not a multiple of num_head_channels="
                    f"{self.num_head_channels}"
                )


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding, cosine half first (LDM convention; diffusers ``flip_sin_to_cos=True``).

    Args:
        t: ``(N,)`` timesteps or fps values (any real dtype).
        dim: even embedding width.

    Returns:
        ``(N, dim)`` float32.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def zero_(module: nn.Module) -> None:
    """Zero every parameter of ``module`` (output layers that must start as the identity residual)."""
    for p in module.parameters():
        nn.init.zeros_(p)


_HALF = (torch.bfloat16, torch.float16)


def _norm_keeping_dtype(
    norm: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
) -> torch.Tensor:
    """``norm(x, weight, bias)`` in ``x``'s dtype for half inputs (outside autocast, parameters cast to it),
    in float32 otherwise; see `GroupNorm`."""
    if x.dtype in _HALF:
        with torch.autocast(x.device.type, enabled=False):
            return norm(x, weight.to(x.dtype), bias.to(x.dtype))
    return norm(x.float(), weight.float(), bias.float())


class GroupNorm(nn.GroupNorm):
    """GroupNorm with float32 statistics and the input's dtype out.

    For half inputs the kernel runs on them directly (CUDA and CPU accumulate half inputs' mean and variance
    in float32) with the affine parameters cast to that dtype, under autocast too: autocast would run the
    norm in float32 and hand float32 to the SiLU, dropout and layout copies after it (casts and twice the
    memory traffic in the memory-bound part of a training step). Float32 inputs are normalised in float32.

    Against the LDM UNet's ``GroupNorm32`` (float32 affine on the normalised input ``x̂``, output rounded once,
    within ``2⁻⁹·|y|`` of the exact ``y``) the rounding of the parameters adds to the error: each output is
    within ``2⁻⁸·(|x̂·w| + |b| + |y|)`` of ``y`` (tested), so where ``x̂·w`` and ``b`` cancel it can be many
    units in its last place off. The gradients of the float32 ``weight`` and ``bias`` leave the kernel rounded
    to the half dtype and are then cast up.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _norm_keeping_dtype(
            lambda x, w, b: F.group_norm(x, self.num_groups, w, b, self.eps), x, self.weight, self.bias
        )


class LayerNorm(nn.LayerNorm):
    """LayerNorm with float32 statistics and the input's dtype out (same numerics as `GroupNorm`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _norm_keeping_dtype(
            lambda x, w, b: F.layer_norm(x, self.normalized_shape, w, b, self.eps), x, self.weight, self.bias
        )


class TemporalConvBlock(nn.Module):
    """Four (GroupNorm, SiLU, [Dropout], Conv3d (3,1,1)) stages along time with an identity residual.

    The last conv starts at zero, so a fresh block is the identity. GroupNorm statistics pool over
    ``(C/G, T, h, w)``, as in the reference, which normalises the 5D tensor.
    """

    def __init__(self, channels: int, groups: int, dropout: float) -> None:
        super().__init__()

        def conv() -> nn.Conv3d:
            return nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))

        self.conv1 = nn.Sequential(GroupNorm(groups, channels), nn.SiLU(), conv())
        self.conv2 = nn.Sequential(GroupNorm(groups, channels), nn.SiLU(), Dropout(dropout), conv())
        self.conv3 = nn.Sequential(GroupNorm(groups, channels), nn.SiLU(), Dropout(dropout), conv())
        self.conv4 = nn.Sequential(GroupNorm(groups, channels), nn.SiLU(), Dropout(dropout), conv())
        self.reset_parameters()

    def reset_parameters(self) -> None:
        zero_(self.conv4[-1])

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """``x (B·T, C, h, w)`` → same shape."""
        bt, c, h, w = x.shape
        y = x.reshape(bt // frames, frames, c, h, w).transpose(1, 2)  # (B, C, T, h, w)
        y = self.conv4(self.conv3(self.conv2(self.conv1(y))))
        return x + y.transpose(1, 2).reshape(bt, c, h, w)


class ResBlock(nn.Module):
    """2D residual block with the time(+fps) embedding added between its convs, then a temporal conv."""

    def __init__(self, channels: int, emb_dim: int, out_channels: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(
            GroupNorm(groups, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, out_channels))
        self.out_layers = nn.Sequential(
            GroupNorm(groups, out_channels),
            nn.SiLU(),
            Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip_connection: nn.Module = (
            nn.Conv2d(channels, out_channels, 1) if channels != out_channels else nn.Identity()
        )
        self.temopral_conv = TemporalConvBlock(out_channels, groups, dropout)  # sic: checkpoint spelling
        self.reset_parameters()

    def reset_parameters(self) -> None:
        zero_(self.out_layers[-1])

    def forward(self, x: torch.Tensor, emb: torch.Tensor, frames: int) -> torch.Tensor:
        """``x (B·T, C, h, w)``, ``emb (B·T, E)`` → ``(B·T, C_out, h, w)``."""
        h = self.in_layers(x) + self.emb_layers(emb).type(x.dtype)[:, :, None, None]
        h = self.skip_connection(x) + self.out_layers(h)
        return self.temopral_conv(h, frames)


class GEGLU(nn.Module):
    """``a · GELU(b)`` with ``[a, b] = proj(x)`` (exact GELU)."""

    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward, hidden width ``4·dim`` (keys ``net.0.proj``, ``net.2``)."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, 4 * dim), Dropout(dropout), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Attention(nn.Module):
    """Multi-head attention; with ``image_cross`` the context is ``[text ; image]`` tokens.

    Text tokens go through ``to_k``/``to_v``, image tokens through ``to_k_ip``/``to_v_ip``; both share the
    query and their outputs are summed, the image branch times ``image_scale``, before ``to_out``.
    """

    def __init__(
        self,
        query_dim: int,
        heads: int,
        head_dim: int,
        context_dim: int | None,
        dropout: float,
        text_len: int | None = None,
        image_scale: float = 1.0,
    ) -> None:
        super().__init__()
        inner = heads * head_dim
        kv_dim = context_dim if context_dim is not None else query_dim
        self.heads = heads
        self.text_len = text_len
        self.image_scale = image_scale
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(kv_dim, inner, bias=False)
        self.to_v = nn.Linear(kv_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), Dropout(dropout))
        if text_len is not None:
            self.to_k_ip = nn.Linear(kv_dim, inner, bias=False)
            self.to_v_ip = nn.Linear(kv_dim, inner, bias=False)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """``x (N, L, query_dim)``, ``context (N, Lc, context_dim)`` or ``None`` (self-attention)."""
        q = self.to_q(x)
        if context is None:
            out = multihead_attention(q, self.to_k(x), self.to_v(x), self.heads)
        elif self.text_len is None:
            out = multihead_attention(q, self.to_k(context), self.to_v(context), self.heads)
        else:
            text, image = context[:, : self.text_len], context[:, self.text_len :]
            out = multihead_attention(q, self.to_k(text), self.to_v(text), self.heads)
            out_ip = multihead_attention(q, self.to_k_ip(image), self.to_v_ip(image), self.heads)
            out = out + self.image_scale * out_ip
        return self.to_out(out)


class BasicTransformerBlock(nn.Module):
    """Pre-norm self-attention, cross-attention (or a second self-attention) and GEGLU feed-forward."""

    def __init__(
        self,
        dim: int,
        heads: int,
        head_dim: int,
        context_dim: int | None,
        dropout: float,
        text_len: int | None = None,
        image_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.attn1 = Attention(dim, heads, head_dim, None, dropout)
        self.ff = FeedForward(dim, dropout)
        self.attn2 = Attention(dim, heads, head_dim, context_dim, dropout, text_len, image_scale)
        self.norm1 = LayerNorm(dim)
        self.norm2 = LayerNorm(dim)
        self.norm3 = LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """Per-frame transformer over the ``h·w`` tokens with cross-attention to ``[text ; image]`` tokens."""

    def __init__(self, channels: int, heads: int, head_dim: int, cfg: UNet3DConfig) -> None:
        super().__init__()
        inner = heads * head_dim
        self.norm = GroupNorm(cfg.norm_groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(
                inner,
                heads,
                head_dim,
                cfg.context_dim,
                cfg.dropout,
                text_len=cfg.text_context_len,
                image_scale=cfg.image_cross_attention_scale,
            )
            for _ in range(cfg.transformer_depth)
        )
        self.proj_out = nn.Linear(inner, channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        zero_(self.proj_out)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``x (B·T, C, h, w)``, ``context (B·T, L, context_dim)`` → ``(B·T, C, h, w)``."""
        n, c, h, w = x.shape
        y = self.proj_in(self.norm(x).flatten(2).transpose(1, 2))
        for block in self.transformer_blocks:
            y = block(y, context)
        return x + self.proj_out(y).transpose(1, 2).reshape(n, c, h, w)


class TemporalTransformer(nn.Module):
    """Self-attention along the ``T`` frames at every spatial position (no positional encoding, no mask).

    Both ``attn1`` and ``attn2`` are self-attention (``temporal_selfatt_only``). ``conv_proj`` selects
    kernel-1 Conv1d projections, which only ``init_attn`` uses (its weights are ``(out, in, 1)``).
    """

    def __init__(
        self, channels: int, heads: int, head_dim: int, cfg: UNet3DConfig, conv_proj: bool = False
    ) -> None:
        super().__init__()
        inner = heads * head_dim
        self.norm = GroupNorm(cfg.norm_groups, channels, eps=1e-6)
        self.proj_in: nn.Module = nn.Conv1d(channels, inner, 1) if conv_proj else nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(inner, heads, head_dim, None, cfg.dropout) for _ in range(cfg.transformer_depth)
        )
        self.proj_out: nn.Module = nn.Conv1d(inner, channels, 1) if conv_proj else nn.Linear(inner, channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        zero_(self.proj_out)

    @staticmethod
    def _project(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if isinstance(layer, nn.Conv1d):  # kernel 1: a Linear stored as (out, in, 1)
            return F.linear(x, layer.weight[..., 0], layer.bias)
        return layer(x)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """``x (B·T, C, h, w)`` → same shape."""
        bt, c, h, w = x.shape
        b = bt // frames
        y = self.norm(x.reshape(b, frames, c, h * w).transpose(1, 2))  # (B, C, T, h·w), stats over C/G·T·h·w
        y = y.permute(0, 3, 2, 1).reshape(b * h * w, frames, c)
        y = self._project(self.proj_in, y)
        for block in self.transformer_blocks:
            y = block(y, None)
        y = self._project(self.proj_out, y)
        y = y.reshape(b, h * w, frames, c).permute(0, 2, 3, 1).reshape(bt, c, h, w)
        return x + y


class Downsample(nn.Module):
    """Strided 3×3 conv, ×½ in h and w."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest ×2 then 3×3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
