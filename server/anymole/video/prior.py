"""`VideoPrior`: the interface every video diffusion backend implements.

The sampler (`video.sampler`) and ICAdapt (`video.icadapt`) know only this protocol, never a class.

Layouts, declared once for the whole `video` package:
- videos: ``(B, 3, T, H, W)`` float in [0, 1];
- images: ``(B, 3, H, W)`` float in [0, 1];
- latents: ``(B, C, T, h, w)`` with ``h = H / vae_scale_factor``; already multiplied by the VAE scale factor,
  i.e. in the space the denoiser works in;
- timesteps: ``(B,)`` int64 in ``[0, num_train_timesteps)``;
- fps: ``(B,)`` float, frames per second of the clip (the frame-stride/fps embedding input).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

__all__ = ["AUTOCAST_DTYPES", "TRAIN_MODES", "EncodedFrames", "VideoCondition", "VideoPrior", "autocast"]

#: parameter sets `VideoPrior.trainable_parameters` selects (a backend may reject those it lacks).
TRAIN_MODES = ("spatial", "full", "lora", "decoder", "lora_decoder", "lora_top")
#: mixed-precision names of the sampler and ICAdapt configs → autocast dtype (``None``: no autocast).
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def autocast(device: torch.device, name: str) -> torch.autocast:
    """Autocast context for running a prior on ``device`` at precision ``name`` (a key of `AUTOCAST_DTYPES`);
    enabled on CUDA only, where the reduced-precision kernels pay."""
    dtype = AUTOCAST_DTYPES[name]
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None and device.type == "cuda")


@dataclass
class VideoCondition:
    """Everything the denoiser is conditioned on, precomputed once per window.

    Attributes:
        context: ``(B, L, D)`` cross-attention tokens (text embedding, then image tokens from the resampler,
            concatenated as the backend expects).
        concat: ``(B, C, T, h, w)`` latents concatenated to the noisy input channel-wise (first/last frame
            latents at their slots, zeros elsewhere, for interpolation models).
        fps: ``(B,)`` float frames per second.
    """

    context: torch.Tensor
    concat: torch.Tensor
    fps: torch.Tensor

    def cat(self, other: VideoCondition) -> VideoCondition:
        """``[self ; other]`` along the batch (classifier-free guidance runs conditional and unconditional
        windows as one batch)."""
        return VideoCondition(
            context=torch.cat([self.context, other.context]),
            concat=torch.cat([self.concat, other.concat]),
            fps=torch.cat([self.fps, other.fps]),
        )


@dataclass(frozen=True)
class EncodedFrames:
    """Conditioning frames after the prior's frozen encoders, so that frames used again and again (ICAdapt's
    clip ends) are encoded once (`VideoPrior.encode_frames`).

    Attributes:
        latents: ``(N, C, h, w)`` scaled VAE latents (posterior means), as `VideoPrior.encode` gives.
        features: ``(N, ...)`` the frozen image encoder's output, in the backend's own layout (before any
            trainable part, e.g. DynamiCrafter's resampler).
    """

    latents: torch.Tensor
    features: torch.Tensor

    def __len__(self) -> int:
        return self.latents.shape[0]

    def __getitem__(self, index: torch.Tensor) -> EncodedFrames:
        """The frames ``index (B,)`` (int64, on any device)."""
        return EncodedFrames(self.latents[index.to(self.latents.device)], self.features[index.to(self.features.device)])


@runtime_checkable
class VideoPrior(Protocol):
    """A latent video diffusion model usable for guided in-betweening and in-context adaptation."""

    #: channels of the latent space (4 for the SD-style VAE).
    latent_channels: int
    #: spatial down-sampling of the VAE (8).
    vae_scale_factor: int
    #: frames the denoiser sees at once (16 for DynamiCrafter).
    num_frames: int
    #: number of training diffusion steps (1000).
    num_train_timesteps: int
    #: what the denoiser predicts: "v" (v-parameterisation) or "epsilon".
    prediction_type: str

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """VAE-encode ``video (B, 3, T, H, W)`` in [0, 1] to scaled latents ``(B, C, T, h, w)`` (mean, no sampling).

        Any ``B·T``: the backend bounds its own activation memory (e.g. a few frames per VAE call), so callers
        pass whole videos; `decode` likewise."""
        ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode scaled latents ``(B, C, T, h, w)`` to a video ``(B, 3, T, H, W)`` in [0, 1]."""
        ...

    def encode_frames(self, images: torch.Tensor) -> EncodedFrames:
        """Run the frozen encoders `condition` needs on ``images (N, 3, H, W)`` in [0, 1] (any ``N``, in
        bounded chunks)."""
        ...

    def condition(
        self,
        prompts: list[str],
        first: torch.Tensor | EncodedFrames,
        last: torch.Tensor | EncodedFrames | None,
        fps: torch.Tensor,
        num_frames: int | None = None,
        drop_image: torch.Tensor | None = None,
    ) -> VideoCondition:
        """Build the conditioning for a batch of windows.

        Args:
            prompts: ``B`` captions ("" for the unconditional branch).
            first: ``(B, 3, H, W)`` first frame in [0, 1] (image cross-attention and the first concat slot), or
                its `encode_frames` output (same conditioning, no encoder run).
            last: ``(B, 3, H, W)`` last frame or its `EncodedFrames`, or ``None`` for image-to-video without an
                end frame.
            fps: ``(B,)`` frames per second of the window.
            num_frames: window length ``T`` (defaults to ``self.num_frames``).
            drop_image: ``(B,)`` bool (any device): these samples get `unconditional`'s image tokens instead of
                ``first``'s, their text and concat latents as given (ICAdapt's image dropout for
                classifier-free guidance).
        """
        ...

    def unconditional(self, cond: VideoCondition) -> VideoCondition:
        """The null conditioning for classifier-free guidance (empty text, zero-image tokens, same concat)."""
        ...

    def predict(self, latents: torch.Tensor, t: torch.Tensor, cond: VideoCondition) -> torch.Tensor:
        """One denoiser evaluation: ``latents (B, C, T, h, w)``, ``t (B,)`` → model output of the same shape
        (v or epsilon, see `prediction_type`)."""
        ...

    def trainable_parameters(self, mode: str = "spatial") -> Iterable[torch.nn.Parameter]:
        """Parameters ICAdapt optimises. ``"spatial"``: the denoiser minus temporal layers and time/fps
        embeddings (as the reference); ``"full"``: the whole denoiser; ``"lora"``: LoRA adapters only;
        ``"decoder"`` and ``"lora_decoder"`` (optional): the spatial set or the LoRA adapters of the denoiser's
        decoder half only, faster partial fine-tunes; ``"lora_top"`` (optional): LoRA adapters of the decoder's
        full-resolution output blocks only, the fastest."""
        ...

    def save_adapted(self, path: Path) -> None:
        """Write the adapted (trainable) weights as safetensors plus a JSON config beside it."""
        ...

    def load_adapted(self, path: Path) -> None:
        """Load weights written by `save_adapted`; raises `ModelUnavailable` on a mismatched model."""
        ...
