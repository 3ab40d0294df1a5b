"""`DynamiCrafterConfig`: the architecture of a `anymole.video.dynamicrafter.DynamiCrafterPrior` (``full``: the 512
interpolation checkpoint's; ``tiny``: the same layout at test size), its schedule facts and its JSON form."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from anymole.video.openclip import TextEncoderConfig, VisionEncoderConfig
from anymole.video.resampler import ResamplerConfig
from anymole.video.unet3d import UNet3DConfig
from anymole.video.vae import VAEConfig

__all__ = ["BACKEND", "DynamiCrafterConfig"]

#: the backend name adapted weights and caches are recorded under
BACKEND = "dynamicrafter"


@dataclass(frozen=True)
class DynamiCrafterConfig:
    """Everything that fixes the architecture and the diffusion facts of the model.

    Attributes:
        unet, vae, text, vision, resampler: component sizes.
        num_frames: frames per window (16).
        resolution: ``(H, W)`` pixels the model was trained at (320 × 512).
        prediction_type: ``"v"``.
        num_train_timesteps: 1000.
        beta_schedule / beta_start / beta_end: ``"scaled_linear"`` (linear in √β) from 0.00085 to 0.012.
        rescale_zero_terminal_snr: betas rescaled to zero terminal SNR.
        dynamic_rescale_base / dynamic_rescale_turn: DynamiCrafter's x0 scale ramp (0.7 over t < 400).
        default_fps: fps used when the caller has none (24).
        tokenizer: ``"clip"`` (CLIP BPE files needed) or ``"bytes"`` (`ByteTokenizer`, tiny models).
        lora_rank / lora_alpha: LoRA size for ``trainable_parameters("lora")``.
        vae_chunk: frames per VAE call (bounds activation memory).
    """

    unet: UNet3DConfig = field(default_factory=UNet3DConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    vision: VisionEncoderConfig = field(default_factory=VisionEncoderConfig)
    resampler: ResamplerConfig = field(default_factory=ResamplerConfig)
    num_frames: int = 16
    resolution: tuple[int, int] = (320, 512)
    prediction_type: str = "v"
    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    rescale_zero_terminal_snr: bool = True
    dynamic_rescale_base: float = 0.7
    dynamic_rescale_turn: int = 400
    default_fps: float = 24.0
    tokenizer: str = "clip"
    lora_rank: int = 16
    lora_alpha: int = 16
    vae_chunk: int = 16

    def __post_init__(self) -> None:
        checks = [
            ("unet.context_dim", self.unet.context_dim, "text.width", self.text.width),
            ("unet.context_dim", self.unet.context_dim, "resampler.output_dim", self.resampler.output_dim),
            ("resampler.embedding_dim", self.resampler.embedding_dim, "vision.width", self.vision.width),
            ("unet.text_context_len", self.unet.text_context_len, "text.context_length", self.text.context_length),
            (
                "unet.image_tokens_per_frame",
                self.unet.image_tokens_per_frame,
                "resampler.queries_per_frame",
                self.resampler.queries_per_frame,
            ),
            ("unet.in_channels", self.unet.in_channels, "2·vae.latent_channels", 2 * self.vae.latent_channels),
            ("unet.out_channels", self.unet.out_channels, "vae.latent_channels", self.vae.latent_channels),
            ("resampler.frames", self.resampler.frames, "num_frames", self.num_frames),
        ]
        for name_a, a, name_b, b in checks:
            if a != b:
                raise ValueError(f"DynamiCrafterConfig: {name_a}={a} must equal {name_b}={b}")
        if self.prediction_type not in ("v", "epsilon"):
            raise ValueError(f"prediction_type={self.prediction_type!r}: expected 'v' or 'epsilon'")
        if self.tokenizer not in ("clip", "bytes"):
            raise ValueError(f"tokenizer={self.tokenizer!r}: expected 'clip' or 'bytes'")

    @classmethod
    def full(cls) -> DynamiCrafterConfig:
        """DynamiCrafter 512 interpolation (``dynamicrafter_512_interp_v1``): 2.6 B parameters."""
        return cls()

    @classmethod
    def tiny(cls) -> DynamiCrafterConfig:
        """Same code, few channels and layers (≈2 M parameters): CPU tests and the offline demo.
        64×64 pixels map to 8×8 latents; 8 text tokens + 2 image tokens per frame."""
        return cls(
            unet=UNet3DConfig(
                model_channels=32,
                channel_mult=(1, 2),
                num_res_blocks=1,
                attention_resolutions=(1, 2),
                num_head_channels=16,
                context_dim=32,
                text_context_len=8,
                image_tokens_per_frame=2,
                init_attn_heads=2,
                norm_groups=8,
                dropout=0.0,
            ),
            vae=VAEConfig(block_out_channels=(16, 32, 32, 32), layers_per_block=1, norm_groups=8),
            text=TextEncoderConfig(
                vocab_size=300, context_length=8, width=32, heads=2, layers=2, layers_used=1, embed_dim=32
            ),
            vision=VisionEncoderConfig(
                image_size=28,
                patch_size=14,
                width=32,
                heads=2,
                layers=2,
                embed_dim=32,
                text_vocab_size=300,
                text_context_length=8,
                text_width=32,
            ),
            resampler=ResamplerConfig(
                dim=32, depth=1, heads=2, head_dim=16, queries_per_frame=2, embedding_dim=32, output_dim=32, ff_mult=2
            ),
            resolution=(64, 64),
            tokenizer="bytes",
            lora_rank=4,
            lora_alpha=4,
        )

    def scheduler_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `video.schedule.DDIMSchedule` for this model's training schedule."""
        return {
            "num_train_timesteps": self.num_train_timesteps,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "beta_schedule": self.beta_schedule,
            "rescale_zero_terminal_snr": self.rescale_zero_terminal_snr,
            "prediction_type": self.prediction_type,
            "dynamic_rescale_base": self.dynamic_rescale_base,
            "dynamic_rescale_turn": self.dynamic_rescale_turn,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists); `from_dict` inverts it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DynamiCrafterConfig:
        """Rebuild a config from `to_dict` output (e.g. a JSON file)."""
        parts = {
            "unet": UNet3DConfig,
            "vae": VAEConfig,
            "text": TextEncoderConfig,
            "vision": VisionEncoderConfig,
            "resampler": ResamplerConfig,
        }

        def tuples(d: dict[str, Any]) -> dict[str, Any]:
            return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}

        kwargs = tuples({k: v for k, v in data.items() if k not in parts})
        kwargs |= {k: kind(**tuples(data[k])) for k, kind in parts.items() if k in data}
        return cls(**kwargs)
