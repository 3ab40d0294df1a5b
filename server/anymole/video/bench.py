"""`anymole bench video`: ICAdapt and two-stage sampling speed of the video prior, with random weights.

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
`docs/benchmarks.md`, replaced in place.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from anymole.errors import InvalidInput
from anymole.video import attention
from anymole.video.clips import ClipBank, gather_clips
from anymole.video.icadapt import ICAdaptConfig, icadapt
from anymole.video.prior import TRAIN_MODES, VideoCondition, VideoPrior
from anymole.video.sampler import WINDOW_SLOTS, SamplerConfig, TwoStageSampler
from anymole.video.schedule import DDIMSchedule

__all__ = [
    "PAPER_TABLE1_MIN",
    "VideoBenchConfig",
    "device_name",
    "merge",
    "run_video_bench",
    "summarize",
    "write_json",
    "write_markdown",
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
            stage: str, fraction: float, preview: object = None, stamps: list[float] = stamps
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


#: what a 500-step run pays for a compiled variant's compile: with empty caches (the first run on a machine),
#: with warm ones (a new process on a machine that compiled before) or nothing (a process that has compiled).
COMPILE_COSTS = ("empty", "warm", "none")


def _run_500_s(v: dict[str, Any], compile_cost: str = "empty") -> float | None:
    """Extrapolated seconds of a 500-step run of a measured variant: 500 steps + its one-time compile as
    ``compile_cost`` (one of `COMPILE_COSTS`; "warm" falls back to the empty-cache compile where unmeasured)."""
    step = v.get("step_s")
    compile_s = {
        "empty": v.get("compile_s"),
        "warm": v.get("compile_warm_s", v.get("compile_s")),
        "none": 0.0,
    }[compile_cost]
    return 500 * step + (compile_s or 0.0) if step else None


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


#: an H100's usable memory: variants that peak above it (on a bigger card) do not count as headline candidates.
H100_GIB = 79.0


def _mode_of(name: str, run: dict[str, Any]) -> str | None:
    """A variant's training mode: recorded with the run, or (older results) the longest mode its name starts
    with (``lora_decoder_b8x1`` is ``lora_decoder``, not ``lora``)."""
    named = [m for m in TRAIN_MODES if name == m or name.startswith(f"{m}_")]
    return run.get("mode") or max(named, key=len, default=None)


def _best(icadapt: dict[str, Any], modes: tuple[str, ...], compile_cost: str = "empty") -> str | None:
    """The variant of ``modes`` with the shortest extrapolated 500-step run (its compile paid as
    ``compile_cost``, see `COMPILE_COSTS`) that fits an H100 and trained the recipe's `CLIPS_PER_STEP` clips a
    step."""
    fits = {
        name: _run_500_s(v, compile_cost)
        for name, v in icadapt.items()
        if _mode_of(name, v) in modes
        and _run_500_s(v, compile_cost)
        and (v.get("peak_mem_gib") or 0.0) <= H100_GIB
        and v.get("clips_per_step") == CLIPS_PER_STEP
    }
    return min(fits, key=fits.__getitem__) if fits else None


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Fill the headline keys from the detailed ones (after one run or after `merge`).

    ICAdapt: ``icadapt_*`` is the best *reference-faithful* variant (the reference's trained set, recipe and 8
    clips a step; checkpointing and compile change speed, not the numbers), ``icadapt_fast_*`` the best partial
    fine-tune (`ICAdaptConfig.fast` and LoRA), ``icadapt_default_step_s`` the plain `ICAdaptConfig()`. Sampling:
    the `SamplerConfig` default (eager, its step count). ``peak_mem_gib``: the largest peak of those defaults
    and the reference-faithful headline."""
    r = dict(results)
    runs = r.get("icadapt", {})
    r["icadapt_default_step_s"] = runs.get(_default_variant(), {}).get("step_s")
    for prefix, modes in (("icadapt", REFERENCE_MODES), ("icadapt_fast", FAST_MODES)):
        best = _best(runs, modes)
        v = runs.get(best, {}) if best else {}
        r[f"{prefix}_variant"] = best
        r[f"{prefix}_step_s"] = v.get("step_s")
        r[f"{prefix}_500_steps_s"] = _run_500_s(v)
        r[f"{prefix}_500_steps_warm_cache_s"] = _run_500_s(v, "warm")
        r[f"{prefix}_peak_mem_gib"] = v.get("peak_mem_gib")
    # A server adapts scene after scene in one process: per scene, a compiled variant's compile is behind it.
    scene = _best(runs, FAST_MODES, "none")
    r["icadapt_fast_per_scene_variant"] = scene
    r["icadapt_fast_per_scene_500_steps_s"] = _run_500_s(runs[scene], "none") if scene else None
    sampling = r.get("sampling_s", {}).get(str(SamplerConfig().num_steps), {})
    r["sample_90_frames_s"] = sampling.get("90")
    compiled = r.get("sampling_compiled_s", {})
    default_steps = str(SamplerConfig().num_steps)
    r["sample_90_frames_compiled_s"] = compiled.get(default_steps) if compiled.get("frames") == 90 else None
    peaks = [r.get("sampling_peak_mem_gib"), r.get("sampling_compiled_s", {}).get("peak_mem_gib")]
    peaks.append(r["icadapt_peak_mem_gib"])
    r["peak_mem_gib"] = max((p for p in peaks if p is not None), default=None)
    return r


def merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Results of a later partial run laid over an earlier one: nested dicts are updated, and each phase keeps
    the date of the run that measured it (``sampling_date``, ``compiled_date``, ``icadapt_date``).

    Raises:
        InvalidInput: the runs were on different devices (one report names one card).
    """
    if old.get("device") != new.get("device"):
        raise InvalidInput(
            "--merge",
            f"the earlier results were measured on {old.get('device')}, this run on {new.get('device')}: write "
            "this run to another --json, or rerun every phase on one card",
        )
    out = dict(old)
    for key, value in new.items():
        out[key] = (
            {**out[key], **value} if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


# ---------------------------------------------------------------------------------------------- report
def _fmt(value: Any, unit: str = "", digits: int = 2) -> str:
    if isinstance(value, (int, float)):
        return f"{value:.{digits}f}{unit}"
    return "—" if value is None else str(value)


def _ratio(a: Any, b: Any) -> str:
    return f"{a / b:.2f}×" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else "—"


#: ICAdapt rows of "what each change bought": (change, before variant, after variant).
ICADAPT_CHANGES = (
    ("one micro-batch of 8 instead of 4 × 2 accumulation (same recipe)", "spatial", "spatial_b8x1"),
    ("2 × 4 instead of 4 × 2 micro-batches", "spatial_sac", "spatial_sac_b2x4"),
    ("selective instead of full checkpointing", "spatial", "spatial_sac"),
    ("selective instead of full checkpointing", "decoder", "decoder_sac"),
    ("no checkpointing instead of selective", "decoder_sac", "decoder_no_ckpt"),
    ("decoder-half fine-tune instead of the spatial set", "spatial", "decoder"),
    ("decoder-half fine-tune instead of the spatial set", "spatial_b8x1", "decoder_b8x1"),
    ("torch.compile of the denoiser", "spatial_sac", "spatial_sac_compiled"),
    ("torch.compile of the denoiser", "decoder_sac", "decoder_sac_compiled"),
    ("regional torch.compile (per UNet block)", "spatial_b8x1", "spatial_b8x1_regional"),
    ("regional torch.compile (per UNet block)", "decoder_b8x1", "decoder_b8x1_regional"),
    ("no checkpointing (decoder half)", "decoder_b8x1", "decoder_no_ckpt_b8x1"),
    ("LoRA of the decoder half instead of its spatial set", "decoder_no_ckpt_b8x1", "lora_decoder_no_ckpt_b8x1"),
    ("no checkpointing (LoRA of the decoder half)", "lora_decoder_b8x1", "lora_decoder_no_ckpt_b8x1"),
    ("torch.compile of the denoiser", "lora_decoder_no_ckpt_b8x1", "lora_decoder_no_ckpt_b8x1_compiled"),
    ("LoRA of the full-resolution output blocks instead of the decoder half", "lora_decoder_b8x1", "lora_top_b8x1"),
    (
        "LoRA of the full-resolution output blocks instead of the decoder half",
        "lora_decoder_no_ckpt_b8x1",
        "lora_top_no_ckpt_b8x1",
    ),
    ("no checkpointing (LoRA of the full-resolution blocks)", "lora_top_b8x1", "lora_top_no_ckpt_b8x1"),
    ("torch.compile of the denoiser", "lora_top_no_ckpt_b8x1", "lora_top_no_ckpt_b8x1_compiled"),
    ("turbo preset vs the fast preset", "decoder_b8x1", "lora_top_no_ckpt_b8x1_compiled"),
)


def _icadapt_changes(runs: dict[str, Any]) -> list[str]:
    """The ICAdapt "what each change bought" table from the measured variants present (s/step and the 500-step
    run with its one-time compile), ending with the default → best reference-faithful → best partial fine-tune."""
    rows = [  # only runs of the recipe's clips a step on both sides
        (label, a, b)
        for label, a, b in ICADAPT_CHANGES
        if a in runs and b in runs and runs[a].get("clips_per_step") == runs[b].get("clips_per_step") == CLIPS_PER_STEP
    ]
    ref, fast, default = _best(runs, REFERENCE_MODES), _best(runs, FAST_MODES), _default_variant()
    if ref and ref != default and default in runs:
        rows.append(("best reference-faithful variant vs the default", default, ref))
    if fast and default in runs:
        rows.append(("best partial fine-tune vs the default", default, fast))
    lines = [
        "### What each change bought (ICAdapt, 8 clips a step)",
        "",
        "| change | before → after | s / step before | after | speed-up | 500 steps (min) before | after | speed-up |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, a, b in rows:
        sa, sb = runs[a].get("step_s"), runs[b].get("step_s")
        ra, rb = _run_500_s(runs[a]), _run_500_s(runs[b])
        lines.append(
            f"| {label} | {a} → {b} | {_fmt(sa or runs[a].get('error'), digits=3)} | "
            f"{_fmt(sb or runs[b].get('error'), digits=3)} | {_ratio(sa, sb)} | "
            f"{_fmt(ra / 60 if ra else None, digits=1)} | {_fmt(rb / 60 if rb else None, digits=1)} | {_ratio(ra, rb)} |"
        )
    return [*lines, ""]


def _section(r: dict[str, Any], json_name: str = "docs/benchmarks/video.json") -> str:
    steps = list(r["sampling_s"])
    last = list(r["sampling_s"][steps[0]])[-1]
    lines = [
        f"Device: {r['device']} · torch {r['torch']} · {r['model']}, "
        f"{r['resolution'][0]}×{r['resolution'][1]}, 16-frame windows, CFG 7.5 (batched cond+uncond). Written by "
        f"`anymole bench video` (`{json_name}`).",
        "",
        "**Method.** Eager sampling times are *extrapolated*: the real two-stage sampler ran at 2 DDIM steps per "
        "window for each frame count (all per-window costs included) and each further step adds one timed "
        "denoiser call per stage-1 window and per stage-2 batch (checked against a measured run below). The "
        "compiled figures are *measured* end to end. ICAdapt: mean of timed optimiser steps (8 clips a step, after "
        "a warm-up step) × 500, *extrapolated*. Random weights: same FLOPs as the checkpoint.",
        "",
        "### Two-stage sampling (15 fps generated frames), bf16",
        "",
        "| generated frames | paper Table 1, A6000 (min) | reference code, H100 (est., s) | "
        + " | ".join(f"ours, eager, {s} steps (s)" for s in steps)
        + " |",
        "|---:|---:|---:|" + "---:|" * len(steps),
    ]
    for frames in r["sampling_s"][steps[0]]:
        gaps = int(frames) // 15
        ref = 2 * gaps * REFERENCE_H100["window_50_steps_s"]
        row = [frames, _fmt(PAPER_TABLE1_MIN.get(int(frames))), _fmt(ref, digits=0)]
        row += [_fmt(r["sampling_s"][s][frames], digits=1) for s in steps]
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    check = r["extrapolation_check"]
    lines += [
        "",
        f"Measured {r.get('sampling_date', r['date'])}. "
        "Reference code on an H100 (issue 7): 12 s per 16-frame window at 50 steps (0.235 s a step, 13.5 GiB), two "
        f"windows per 15 frames. Extrapolation check: {check['frames']} frames at {check['steps']} steps measured "
        f"{check['measured_s']:.2f} s, predicted {check['predicted_s']:.2f} s. Peak memory while sampling: "
        f"{_fmt(r['sampling_peak_mem_gib'], ' GiB', 1)}.",
    ]
    comp = r.get("sampling_compiled_s")
    if comp:
        measured = ", ".join(f"{comp[s]:.1f} s at {s} steps" for s in steps if isinstance(comp.get(s), float))
        lines += [
            "",
            f"**Compiled** (`SamplerConfig(compile=True, stage2_batch=1)`: `torch.compile` of the prior's `predict`, "
            f"one graph for every window), measured end to end ({r.get('compiled_date', r['date'])}) for "
            f"{comp['frames']} frames: "
            f"{measured or comp.get('error', '—')}; one-time compile {_fmt(comp.get('compile_warmup_s'), ' s', 0)} "
            f"(paid once per server process, not per job); peak {_fmt(comp.get('peak_mem_gib'), ' GiB', 1)}.",
        ]
    lines += [
        "",
        "### ICAdapt (fp32 master weights, bf16 autocast, fused AdamW, 8 clips a step)",
        "",
        f"Measured on {r.get('icadapt_device', r['device'])}, {r.get('icadapt_date', r['date'])}. 500 steps = 500 × the mean of timed steps (after a "
        "warm-up step) + the one-time compile of compiled variants (first with empty caches, then again with "
        "torch's on-disk compile caches filled, as a restarted server on the same machine pays it): "
        "*extrapolated*. Only variants that trained "
        f"{CLIPS_PER_STEP} clips a step (the recipe) are compared below or picked as headlines, and a headline must "
        f"fit an H100 (peak at most {H100_GIB:.0f} GiB).",
        "",
        "| variant | clips / step | trainable params | s / step | compile, once (s): empty / warm caches | 500 steps "
        "(min): empty / warm caches | peak memory (GiB) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, v in r["icadapt"].items():
        step = v.get("step_s")
        params = v.get("trainable_parameters")
        run, warm = _run_500_s(v), _run_500_s(v, "warm")
        compile_s = _fmt(v.get("compile_s"), digits=0)
        runs_min = _fmt(run / 60 if run else None, digits=1)
        if "compile_warm_s" in v:
            compile_s += f" / {_fmt(v['compile_warm_s'], digits=0)}"
            runs_min += f" / {_fmt(warm / 60 if warm else None, digits=1)}"
        lines.append(
            f"| {name} | {v.get('clips_per_step') or '—'} | {_fmt(params / 1e6 if params else None, ' M', 1)} | "
            f"{_fmt(step or v.get('error'), digits=3)} | {compile_s} | {runs_min} | "
            f"{_fmt(v.get('peak_mem_gib'), digits=1)} |"
        )
    lines += [
        "",
        "Variant names: mode (`spatial` = the reference's trained set, `decoder` = that set restricted to the middle "
        "block, output blocks and head, so the backward pass stops at the middle block, `lora` = rank-16 adapters on "
        "the spatial attention projections, `lora_decoder` = those of the middle and output blocks only, `lora_top` = "
        "those of the three full-resolution output blocks only, `full` = UNet + resampler); checkpointing (no suffix = every layer recomputed, "
        "`_sac` = selective: outputs of matmuls, convolutions and attention kept, the rest recomputed, `_no_ckpt` = "
        "none); `_bAxB` = A clips a micro-batch × B accumulation (no suffix: 4 × 2, the reference trainer's split; the "
        f"`ICAdaptConfig()` default is {_default_variant()}); `_compiled` = `torch.compile` of the "
        "denoiser, `_regional` = `torch.compile` of each UNet block (`ICAdaptConfig(compile_blocks=True)`). Reference code on an H100 (issue 7): "
        f"1.9 s per forward+backward of 4 clips (43 GiB), two per step: about "
        f"{REFERENCE_H100['icadapt_500_steps_min']:.0f} min for 500 steps. Paper: about 1.5 h on an A6000.",
        "",
    ]
    lines += _icadapt_changes(r["icadapt"])
    note = r.get("icadapt_note")
    if note:
        lines += [note, ""]
    lines += [
        "### What each change bought (sampling)",
        "",
        "| change | measured on | before | after | speed-up |",
        "|---|---|---:|---:|---:|",
    ]
    v = r["denoiser_variants_s"]
    rows = [
        ("bf16 instead of fp32 weights", "denoiser call, batch 2", v.get("fp32_sdpa"), v.get("bf16_sdpa")),
        (
            "SDPA (flash) instead of explicit attention",
            "denoiser call, batch 2",
            v.get("bf16_math_attention"),
            v.get("bf16_sdpa"),
        ),
        (
            "torch.compile of the denoiser",
            "denoiser call, batch 2",
            v.get("bf16_sdpa"),
            v.get("bf16_sdpa_compiled"),
        ),
        (
            "batching the independent stage-2 windows",
            f"{last} frames, {steps[0]} steps",
            r.get("sample_90_frames_unbatched_stage2_s"),
            r["sampling_s"][steps[0]][last],
        ),
    ]
    if len(steps) > 1:
        rows.append(
            (
                f"{steps[-1]} instead of {steps[0]} DDIM steps",
                f"{last} frames",
                r["sampling_s"][steps[0]][last],
                r["sampling_s"][steps[-1]][last],
            )
        )
    if comp and isinstance(comp.get(steps[0]), float):
        rows.append(
            (
                "compiled sampler, end to end",
                f"{last} frames, {steps[0]} steps",
                r["sampling_s"][steps[0]][last],
                comp[steps[0]],
            )
        )
    for label, what, before, after in rows:
        lines.append(
            f"| {label} | {what} | {_fmt(before, ' s', 3)} | {_fmt(after, ' s', 3)} | {_ratio(before, after)} |"
        )
    fastest_90 = [(f"eager, {s} steps", r["sampling_s"][s][last]) for s in steps]
    if comp:
        fastest_90 += [(f"compiled, {s} steps", comp[s]) for s in steps if isinstance(comp.get(s), float)]
    under = [f"{label} ({t:.1f} s)" for label, t in fastest_90 if t < 60]

    def met(seconds: float) -> str:
        return f"{seconds / 60:.1f} min ({'met' if seconds < 300 else 'not met'})"

    def icadapt_target(kind: str, modes: tuple[str, ...]) -> str:
        runs = r.get("icadapt", {})
        cold, warm = _best(runs, modes), _best(runs, modes, "warm")
        if not cold:
            return f"{kind}: not measured"
        text = f"{kind}: {cold} needs {met(_run_500_s(runs[cold]) or 0.0)}"
        if warm and "compile_warm_s" in runs[warm]:
            v = runs[warm]
            text += (
                f"; {warm} needs {met(_run_500_s(v) or 0.0)} with empty compile caches, "
                f"{met(_run_500_s(v, 'warm') or 0.0)} with warm ones and {met(500 * v['step_s'])} a scene "
                "once its process has compiled"
            )
        return text

    lines += [
        "",
        f"**Targets (set for one H100; measured on one {r['device']}).** 90 frames under 1 min: "
        + (f"met by {', '.join(under)}." if under else "not met.")
        + " ICAdapt under 5 min for 500 steps (extrapolated, compile included): "
        + icadapt_target("reference-faithful", REFERENCE_MODES)
        + ". "
        + icadapt_target("Partial fine-tunes", FAST_MODES)
        + f" (reference code: about {REFERENCE_H100['icadapt_500_steps_min']:.0f} min).",
    ]
    lines += [
        "",
        f"Headline (`{Path(json_name).name}`): `sample_90_frames_s` = {_fmt(r['sample_90_frames_s'], ' s', 1)} (defaults: eager, "
        f"{steps[0]} steps), `sample_90_frames_compiled_s` = {_fmt(r.get('sample_90_frames_compiled_s'), ' s', 1)} (compiled, one graph); reference-faithful ICAdapt ({r.get('icadapt_variant') or '—'}): `icadapt_step_s` = "
        f"{_fmt(r['icadapt_step_s'], ' s', 3)}, `icadapt_500_steps_s` = {_fmt(r['icadapt_500_steps_s'], ' s', 0)}; "
        f"best partial fine-tune ({r.get('icadapt_fast_variant') or '—'}): `icadapt_fast_step_s` = "
        f"{_fmt(r.get('icadapt_fast_step_s'), ' s', 3)}, `icadapt_fast_500_steps_s` = "
        f"{_fmt(r.get('icadapt_fast_500_steps_s'), ' s', 0)}; per scene in a process that has compiled "
        f"({r.get('icadapt_fast_per_scene_variant') or '—'}): `icadapt_fast_per_scene_500_steps_s` = "
        f"{_fmt(r.get('icadapt_fast_per_scene_500_steps_s'), ' s', 0)}; `peak_mem_gib` = {_fmt(r['peak_mem_gib'], ' GiB', 1)}.",
    ]
    return "\n".join(lines) + "\n"


def write_markdown(
    results: dict[str, Any],
    path: Path,
    heading: str = "## Video prior",
    json_name: str = "docs/benchmarks/video.json",
) -> None:
    """Replace the body of the section whose heading line is exactly ``heading`` in ``path`` (up to the next
    ``## `` heading) with the results; ``json_name`` is the results file the section names."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    body = _section(results, json_name)
    line = f"\n{heading}\n"
    if line not in f"\n{text}":
        text = text.rstrip("\n") + f"\n\n{heading}\n\n{body}"
    else:
        head, rest = f"\n{text}".split(line, 1)
        nxt = rest.find("\n## ")
        tail = rest[nxt:] if nxt >= 0 else ""
        text = f"{head[1:]}\n{heading}\n\n{body}{tail}" if head else f"{heading}\n\n{body}{tail}"
    path.write_text(text)


def write_json(results: dict[str, Any], path: Path) -> None:
    """Write the results as indented JSON (the machine-readable twin of the markdown table)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
