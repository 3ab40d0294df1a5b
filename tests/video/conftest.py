"""A small, real, trainable `VideoPrior` for the sampler/ICAdapt tests.

`ConvPrior` is a test double of the protocol, not a stand-in for DynamiCrafter: an exactly invertible
"VAE" (pixel-unshuffle by 2 then a fixed orthogonal 1×1 mix, so decode∘encode is the identity up to float
error) and a small 3-D conv denoiser with spatial (1×3×3) and temporal (3×1×1) layers, time, fps, text and
image-token conditioning and concatenated first/last latents. Everything it returns is computed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from anymole.errors import ModelUnavailable
from anymole.video.prior import EncodedFrames, VideoCondition

TEXT_TOKENS = 4
IMAGE_TOKENS = 2


def _sinusoid(x: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(1e4) * torch.arange(half, device=x.device) / half)
    ang = x.float()[:, None] * freqs[None]
    return torch.cat([ang.cos(), ang.sin()], dim=-1)


class ConvPrior(nn.Module):
    latent_channels = 12
    vae_scale_factor = 2
    num_frames = 16
    num_train_timesteps = 1000
    prediction_type = "v"

    def __init__(self, hidden: int = 16, dim: int = 16) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g))
        self.register_buffer("mix", q)
        self.dim = dim
        self.byte_embed = nn.Embedding(256, dim)
        self.image_proj = nn.Linear(3, IMAGE_TOKENS * dim)
        self.emb = nn.Linear(2 * dim, hidden)
        self.ctx = nn.Linear(dim, hidden)
        self.conv_in = nn.Conv3d(24, hidden, (1, 3, 3), padding=(0, 1, 1))
        self.spatial = nn.Conv3d(hidden, hidden, (1, 3, 3), padding=(0, 1, 1))
        self.temporal = nn.Conv3d(hidden, hidden, (3, 1, 1), padding=(1, 0, 0))
        self.conv_out = nn.Conv3d(hidden, 12, (1, 3, 3), padding=(0, 1, 1))
        self.checkpointing = False

    # -- VAE: exactly invertible
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        b, _, t, h, w = video.shape
        frames = video.permute(0, 2, 1, 3, 4).reshape(b * t, 3, h, w) * 2 - 1
        z = torch.einsum("ij,njhw->nihw", self.mix, F.pixel_unshuffle(frames, 2))
        return z.reshape(b, t, 12, h // 2, w // 2).permute(0, 2, 1, 3, 4)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = latents.shape
        z = latents.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        frames = F.pixel_shuffle(torch.einsum("ji,njhw->nihw", self.mix, z), 2)
        return ((frames + 1) / 2).reshape(b, t, 3, 2 * h, 2 * w).permute(0, 2, 1, 3, 4)

    # -- conditioning
    def _text(self, prompts: list[str], device: torch.device) -> torch.Tensor:
        ids = torch.zeros(len(prompts), TEXT_TOKENS, dtype=torch.long)
        for i, p in enumerate(prompts):
            raw = list(p.encode()[:TEXT_TOKENS])
            ids[i, : len(raw)] = torch.tensor(raw, dtype=torch.long)
        return self.byte_embed(ids.to(device))

    def _image(self, image: torch.Tensor) -> torch.Tensor:
        return self._image_tokens(image.mean(dim=(2, 3)))

    def _image_tokens(self, features: torch.Tensor) -> torch.Tensor:
        return self.image_proj(features).reshape(features.shape[0], IMAGE_TOKENS, self.dim)

    def encode_frames(self, images: torch.Tensor) -> EncodedFrames:
        latents = self.encode(images.transpose(0, 1)[None])[0].transpose(0, 1)
        return EncodedFrames(latents=latents, features=images.mean(dim=(2, 3)))

    def condition(self, prompts, first, last, fps, num_frames=None, drop_image=None) -> VideoCondition:
        t = num_frames or self.num_frames
        if isinstance(first, torch.Tensor):
            first = self.encode_frames(first)
            last = None if last is None else self.encode_frames(last)
        device = first.latents.device
        if last is None:  # the latents of a black frame, as the image path always had
            n, _, h, w = first.latents.shape
            z_last = self.encode(torch.zeros(n, 3, 1, 2 * h, 2 * w, device=device))[:, :, 0]
        else:
            z_last = last.latents
        concat = torch.zeros(len(first), 12, t, *first.latents.shape[2:], device=device, dtype=first.latents.dtype)
        concat[:, :, 0], concat[:, :, -1] = first.latents, z_last
        features = first.features
        if drop_image is not None:  # the null image's features: those of `unconditional`'s zero image
            features = torch.where(drop_image.to(device)[:, None], torch.zeros_like(features), features)
        context = torch.cat([self._text(prompts, device), self._image_tokens(features)], dim=1)
        return VideoCondition(context=context, concat=concat, fps=fps.float())

    def unconditional(self, cond: VideoCondition) -> VideoCondition:
        b, dev = cond.context.shape[0], cond.context.device
        zeros = torch.zeros(b, 3, 2, 2, device=dev)
        context = torch.cat([self._text([""] * b, dev), self._image(zeros)], dim=1)
        return VideoCondition(context=context, concat=cond.concat, fps=cond.fps)

    # -- denoiser
    def _body(self, h: torch.Tensor) -> torch.Tensor:
        h = h + F.silu(self.spatial(h))
        return h + F.silu(self.temporal(h))

    def predict(self, latents, t, cond) -> torch.Tensor:
        emb = self.emb(torch.cat([_sinusoid(t, self.dim), _sinusoid(cond.fps, self.dim)], dim=-1))
        emb = emb + self.ctx(cond.context.mean(dim=1))
        h = self.conv_in(torch.cat([latents, cond.concat.to(latents.dtype)], dim=1))
        h = F.silu(h + emb[:, :, None, None, None])
        if self.checkpointing and torch.is_grad_enabled():
            h = torch.utils.checkpoint.checkpoint(self._body, h, use_reentrant=False)
        else:
            h = self._body(h)
        return self.conv_out(h)

    # -- training hooks
    def enable_gradient_checkpointing(self, enabled: bool = True, selective: bool = False) -> None:
        self.checkpointing = enabled

    def trainable_parameters(self, mode: str = "spatial") -> Iterable[nn.Parameter]:
        if mode == "full":
            return list(self.parameters())
        if mode == "spatial":
            return [p for n, p in self.named_parameters() if not n.startswith(("temporal", "emb."))]
        raise ValueError(f"mode={mode!r} is not supported by ConvPrior")

    def save_adapted(self, path: Path) -> None:
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(path))
        Path(str(path) + ".json").write_text(json.dumps({"model": "conv-prior"}))

    def load_adapted(self, path: Path) -> None:
        meta = json.loads(Path(str(path) + ".json").read_text())
        if meta.get("model") != "conv-prior":
            raise ModelUnavailable("conv-prior", f"{path} holds weights of {meta.get('model')!r}")
        self.load_state_dict(load_file(str(path)))


@pytest.fixture
def make_conv_prior() -> Callable[[], ConvPrior]:
    """Fresh, identical priors (seed 0)."""

    def make() -> ConvPrior:
        torch.manual_seed(0)
        return ConvPrior()

    return make


@pytest.fixture
def conv_prior(make_conv_prior: Callable[[], ConvPrior]) -> ConvPrior:
    return make_conv_prior()


@pytest.fixture
def record_dropout() -> Callable[[nn.Module], dict[str, list[torch.Tensor]]]:
    """``record(module)`` → ``{name: [dropped elements of each call]}`` for every `Dropout` layer of ``module``,
    appended as the layers run (forward passes and checkpoint recomputations alike): bool of the layer's input
    shape, True where the layer zeroed a nonzero input. A layer that checkpointing recomputes runs twice a
    forward/backward pass, its recomputation right after its forward."""
    from anymole.video.dropout import Dropout

    def record(module: nn.Module) -> dict[str, list[torch.Tensor]]:
        drops: dict[str, list[torch.Tensor]] = {}
        for name, layer in module.named_modules():
            if isinstance(layer, Dropout):
                calls = drops.setdefault(name, [])
                layer.register_forward_hook(lambda _, args, out, calls=calls: calls.append((out == 0) & (args[0] != 0)))
        return drops

    return record

