"""`anymole bench video`: ICAdapt and two-stage sampling speed of the video prior, with random weights.

Speed does not depend on the weights' values, so the full-size DynamiCrafter architecture with random
weights measures what the real checkpoint would cost. Long loops are extrapolated from timed pieces, and the
results say so:

- *Sampling*: the real `TwoStageSampler` runs for 1 … 6 gaps (15 … 90 generated frames) with 2 DDIM steps,
  which includes every per-window cost (conditioning, VAE encode of guidance, decode, previews). Each
  further step costs one denoiser call per stage-1 window plus one per stage-2 batch, timed separately at
  each batch size, so ``T(g, S) = T(g, 2) + (S − 2) · (g · s₁ + s₂(g))``. One run at more steps checks the
  extrapolation.
- *ICAdapt*: a few optimiser steps (after one warm-up step) of each training mode; 500 steps = 500 × the
  mean step time (the clip encoding, done once, is reported apart).

Results go to a JSON file (`docs/benchmarks/video.json`) and to the "Video prior" section of
`docs/benchmarks.md`, replaced in place.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import itertools
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from anymole.video import attention
from anymole.video.clips import ClipBank, gather_clips
from anymole.video.icadapt import ICAdaptConfig, icadapt
from anymole.video.prior import VideoCondition, VideoPrior
from anymole.video.sampler import WINDOW_SLOTS, SamplerConfig, TwoStageSampler
from anymole.video.schedule import DDIMSchedule

__all__ = ["PAPER_TABLE1_MIN", "VideoBenchConfig", "run_video_bench", "write_json", "write_markdown"]

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
        icadapt_variants: ``(mode, gradient_checkpointing)`` pairs to time; the first is the reported default.
        compile: also time the UNet under ``torch.compile`` (one window shape).
        budget_s: optional measurements are skipped once this much time has passed.
    """

    model: str = "full"
    device: str = "cuda"
    gaps: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    sampler_steps: tuple[int, ...] = (50, 25)
    denoiser_calls: int = 4
    icadapt_steps: int = 2
    icadapt_variants: tuple[tuple[str, bool], ...] = (
        ("spatial", True),
        ("spatial", False),
        ("lora", False),
        ("full", True),
    )
    compile: bool = True
    budget_s: float = 420.0


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
        null = prior.unconditional(cond)
    both = VideoCondition(
        context=torch.cat([cond.context, null.context]),
        concat=torch.cat([cond.concat, null.concat]),
        fps=torch.cat([cond.fps, null.fps]),
    )
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


def _icadapt(cfg: VideoBenchConfig, make_prior: PriorFactory, size, device, out, say, over) -> None:
    """ICAdapt step times and memory per training mode (fp32 master weights, bf16 autocast)."""
    prior = make_prior(torch.float32)
    out["denoiser_variants_s"]["fp32_sdpa"] = _time_denoiser(
        prior, 1, size, device, cfg.denoiser_calls, autocast=False
    )
    say(f"denoiser step, fp32: {out['denoiser_variants_s']['fp32_sdpa']:.3f} s")
    frames = 20
    videos = torch.rand(1, 3, frames, *size, generator=torch.Generator(device).manual_seed(2), device=device)
    bank = ClipBank(videos, gather_clips(1, frames, k=WINDOW_SLOTS, strides=(1,)), "a character walking")
    results = {}
    for i, (mode, ckpt) in enumerate(cfg.icadapt_variants):
        if i > 0 and over():
            break
        name = f"{mode}{'' if ckpt else '_no_ckpt'}"
        stamps: list[float] = []

        def on_step(
            stage: str, fraction: float, preview: object = None, stamps: list[float] = stamps
        ) -> None:
            _sync(device)
            stamps.append(time.perf_counter())

        _reset_peak(device)
        run_cfg = ICAdaptConfig(steps=1 + cfg.icadapt_steps, mode=mode, gradient_checkpointing=ckpt)
        try:
            start = time.perf_counter()
            summary = icadapt(prior, bank, run_cfg, on_step=on_step)
            diffs = [b - a for a, b in itertools.pairwise(stamps)]
            results[name] = {
                "step_s": sum(diffs) / len(diffs),
                "first_step_s": stamps[0] - start,
                "trainable_parameters": summary.trainable_parameters,
                "peak_mem_gib": _peak_gib(device),
            }
        except torch.OutOfMemoryError:
            results[name] = {"step_s": None, "error": "out of memory"}
        say(f"ICAdapt {name}: {results[name]}")
        _reset_peak(device)
    out["icadapt"] = results
    del prior


def run_video_bench(
    cfg: VideoBenchConfig,
    make_prior: PriorFactory | None = None,
    say: Say | None = None,
) -> dict[str, Any]:
    """Run the benchmark and return its results (see the module docstring for the method).

    Args:
        cfg: what to measure.
        make_prior: builds a prior with random weights in a given parameter dtype; default: DynamiCrafter at
            ``cfg.model`` size on ``cfg.device``.
        say: progress lines (the CLI prints them).
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
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
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
    prior = make_prior(torch.bfloat16 if device.type == "cuda" else torch.float32)
    _sampling(cfg, prior, schedule, size, device, out, say, over)
    del prior
    _reset_peak(device)
    _icadapt(cfg, make_prior, size, device, out, say, over)
    default = f"{cfg.icadapt_variants[0][0]}{'' if cfg.icadapt_variants[0][1] else '_no_ckpt'}"
    steps0 = str(cfg.sampler_steps[0])
    last = str(15 * max(cfg.gaps))
    out["icadapt_step_s"] = out["icadapt"][default]["step_s"]
    out["icadapt_500_steps_s"] = 500 * out["icadapt_step_s"] if out["icadapt_step_s"] else None
    out["sample_90_frames_s"] = out["sampling_s"][steps0][last]
    peaks = [out["sampling_peak_mem_gib"]] + [r.get("peak_mem_gib") for r in out["icadapt"].values()]
    out["peak_mem_gib"] = max((p for p in peaks if p is not None), default=None)
    out["bench_seconds"] = time.perf_counter() - started
    return out


# ---------------------------------------------------------------------------------------------- report
def _fmt(value: Any, unit: str = "", digits: int = 2) -> str:
    if isinstance(value, (int, float)):
        return f"{value:.{digits}f}{unit}"
    return "—" if value is None else str(value)


def _section(r: dict[str, Any]) -> str:
    steps = list(r["sampling_s"])
    lines = [
        f"Device: {r['device']} · torch {r['torch']} · {r['date']} · {r['model']}, "
        f"{r['resolution'][0]}×{r['resolution'][1]}, 16-frame windows. Written by `anymole bench video` "
        "(`docs/benchmarks/video.json`).",
        "",
        "**Method (extrapolated, not end-to-end).** The real two-stage sampler ran at 2 DDIM steps per window for "
        "each frame count (all per-window costs included); each further step adds one timed denoiser call per "
        "stage-1 window and per stage-2 batch. ICAdapt: mean of timed optimiser steps (batch 4 × 2 accumulation, "
        "after a warm-up step) × 500. Random weights: same FLOPs as the checkpoint.",
        "",
        "### Two-stage sampling (15 fps generated frames)",
        "",
        "| generated frames | paper Table 1, A6000 (min) | reference code, H100 (est., s) | "
        + " | ".join(f"ours, {s} steps (s)" for s in steps)
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
        f"Reference code on an H100 (issue 7): 12 s per 16-frame window at 50 steps with CFG, two windows per "
        f"15 frames. Extrapolation check: {check['frames']} frames at {check['steps']} steps measured "
        f"{check['measured_s']:.2f} s, predicted {check['predicted_s']:.2f} s. Peak memory while sampling: "
        f"{_fmt(r['sampling_peak_mem_gib'], ' GiB', 1)}.",
        "",
        "### ICAdapt",
        "",
        "| mode | grad. checkpointing | trainable params | s / step (8 clips) | 500 steps (min) | peak memory (GiB) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, v in r["icadapt"].items():
        mode = name.replace("_no_ckpt", "")
        ckpt = "no" if name.endswith("_no_ckpt") else "yes"
        step = v.get("step_s")
        lines.append(
            f"| {mode} | {ckpt} | {v.get('trainable_parameters', 0) / 1e6:.1f} M | {_fmt(step, digits=3)} | "
            f"{_fmt(step * 500 / 60 if step else None, digits=1)} | {_fmt(v.get('peak_mem_gib'), digits=1)} |"
        )
    lines += [
        "",
        f"Reference code on an H100 (issue 7): 1.9 s per forward+backward of 4 clips (43 GiB), two per step: about "
        f"{REFERENCE_H100['icadapt_500_steps_min']:.0f} min for 500 steps. Paper: about 1.5 h on an A6000.",
        "",
        "### What each change bought (denoiser call, one window with CFG = batch 2)",
        "",
        "| variant | s / call |",
        "|---|---:|",
    ]
    for name, v in r["denoiser_variants_s"].items():
        lines.append(f"| {name} | {_fmt(v, digits=3)} |")
    lines.append(f"| reference code (fp16, xformers) | {REFERENCE_H100['denoiser_step_s']:.3f} |")
    unb = r.get("sample_90_frames_unbatched_stage2_s")
    last = list(r["sampling_s"][steps[0]])[-1]
    lines += [
        "",
        f"Batching the independent stage-2 windows: {last} frames at {steps[0]} steps take "
        f"{_fmt(r['sample_90_frames_s'], ' s', 1)} against {_fmt(unb, ' s', 1)} one window at a time.",
        "",
        f"Headline: {last} frames in {_fmt(r['sample_90_frames_s'], ' s', 1)} at {steps[0]} steps; "
        f"`icadapt_500_steps_s` = {_fmt(r['icadapt_500_steps_s'], ' s', 0)}; peak memory "
        f"{_fmt(r['peak_mem_gib'], ' GiB', 1)}.",
    ]
    return "\n".join(lines) + "\n"


def write_markdown(results: dict[str, Any], path: Path, heading: str = "## Video prior") -> None:
    """Replace the body of ``heading`` in ``path`` (up to the next ``## `` heading) with the results."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    body = _section(results)
    if heading not in text:
        text = text.rstrip("\n") + f"\n\n{heading}\n\n{body}"
    else:
        head, rest = text.split(heading, 1)
        nxt = rest.find("\n## ")
        tail = rest[nxt:] if nxt >= 0 else ""
        text = f"{head}{heading}\n\n{body}{tail}"
    path.write_text(text)


def write_json(results: dict[str, Any], path: Path) -> None:
    """Write the results as indented JSON (the machine-readable twin of the markdown table)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
