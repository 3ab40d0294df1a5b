"""`DynamiCrafterPrior`: DynamiCrafter 512 interpolation as a `VideoPrior` backend.

Components (checkpoint prefixes in brackets, see ``reference/dynamicrafter_notes.md``):
- ``unet`` (``model.diffusion_model``): `UNet3D`, v-prediction, input = ``[noisy ; concat]`` latents;
- ``vae`` (``first_stage_model``): diffusers `AutoencoderKL`, applied per frame, latents × 0.18215;
- ``text_encoder`` (``cond_stage_model.model``): OpenCLIP text tower, penultimate layer, 77 tokens;
- ``image_encoder`` (``embedder.model``): OpenCLIP ViT, 257 raw tokens of the last block;
- ``image_proj`` (``image_proj_model``): Perceiver `Resampler`, 16 tokens per frame.

The model knows no scheduler: `DynamiCrafterConfig.scheduler_kwargs` hands the schedule facts to
`video.schedule`. ``DynamiCrafterPrior(DynamiCrafterConfig.full(), device="cuda", dtype=torch.bfloat16)``
builds on the meta device and materialises once on the target, so the 2.6 B-parameter model never passes
through CPU memory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from anymole.errors import InvalidInput, ModelUnavailable
from anymole.seeding import seeded_global_rng
from anymole.video.dropout import DropoutRng
from anymole.video.dynamicrafter_config import BACKEND, DynamiCrafterConfig
from anymole.video.openclip import (
    ByteTokenizer,
    TextEncoder,
    Tokenizer,
    VisionEncoder,
)
from anymole.video.prior import TRAIN_MODES, EncodedFrames, VideoCondition
from anymole.video.resampler import Resampler
from anymole.video.unet3d import (
    SpatialTransformer,
    TemporalConvBlock,
    TemporalTransformer,
    UNet3D,
)
from anymole.video.vae import build_vae

__all__ = ["DynamiCrafterConfig", "DynamiCrafterPrior", "base_name"]

log = logging.getLogger(__name__)


#: seed of the LoRA adapters' start (`DynamiCrafterPrior.reset_adapters`).
LORA_SEED = 0
#: (caption, autocast dtype) entries `DynamiCrafterPrior` keeps text tokens of (a few per scene; cleared past this).
TEXT_MEMO_SIZE = 64


def _lora_targets(unet: UNet3D, prefixes: tuple[str, ...]) -> list[str]:
    """Full names of the attention projections (``to_q/k/v``, ``to_k_ip/v_ip``, ``to_out.0``) inside the
    spatial transformers under ``prefixes`` that have no adapter yet: LoRA goes only where the reference
    ICAdapt trains (an adapted projection is peft's wrapper, no ``nn.Linear``; its ``base_layer`` and
    ``lora_*`` linears are skipped)."""
    return [
        f"{prefix}.{name}"
        for prefix, module in unet.named_modules()
        if isinstance(module, SpatialTransformer) and f"{prefix}.".startswith(prefixes)
        for name, sub in module.named_modules()
        if isinstance(sub, nn.Linear)
        and (".attn1." in name or ".attn2." in name)
        and "lora_" not in name
        and not name.endswith(".base_layer")
    ]


def base_name(name: str) -> str:
    """The name a parameter or state-dict entry has without LoRA adapters (peft renames an adapted projection's
    ``x.weight`` to ``x.base_layer.weight``)."""
    return name.replace(".base_layer.", ".")


def _adapter_seed(seed: int, name: str) -> int:
    """The seed of adapter ``name``'s start: its own, so an adapter starts the same whichever adapters exist
    beside it and in whichever order they were injected."""
    return (seed << 32) | zlib.crc32(name.encode())


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype in force for ``device``'s type, or None outside autocast."""
    return torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None


def _weights_state(module: nn.Module) -> tuple[tuple[int, int, torch.dtype, torch.device], ...]:
    """What a memo of ``module``'s outputs depends on: each parameter's storage address, version counter,
    dtype and device (host-side reads: no device sync)."""
    return tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in module.parameters())


class DynamiCrafterPrior(nn.Module):
    """DynamiCrafter 512 interpolation, implementing `anymole.video.VideoPrior`.

    Args:
        config: architecture (default `DynamiCrafterConfig.full`).
        device: where to build. ``None`` builds on the CPU as usual; any device builds on ``meta`` first and
            then materialises there with fresh random weights (``"meta"`` stays unmaterialised: used for
            schema checks and before `anymole.video.weights.load_pretrained` assigns the checkpoint).
        dtype: parameter dtype (e.g. ``torch.bfloat16``); ``None`` keeps float32.
        tokenizer: caption tokenizer; default `ByteTokenizer` (no files needed; real CLIP weights need the
            CLIP BPE, which `anymole.video.weights.load_pretrained` sets up).
    """

    def __init__(
        self,
        config: DynamiCrafterConfig | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> None:
        super().__init__()
        cfg = config or DynamiCrafterConfig.full()
        self.config = cfg
        self.latent_channels = cfg.vae.latent_channels
        self.vae_scale_factor = cfg.vae.scale_factor
        self.num_frames = cfg.num_frames
        self.num_train_timesteps = cfg.num_train_timesteps
        self.prediction_type = cfg.prediction_type
        self.tokenizer: Tokenizer = tokenizer or ByteTokenizer(cfg.text.vocab_size, cfg.text.context_length)
        self.train_mode: str | None = None
        # (caption, autocast dtype) → text tokens, valid for the text encoder's tensors in `_text_memo_state`
        self._text_memo: dict[tuple[str, torch.dtype | None], torch.Tensor] = {}
        self._text_memo_state: tuple[tuple[int, int, torch.dtype, torch.device], ...] = ()
        self._null_memo: dict[torch.dtype | None, torch.Tensor] = {}
        self._null_memo_state: tuple[tuple[int, int, torch.dtype, torch.device], ...] = ()
        with torch.device("meta") if device is not None else contextlib.nullcontext():
            self.unet = UNet3D(cfg.unet)
            self.vae = build_vae(cfg.vae)
            self.text_encoder = TextEncoder(cfg.text)
            self.image_encoder = VisionEncoder(cfg.vision)
            self.image_proj = Resampler(cfg.resampler)
        for frozen in (self.vae, self.text_encoder, self.image_encoder):
            frozen.requires_grad_(False)
        if dtype is not None:
            self.to(dtype)
        if device is not None and torch.device(device).type != "meta":
            self.to_empty(device=device)
            self.reset_parameters()

    # ------------------------------------------------------------------ construction and loading
    def reset_parameters(self) -> None:
        """Fresh random weights everywhere, children before parents so zero-initialised output layers stay zero."""
        with torch.no_grad():
            for module in reversed(list(self.modules())):
                reset = getattr(module, "reset_parameters", None)
                if module is not self and callable(reset):
                    reset()

    # ------------------------------------------------------------------ VideoPrior
    def _vae_dtype(self) -> torch.dtype:
        return self.vae.decoder.conv_in.weight.dtype

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """``video (B, 3, T, H, W)`` in [0, 1] → scaled posterior means ``(B, C, T, H/8, W/8)``."""
        b, _, t, h, w = video.shape
        frames = video.transpose(1, 2).reshape(b * t, 3, h, w).to(self._vae_dtype()) * 2 - 1
        chunks = [
            self.vae.encode(frames[i : i + self.config.vae_chunk]).latent_dist.mean
            for i in range(0, b * t, self.config.vae_chunk)
        ]
        z = torch.cat(chunks) * self.config.vae.scaling_factor
        return z.reshape(b, t, *z.shape[1:]).transpose(1, 2)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents ``(B, C, T, h, w)`` → video ``(B, 3, T, 8h, 8w)`` in [0, 1]."""
        b, c, t, h, w = latents.shape
        z = latents.transpose(1, 2).reshape(b * t, c, h, w).to(self._vae_dtype()) / self.config.vae.scaling_factor
        chunks = [self.vae.decode(z[i : i + self.config.vae_chunk]).sample for i in range(0, b * t, self.config.vae_chunk)]
        x = ((torch.cat(chunks) + 1) / 2).clamp(0, 1)
        return x.reshape(b, t, *x.shape[1:]).transpose(1, 2)

    def _text_tokens(self, prompts: list[str]) -> torch.Tensor:
        """``(B, 77, 1024)`` text tokens at full size. Each distinct caption is encoded once and kept: the text
        encoder is frozen in every training mode, and ICAdapt and the sampler ask for the same one or two
        captions thousands of times. Entries are per autocast dtype, which sets the tokens' precision.

        The memo is dropped when it outgrows `TEXT_MEMO_SIZE` and when any text-encoder tensor changes: in place
        (its version counter moves, e.g. under ``load_state_dict``) or for a storage at another address or of
        another dtype or device (``.to(...)``, an assigning ``load_state_dict``, ``.data =``). Unseen: a swap,
        between two calls, to a storage of the same dtype, device and version count at the old one's freed
        address."""
        device = self.unet.device
        dtype = _autocast_dtype(device)
        state = _weights_state(self.text_encoder)
        if state != self._text_memo_state or len(self._text_memo) > TEXT_MEMO_SIZE:
            self._text_memo.clear()
            self._text_memo_state = state
        missing = sorted({p for p in prompts if (p, dtype) not in self._text_memo})
        if missing:
            with torch.no_grad():
                tokens = self.text_encoder(self.tokenizer(missing).to(device))
            self._text_memo.update({(p, dtype): t for p, t in zip(missing, tokens, strict=True)})
        return torch.stack([self._text_memo[(p, dtype)] for p in prompts])

    def encode_frames(self, images: torch.Tensor) -> EncodedFrames:
        """VAE latents ``(N, C, h, w)`` and image-encoder features ``(N, 257, 1280)`` (full size) of ``images
        (N, 3, H, W)`` in [0, 1], in chunks of ``config.vae_chunk`` frames (see `VideoPrior.encode_frames`)."""
        device = self.unet.device
        images = images.to(device)
        latents = self.encode(images.transpose(0, 1)[None])[0].transpose(0, 1)
        step = self.config.vae_chunk
        with torch.no_grad():
            features = torch.cat([self.image_encoder(images[i : i + step]) for i in range(0, len(images), step)])
        return EncodedFrames(latents=latents, features=features)

    def _context(self, prompts: list[str], features: torch.Tensor) -> torch.Tensor:
        """``[text tokens ; resampled image tokens]``: ``(B, 77 + 16·16, 1024)`` at full size, from image-encoder
        ``features``."""
        image = self.image_proj(features.to(self.image_proj.latents.dtype))
        return torch.cat([self._text_tokens(prompts).to(image.dtype), image], dim=1)

    def condition(
        self,
        prompts: list[str],
        first: torch.Tensor | EncodedFrames,
        last: torch.Tensor | EncodedFrames | None,
        fps: torch.Tensor,
        num_frames: int | None = None,
        drop_image: torch.Tensor | None = None,
    ) -> VideoCondition:
        """Conditioning for interpolation windows (see `VideoPrior.condition`).

        The image tokens come from ``first`` only (for ``drop_image`` samples from the grey image of
        `unconditional`, through the same resampler call); the concat latents hold ``latent(first)`` in frame
        0, ``latent(last)`` in frame ``T-1`` and zeros between, as DynamiCrafter's interpolation mode. Images
        and their `encode_frames` output give the same conditioning.
        """
        b = len(prompts)
        t = num_frames or self.num_frames
        if fps.shape != (b,):
            raise InvalidInput("fps", f"expected ({b},), got {tuple(fps.shape)}")
        if isinstance(first, EncodedFrames) or isinstance(last, EncodedFrames):
            if not isinstance(first, EncodedFrames) or not isinstance(last, (EncodedFrames, type(None))):
                raise InvalidInput("last", "pass first and last both as images or both as EncodedFrames")
            for name, frames in (("first", first), ("last", last)):
                if frames is not None and len(frames) != b:
                    raise InvalidInput(name, f"expected {b} encoded frames for {b} prompts, got {len(frames)}")
            z_first, z_last = first.latents, None if last is None else last.latents
            features = first.features
        else:
            if first.ndim != 4 or first.shape[0] != b or first.shape[1] != 3:
                raise InvalidInput("first", f"expected ({b}, 3, H, W) images for {b} prompts, got {tuple(first.shape)}")
            if last is not None and last.shape != first.shape:
                raise InvalidInput("last", f"expected the shape of first {tuple(first.shape)}, got {tuple(last.shape)}")
            ends = first[:, :, None] if last is None else torch.stack([first, last], dim=2)
            z = self.encode(ends)  # (B, C, 1|2, h, w): one VAE pass for both ends
            z_first, z_last = z[:, :, 0], None if last is None else z[:, :, 1]
            with torch.no_grad():
                features = self.image_encoder(first.to(self.unet.device))
        if drop_image is not None:
            if drop_image.shape != (b,):
                raise InvalidInput("drop_image", f"expected ({b},), got {tuple(drop_image.shape)}")
            null = self._null_image_features()
            features = torch.where(drop_image.to(features.device)[:, None, None], null.to(features.dtype), features)
        concat = z_first.new_zeros(b, z_first.shape[1], t, *z_first.shape[2:])
        concat[:, :, 0] = z_first
        if z_last is not None:
            concat[:, :, -1] = z_last
        return VideoCondition(context=self._context(prompts, features), concat=concat, fps=fps.to(concat.device).float())

    @torch.no_grad()
    def _null_image_features(self) -> torch.Tensor:
        """Image-encoder features ``(1, 257, 1280)`` (full size) of an all-grey image, the reference's zero
        image in [-1, 1]: the null image of classifier-free guidance.

        Encoded once per autocast dtype and kept, as the text tokens are (ICAdapt's image dropout asks for it
        every micro-batch, the sampler every window); dropped when an image-encoder tensor changes, by the
        rule of `_text_tokens`."""
        device = self.unet.device
        dtype = _autocast_dtype(device)
        state = _weights_state(self.image_encoder)
        if state != self._null_memo_state:
            self._null_memo.clear()
            self._null_memo_state = state
        if dtype not in self._null_memo:
            size = self.config.vision.image_size
            self._null_memo[dtype] = self.image_encoder(torch.full((1, 3, size, size), 0.5, device=device))
        return self._null_memo[dtype]

    def unconditional(self, cond: VideoCondition) -> VideoCondition:
        """Empty caption and the tokens of an all-grey image; the concat latents and fps are kept. One grey
        image is encoded and its tokens repeated."""
        b = cond.context.shape[0]
        context = self._context([""], self._null_image_features()).to(cond.context.dtype).expand(b, -1, -1)
        return VideoCondition(context=context, concat=cond.concat, fps=cond.fps)

    def predict(self, latents: torch.Tensor, t: torch.Tensor, cond: VideoCondition) -> torch.Tensor:
        """v-prediction for ``latents (B, C, T, h, w)`` at timesteps ``t (B,)``; dtype of ``latents``."""
        dtype = self.unet.dtype
        x = torch.cat([latents, cond.concat.to(latents.dtype)], dim=1).to(dtype)
        return self.unet(x, t, cond.context.to(dtype), cond.fps).to(latents.dtype)

    def enable_gradient_checkpointing(self, enabled: bool = True, selective: bool = False) -> None:
        """Recompute UNet activations in the backward pass (ICAdapt memory saver); ``selective`` keeps the
        outputs of matmuls, convolutions and attention and recomputes only the cheap ops."""
        self.unet.set_gradient_checkpointing(enabled, selective)

    def set_dropout_rng(self, rng: DropoutRng | None) -> None:
        """ICAdapt's own dropout stream for the UNet's dropout and its checkpoint replays (``None``: torch's
        global RNG again); see `anymole.video.dropout`."""
        self.unet.set_dropout_rng(rng)

    def compile_blocks(self, enabled: bool = True, backend: str = "inductor") -> None:
        """Regional ``torch.compile`` of the UNet's repeated blocks (ICAdapt speed-up, see
        `UNet3D.set_block_compile`); ``enabled=False`` restores eager blocks."""
        self.unet.set_block_compile(enabled, backend)

    # ------------------------------------------------------------------ adaptation
    def _spatial_parameters(self) -> list[nn.Parameter]:
        """The reference ICAdapt set: UNet minus temporal convs/transformers (``init_attn`` included) and the
        time/fps embeddings, plus the resampler."""
        frozen: set[int] = {id(p) for p in self.unet.time_embed.parameters()}
        frozen |= {id(p) for p in self.unet.fps_embedding.parameters()}
        for module in self.unet.modules():
            if isinstance(module, (TemporalConvBlock, TemporalTransformer)):
                frozen |= {id(p) for p in module.parameters()}
        unet = [p for p in self.unet.parameters() if id(p) not in frozen]
        return unet + list(self.image_proj.parameters())

    def _decoder_parameters(self) -> list[nn.Parameter]:
        """The reference set restricted to the decoder half: spatial layers of the middle block, the output
        blocks and the output head. Nothing upstream of the middle block trains (not even the resampler, whose
        tokens feed every encoder cross-attention), so the backward pass stops there: no activation gradients
        and no stored activations for the encoder half."""
        spatial = {id(p) for p in self._spatial_parameters()}
        decoder = [*self.unet.middle_block.parameters(), *self.unet.output_blocks.parameters(), *self.unet.out.parameters()]
        return [p for p in decoder if id(p) in spatial]

    def _lora_prefixes(self, mode: str) -> tuple[str, ...]:
        """UNet name prefixes whose spatial-attention adapters LoRA ``mode`` trains."""
        if mode == "lora_decoder":
            return ("middle_block.", "output_blocks.")
        if mode == "lora_top":  # the output blocks at full latent resolution: the last level's
            top = self.config.unet.num_res_blocks + 1
            n = len(self.unet.output_blocks)
            return tuple(f"output_blocks.{i}." for i in range(n - top, n))
        return ("",)

    def _inject_lora(self, prefixes: tuple[str, ...]) -> None:
        """Add LoRA adapters (rank ``config.lora_rank``) to the spatial attention projections under
        ``prefixes`` that have none, at their identity start. Only where a mode trains: an adapter elsewhere
        would cost its matmuls in every forward pass and change nothing."""
        targets = _lora_targets(self.unet, prefixes)
        if not targets:
            return
        from peft import LoraConfig, inject_adapter_in_model

        lora = LoraConfig(
            r=self.config.lora_rank, lora_alpha=self.config.lora_alpha, lora_dropout=0.0, target_modules=targets
        )
        device = self.unet.device
        # A second round (another LoRA mode's blocks) adds layers to the same "default" adapter; peft, finding
        # its record of the first round, would warn as if a second adapter were meant. Nothing reads the record.
        vars(self.unet).pop("peft_config", None)
        # peft draws the adapters from the global RNG: leave it as the caller had it (they are re-drawn below)
        with seeded_global_rng(None, [device] if device.type == "cuda" else []):
            inject_adapter_in_model(lora, self.unet)
        self._reset_adapters(tuple(f"{t}." for t in targets), LORA_SEED)

    def _run_adapters(self, prefixes: tuple[str, ...] | None) -> None:
        """Run the LoRA adapters under ``prefixes`` in forward passes and skip all others (``None``: all).
        Adapters stay once injected; outside their mode they are at their identity start (a job's weights are
        restored after it), so skipping them changes no output and saves their matmuls: another LoRA mode's
        in a LoRA job, every adapter in a weight mode's job and its sampling."""
        for name, module in self.unet.named_modules():
            if getattr(module, "lora_A", None) is not None:  # peft's adapted layer
                module.enable_adapters(prefixes is not None and f"{name}.".startswith(prefixes))

    def reset_adapters(self, seed: int = LORA_SEED) -> None:
        """Put every LoRA adapter back at its identity start, the same on every device, in every process and
        whichever adapters were injected before: ``lora_A`` from peft's Kaiming-uniform (a = √5) drawn from
        a CPU generator seeded from ``seed`` and the adapter's name, ``lora_B`` zero. (peft draws ``lora_A``
        from the global RNG, so two ICAdapt runs with one seed would otherwise start from different adapters.)"""
        self._reset_adapters(("",), seed)

    def _reset_adapters(self, prefixes: tuple[str, ...], seed: int) -> None:
        with torch.no_grad():
            for name, p in self.unet.named_parameters():
                if not name.startswith(prefixes):
                    continue
                if "lora_A" in name:
                    gen = torch.Generator().manual_seed(_adapter_seed(seed, name))
                    p.copy_(nn.init.kaiming_uniform_(torch.empty(p.shape), a=math.sqrt(5), generator=gen))
                elif "lora_B" in name:
                    p.zero_()

    def trainable_parameters(self, mode: str = "spatial") -> Iterable[nn.Parameter]:
        """Select, unfreeze and return the parameters ICAdapt optimises; everything else is frozen.

        Args:
            mode: ``"spatial"`` (reference ICAdapt: 889 M UNet + 49 M resampler parameters at full size),
                ``"full"`` (whole UNet + resampler), ``"lora"`` (LoRA adapters, rank ``config.lora_rank``,
                on the attention projections of the spatial transformers, injected with peft on first use),
                ``"decoder"`` (the spatial set of the middle block, output blocks and head, 628 M parameters at
                full size: a faster, partial fine-tune whose backward pass skips the encoder half, see
                `_decoder_parameters`), ``"lora_decoder"`` (LoRA adapters of the middle and output blocks only:
                no weight gradients and no backward pass through the encoder half) or ``"lora_top"`` (LoRA
                adapters of the output blocks at full latent resolution only, ``output_blocks.9–11`` at full
                size: the backward pass covers a fifth of the forward's FLOPs and keeps only those blocks'
                activations). LoRA modes inject adapters where they train, on first use; adapters another
                LoRA mode injected earlier stay, frozen; the weight modes never train adapters.

        Returns:
            A list of the trainable parameters.
        """
        if mode not in TRAIN_MODES:
            raise InvalidInput("mode", f"expected one of {TRAIN_MODES}, got {mode!r}")
        lora = mode.startswith("lora")
        if lora:
            self._inject_lora(self._lora_prefixes(mode))
        self._run_adapters(self._lora_prefixes(mode) if lora else None)  # before requires_grad: peft sets it
        self.requires_grad_(False)
        adapters = {name: p for name, p in self.unet.named_parameters() if "lora_" in name}
        if mode == "spatial":
            params = self._spatial_parameters()
        elif mode == "full":
            params = [*self.unet.parameters(), *self.image_proj.parameters()]
        elif mode == "decoder":
            params = self._decoder_parameters()
        else:
            prefixes = self._lora_prefixes(mode)
            params = [p for name, p in adapters.items() if name.startswith(prefixes)]
        if not mode.startswith("lora"):  # adapters an earlier LoRA mode injected are no weights of these sets
            ids = {id(p) for p in adapters.values()}
            params = [p for p in params if id(p) not in ids]
        for p in params:
            p.requires_grad_(True)
        self.train_mode = mode
        return params

    def _named_weights(self) -> dict[str, nn.Parameter]:
        """Parameters by their `base_name`, so that weights saved with and without adapters beside them load
        either way."""
        return {base_name(name): p for name, p in self.named_parameters()}

    def _header(self) -> dict[str, Any]:
        return {"backend": BACKEND, "config": self.config.to_dict()}

    def save_adapted(self, path: Path) -> None:
        """Write the trainable parameters (as last selected) to ``path`` (safetensors) and ``path.json``, by
        their names without LoRA adapters (`_named_weights`)."""
        from safetensors.torch import save_file

        if self.train_mode is None:
            raise InvalidInput("mode", "call trainable_parameters(mode) before save_adapted")
        path = Path(path)
        trainable = {n: p.detach().cpu().contiguous() for n, p in self._named_weights().items() if p.requires_grad}
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(trainable, str(path))
        header = self._header() | {"mode": self.train_mode, "keys": sorted(trainable)}
        path.with_suffix(path.suffix + ".json").write_text(json.dumps(header, indent=1))

    def load_adapted(self, path: Path) -> None:
        """Load weights written by `save_adapted` and re-select their training mode.

        Raises:
            ModelUnavailable: files missing, or written for another backend, config or parameter layout.
        """
        from safetensors.torch import load_file

        path = Path(path)
        meta_path = path.with_suffix(path.suffix + ".json")
        name = f"adapted weights {path}"
        if not (path.is_file() and meta_path.is_file()):
            raise ModelUnavailable(name, f"{path} or {meta_path} is missing: run ICAdapt again")
        header = json.loads(meta_path.read_text())
        if header.get("backend") != BACKEND or DynamiCrafterConfig.from_dict(header["config"]) != self.config:
            raise ModelUnavailable(name, "they were adapted from another model or config: run ICAdapt again")
        self.trainable_parameters(header["mode"])
        tensors = load_file(str(path))
        params = self._named_weights()
        misfit = {k for k, v in tensors.items() if k not in params or params[k].shape != v.shape}
        bad = sorted(misfit | (set(tensors) ^ set(header["keys"])))  # ^: keys the header lists but the file lacks
        if bad:
            more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
            raise ModelUnavailable(name, f"parameter layout differs at {', '.join(bad[:5])}{more}: run ICAdapt again")
        with torch.no_grad():
            for k, v in tensors.items():
                params[k].copy_(v)
        log.info("loaded %d adapted tensors (%s) from %s", len(tensors), header["mode"], path)
