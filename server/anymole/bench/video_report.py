"""The video benchmark's report writer: the "Video prior" section of docs/benchmarks.md, rewritten in place
from a results JSON (and nothing else), and the JSON itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anymole.bench.report import replace_section, write_json
from anymole.bench.video import (
    CLIPS_PER_STEP,
    FAST_MODES,
    PAPER_TABLE1_MIN,
    REFERENCE_H100,
    REFERENCE_MODES,
    _default_variant,
)
from anymole.bench.video_summary import H100_GIB, _best, _run_500_s

__all__ = ["write_json", "write_markdown"]


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
    replace_section(path, heading, _section(results, json_name))
