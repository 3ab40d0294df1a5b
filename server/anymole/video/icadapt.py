"""ICAdapt: in-context fine-tuning of the video prior on clips of the scene's own context renders.

AnyMoLe supplementary A.1 and the reference trainer: v-target L2 loss at a uniformly drawn timestep, one fixed
caption for the scene, the fps of each clip (30/15/10) fed to the fps embedding, AdamW at lr 1e-5, 8 clips a
step, grad-norm clip 0.5, 500 optimiser steps, classifier-free-guidance dropout of the conditioning (text alone
5 %, text and image 5 %, image alone 5 %; the concatenated frame latents are never dropped). By default only the
spatial layers train (``mode="spatial"``), as in the reference.

`ICAdaptConfig()` is that reference recipe, its 8 clips a step as the reference trainer's 4 × 2 accumulated
micro-batches. One micro-batch of 8 (``batch_size=8, grad_accum=1``) gives the same gradient for the same clips
(tested; only the order of the random draws differs). `ICAdaptConfig.fast()` (the decoder half's spatial set, one
micro-batch) and `ICAdaptConfig.turbo()` (LoRA adapters of the full-resolution output blocks, no checkpointing,
a compiled denoiser, a LoRA learning rate) are explicit, documented speed presets: partial fine-tunes with the
same steps and clips per step. Seconds a step on an H200 (``docs/benchmarks.md``): the recipe 1.75 s (28 GiB),
as 8 × 1 1.58 s; `fast` 1.13 s; `turbo` 0.50 s after a one-time compile (47.5 GiB): 500 steps in 4.2 min.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch.nn import functional as F

from anymole.errors import InvalidInput
from anymole.progress import OnStep
from anymole.video.clips import ClipBank
from anymole.video.dropout import DropoutRng
from anymole.video.prior import (
    AUTOCAST_DTYPES,
    TRAIN_MODES,
    EncodedFrames,
    VideoCondition,
    VideoPrior,
    autocast,
)
from anymole.video.schedule import DDIMSchedule

__all__ = ["RECIPES", "AdaptedWeights", "ICAdaptConfig", "encode_clip_frames", "icadapt", "icadapt_loss"]

log = logging.getLogger(__name__)

#: dynamo's per-code-object recompile limit while ICAdapt compiles blocks (see ICAdaptConfig.compile_blocks).
BLOCK_RECOMPILE_LIMIT = 64

#: `ICAdaptConfig.turbo`'s learning rate: the usual rate of LoRA fine-tuning of diffusion UNets (diffusers'
#: text-to-image LoRA example is documented with ``--learning_rate=1e-04``), ten times the recipe's 1e-5.
LORA_LR = 1e-4


Predict = Callable[[torch.Tensor, torch.Tensor, VideoCondition], torch.Tensor]


@dataclass(frozen=True)
class ICAdaptConfig:
    """ICAdapt settings; the defaults are the paper's and the reference trainer's.

    Attributes:
        steps: optimiser steps (500).
        lr: AdamW learning rate (1e-5).
        batch_size: clips per micro-batch (4; never more than the clips there are).
        grad_accum: micro-batches per optimiser step (2); clips a step = ``batch_size · grad_accum`` (8).
        mode: ``"spatial"`` (denoiser minus temporal layers and time/fps embeddings), ``"full"``, ``"lora"``,
            ``"decoder"`` (the spatial set of the decoder half only: the backward pass skips the encoder; not
            the reference's trained set, so chosen only explicitly, e.g. through `fast`), ``"lora_decoder"``
            (LoRA adapters of the decoder half: no weight gradients, no backward pass through the encoder) or
            ``"lora_top"`` (LoRA adapters of the full-resolution output blocks only, through `turbo`).
        autocast_dtype: ``"bf16"``, ``"fp16"`` or ``"fp32"`` (no autocast); autocast applies on CUDA only.
        gradient_checkpointing: recompute activations in backward (if the backend supports it).
        selective_checkpointing: with checkpointing, keep the outputs of matmuls, convolutions and attention
            and recompute only the cheap ops (norms, activations, casts, layout copies): less recomputation,
            more memory. Same numbers either way.
        compile: run the denoiser through ``torch.compile`` (a one-time compile per run, minutes at full size).
        compile_blocks: regional compilation instead: ``torch.compile`` of each repeated UNet block (ResBlock,
            spatial and temporal transformer), shared by blocks of one shape: a shorter one-time compile than
            ``compile``'s, inside the gradient checkpoints (full checkpointing or none, not selective). Needs a
            backend with ``compile_blocks`` (`DynamiCrafterPrior`); not with ``compile``.
        compile_backend: ``torch.compile`` backend of either compile (``"inductor"``; tests use ``"eager"``).
        compile_memory_budget: with ``compile``, the fraction (0, 1] of the activation memory that the compiled
            training graph may keep for the backward pass (torch's ``activation_memory_budget``): 1 keeps what a
            min-cut deems cheapest, lower values recompute more of the forward pass in the backward pass to fit
            a smaller card.
        grad_clip: max global grad norm (0.5).
        weight_decay: AdamW weight decay (0.01, torch's default, which the reference keeps).
        uncond_prob: each of the three conditioning-dropout cases happens with this probability (0.05).
        seed: RNG seed for clip order, timesteps, noise and dropout (20240725, the reference's).
    """

    steps: int = 500
    lr: float = 1e-5
    batch_size: int = 4
    grad_accum: int = 2
    mode: str = "spatial"
    autocast_dtype: str = "bf16"
    gradient_checkpointing: bool = True
    selective_checkpointing: bool = False
    compile: bool = False
    compile_blocks: bool = False
    compile_backend: str = "inductor"
    compile_memory_budget: float = 1.0
    grad_clip: float = 0.5
    weight_decay: float = 1e-2
    uncond_prob: float = 0.05
    seed: int = 20240725

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise InvalidInput(name, f"must be ≥ 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise InvalidInput("lr", f"must be > 0, got {self.lr}")
        if self.mode not in TRAIN_MODES:
            raise InvalidInput("mode", f"expected one of {TRAIN_MODES}, got {self.mode!r}")
        if self.autocast_dtype not in AUTOCAST_DTYPES:
            raise InvalidInput("autocast_dtype", f"expected one of {tuple(AUTOCAST_DTYPES)}, got {self.autocast_dtype!r}")
        if not 0 <= 3 * self.uncond_prob <= 1:
            raise InvalidInput("uncond_prob", f"must be in [0, 1/3], got {self.uncond_prob}")
        if self.selective_checkpointing and not self.gradient_checkpointing:
            raise InvalidInput("selective_checkpointing", "needs gradient_checkpointing=True")
        if not 0 < self.compile_memory_budget <= 1:
            raise InvalidInput("compile_memory_budget", f"must be in (0, 1], got {self.compile_memory_budget}")
        if self.compile_memory_budget < 1 and not self.compile:
            raise InvalidInput("compile_memory_budget", "applies to compile=True only")
        if self.compile_blocks and self.compile:
            raise InvalidInput("compile_blocks", "choose one of compile (whole denoiser) and compile_blocks")
        if self.compile_blocks and self.selective_checkpointing:  # its op policy would not see inside a block
            raise InvalidInput("compile_blocks", "needs full or no checkpointing, not selective_checkpointing")

    @classmethod
    def reference(cls, **overrides: Any) -> ICAdaptConfig:
        """The paper's and the reference trainer's recipe (the defaults), with ``overrides`` applied."""
        return cls(**overrides)

    @classmethod
    def fast(cls, **overrides: Any) -> ICAdaptConfig:
        """Speed preset: same steps, learning rate, clips per step and loss as `reference`, but only the
        decoder half's spatial layers train (``mode="decoder"``: the backward pass stops at the middle block) and
        the 8 clips go through in one micro-batch. A partial fine-tune: faster, not the reference's trained set
        (its adaptation quality is not measured here)."""
        return replace(cls(mode="decoder", batch_size=8, grad_accum=1), **overrides)

    @classmethod
    def turbo(cls, **overrides: Any) -> ICAdaptConfig:
        """Fastest preset, for a server process that adapts many scenes: same steps, clips per step and loss as
        `reference`, but only LoRA adapters of the decoder's full-resolution output blocks train
        (``mode="lora_top"``: the backward pass covers those three blocks, no weight gradients), without
        gradient checkpointing, through a compiled denoiser, at `LORA_LR` (the recipe's 1e-5 is a full-weight
        fine-tune's rate; which rate adapts LoRA adapters best is not measured here). The first run in a process
        compiles: about 3 min on an H200 with empty compile caches, under half a minute with warm ones (the
        caches are on disk, so they outlive the process); later runs of the same shapes reuse the graphs. 0.50 s a step,
        47.5 GiB on an H200. Pass ``compile=False`` where compiling does not pay (a CPU): 0.65 s a step eager, 56
        GiB. A partial fine-tune, like `fast`; its adaptation quality is not measured here."""
        return replace(
            cls(
                mode="lora_top",
                lr=LORA_LR,
                batch_size=8,
                grad_accum=1,
                gradient_checkpointing=False,
                compile=True,
            ),
            **overrides,
        )


#: the named ICAdapt recipes → their constructors (each takes field overrides)
RECIPES: dict[str, Callable[..., ICAdaptConfig]] = {
    "reference": ICAdaptConfig.reference,
    "fast": ICAdaptConfig.fast,
    "turbo": ICAdaptConfig.turbo,
}


@dataclass
class AdaptedWeights:
    """What an ICAdapt run produced. The adapted weights live in the prior itself (save them with
    ``prior.save_adapted`` or `anymole.video.cache`).

    Attributes:
        config: the settings used.
        losses: mean training loss of each optimiser step.
        trainable_parameters: number of parameters optimised.
        seconds: wall-clock time of the optimisation loop.
        first_step_seconds: time of the first optimiser step (it includes a ``compile``'s one-time cost).
    """

    config: ICAdaptConfig
    losses: list[float] = field(default_factory=list)
    trainable_parameters: int = 0
    seconds: float = 0.0
    first_step_seconds: float = 0.0


@torch.no_grad()
def encode_clip_frames(prior: VideoPrior, clips: ClipBank, autocast_dtype: str = "bf16") -> EncodedFrames:
    """Every rendered frame through the prior's frozen frame encoders once (`VideoPrior.encode_frames`, rows as
    `ClipBank.frames_flat`): the clips' latents and their ends' conditioning come from it, so no optimiser
    step runs the VAE or the image encoder again (the caption's text tokens are the backend's to keep:
    `DynamiCrafterPrior` memoises them)."""
    with autocast(clips.videos.device, autocast_dtype):
        return prior.encode_frames(clips.frames_flat())


def _to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x`` (on the CPU) on ``device``. To CUDA through pinned memory and without waiting: a copy from pageable
    memory makes the host wait for all queued device work (torch synchronises the stream after it)."""
    if device.type != "cuda":
        return x.to(device)
    return x.pin_memory().to(device, non_blocking=True)


def _dropout_condition(
    prior: VideoPrior,
    caption: str,
    first: torch.Tensor | EncodedFrames,
    last: torch.Tensor | EncodedFrames,
    fps: torch.Tensor,
    u: torch.Tensor,
    p: float,
) -> VideoCondition:
    """Conditioning with the reference's CFG dropout: ``u < p`` drops the text, ``p ≤ u < 2p`` drops text and
    image, ``2p ≤ u < 3p`` drops the image (per sample, ``u ~ U[0, 1)`` of shape ``(B,)``, on the CPU: the
    branch below reads it without waiting for the device). A dropped text is the empty caption, a dropped image
    the null image of `VideoPrior.unconditional` (``condition(drop_image=…)``); the concat latents are kept."""
    prompts = ["" if d else caption for d in (u < 2 * p).tolist()]
    drop_image = (u >= p) & (u < 3 * p)
    device = fps.device  # the training device: ICAdapt hands every input over there
    mask = _to_device(drop_image, device) if bool(drop_image.any()) else None
    return prior.condition(prompts, first, last, fps, drop_image=mask)


def icadapt_loss(
    prior: VideoPrior,
    schedule: DDIMSchedule,
    x0: torch.Tensor,
    cond: VideoCondition,
    t: torch.Tensor,
    noise: torch.Tensor,
    predict: Predict | None = None,
) -> torch.Tensor:
    """The training loss: ``‖D(x_t, t, c) − target‖²`` averaged, with ``x_t = q(x_0, t, ε)`` and the target
    ``v`` (or ``ε``) of `DDIMSchedule.training_target`.

    Args:
        x0: clean latents ``(B, C, T, h, w)``.
        cond: conditioning for the batch.
        t: ``(B,)`` int64 timesteps.
        noise: ``ε``, shape of ``x0``.
        predict: the denoiser call (default ``prior.predict``; ICAdapt passes a compiled one).
    """
    x_t = schedule.add_noise(x0, noise, t)
    target = schedule.training_target(x0, noise, t)
    return F.mse_loss((predict or prior.predict)(x_t, t, cond).float(), target.float())


def _batches(n: int, batch: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless shuffled epochs over ``n`` clips (a new permutation each epoch, like a shuffling loader)."""
    while True:
        perm = torch.randperm(n, generator=generator)
        if n <= batch:
            yield perm
            continue
        for s in range(0, n - batch + 1, batch):  # drop the incomplete last batch
            yield perm[s : s + batch]


def icadapt(
    prior: VideoPrior,
    clips: ClipBank,
    cfg: ICAdaptConfig | None = None,
    on_step: OnStep | None = None,
    schedule: DDIMSchedule | None = None,
) -> AdaptedWeights:
    """Fine-tune ``prior`` in place on the scene's clips.

    Args:
        prior: the video prior (an ``nn.Module`` backend); only ``prior.trainable_parameters(cfg.mode)`` change.
        clips: the context renders, their Algorithm-1 clips and the scene caption (on the training device).
        cfg: settings (defaults: the paper's).
        on_step: ``on_step("icadapt", fraction)`` after each optimiser step; raising stops the run.
        schedule: the training noise schedule (default `DDIMSchedule()`, DynamiCrafter's).

    Returns:
        The run's summary; the weights are adapted in ``prior``.
    """
    cfg = cfg or ICAdaptConfig()
    schedule = schedule or DDIMSchedule(prediction_type=prior.prediction_type)
    device = clips.videos.device
    encoded = encode_clip_frames(prior, clips, autocast_dtype=cfg.autocast_dtype)
    latents = encoded.latents.float()  # (V·F, C, h, w), rows as ClipBank.frames_flat
    params = list(prior.trainable_parameters(cfg.mode))
    if not params:
        raise InvalidInput("mode", f"the prior has no trainable parameters for mode {cfg.mode!r}")
    module = prior if isinstance(prior, torch.nn.Module) else None
    checkpointing = getattr(prior, "enable_gradient_checkpointing", None)
    compile_blocks = getattr(prior, "compile_blocks", None) if cfg.compile_blocks else None
    if cfg.compile_blocks and compile_blocks is None:
        raise InvalidInput("compile_blocks", f"{type(prior).__name__} has no regional compile; use compile=True")
    optimizer = torch.optim.AdamW(
        params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type == "cuda"
    )
    generator = torch.Generator().manual_seed(cfg.seed)
    # Dropout draws from the run's own stream on the training device (seed + 1: apart from `generator`'s draws),
    # never from torch's global RNGs, which other threads use meanwhile (the estimator beside, another job):
    # same seed, same masks, on any device, and checkpointing replays them from the same stream.
    dropout_rng = DropoutRng(cfg.seed + 1, device)
    set_dropout_rng = getattr(prior, "set_dropout_rng", None)
    if len(clips) < cfg.batch_size:  # _batches can only give what there is: say so rather than train on less
        log.warning(
            "ICAdapt: %d clips, fewer than batch_size=%d: each micro-batch trains on all %d (%d clips a step, "
            "not %d); render a longer context or more views for the full batch",
            len(clips), cfg.batch_size, len(clips), len(clips) * cfg.grad_accum, cfg.batch_size * cfg.grad_accum,
        )
    batches = _batches(len(clips), cfg.batch_size, generator)
    result = AdaptedWeights(cfg, trainable_parameters=sum(p.numel() for p in params))
    limits = contextlib.ExitStack()
    start = time.perf_counter()
    # Step losses stay on the device until the run ends: reading one back each step would make the host wait
    # for the device, which then idles while the host prepares the next step.
    losses: list[torch.Tensor] = []
    try:  # the prior (the pool's, shared with the jobs after this one) changes only in here: `finally` undoes it
        if module is not None:
            module.requires_grad_(False)
            module.train()
        for p in params:
            p.requires_grad_(True)
        if checkpointing is not None:
            checkpointing(cfg.gradient_checkpointing, selective=cfg.selective_checkpointing)
        if set_dropout_rng is not None:
            set_dropout_rng(dropout_rng)
        # A compiled bound method keeps the protocol: any backend's `predict` can be compiled.
        predict = torch.compile(prior.predict, backend=cfg.compile_backend) if cfg.compile else prior.predict
        if cfg.compile and cfg.compile_memory_budget < 1:  # read when the first step compiles, inside the loop
            limits.enter_context(torch._functorch.config.patch(activation_memory_budget=cfg.compile_memory_budget))
        if compile_blocks is not None:
            compile_blocks(True, cfg.compile_backend)
            # One graph per (block class, input shape): the full UNet has ~14 ResBlock shapes, over dynamo's
            # default of 8 recompiles per code object, past which it would silently run the rest eagerly.
            limits.enter_context(torch._dynamo.config.patch(recompile_limit=BLOCK_RECOMPILE_LIMIT))
        # Gradients the caller left on the prior would be added into the first step.
        optimizer.zero_grad(set_to_none=True)
        for step in range(cfg.steps):
            total = torch.zeros((), device=device)
            for _ in range(cfg.grad_accum):
                index = next(batches)
                rows = clips.frame_rows(index)  # (B, k) rows of `latents` / `encoded`
                u = torch.rand(len(index), generator=generator)  # stays on the CPU, see _dropout_condition
                t = torch.randint(0, schedule.num_train_timesteps, (len(index),), generator=generator)
                noise = torch.randn((len(index), latents.shape[1], rows.shape[1], *latents.shape[2:]), generator=generator)
                rows, fps, t, noise = (_to_device(x, device) for x in (rows, clips.fps[index], t, noise))
                x0 = latents[rows].transpose(1, 2)  # (B, C, k, h, w)
                first, last = encoded[rows[:, 0]], encoded[rows[:, -1]]
                dropout_rng.advance()  # the compiled path's keys of this forward pass (and its recomputation)
                with autocast(device, cfg.autocast_dtype):
                    cond = _dropout_condition(prior, clips.caption, first, last, fps, u, cfg.uncond_prob)
                    loss = icadapt_loss(prior, schedule, x0, cond, t, noise, predict) / cfg.grad_accum
                loss.backward()
                total += loss.detach()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(total)
            if step == 0:
                float(total)  # waits for the first step, compile included
                result.first_step_seconds = time.perf_counter() - start
            if on_step is not None:
                on_step("icadapt", (step + 1) / cfg.steps)
        result.losses = torch.stack(losses).tolist()  # waits for the last step
    finally:
        # The trainable set keeps requires_grad: backends save exactly those tensors as the adapted weights.
        optimizer.zero_grad(set_to_none=True)  # a run cut short (cancel, out of memory) leaves no gradients
        result.seconds = time.perf_counter() - start
        if checkpointing is not None:
            checkpointing(False)
        if set_dropout_rng is not None:
            set_dropout_rng(None)
        if compile_blocks is not None:
            compile_blocks(False)
        limits.close()
        if module is not None:
            module.eval()
    return result
