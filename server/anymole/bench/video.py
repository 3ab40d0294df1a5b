"""`anymole bench video`, the runner: ICAdapt and two-stage sampling speed of the video prior, with random weights.

Speed does not depend on the weights' values, so the full-size DynamiCrafter architecture with random
weights measures what the real checkpoint would cost. Long loops are extrapolated from timed pieces, and the
results say so:

- *Sampling*: the real `TwoStageSampler` runs for 1 … 6 gaps (15 … 90 generated frames) with 2 DDIM steps,
  which includes every per-window cost (conditioning, VAE encode of guidance, decode, previews). Each
  further step costs one denoiser call per stage-1 window plus one per stage-2 batch, timed separately at
  each batch size, so ``T(g, S) = T(g, 2) + (S − 2) · (g · s₁ + s₂(g))``. One run at more steps checks the
  extrapolation.
- *ICAdapt*: a few optimiser steps (after one warm-up step) of each variant (training mode, checkpointing,
  micro-batch, compile); 500 steps = 500 × the mean step time, plus for compiled variants the one-time compile
  (first step minus a regular one), paid once per run.

Results go to a JSON file (`docs/benchmarks/video.json`) and to the "Video prior" section of
`docs/benchmarks.md`, replaced in place (`anymole.bench.video_summary`, `anymole.bench.video_report`).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from anymole.video import attention
from anymole.video.clips import ClipBank, gather_clips
from anymole.video.icadapt import ICAdaptConfig, icadapt
from anymole.video.prior import VideoCondition, VideoPrior
from anymole.video.sampler import WINDOW_SLOTS, SamplerConfig, TwoStageSampler
from anymole.video.schedule import DDIMSchedule

__all__ = [
    "PAPER_TABLE1_MIN",
    "REFERENCE_H100",
    "VideoBenchConfig",
    "device_name",
    "run_video_bench",
]

#: AnyMoLe supplementary Table 1: two-stage inference minutes for 15 … 90 generated frames (A6000).
PAPER_TABLE1_MIN = {15: 2.43, 30: 3.58, 45: 4.78, 60: 5.97, 75: 7.13, 90: 8.08}
#: the issue's measurements of the public reference code on one H100 with random weights.
REFERENCE_H100 = {
    "window_50_steps_s": 12.0,
    "denoiser_step_s": 0.235,
    "sampling_mem_gib": 13.5,
    "icadapt_microbatch4_s": 1.9,
    "icadapt_mem_gib": 43.0,
    "icadapt_500_steps_min": 33.0,
}
GIB = 2**30

PriorFactory = Callable[[torch.dtype], VideoPrior]
Say = Callable[[str], None]
#: clips of one ICAdapt optimiser step (the recipe's): every variant trains on exactly this many.
CLIPS_PER_STEP = 8
#: ICAdapt variant: (mode, checkpointing "full" | "selective" | "none", clips per micro-batch, compile: False,
#: True (whole denoiser, ``ICAdaptConfig.compile``), a float (the same with that ``compile_memory_budget``) or
#: "regional" (per block, ``ICAdaptConfig.compile_blocks``)).
Variant = tuple[str, str, int, bool | str | float]
#: trained sets that are the reference's (ICAdaptConfig.reference); the others are partial fine-tunes.
REFERENCE_MODES = ("spatial",)
FAST_MODES = ("decoder", "lora", "lora_decoder", "lora_top")


@dataclass(frozen=True)
class VideoBenchConfig:
    """What the video benchmark measures.

    Attributes:
        model: ``"full"`` (DynamiCrafter 512) or ``"tiny"`` (CPU dry run).
        device: torch device.
        gaps: keyframe gaps sampled (15 generated frames each).
        sampler_steps: DDIM step counts reported (the first is the default `SamplerConfig`'s).
        denoiser_calls: timed denoiser calls per measurement (after one warm-up call).
        icadapt_steps: timed ICAdapt optimiser steps per mode (after one warm-up step).
        icadapt_variants: `Variant` s to time, in order (8 clips a step); ``("spatial", "full", 8, False)`` is
            the `ICAdaptConfig` default, ``("spatial", "full", 4, False)`` the reference trainer's 4 × 2 split.
        compile: also time the UNet under ``torch.compile`` (one window shape).
        budget_s: optional measurements are skipped once this much time has passed.
        phases: ``"sampling"`` (eager, extrapolated), ``"compiled"`` (end-to-end 90 frames with a compiled
            denoiser, measured), ``"icadapt"``.
    """

    model: str = "full"
    device: str = "cuda"
    gaps: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    sampler_steps: tuple[int, ...] = (50, 25)
    denoiser_calls: int = 4
    icadapt_steps: int = 2
    icadapt_variants: tuple[Variant, ...] = (
        ("spatial", "full", 4, False),
        ("spatial", "full", 8, False),
        ("decoder", "full", 8, False),
        ("spatial", "selective", 4, False),
        ("decoder", "full", 4, False),
        ("decoder", "selective", 4, True),
    )
    compile: bool = True
    budget_s: float = 420.0
    phases: tuple[str, ...] = ("sampling", "compiled", "icadapt")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _window_inputs(
    prior: VideoPrior, windows: int, size: tuple[int, int], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, VideoCondition]:
    """Noisy latents, timesteps and CFG-batched conditioning for ``windows`` windows (batch ``2·windows``)."""
    f = prior.vae_scale_factor
    g = torch.Generator(device).manual_seed(0)
    x = torch.randn(
        2 * windows,
        prior.latent_channels,
        WINDOW_SLOTS,
        size[0] // f,
        size[1] // f,
        generator=g,
        device=device,
    )
    image = torch.rand(windows, 3, *size, generator=g, device=device)
    fps = torch.full((windows,), 15.0, device=device)
    with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
        cond = prior.condition(["a character walking"] * windows, image, image, fps, num_frames=WINDOW_SLOTS)
        both = cond.cat(prior.unconditional(cond))
    return x, torch.full((2 * windows,), 500, device=device, dtype=torch.long), both


def _time_denoiser(
    prior: VideoPrior,
    windows: int,
    size: tuple[int, int],
    device: torch.device,
    calls: int,
    autocast: bool = True,
) -> float:
    """Seconds per denoiser call on ``windows`` CFG windows (one warm-up call first)."""
    x, t, cond = _window_inputs(prior, windows, size, device)
    with (
        torch.no_grad(),
        torch.autocast(device.type, torch.bfloat16, enabled=autocast and device.type == "cuda"),
    ):
        prior.predict(x, t, cond)
        _sync(device)
        start = time.perf_counter()
        for _ in range(calls):
            prior.predict(x, t, cond)
        _sync(device)
    return (time.perf_counter() - start) / calls


def _scene(gaps: int, size: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator(device).manual_seed(1)
    return (
        torch.rand(3, 61, *size, generator=g, device=device),
        torch.rand(3, gaps, *size, generator=g, device=device),
    )


def _time_sampler(prior: VideoPrior, schedule: DDIMSchedule, gaps: int, steps: int, size, device) -> float:
    context, keys = _scene(gaps, size, device)
    sampler = TwoStageSampler(prior, schedule, SamplerConfig(num_steps=steps))
    _sync(device)
    start = time.perf_counter()
    sampler(context, keys, "a character walking")
    _sync(device)
    return time.perf_counter() - start


def _sampling(
    cfg: VideoBenchConfig, prior: VideoPrior, schedule: DDIMSchedule, size, device, out, say, over
) -> None:
    """Denoiser step times (batch sizes, attention kernels, compile) and two-stage sampling times."""
    stage2_batch = SamplerConfig().stage2_batch
    calls = cfg.denoiser_calls
    _reset_peak(device)
    step = {
        b: _time_denoiser(prior, b, size, device, calls)
        for b in sorted({1, *(min(g, stage2_batch) for g in cfg.gaps)})
    }
    out["denoiser_step_s"] = {str(b): step[b] for b in step}
    say(f"denoiser step, bf16 + SDPA: {step[1]:.3f} s (1 window, CFG batch 2)")
    variants: dict[str, Any] = {"bf16_sdpa": step[1]}
    if not over():
        previous = attention.get_backend()
        attention.set_backend("math")
        try:
            variants["bf16_math_attention"] = _time_denoiser(prior, 1, size, device, calls)
        except torch.OutOfMemoryError:
            variants["bf16_math_attention"] = "out of memory"
        finally:
            attention.set_backend(previous)
            _reset_peak(device)
        say(f"denoiser step, bf16 + math attention: {variants['bf16_math_attention']}")
    # Two-stage sampling, measured at 2 steps and extrapolated.
    base = {}
    for g in cfg.gaps:
        base[g] = _time_sampler(prior, schedule, g, 2, size, device)
        say(f"two-stage sampler, {15 * g} frames at 2 steps: {base[g]:.2f} s")
    per_step = {  # one stage-1 window per gap, stage-2 windows in batches of `stage2_batch`
        g: g * step[1] + sum(step[min(stage2_batch, g - s)] for s in range(0, g, stage2_batch))
        for g in cfg.gaps
    }
    sampling: dict[str, dict[str, float]] = {}
    for steps in cfg.sampler_steps:
        sampling[str(steps)] = {str(15 * g): base[g] + (steps - 2) * per_step[g] for g in cfg.gaps}
    out["sampling_s"] = sampling
    out["sampling_measured_2_steps_s"] = {str(15 * g): base[g] for g in cfg.gaps}
    g0, s_check = cfg.gaps[0], 10
    measured = _time_sampler(prior, schedule, g0, s_check, size, device)
    say(f"extrapolation check, {15 * g0} frames at {s_check} steps: {measured:.2f} s")
    out["extrapolation_check"] = {
        "frames": 15 * g0,
        "steps": s_check,
        "measured_s": measured,
        "predicted_s": base[g0] + (s_check - 2) * per_step[g0],
    }
    # What batching the independent stage-2 windows bought: the same, one window at a time.
    g_max = max(cfg.gaps)
    steps0 = cfg.sampler_steps[0]
    unbatched = base[g_max] + (steps0 - 2) * 2 * g_max * step[1]
    out["sample_90_frames_unbatched_stage2_s"] = unbatched
    out["sampling_peak_mem_gib"] = _peak_gib(device)
    if cfg.compile and not over() and device.type == "cuda":
        unet = getattr(prior, "unet", None)
        if isinstance(unet, torch.nn.Module):
            start = time.perf_counter()
            unet.compile()
            try:
                x, t, cond = _window_inputs(prior, 1, size, device)
                with torch.no_grad(), torch.autocast(device.type, torch.bfloat16):
                    prior.predict(x, t, cond)
                _sync(device)
                variants["compile_warmup_s"] = time.perf_counter() - start
                variants["bf16_sdpa_compiled"] = _time_denoiser(prior, 1, size, device, calls)
            except Exception as exc:  # compile support varies by torch build: record, do not fail the bench
                variants["bf16_sdpa_compiled"] = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
            finally:
                torch._dynamo.reset()  # drop compiled graphs (and their hold on this prior)
            say(f"denoiser step, compiled: {variants['bf16_sdpa_compiled']}")
    out["denoiser_variants_s"] = variants


def _icadapt(
    cfg: VideoBenchConfig, make_prior: PriorFactory, size, device, out, say, over, on_partial
) -> None:
    """ICAdapt step times and memory per variant (fp32 master weights, bf16 autocast)."""
    prior = make_prior(torch.float32)
    if "sampling" in cfg.phases:  # the fp32 row of "what each change bought" (inference)
        out.setdefault("denoiser_variants_s", {})["fp32_sdpa"] = _time_denoiser(
            prior, 1, size, device, cfg.denoiser_calls, autocast=False
        )
        say(f"denoiser step, fp32: {out['denoiser_variants_s']['fp32_sdpa']:.3f} s")
    out["icadapt_device"] = device_name(device)
    # One clip per start frame: exactly CLIPS_PER_STEP clips, so every split of a step trains all of them (a
    # micro-batch larger than the bank silently shrinks to it: 20 frames gave 5 clips, and 8 × 1 trained 5).
    frames = WINDOW_SLOTS - 1 + CLIPS_PER_STEP
    videos = torch.rand(1, 3, frames, *size, generator=torch.Generator(device).manual_seed(2), device=device)
    bank = ClipBank(videos, gather_clips(1, frames, k=WINDOW_SLOTS, strides=(1,)), "a character walking")
    results: dict[str, Any] = {}
    out["icadapt"] = results
    adapted: str | None = None  # the LoRA mode whose adapters `prior` holds
    for i, (mode, ckpt, batch, compiled) in enumerate(cfg.icadapt_variants):
        if i > 0 and over():
            break
        if adapted not in (None, mode):  # adapters stay once injected: they would run in this variant's steps
            del prior
            prior = make_prior(torch.float32)
        adapted = mode if mode.startswith("lora") else None
        name = _variant_name(mode, ckpt, batch, compiled)
        stamps: list[float] = []

        def on_step(
            stage: str,
            fraction: float,
            message: str = "",
            *,
            preview: object = None,
            frame: int = 0,
            stamps: list[float] = stamps,
        ) -> None:
            # Stamps after the warm-up step and after the last one only: synchronising every step would time
            # the host's wait for each step, which ICAdapt itself avoids.
            if not stamps or fraction >= 1.0:
                _sync(device)
                stamps.append(time.perf_counter())

        _reset_peak(device)
        run_cfg = ICAdaptConfig(
            steps=1 + cfg.icadapt_steps,
            mode=mode,
            gradient_checkpointing=ckpt != "none",
            selective_checkpointing=ckpt == "selective",
            compile=compiled is True or isinstance(compiled, float),
            compile_blocks=compiled == "regional",
            compile_memory_budget=compiled if isinstance(compiled, float) else 1.0,
            batch_size=batch,
            grad_accum=CLIPS_PER_STEP // batch,
        )
        try:
            start = time.perf_counter()
            summary = icadapt(prior, bank, run_cfg, on_step=on_step)
            step = (stamps[-1] - stamps[0]) / cfg.icadapt_steps
            results[name] = {
                "mode": mode,
                "clips_per_step": min(batch, len(bank)) * run_cfg.grad_accum,
                "step_s": step,
                "first_step_s": stamps[0] - start,
                "trainable_parameters": summary.trainable_parameters,
                "peak_mem_gib": _peak_gib(device),
            }
            if compiled:  # one-time cost of the run: the first optimiser step's excess over a regular one
                results[name]["compile_s"] = summary.first_step_seconds - step
                results[name] |= _warm_compile(prior, bank, run_cfg, step)
        except Exception as exc:  # e.g. compile support varies by torch build: record, measure the rest
            results[name] = {"step_s": None, "error": _failure(exc)}
        finally:
            if compiled:
                torch._dynamo.reset()
        say(f"ICAdapt {name}: {results[name]}")
        _reset_peak(device)
        if on_partial is not None:
            on_partial(out)
    del prior


def _warm_compile(prior: VideoPrior, bank: ClipBank, run_cfg: ICAdaptConfig, step: float) -> dict[str, Any]:
    """The compile of a compiled variant again, with torch's on-disk caches filled (FX graph, AOT autograd,
    autotuning), as a server restarted on the same machine pays it: dynamo forgets its graphs, the caches stay.
    ``{"compile_warm_s": …}``, or ``{"compile_warm_error": …}`` beside the variant's other figures."""
    torch._dynamo.reset()
    try:
        again = icadapt(prior, bank, dataclasses.replace(run_cfg, steps=1))
    except Exception as exc:  # as for the variant itself: record it, keep the cold measurement
        return {"compile_warm_error": _failure(exc)}
    return {"compile_warm_s": again.first_step_seconds - step}


def _failure(exc: Exception) -> str:
    """How a measurement that raised ``exc`` is recorded: ``"out of memory"``, or the error's type and the
    start of its message."""
    if isinstance(exc, torch.OutOfMemoryError):
        return "out of memory"
    return f"{type(exc).__name__}: {str(exc)[:300]}"


_CKPT_SUFFIX = {"full": "", "selective": "_sac", "none": "_no_ckpt"}
_COMPILE_SUFFIX = {False: "", True: "_compiled", "regional": "_regional"}


def _variant_name(mode: str, ckpt: str, batch: int, compiled: bool | str | float = False) -> str:
    """``spatial``, ``decoder_sac``, ``spatial_no_ckpt_b2x4``, ``decoder_sac_compiled``, ``decoder_b8x1_regional``
    … (8 clips a step; no micro-batch suffix means 4 × 2, the reference trainer's split, as the names of the
    recorded runs)."""
    micro = "" if batch == 4 else f"_b{batch}x{CLIPS_PER_STEP // batch}"
    suffix = f"_compiled_mem{round(100 * compiled)}" if isinstance(compiled, float) else _COMPILE_SUFFIX[compiled]
    return f"{mode}{_CKPT_SUFFIX[ckpt]}{micro}{suffix}"


def _default_variant() -> str:
    """The variant name of the plain `ICAdaptConfig()`."""
    d = ICAdaptConfig()
    ckpt = "none" if not d.gradient_checkpointing else "selective" if d.selective_checkpointing else "full"
    return _variant_name(d.mode, ckpt, d.batch_size, d.compile)

def device_name(device: torch.device) -> str:
    """The card's name as the results record it (the CPU's on a CPU run)."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"

def _compiled(
    cfg: VideoBenchConfig, prior: VideoPrior, schedule: DDIMSchedule, size, device, out, say
) -> None:
    """End-to-end two-stage sampling of the most frames with a compiled denoiser (one graph: stage2_batch=1),
    measured, after a warm-up call that pays the compile."""
    g = max(cfg.gaps)
    context, keys = _scene(g, size, device)
    res: dict[str, Any] = {"frames": 15 * g, "stage2_batch": 1}
    try:
        start = time.perf_counter()
        TwoStageSampler(prior, schedule, SamplerConfig(num_steps=1, stage2_batch=1, compile=True))(
            context, keys[:, :1], "a character walking"
        )
        _sync(device)
        res["compile_warmup_s"] = time.perf_counter() - start
        say(f"compiled sampler warm-up: {res['compile_warmup_s']:.1f} s")
        for steps in cfg.sampler_steps:
            sampler = TwoStageSampler(
                prior, schedule, SamplerConfig(num_steps=steps, stage2_batch=1, compile=True)
            )
            _sync(device)
            start = time.perf_counter()
            sampler(context, keys, "a character walking")
            _sync(device)
            res[str(steps)] = time.perf_counter() - start
            say(f"compiled sampler, {15 * g} frames at {steps} steps: {res[str(steps)]:.1f} s")
    except Exception as exc:  # compile support varies by torch build: record, do not fail the bench
        res["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    finally:
        torch._dynamo.reset()
    res["peak_mem_gib"] = _peak_gib(device)
    out["sampling_compiled_s"] = res


def run_video_bench(
    cfg: VideoBenchConfig,
    make_prior: PriorFactory | None = None,
    say: Say | None = None,
    on_partial: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark and return its results (see the module docstring for the method).

    Args:
        cfg: what to measure.
        make_prior: builds a prior with random weights in a given parameter dtype; default: DynamiCrafter at
            ``cfg.model`` size on ``cfg.device``.
        say: progress lines (the CLI prints them).
        on_partial: called with the results so far after each ICAdapt variant (to keep them if a run is cut).
    """
    from anymole.video.dynamicrafter import DynamiCrafterConfig, DynamiCrafterPrior

    say = say or (lambda _line: None)
    device = torch.device(cfg.device)
    model_cfg = DynamiCrafterConfig.full() if cfg.model == "full" else DynamiCrafterConfig.tiny()
    if make_prior is None:

        def make_prior(dtype: torch.dtype) -> VideoPrior:
            torch.manual_seed(0)
            return DynamiCrafterPrior(model_cfg, device=device, dtype=dtype).eval()

    size = tuple(model_cfg.resolution)
    schedule = DDIMSchedule(**model_cfg.scheduler_kwargs())
    started = time.perf_counter()

    def over() -> bool:
        return time.perf_counter() - started > cfg.budget_s

    out: dict[str, Any] = {
        "device": device_name(device),
        "torch": torch.__version__,
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "model": f"dynamicrafter-512-interp ({cfg.model}, random weights)",
        "resolution": list(size),
        "sampler_defaults": dataclasses.asdict(SamplerConfig()),
        "icadapt_defaults": dataclasses.asdict(ICAdaptConfig()),
        "bench_config": dataclasses.asdict(cfg),
        "method": (
            "sampling: real two-stage sampler at 2 DDIM steps per window, plus (steps-2) x timed denoiser calls "
            "per stage-1 window and per stage-2 batch; ICAdapt: mean of timed optimiser steps x 500"
        ),
    }
    if "sampling" in cfg.phases or "compiled" in cfg.phases:
        prior = make_prior(torch.bfloat16 if device.type == "cuda" else torch.float32)
        if "sampling" in cfg.phases:
            _sampling(cfg, prior, schedule, size, device, out, say, over)
            out["sampling_date"] = out["date"]
        if "compiled" in cfg.phases:
            _reset_peak(device)
            _compiled(cfg, prior, schedule, size, device, out, say)
            out["compiled_date"] = out["date"]
        del prior
        _reset_peak(device)
    if "icadapt" in cfg.phases:
        out["icadapt_date"] = out["date"]
        _icadapt(cfg, make_prior, size, device, out, say, over, on_partial)
    out["bench_seconds"] = time.perf_counter() - started
    return out
