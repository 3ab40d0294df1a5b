"""OpenCLIP-style text and image towers (ViT-H-14 at full size) and the caption tokenizers.

Names follow open_clip (``transformer.resblocks.i.attn.in_proj_weight``, ``visual.conv1``...), so the
checkpoint's ``cond_stage_model.model.`` and ``embedder.model.`` entries map by prefix. Only what the
forward passes use is built: the last text block, ``text_projection``, ``logit_scale``, ``visual.ln_post``,
``visual.proj`` and the text leftovers of the image model are in the checkpoint but unused;
`video.weights` checks their shapes and drops them (see `unused_text_entries`, `unused_vision_entries`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from anymole.errors import ModelUnavailable
from anymole.video.attention import multihead_attention

__all__ = [
    "ByteTokenizer",
    "CLIPBPETokenizer",
    "TextEncoder",
    "TextEncoderConfig",
    "VisionEncoder",
    "VisionEncoderConfig",
    "unused_text_entries",
    "unused_vision_entries",
]

# CLIP pixel normalisation (open_clip OPENAI_DATASET_MEAN / STD).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class TextEncoderConfig:
    """OpenCLIP text tower (defaults: ViT-H-14).

    Attributes:
        vocab_size: token vocabulary (49408 for CLIP BPE).
        context_length: tokens per caption (77).
        width / heads / layers: transformer sizes (1024 / 16 / 24).
        layers_used: blocks actually run (23: the "penultimate" layer), then ``ln_final``.
        embed_dim: CLIP joint embedding width; only the unused ``text_projection`` has it (1024).
    """

    vocab_size: int = 49408
    context_length: int = 77
    width: int = 1024
    heads: int = 16
    layers: int = 24
    layers_used: int = 23
    embed_dim: int = 1024

    def __post_init__(self) -> None:
        if not 1 <= self.layers_used <= self.layers:
            raise ValueError(f"TextEncoderConfig: layers_used={self.layers_used} must be in 1..layers={self.layers}")
        if self.width % self.heads:
            raise ValueError(f"TextEncoderConfig: width={self.width} is not a multiple of heads={self.heads}")


@dataclass(frozen=True)
class VisionEncoderConfig:
    """OpenCLIP ViT image tower (defaults: ViT-H-14), used up to its last block's raw tokens.

    Attributes:
        image_size / patch_size: 224 / 14, giving ``(224/14)² + 1 = 257`` tokens.
        width / heads / layers: 1280 / 16 / 32.
        embed_dim: width of the unused ``visual.proj`` output (1024).
        text_vocab_size / text_context_length / text_width: shapes of the text leftovers stored with the
            image model (unused).
    """

    image_size: int = 224
    patch_size: int = 14
    width: int = 1280
    heads: int = 16
    layers: int = 32
    embed_dim: int = 1024
    text_vocab_size: int = 49408
    text_context_length: int = 77
    text_width: int = 1024

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(
                f"VisionEncoderConfig: image_size={self.image_size} is not a multiple of patch_size={self.patch_size}"
            )
        if self.width % self.heads:
            raise ValueError(f"VisionEncoderConfig: width={self.width} is not a multiple of heads={self.heads}")

    @property
    def num_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + 1


class FusedSelfAttention(nn.Module):
    """Self-attention with a fused ``in_proj_weight (3W, W)`` as in `nn.MultiheadAttention`."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        """``x (B, L, W)`` → ``(B, L, W)``."""
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        return self.out_proj(multihead_attention(q, k, v, self.heads, causal=causal))


class MLP(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln_1 x)``, then ``x + mlp(ln_2 x)``."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = FusedSelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = MLP(width)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), causal)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, heads: int, layers: int) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, causal)
        return x


class TextEncoder(nn.Module):
    """``tokens (B, context_length)`` int64 → ``(B, context_length, width)`` (penultimate layer + ``ln_final``)."""

    def __init__(self, cfg: TextEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.width))
        self.transformer = Transformer(cfg.width, cfg.heads, cfg.layers_used)
        self.ln_final = nn.LayerNorm(cfg.width)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.positional_embedding, std=0.01)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(tokens) + self.positional_embedding
        return self.ln_final(self.transformer(x, causal=True))


class VisualTower(nn.Module):
    """The ``visual`` part of the OpenCLIP model, without ``ln_post``/``proj`` (unused here)."""

    def __init__(self, cfg: VisionEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.conv1 = nn.Conv2d(3, cfg.width, cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(cfg.width))
        self.positional_embedding = nn.Parameter(torch.empty(cfg.num_tokens, cfg.width))
        self.ln_pre = nn.LayerNorm(cfg.width)
        self.transformer = Transformer(cfg.width, cfg.heads, cfg.layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        scale = self.cfg.width**-0.5
        nn.init.normal_(self.class_embedding, std=scale)
        nn.init.normal_(self.positional_embedding, std=scale)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels (B, 3, S, S)`` CLIP-normalised → ``(B, num_tokens, width)``."""
        x = self.conv1(pixels).flatten(2).transpose(1, 2)  # (B, P, W)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        return self.transformer(self.ln_pre(x))


class VisionEncoder(nn.Module):
    """``images (B, 3, H, W)`` in [0, 1] → ``(B, 257, 1280)`` tokens of the last ViT block (no ``ln_post``).

    Resizes to ``image_size`` (bicubic, antialiased, corners aligned as the reference) and applies the CLIP
    mean/std, which are constants rather than buffers so meta initialisation leaves nothing to fill.
    """

    def __init__(self, cfg: VisionEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.visual = VisualTower(cfg)
        self._norm: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _normalisation(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """CLIP mean and std ``(1, 3, 1, 1)`` on ``device``, made once per device: building them from Python
        floats copies from pageable host memory, which makes the host wait for the device on every call."""
        if device not in self._norm:
            self._norm[device] = (
                torch.tensor(CLIP_MEAN, device=device).view(1, 3, 1, 1),
                torch.tensor(CLIP_STD, device=device).view(1, 3, 1, 1),
            )
        return self._norm[device]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        size = self.cfg.image_size
        x = F.interpolate(images.float(), size=(size, size), mode="bicubic", align_corners=True, antialias=True)
        mean, std = self._normalisation(x.device)
        x = ((x - mean) / std).to(self.visual.conv1.weight.dtype)
        return self.visual(x)


def _block_shapes(width: int) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        block = ResidualAttentionBlock(width, 1)
    return {k: tuple(v.shape) for k, v in block.state_dict().items()}


def unused_text_entries(cfg: TextEncoderConfig) -> dict[str, tuple[int, ...]]:
    """Checkpoint entries of the text model (relative to ``cond_stage_model.model.``) that we do not build."""
    out: dict[str, tuple[int, ...]] = {}
    for layer in range(cfg.layers_used, cfg.layers):
        out |= {f"transformer.resblocks.{layer}.{k}": s for k, s in _block_shapes(cfg.width).items()}
    out["text_projection"] = (cfg.width, cfg.embed_dim)
    out["logit_scale"] = ()
    return out


def unused_vision_entries(cfg: VisionEncoderConfig) -> dict[str, tuple[int, ...]]:
    """Checkpoint entries of the image model (relative to ``embedder.model.``) that we do not build."""
    tw = cfg.text_width
    return {
        "positional_embedding": (cfg.text_context_length, tw),
        "text_projection": (tw, cfg.embed_dim),
        "logit_scale": (),
        "visual.proj": (cfg.width, cfg.embed_dim),
        "visual.ln_post.weight": (cfg.width,),
        "visual.ln_post.bias": (cfg.width,),
        "token_embedding.weight": (cfg.text_vocab_size, tw),
        "ln_final.weight": (tw,),
        "ln_final.bias": (tw,),
    }


Tokenizer = Callable[[list[str]], torch.Tensor]


def _pack(ids: list[list[int]], sot: int, eot: int, context_length: int) -> torch.Tensor:
    """``[sot] + ids + [eot]``, truncated to ``context_length`` (keeping ``eot`` last), zero-padded."""
    out = torch.zeros(len(ids), context_length, dtype=torch.long)
    for row, seq in enumerate(ids):
        seq = [sot, *seq[: context_length - 2], eot]
        out[row, : len(seq)] = torch.tensor(seq)
    return out


class ByteTokenizer:
    """UTF-8 bytes as tokens ``1..256``, start/end as ``vocab_size-2`` / ``vocab_size-1``, pad 0.

    For the tiny config and random-weight runs, where no CLIP vocabulary is needed; deterministic and
    dependency-free. Returns ``(B, context_length)`` int64.
    """

    def __init__(self, vocab_size: int, context_length: int) -> None:
        if vocab_size < 259:
            raise ValueError(f"ByteTokenizer needs vocab_size >= 259, got {vocab_size}")
        self.vocab_size = vocab_size
        self.context_length = context_length

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        ids = [[b + 1 for b in p.encode("utf-8")] for p in prompts]
        return _pack(ids, self.vocab_size - 2, self.vocab_size - 1, self.context_length)


class CLIPBPETokenizer:
    """The CLIP BPE tokenizer (open_clip's ``tokenize``: lower-cased, ``[sot] text [eot]``, zero-padded to 77).

    Args:
        directory: folder with the Hugging Face tokenizer files ``vocab.json`` and ``merges.txt`` (those of
            ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``); `anymole.hub.pull` puts them beside the checkpoint.

    Raises:
        ModelUnavailable: the files are missing.
    """

    def __init__(self, directory: Path, context_length: int = 77) -> None:
        vocab, merges = Path(directory) / "vocab.json", Path(directory) / "merges.txt"
        if not (vocab.is_file() and merges.is_file()):
            raise ModelUnavailable(
                "clip-tokenizer",
                f"{vocab} / {merges} not found: run `anymole models pull dynamicrafter-512-interp`, or copy "
                "vocab.json and merges.txt of laion/CLIP-ViT-H-14-laion2B-s32B-b79K into that folder",
            )
        from transformers import CLIPTokenizer  # heavy import, only when real captions are tokenised

        self._tok = CLIPTokenizer(str(vocab), str(merges))
        self.context_length = context_length

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        ids = [self._tok.encode(p, add_special_tokens=False) for p in prompts]
        return _pack(ids, self._tok.bos_token_id, self._tok.eos_token_id, self.context_length)
