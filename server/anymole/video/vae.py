"""The KL VAE (``first_stage_model``): diffusers' `AutoencoderKL`, plus the LDM ↔ diffusers key mapping.

The checkpoint uses the LDM names (``encoder.down.0.block.1.nin_shortcut``, ``decoder.up.3`` first in the
decoder, 1×1-conv attention); `to_ldm_key` / `to_ldm_tensor` translate one of our keys and tensors to
that layout, and `from_ldm_tensor` back. The VAE runs per frame (2D).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from diffusers.models.attention_processor import Attention
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

from anymole.video.attention import multihead_attention

__all__ = ["VAEAttnProcessor", "VAEConfig", "build_vae", "from_ldm_tensor", "to_ldm_key", "to_ldm_tensor"]


@dataclass(frozen=True)
class VAEConfig:
    """Sizes of the KL-f8 VAE (defaults: the SD VAE that DynamiCrafter uses).

    Attributes:
        block_out_channels: width per resolution level; ``2^(levels-1)`` is the down-sampling factor.
        layers_per_block: ResBlocks per encoder level (the decoder has one more).
        latent_channels: 4.
        norm_groups: GroupNorm groups (32).
        scaling_factor: latents are multiplied by it after encoding (0.18215).
    """

    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    latent_channels: int = 4
    norm_groups: int = 32
    scaling_factor: float = 0.18215

    def __post_init__(self) -> None:
        if any(c % self.norm_groups for c in self.block_out_channels):
            raise ValueError(
                f"VAEConfig: block_out_channels={self.block_out_channels} must all be multiples of "
                f"norm_groups={self.norm_groups}"
            )

    @property
    def scale_factor(self) -> int:
        """Spatial down-sampling factor (8 for four levels)."""
        return 2 ** (len(self.block_out_channels) - 1)


class VAEAttnProcessor:
    """diffusers attention processor of the VAE's mid-block self-attention that runs `video.attention`, so the
    package's one kernel switch covers the VAE too. Weightless: the state-dict keys stay diffusers'."""

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``hidden_states (N, C, h, w)`` → same shape: ``(x + to_out(attn(norm(x)))) / rescale``. diffusers
        passes the other arguments to every processor; the VAE's self-attention has no use for them."""
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("VAEAttnProcessor computes unmasked self-attention only")
        n, c, h, w = hidden_states.shape
        x = hidden_states.reshape(n, c, h * w)
        x = (attn.group_norm(x) if attn.group_norm is not None else x).transpose(1, 2)  # (N, h·w, C)
        out = attn.to_out[1](attn.to_out[0](multihead_attention(attn.to_q(x), attn.to_k(x), attn.to_v(x), attn.heads)))
        out = out.transpose(1, 2).reshape(n, c, h, w)
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


def build_vae(cfg: VAEConfig) -> AutoencoderKL:
    """A randomly initialised `AutoencoderKL` with the SD-VAE layout scaled by ``cfg``, its attention through
    `VAEAttnProcessor`."""
    levels = len(cfg.block_out_channels)
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=cfg.block_out_channels,
        layers_per_block=cfg.layers_per_block,
        latent_channels=cfg.latent_channels,
        norm_num_groups=cfg.norm_groups,
        scaling_factor=cfg.scaling_factor,
    )
    vae.set_attn_processor(VAEAttnProcessor())
    return vae


_RESNET_NAMES = {"conv_shortcut": "nin_shortcut"}
_ATTN_NAMES = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def to_ldm_key(key: str, levels: int) -> str:
    """Map a diffusers `AutoencoderKL` state-dict key to its LDM checkpoint name.

    Args:
        key: e.g. ``"decoder.up_blocks.0.resnets.2.conv1.weight"``.
        levels: number of resolution levels (``len(block_out_channels)``); decoder blocks are reversed.

    Returns:
        e.g. ``"decoder.up.3.block.2.conv1.weight"``.
    """
    if m := re.fullmatch(r"(encoder|decoder)\.conv_norm_out\.(\w+)", key):
        return f"{m[1]}.norm_out.{m[2]}"
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(\w+)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}.{_RESNET_NAMES.get(m[3], m[3])}.{m[4]}"
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(\w+)", key):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(\w+)", key):
        return f"decoder.up.{levels - 1 - int(m[1])}.block.{m[2]}.{_RESNET_NAMES.get(m[3], m[3])}.{m[4]}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(\w+)", key):
        return f"decoder.up.{levels - 1 - int(m[1])}.upsample.conv.{m[2]}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d)\.(\w+)\.(\w+)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{_RESNET_NAMES.get(m[3], m[3])}.{m[4]}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(\w+)", key):
        return f"{m[1]}.mid.attn_1.{_ATTN_NAMES[m[2]]}.{m[3]}"
    return key  # conv_in, conv_out, quant_conv, post_quant_conv keep their names


def _is_attn_matrix(key: str) -> bool:
    return bool(re.search(r"mid_block\.attentions\.0\.(to_q|to_k|to_v|to_out\.0)\.weight$", key))


def to_ldm_tensor(key: str, value: torch.Tensor) -> torch.Tensor:
    """Our tensor under ``key`` in the LDM layout: attention matrices ``(C, C)`` become 1×1 convs ``(C, C, 1, 1)``."""
    return value[:, :, None, None] if _is_attn_matrix(key) else value


def from_ldm_tensor(key: str, value: torch.Tensor) -> torch.Tensor:
    """Inverse of `to_ldm_tensor` (``key`` is ours): ``(C, C, 1, 1)`` → ``(C, C)`` for attention matrices."""
    return value[:, :, 0, 0] if _is_attn_matrix(key) and value.ndim == 4 else value
