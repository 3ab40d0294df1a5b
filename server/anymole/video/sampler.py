"""Two-stage guided sampling (AnyMoLe supplementary, Algorithm 2) over any `VideoPrior`.

Timeline: every frame index here is on the 30 fps render timeline. Frames ``0 … context_end`` are the
context; keyframe ``j`` (``j = 1 … num_gaps``) is frame ``context_end + 30·j``; gap ``g`` (``g = 0 …``) runs
from key ``g`` (``key_0 = context_end``) to key ``g + 1``. Generated frames are on the 15 fps grid
(``key_g + 2, key_g + 4, …``), 15 a gap counting the closing key, as in the paper's Table 1.

Stage 1 (coarse, fps condition 5): one 16-slot window a gap, slots 6 frames (0.2 s) apart, starting 2 s
before the gap's opening key, so it spans 3 s; it writes the four 5 fps frames inside the gap (slots 11-14).
Stage 2 (fine, fps condition 15): one window a gap, slots 2 frames apart from key to key; it writes slots
1-14. Slot 0 and slot 15 always hold real frames (context or keys) and condition the window through the
concatenated latents and the image tokens; they are never inpainted. Guided inpainting replaces the latents
under ``mask`` with known latents noised to the current level while the timestep is above ``onlykey`` (750),
and only those under ``keymask`` (real frames) afterwards, as the reference sampler does. Every window costs
the same, so the cost is linear in the number of generated frames. Stage-2 windows depend only on stage-1
output and keys, so they run batched.

Gaps of any length (`window_fps`): every gap occupies 30 frames of this timeline whatever its real length
``L``, so the window layout above never changes; what changes is the fps condition, which tells the prior how
fast the motion it sees plays: a window of gap ``g`` is conditioned on ``round(fps / L_g)`` (the fine window's
16 frames really are ``L / 15`` s apart). ``L`` is clamped to [`SHORTEST_SAMPLED_GAP`, `MAX_GAP_SECONDS`], which
keeps the fine condition within 8-30 fps, the range DynamiCrafter-512 was trained and ICAdapt adapts on.

The window planners are pure functions that return explicit slot → frame maps, so the schedule can be tested
without a model. `TwoStageSampler` knows only the `VideoPrior` protocol.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from anymole.errors import InvalidInput
from anymole.progress import OnStep
from anymole.video.prior import AUTOCAST_DTYPES, VideoPrior, autocast
from anymole.video.schedule import DDIMSchedule

__all__ = [
    "COARSE_FPS",
    "FINE_FPS",
    "MAX_GAP_SECONDS",
    "RENDER_FPS",
    "SHORTEST_SAMPLED_GAP",
    "WINDOW_SLOTS",
    "GeneratedVideo",
    "SamplerConfig",
    "TwoStageSampler",
    "WindowPlan",
    "classifier_free_guidance",
    "plan_stage1",
    "plan_stage2",
    "replace_known",
    "window_fps",
]

#: frame rate of the render timeline (context and keys), fps.
RENDER_FPS = 30
#: stage-1 frame rate (fps condition), fps.
COARSE_FPS = 5
#: stage-2 frame rate (fps condition and output rate), fps.
FINE_FPS = 15
#: frames the denoiser sees at once.
WINDOW_SLOTS = 16
#: longest gap (s) one window pair samples: its fine window's fps condition is then 15 / 2 ≈ 8, near the low
#: end of what DynamiCrafter-512 was trained on (its recommended 15-30, the interpolation scripts' 5).
MAX_GAP_SECONDS = 2.0
#: a gap shorter than this (s) is sampled as if it were this long: the fine condition stays at 30 fps, the top
#: of the trained range (ICAdapt's fastest clips), and the window shows the move in slow motion, which the
#: mimicked motion plays back at the gap's own speed (a gap of a few frames is mostly its keys anyway).
SHORTEST_SAMPLED_GAP = 0.5


def window_fps(base: float, gap_seconds: float) -> float:
    """The fps condition of a window that shows a gap of ``gap_seconds`` as one 30-frame second at ``base`` fps
    (`COARSE_FPS` or `FINE_FPS`): ``base / L`` with ``L`` clamped to [`SHORTEST_SAMPLED_GAP`, `MAX_GAP_SECONDS`],
    rounded to a whole fps (the condition DynamiCrafter was trained on is an integer)."""
    seconds = min(max(gap_seconds, SHORTEST_SAMPLED_GAP), MAX_GAP_SECONDS)
    return float(max(1, math.floor(base / seconds + 0.5)))


@dataclass(frozen=True)
class WindowPlan:
    """One denoiser window: which frame sits in each slot and how it is constrained.

    Attributes:
        stage: 1 (coarse) or 2 (fine).
        gap: index of the keyframe gap this window fills.
        fps: the fps condition given to the denoiser.
        frames: ``WINDOW_SLOTS`` frame indices (30 fps timeline), slot → frame.
        mask: slots replaced by noised known latents while ``t > onlykey``.
        keymask: slots replaced at every step (a subset of ``mask``: real context/key frames).
        writes: slots whose denoised latents become frames ``frames[slot]``.
    """

    stage: int
    gap: int
    fps: float
    frames: tuple[int, ...]
    mask: tuple[bool, ...]
    keymask: tuple[bool, ...]
    writes: tuple[int, ...]

    @property
    def preview_slot(self) -> int:
        """The slot whose frame previews the finished window: the middle one it writes."""
        return self.writes[len(self.writes) // 2]


def _check_timeline(context_end: int, num_gaps: int) -> None:
    if context_end < 2 * RENDER_FPS:
        raise InvalidInput(
            "context",
            f"two-stage sampling needs at least 2 s of context ({2 * RENDER_FPS + 1} frames at "
            f"{RENDER_FPS} fps); got frames 0..{context_end}. Extend the context range.",
        )
    if num_gaps < 1:
        raise InvalidInput("keyframes", f"need at least one keyframe after the context; got {num_gaps}")


def _keys(context_end: int, num_gaps: int) -> set[int]:
    return {context_end + RENDER_FPS * j for j in range(num_gaps + 1)}


def _gap_seconds(num_gaps: int, gap_seconds: Sequence[float] | None) -> Sequence[float]:
    if gap_seconds is None:
        return (1.0,) * num_gaps
    if len(gap_seconds) != num_gaps:
        raise InvalidInput("gap_seconds", f"one length per gap: {num_gaps} gaps, got {len(gap_seconds)} lengths")
    return gap_seconds


def plan_stage1(context_end: int, num_gaps: int, gap_seconds: Sequence[float] | None = None) -> list[WindowPlan]:
    """Coarse windows (Algorithm 2, lines 1-14), in the order they must run.

    Window ``g`` holds frames ``key_g − 60 + 6·i`` for slots ``i = 0 … 15``. Real frames (context, keys) in
    slots 1-14 go to ``mask`` and ``keymask``; frames written by earlier windows go to ``mask`` only; frames
    inside gap ``g`` are generated and written. For ``context_end = 60`` this is the reference's layout:
    gap 0 keymask = slots 1-10, gap 1 keymask = slots 1-5 and 10 (slots 6-9 earlier output), gap ≥ 2 keymask
    = slots 5 and 10; slots 11-14 written as frames ``key_g + 6 … + 24``.

    Args:
        context_end: last context frame (= the opening key of gap 0), at least 60.
        num_gaps: number of keyframes after the context.
        gap_seconds: each gap's real length (s) for its window's fps condition (`window_fps`); default 1 s.
    """
    _check_timeline(context_end, num_gaps)
    seconds = _gap_seconds(num_gaps, gap_seconds)
    spacing = RENDER_FPS // COARSE_FPS
    keys = _keys(context_end, num_gaps)
    written: set[int] = set()
    plans = []
    for g in range(num_gaps):
        key_g = context_end + RENDER_FPS * g
        frames = tuple(key_g - 2 * RENDER_FPS + spacing * i for i in range(WINDOW_SLOTS))
        real = [f <= context_end or f in keys for f in frames]
        inner = range(1, WINDOW_SLOTS - 1)
        keymask = tuple(i in inner and real[i] for i in range(WINDOW_SLOTS))
        mask = tuple(keymask[i] or (i in inner and frames[i] in written) for i in range(WINDOW_SLOTS))
        writes = tuple(i for i in inner if key_g < frames[i] < key_g + RENDER_FPS)
        written.update(frames[i] for i in writes)
        plans.append(WindowPlan(1, g, window_fps(COARSE_FPS, seconds[g]), frames, mask, keymask, writes))
    return plans


def plan_stage2(context_end: int, num_gaps: int, gap_seconds: Sequence[float] | None = None) -> list[WindowPlan]:
    """Fine windows (Algorithm 2, lines 15-20); independent of each other.

    Window ``g`` holds frames ``key_g + 2·i``: slots 0 and 15 are the gap's keys, slots 3, 6, 9, 12 hold the
    stage-1 frames (``mask`` only, so they guide only while ``t > onlykey``), ``keymask`` is empty and slots
    1-14 are written. ``gap_seconds`` as `plan_stage1`'s.
    """
    _check_timeline(context_end, num_gaps)
    seconds = _gap_seconds(num_gaps, gap_seconds)
    spacing = RENDER_FPS // FINE_FPS
    if spacing * (WINDOW_SLOTS - 1) != RENDER_FPS:
        raise ValueError(f"a fine window of {WINDOW_SLOTS} slots must span exactly 1 s at {FINE_FPS} fps")
    coarse = {f for p in plan_stage1(context_end, num_gaps) for f in (p.frames[i] for i in p.writes)}
    plans = []
    for g in range(num_gaps):
        key_g = context_end + RENDER_FPS * g
        frames = tuple(key_g + spacing * i for i in range(WINDOW_SLOTS))
        mask = tuple(0 < i < WINDOW_SLOTS - 1 and frames[i] in coarse for i in range(WINDOW_SLOTS))
        plans.append(
            WindowPlan(2, g, window_fps(FINE_FPS, seconds[g]), frames, mask, (False,) * WINDOW_SLOTS, tuple(range(1, 15)))
        )
    return plans


def replace_known(
    x_t: torch.Tensor,
    known_latents: torch.Tensor,
    mask: torch.Tensor,
    t: int | torch.Tensor,
    schedule: DDIMSchedule,
    noise: torch.Tensor,
) -> torch.Tensor:
    """Guided inpainting (Algorithm 2, line 7): ``z'_t = mask · q(z_known, t) + (1 − mask) · z_t``.

    Args:
        x_t: current latents ``(B, C, T, h, w)`` at noise level ``t``.
        known_latents: VAE latents of the guidance frames, same shape (values outside ``mask`` unused).
        mask: bool, broadcastable to ``x_t`` (typically ``(B, 1, T, 1, 1)``); True = known.
        t: the noise level of ``x_t``; ``-1`` (after the last step) inserts the clean latents.
        schedule: gives ``q(x_t | x_0)``.
        noise: ``ε`` for the known latents, shape of ``x_t``.
    """
    return torch.where(mask, schedule.add_noise(known_latents, noise, t).to(x_t.dtype), x_t)


def classifier_free_guidance(
    cond_out: torch.Tensor, uncond_out: torch.Tensor, scale: float, rescale: float
) -> torch.Tensor:
    """CFG ``u + w (c − u)``, then the std-matching rescale of arXiv 2305.08891 (eq. 15-16) by ``rescale``.

    Args:
        cond_out, uncond_out: model outputs ``(B, ...)``.
        scale: guidance weight ``w`` (7.5 in the reference).
        rescale: ``φ`` in [0, 1] (0.7 in the reference; 0 = plain CFG).
    """
    guided = uncond_out + scale * (cond_out - uncond_out)
    if rescale > 0:
        dims = tuple(range(1, cond_out.ndim))
        ratio = cond_out.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True).clamp(min=1e-12)
        guided = rescale * guided * ratio + (1.0 - rescale) * guided
    return guided


@dataclass(frozen=True)
class SamplerConfig:
    """Settings of `TwoStageSampler`; defaults are the reference sampler's.

    Attributes:
        num_steps: DDIM steps per window (50).
        guidance_scale: classifier-free guidance weight (7.5; 1 disables the unconditional pass).
        guidance_rescale: std-matching rescale ``φ`` (0.7).
        eta: DDIM ``η`` (1.0).
        onlykey: above this timestep every known slot is inpainted, below it only real frames (750).
        stage2_batch: fine windows denoised together (they are independent); 1 = one at a time.
        autocast_dtype: ``"bf16"``, ``"fp16"`` or ``"fp32"`` (no autocast) for the denoiser on CUDA.
        seed: RNG seed of the initial and inpainting noise.
        compile: run the denoiser through ``torch.compile`` (about 2× faster per step on an H100 at full
            size, after a one-time compile of minutes: worth it in a long-lived server, not for one job; use
            ``stage2_batch=1`` so that one graph serves every window).
    """

    num_steps: int = 50
    guidance_scale: float = 7.5
    guidance_rescale: float = 0.7
    eta: float = 1.0
    onlykey: int = 750
    stage2_batch: int = 6
    autocast_dtype: str = "bf16"
    seed: int = 123
    compile: bool = False

    def __post_init__(self) -> None:
        if self.num_steps < 1:
            raise InvalidInput("num_steps", f"must be ≥ 1, got {self.num_steps}")
        if self.stage2_batch < 1:
            raise InvalidInput("stage2_batch", f"must be ≥ 1, got {self.stage2_batch}")
        if self.autocast_dtype not in AUTOCAST_DTYPES:
            raise InvalidInput("autocast_dtype", f"expected one of {tuple(AUTOCAST_DTYPES)}, got {self.autocast_dtype!r}")


@dataclass
class GeneratedVideo:
    """The sampler's result.

    Attributes:
        frames: ``(3, N, H, W)`` in [0, 1]: every 15 fps frame from ``context_end + 2`` to the last key
            (keys included, copied from the input).
        indices: ``(N,)`` int64 frame indices on the 30 fps timeline.
    """

    frames: torch.Tensor
    indices: torch.Tensor


class TwoStageSampler:
    """Algorithm 2 over a `VideoPrior`, with classifier-free guidance and guided inpainting.

    Args:
        prior: the (adapted) video prior.
        schedule: the diffusion schedule (its prediction type must match the prior's).
        cfg: sampling settings.
    """

    def __init__(self, prior: VideoPrior, schedule: DDIMSchedule, cfg: SamplerConfig | None = None) -> None:
        if prior.prediction_type != schedule.prediction_type:
            raise ValueError(
                f"prior predicts {prior.prediction_type!r} but the schedule expects "
                f"{schedule.prediction_type!r}"
            )
        if prior.num_frames != WINDOW_SLOTS:
            raise ValueError(
                f"the two-stage layout needs a {WINDOW_SLOTS}-frame prior, got {prior.num_frames}"
            )
        self.prior = prior
        self.schedule = schedule
        self.cfg = cfg or SamplerConfig()
        # A compiled bound method keeps the protocol: any backend's `predict` can be compiled.
        self._predict = torch.compile(prior.predict) if self.cfg.compile else prior.predict

    # ---------------------------------------------------------------- inputs
    def check_inputs(self, context: torch.Tensor, keys: torch.Tensor) -> None:
        """Fail early on shapes: ``context (3, C, H, W)``, ``keys (3, K, H, W)``, H and W multiples of the
        VAE factor. The fields are named ``context_images`` and ``key_images``, not after the job request's
        ``context`` and ``keyframes``: in a job these images are renders the server made, so a failure here is
        the server's (`anymole.service.errors.failed_event`)."""
        if context.ndim != 4 or context.shape[0] != 3:
            raise InvalidInput("context_images", f"expected (3, frames, H, W), got {tuple(context.shape)}")
        if keys.ndim != 4 or keys.shape[0] != 3 or keys.shape[2:] != context.shape[2:]:
            raise InvalidInput(
                "key_images",
                f"expected (3, K, {context.shape[2]}, {context.shape[3]}), got {tuple(keys.shape)}",
            )
        f = self.prior.vae_scale_factor
        if context.shape[2] % f or context.shape[3] % f:
            raise InvalidInput(
                "context_images", f"height and width must be multiples of {f}, got {context.shape[2:]}"
            )
        _check_timeline(context.shape[1] - 1, keys.shape[1])

    def _autocast(self, device: torch.device) -> torch.autocast:
        return autocast(device, self.cfg.autocast_dtype)

    # ---------------------------------------------------------------- sampling
    @torch.no_grad()
    def __call__(
        self,
        context: torch.Tensor,
        keys: torch.Tensor,
        prompt: str,
        on_step: OnStep | None = None,
        gap_seconds: Sequence[float] | None = None,
    ) -> GeneratedVideo:
        """Generate the in-between video.

        Args:
            context: ``(3, C, H, W)`` in [0, 1], frames ``0 … C−1`` at 30 fps (``C ≥ 61``).
            keys: ``(3, K, H, W)`` in [0, 1], keyframe ``j`` at frame ``C − 1 + 30·(j + 1)``.
            prompt: the scene caption.
            on_step: ``on_step("sample_video", fraction)`` as steps finish, and
                ``on_step("sample_video", fraction, preview=image, frame=f)`` as each window finishes: ``image``
                ``(3, H, W)`` in [0, 1] is render-timeline frame ``f``, the middle of the frames it wrote.
            gap_seconds: each gap's real length (s), for its windows' fps condition (`window_fps`); default 1 s.
        """
        self.check_inputs(context, keys)
        cfg, device = self.cfg, context.device
        context_end, num_gaps = context.shape[1] - 1, keys.shape[1]
        stage1 = plan_stage1(context_end, num_gaps, gap_seconds)
        stage2 = plan_stage2(context_end, num_gaps, gap_seconds)
        pixels = {i: context[:, i] for i in range(context_end + 1)}
        pixels.update({context_end + RENDER_FPS * (j + 1): keys[:, j] for j in range(num_gaps)})
        latents = self._encode_known(pixels, stage1 + stage2)
        generator = torch.Generator(device).manual_seed(cfg.seed)
        batches = [[p] for p in stage1]
        batches += [stage2[i : i + cfg.stage2_batch] for i in range(0, num_gaps, cfg.stage2_batch)]
        total = sum(len(b) for b in batches) * cfg.num_steps
        done = 0

        def progress(window_steps: int) -> None:
            nonlocal done
            done += window_steps
            if on_step is not None:
                on_step("sample_video", done / total)

        for plans in batches:
            x = self.denoise_windows(plans, pixels, latents, prompt, generator, progress)
            for b, p in enumerate(plans):
                latents.update({p.frames[i]: x[b, :, i] for i in p.writes})
            self._finish(plans, x, pixels, on_step, done / total)
        indices = list(
            range(context_end + RENDER_FPS // FINE_FPS, context_end + RENDER_FPS * num_gaps + 1, 2)
        )
        return GeneratedVideo(
            frames=torch.stack([pixels[i] for i in indices], dim=1),
            indices=torch.tensor(indices, dtype=torch.long),
        )

    @torch.no_grad()
    def denoise_windows(
        self,
        plans: list[WindowPlan],
        pixels: dict[int, torch.Tensor],
        latents: dict[int, torch.Tensor],
        prompt: str,
        generator: torch.Generator,
        progress: Callable[[int], None] | None = None,
    ) -> torch.Tensor:
        """Run the full reverse process for a batch of windows (Algorithm 2, lines 3-10).

        Args:
            plans: windows of one stage; their first and last slots must be real frames in ``pixels``.
            pixels: frame → ``(3, H, W)`` real frames (context and keys).
            latents: frame → ``(C, h, w)`` latents of every frame some ``mask`` slot names.
            prompt: the scene caption.
            generator: RNG for the initial, DDIM and inpainting noise (on the device of ``pixels``).
            progress: called with the number of window-steps done after each step.

        Returns:
            ``(B, C, 16, h, w)`` clean latents; slots under ``keymask`` equal their known latents exactly.
        """
        cfg, prior = self.cfg, self.prior
        first = torch.stack([pixels[p.frames[0]] for p in plans])
        last = torch.stack([pixels[p.frames[-1]] for p in plans])
        device = first.device
        x = self._prepare_latents(len(plans), first.shape[2:], device, generator)
        fps = torch.tensor([p.fps for p in plans], device=device)
        guided = cfg.guidance_scale != 1.0
        with self._autocast(device):
            cond = prior.condition([prompt] * len(plans), first, last, fps, num_frames=WINDOW_SLOTS)
            if guided:  # one batched pass: [conditional; unconditional]
                cond = cond.cat(prior.unconditional(cond))
        known, mask, keymask = self._guidance(plans, latents, x)
        self.schedule.set_timesteps(cfg.num_steps, device)
        timesteps = self.schedule.timesteps
        assert timesteps is not None  # set just above
        for t in timesteps.tolist():
            model_in = torch.cat([x, x]) if guided else x
            t_batch = torch.full((model_in.shape[0],), t, device=device, dtype=torch.long)
            with self._autocast(device):
                out = self._predict(model_in, t_batch, cond).float()
            if guided:
                cond_out, uncond_out = out.chunk(2)
                out = classifier_free_guidance(cond_out, uncond_out, cfg.guidance_scale, cfg.guidance_rescale)
            x = self.schedule.step(out, t, x, eta=cfg.eta, generator=generator).prev_sample
            noise = torch.randn(x.shape, generator=generator, device=device)
            active = mask if t > cfg.onlykey else keymask
            x = replace_known(x, known, active, self.schedule.prev_timestep(t), self.schedule, noise)
            if progress is not None:
                progress(len(plans))
        return x

    def _prepare_latents(
        self, batch: int, size: torch.Size, device: torch.device, generator: torch.Generator
    ) -> torch.Tensor:
        f = self.prior.vae_scale_factor
        shape = (batch, self.prior.latent_channels, WINDOW_SLOTS, size[0] // f, size[1] // f)
        return torch.randn(shape, generator=generator, device=device)

    def _encode_known(
        self, pixels: dict[int, torch.Tensor], plans: list[WindowPlan]
    ) -> dict[int, torch.Tensor]:
        """VAE-encode, once, every real frame some window inpaints. Returns frame → ``(C, h, w)`` latents."""
        needed = sorted(
            {p.frames[i] for p in plans for i in range(WINDOW_SLOTS) if p.mask[i] and p.frames[i] in pixels}
        )
        video = torch.stack([pixels[i] for i in needed], dim=1)[None]  # (1, 3, N, H, W)
        with self._autocast(video.device):
            z = self.prior.encode(video)[0].float()  # the backend bounds its own memory
        return {f: z[:, k] for k, f in enumerate(needed)}

    @staticmethod
    def _guidance(
        plans: list[WindowPlan], latents: dict[int, torch.Tensor], like: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Known latents ``(B, C, T, h, w)`` and the two masks ``(B, 1, T, 1, 1)`` for a batch of windows."""
        known = torch.zeros_like(like)
        for b, p in enumerate(plans):
            for i in range(WINDOW_SLOTS):
                if p.mask[i]:
                    known[b, :, i] = latents[p.frames[i]]

        def as_mask(rows: list[tuple[bool, ...]]) -> torch.Tensor:
            return torch.tensor(rows, device=like.device).reshape(len(rows), 1, WINDOW_SLOTS, 1, 1)

        return known, as_mask([p.mask for p in plans]), as_mask([p.keymask for p in plans])

    def _finish(
        self,
        plans: list[WindowPlan],
        x: torch.Tensor,
        pixels: dict[int, torch.Tensor],
        on_step: OnStep | None,
        fraction: float,
    ) -> None:
        """Decode what the windows wrote (stage 2) or one preview frame (stage 1) and emit the previews."""
        for b, p in enumerate(plans):
            mid = p.preview_slot
            if p.stage == 2:
                slots = list(p.writes)
                with self._autocast(x.device):
                    video = self.prior.decode(x[b : b + 1, :, slots])[0].float().clamp(0, 1)
                pixels.update({p.frames[i]: video[:, k] for k, i in enumerate(slots)})
                preview = video[:, slots.index(mid)]
            elif on_step is not None:
                with self._autocast(x.device):
                    preview = self.prior.decode(x[b : b + 1, :, mid : mid + 1])[0, :, 0].float().clamp(0, 1)
            else:
                continue
            if on_step is not None:
                on_step("sample_video", fraction, preview=preview, frame=p.frames[mid])
