"""DynamiCrafter's spatio-temporal denoiser: an SD-2.x 2D UNet interleaved with temporal layers.

Module names follow the official checkpoint (``input_blocks.1.0.temopral_conv`` and all, see
``reference/dynamicrafter_notes.md`` §2, §8), so the UNet's part of the key mapping is the identity and
`video.weights` only adds the ``model.diffusion_model.`` prefix.

Layout inside the network: spatial layers see frames folded into the batch, ``(B·T, C, h, w)``
(frame-major within each clip, i.e. index ``b·T + t``); temporal layers unfold them to attend or convolve
along ``T``. There is no Python control flow on tensor values, so the forward pass traces under
`torch.compile`. The layers and `UNet3DConfig` are in `anymole.video.unet_layers`; this module assembles them
and holds the checkpointing policy.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from anymole.video.dropout import Dropout, DropoutRng
from anymole.video.unet_layers import (
    Downsample,
    GroupNorm,
    LayerNorm,
    ResBlock,
    SpatialTransformer,
    TemporalConvBlock,
    TemporalTransformer,
    UNet3DConfig,
    Upsample,
    timestep_embedding,
    zero_,
)

__all__ = [
    "GroupNorm",
    "LayerNorm",
    "ResBlock",
    "SpatialTransformer",
    "TemporalConvBlock",
    "TemporalTransformer",
    "UNet3D",
    "UNet3DConfig",
    "timestep_embedding",
]


_aten = torch.ops.aten
#: ops whose outputs selective checkpointing keeps: the FLOP-heavy ones (matmuls, convolutions, attention).
#: Everything else in a checkpointed layer (norms, SiLU/GELU, dropout, dtype casts, the transposes between
#: spatial and temporal layouts) is recomputed in the backward pass: cheap to redo, but most of the memory.
_SAVED_OPS = frozenset(
    {
        _aten.mm.default,
        _aten.addmm.default,
        _aten.bmm.default,
        _aten.convolution.default,
        _aten._scaled_dot_product_flash_attention.default,
        _aten._scaled_dot_product_efficient_attention.default,
        _aten._scaled_dot_product_cudnn_attention.default,
        _aten._scaled_dot_product_flash_attention_for_cpu.default,
    }
)


def _save_heavy_ops(ctx: object, op: object, *args: object, **kwargs: object) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in _SAVED_OPS else CheckpointPolicy.PREFER_RECOMPUTE


_selective_context = functools.partial(create_selective_checkpoint_contexts, _save_heavy_ops)


@contextlib.contextmanager
def _nested(*contexts: contextlib.AbstractContextManager[Any]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for context in contexts:
            stack.enter_context(context)
        yield


class Stage(nn.ModuleList):
    """One ``input_blocks.i`` / ``middle_block`` / ``output_blocks.i``: layers applied in order, each given
    what its type needs. With ``gradient_checkpointing`` set, each layer recomputes its activations in
    the backward pass: all of them, or with ``selective_checkpointing`` only the cheap ones (see
    `_SAVED_OPS`). With a ``dropout_rng`` (`UNet3D.set_dropout_rng`) the recomputation replays the layers'
    dropout masks from that stream and leaves torch's global RNGs alone: checkpoint's own replay would swap
    the global CPU and device states in and out, from autograd's threads, under other threads' draws."""

    gradient_checkpointing: bool = False
    selective_checkpointing: bool = False
    dropout_rng: DropoutRng | None = None

    def _checkpoint_options(self) -> dict[str, Any]:
        rng = self.dropout_rng
        if rng is None:
            return {"context_fn": _selective_context} if self.selective_checkpointing else {}
        if torch.compiler.is_compiling():  # compiled dropout hashes its keys: nothing to replay (and
            # checkpoint under compile takes only dispatch modes as contexts)
            extra: dict[str, Any] = {"context_fn": _selective_context} if self.selective_checkpointing else {}
            return {"preserve_rng_state": False, **extra}

        def contexts() -> tuple[contextlib.AbstractContextManager[Any], contextlib.AbstractContextManager[Any]]:
            replay = rng.replay_contexts()
            if not self.selective_checkpointing:
                return replay
            keep = _selective_context()
            return _nested(keep[0], replay[0]), _nested(keep[1], replay[1])

        return {"preserve_rng_state": False, "context_fn": contexts}

    def _layer(self, layer: nn.Module, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor, frames: int):
        if isinstance(layer, ResBlock):
            return layer(x, emb, frames)
        if isinstance(layer, SpatialTransformer):
            return layer(x, context)
        if isinstance(layer, TemporalTransformer):
            return layer(x, frames)
        return layer(x)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor, frames: int) -> torch.Tensor:
        for layer in self:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                options = self._checkpoint_options()
                x = checkpoint(self._layer, layer, x, emb, context, frames, use_reentrant=False, **options)
            else:
                x = self._layer(layer, x, emb, context, frames)
        return x


class UNet3D(nn.Module):
    """The DynamiCrafter denoiser (``model.diffusion_model``).

    Call ``unet(x, t, context, fps)``:
        x: ``(B, in_channels, T, h, w)``: noisy latents then concatenated condition latents, channel-wise.
        t: ``(B,)`` diffusion timesteps.
        context: ``(B, L, context_dim)``; ``[77 text ; image tokens]``. When ``L = 77 + image_tokens_per_frame·T``
            the image tokens are split per frame, otherwise every frame sees all of them.
        fps: ``(B,)`` frames per second, embedded like a timestep and added to the time embedding.
    Returns ``(B, out_channels, T, h, w)``.
    """

    def __init__(self, cfg: UNet3DConfig) -> None:
        super().__init__()
        self.cfg = cfg
        mc = cfg.model_channels
        emb_dim = 4 * mc
        g, p = cfg.norm_groups, cfg.dropout
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.fps_embedding = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        def attn_layers(ch: int) -> list[nn.Module]:
            heads = ch // cfg.num_head_channels
            return [
                SpatialTransformer(ch, heads, cfg.num_head_channels, cfg),
                TemporalTransformer(ch, heads, cfg.num_head_channels, cfg),
            ]

        self.input_blocks = nn.ModuleList([Stage([nn.Conv2d(cfg.in_channels, mc, 3, padding=1)])])
        self.init_attn = Stage([TemporalTransformer(mc, cfg.init_attn_heads, cfg.num_head_channels, cfg, True)])
        skip_channels = [mc]
        ch, ds = mc, 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb_dim, mult * mc, g, p)]
                ch = mult * mc
                if ds in cfg.attention_resolutions:
                    layers += attn_layers(ch)
                self.input_blocks.append(Stage(layers))
                skip_channels.append(ch)
            if level != len(cfg.channel_mult) - 1:
                self.input_blocks.append(Stage([Downsample(ch)]))
                skip_channels.append(ch)
                ds *= 2
        self.middle_block = Stage([ResBlock(ch, emb_dim, ch, g, p), *attn_layers(ch), ResBlock(ch, emb_dim, ch, g, p)])
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [ResBlock(ch + skip_channels.pop(), emb_dim, mult * mc, g, p)]
                ch = mult * mc
                if ds in cfg.attention_resolutions:
                    layers += attn_layers(ch)
                if level and i == cfg.num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(Stage(layers))
        self.out = nn.Sequential(GroupNorm(g, ch), nn.SiLU(), nn.Conv2d(mc, cfg.out_channels, 3, padding=1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The output conv and the fps MLP's last layer start at zero, as in the reference."""
        zero_(self.out[-1])
        zero_(self.fps_embedding[-1])

    @property
    def dtype(self) -> torch.dtype:
        """Parameter dtype (of the first layer; the whole UNet shares one)."""
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def set_gradient_checkpointing(self, enabled: bool, selective: bool = False) -> None:
        """Recompute layer activations in the backward pass (memory for compute, for fine-tuning): all of
        them, or with ``selective`` all but the outputs of matmuls, convolutions and attention."""
        for module in self.modules():
            if isinstance(module, Stage):
                module.gradient_checkpointing = enabled
                module.selective_checkpointing = selective

    def set_dropout_rng(self, rng: DropoutRng | None) -> None:
        """Draw every dropout mask from ``rng`` (a training run's own stream, see `anymole.video.dropout`), or
        from torch's global RNG again (``None``)."""
        layers = [m for m in self.modules() if isinstance(m, Dropout)]
        if rng is None:
            for layer in layers:
                layer.use(None)
        else:
            rng.attach(layers)
        for module in self.modules():
            if isinstance(module, Stage):
                module.dropout_rng = rng

    def set_block_compile(self, enabled: bool, backend: str = "inductor") -> None:
        """Regional compilation: ``torch.compile`` the ``forward`` of every `ResBlock`, `SpatialTransformer` and
        `TemporalTransformer` (their temporal convs included) instead of the whole UNet, fusing each block's norms,
        activations and layout copies. Instances of one class share its code object, so blocks of one input
        shape reuse one compiled graph: a compile costs the distinct (class, shape) pairs, not the whole model.
        Static shapes (``dynamic=False``): one graph per shape, as for the fixed ICAdapt clip size. Compiled
        blocks run inside `Stage`'s gradient checkpoint, which reruns the compiled forward in the backward pass.
        Callers that hit more distinct shapes per class than dynamo's ``recompile_limit`` must raise it (ICAdapt
        does). ``enabled=False`` restores the eager ``forward``; ``backend`` is torch.compile's (tests pass
        ``"eager"``, which traces without code generation)."""
        for module in self.modules():
            if not isinstance(module, (ResBlock, SpatialTransformer, TemporalTransformer)):
                continue
            compiled = "forward" in vars(module)  # an instance attribute shadowing the class's forward
            if enabled and not compiled:
                module.forward = torch.compile(module.forward, backend=backend, dynamic=False)  # type: ignore[method-assign]
            elif not enabled and compiled:
                del module.forward

    def _frame_context(self, context: torch.Tensor, frames: int) -> torch.Tensor:
        """``(B, L, D)`` → ``(B·T, L', D)``: per-frame image tokens when the context carries one set per frame."""
        b, length, d = context.shape
        text_len, per_frame = self.cfg.text_context_len, self.cfg.image_tokens_per_frame
        if length == text_len + per_frame * frames:  # shapes only: static under torch.compile
            text = context[:, :text_len].repeat_interleave(frames, dim=0)
            image = context[:, text_len:].reshape(b * frames, per_frame, d)
            return torch.cat([text, image], dim=1)
        return context.repeat_interleave(frames, dim=0)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, fps: torch.Tensor) -> torch.Tensor:
        b, _, frames, h, w = x.shape
        dtype = self.dtype
        mc = self.cfg.model_channels
        emb = self.time_embed(timestep_embedding(t, mc).to(dtype))
        emb = emb + self.fps_embedding(timestep_embedding(fps, mc).to(dtype))
        emb = emb.repeat_interleave(frames, dim=0)  # (B·T, E)
        context = self._frame_context(context, frames)
        hidden = x.transpose(1, 2).reshape(b * frames, -1, h, w)
        skips = []
        for i, block in enumerate(self.input_blocks):
            hidden = block(hidden, emb, context, frames)
            if i == 0:
                hidden = self.init_attn(hidden, emb, context, frames)
            skips.append(hidden)
        hidden = self.middle_block(hidden, emb, context, frames)
        for block in self.output_blocks:
            hidden = block(torch.cat([hidden, skips.pop()], dim=1), emb, context, frames)
        y = self.out(hidden)
        return y.reshape(b, frames, -1, h, w).transpose(1, 2)
