"""The video benchmark's results summarised: the headline figures (best ICAdapt variant of each training mode,
its 500-step run with and without the compile) derived from the raw runs, and results of several runs merged."""

from __future__ import annotations

from typing import Any

from anymole.bench.video import CLIPS_PER_STEP, FAST_MODES, REFERENCE_MODES, _default_variant
from anymole.errors import InvalidInput
from anymole.video.prior import TRAIN_MODES
from anymole.video.sampler import SamplerConfig

__all__ = ["COMPILE_COSTS", "H100_GIB", "merge", "summarize"]


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
    fits: dict[str, float] = {}
    for name, v in icadapt.items():
        run = _run_500_s(v, compile_cost)
        if (
            _mode_of(name, v) in modes
            and run
            and (v.get("peak_mem_gib") or 0.0) <= H100_GIB
            and v.get("clips_per_step") == CLIPS_PER_STEP
        ):
            fits[name] = run
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
