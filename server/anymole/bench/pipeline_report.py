"""`anymole bench pipeline`, the figures and the report: per-stage and whole-job times at the preset's step
counts, extrapolated from the runner's timed jobs (`anymole.bench.pipeline`), docs/benchmarks/pipeline.json and
its section of docs/benchmarks.md.

How each figure is obtained (the results carry it in ``how``):

- A stepped stage (ICAdapt: optimiser steps; sampling: DDIM steps per window; estimator: training steps;
  mimicking: iterations per solve) costs ``a + b·n`` for ``n`` steps. ``b`` comes from the ``short`` and
  ``long`` jobs, ``(T_long − T_short) / (n_long − n_short)``; the preset's ``N`` steps cost
  ``T_long + (N − n_long)·b`` (measured outright when ``n_long = N``).
- Estimator training runs in a thread beside ICAdapt on the same device, so its GPU work lands in ICAdapt's
  time (and in sampling's where it outlasts ICAdapt: ``estimator_spilled_into_sampling`` names such jobs, and
  the ICAdapt and sampling figures then carry a caution). The runner trains it alike in both jobs by default,
  so that it cancels in ICAdapt's slope and stays in its intercept, once, as in a real job.
- Render and estimation have no steps: the ``long`` job's time.
- The job's critical path: render, then ICAdapt + sampling beside estimator training (a thread of its own),
  then estimation and mimicking: ``render + max(icadapt + sample, estimator) + estimate + mimic``. The whole
  job is that path at the preset's steps plus what the ``long`` job spent outside it (the SLERP fill, event
  streaming); the second fill likewise from the ``second`` job, its sampling and mimicking extrapolated with
  the same ``b`` (its ICAdapt and estimator are cache loads, measured).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anymole.bench.report import replace_section, write_json

__all__ = ["METHOD", "REFERENCE_A6000_S", "STAGES", "TARGETS_H100_S", "summarize", "write_json", "write_markdown"]

#: stages of `Completed.timings`, in job order, and the step count each scales with
STAGES = ("render", "icadapt", "sample", "estimator", "estimate", "mimic")
STEPPED = {"icadapt": "icadapt", "sample": "ddim", "estimator": "estimator", "mimic": "mimic"}
#: the reference implementation on an A6000 (supplementary A.1–A.3; anymole_reference_code.md §8): ICAdapt about
#: 1.5 h, the estimator about 3.5 h, two-stage sampling of 90 frames 8.08 min, mimicking not given; about 5 h a motion
REFERENCE_A6000_S = {"icadapt": 1.5 * 3600, "estimator": 3.5 * 3600, "sample": 8.08 * 60, "whole_job": 5 * 3600}
#: the results' one-line account of the method (the module docstring has it in full)
METHOD = (
    "three anymole jobs through AnyMoLeMethod.run on one scene and cache from a warm server: short steps, long "
    "steps (caches miss), short again (ICAdapt and estimator caches hit); per stage Completed.timings; a stepped "
    "stage is a + b*steps with b from short and long, extrapolated to the preset's steps; whole job = the long "
    "job's time outside its stages + render + max(icadapt + sample, estimator) + estimate + mimic at the preset's "
    "steps; second fill likewise from the third job with sampling and mimicking extrapolated"
)
#: issue 14's targets on one H100
TARGETS_H100_S = {"whole_job": 8 * 60, "second_fill": 90, "estimator": 60, "mimic": 30}


def _critical(t: dict[str, float]) -> float:
    """The job's critical path (estimator training runs beside ICAdapt and sampling)."""
    return t["render"] + max(t["icadapt"] + t["sample"], t["estimator"]) + t["estimate"] + t["mimic"]


def _fits(runs: dict[str, Any], full: dict[str, int]) -> tuple[dict[str, float], dict[str, float], dict[str, str]]:
    """Per stage: the preset's time, the per-step cost ``b``, and how it was obtained, from ``short`` and
    ``long``."""
    short, long = runs["short"], runs["long"]
    times: dict[str, float] = {}
    per_step: dict[str, float] = {}
    how: dict[str, str] = {}
    for stage in STAGES:
        t2 = long["timings_s"][stage]
        if stage not in STEPPED:
            times[stage], how[stage] = t2, "measured (long job)"
            continue
        key = STEPPED[stage]
        n1, n2, n = short["steps"][key], long["steps"][key], full[key]
        t1 = short["timings_s"][stage]
        if n2 == n1 == n:  # run in full by both jobs (the estimator by default: see the runner)
            times[stage], how[stage] = t2, f"measured at the preset's {n} steps (long job; short ran them too)"
            continue
        if n2 == n1:  # no slope to fit: scale the long job's time, fixed costs and all (an overestimate)
            b = t2 / n2
            per_step[stage], times[stage] = b, t2 * n / n2
            how[stage] = f"scaled from {n2} to {n} steps: {t2:.3f} s x {n}/{n2} (short and long ran the same count)"
            continue
        b = max(0.0, (t2 - t1) / (n2 - n1))
        per_step[stage] = b
        times[stage] = t2 + (n - n2) * b
        if n == n2:
            how[stage] = f"measured at the preset's {n} steps (long job)"
        else:
            how[stage] = (f"extrapolated: {t1:.3f} s at {n1} steps (short), {t2:.3f} s at {n2} (long): "
                          f"{b:.4f} s a step; {n} steps = {t2:.3f} + {n - n2} x {b:.4f}")  # fmt: skip
    spill = _spilled(runs)
    if spill:  # its GPU work then counts in that job's sampling, not ICAdapt: the two slopes are off by it
        for stage in ("icadapt", "sample"):
            how[stage] += (f"; caution: estimator training outlasted ICAdapt in the {' and '.join(spill)} job, so "
                           "part of its GPU work fell into sampling there")  # fmt: skip
    return times, per_step, how


def _spilled(runs: dict[str, Any]) -> list[str]:
    """The jobs whose estimator training (beside ICAdapt, on the same device) ran on into sampling."""
    return [name for name in ("short", "long") if name in runs and not runs[name]["cached"].get("estimator", False)
            and runs[name]["timings_s"]["estimator"] > runs[name]["timings_s"]["icadapt"]]  # fmt: skip


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    """The runner's raw results with the figures added: ``stages_s`` and ``how`` (the first fill at the
    preset's steps), ``second_fill_stages_s``, ``whole_job_s``, ``second_fill_s``, ``estimator_train_s``,
    ``mimic_s`` (``None`` where the jobs they need did not run: ``missing`` says which)."""
    out = dict(raw)
    out.pop("missing", None)  # a partial file's, summarized again
    runs, full = raw.get("runs", {}), raw["full_steps"]
    out |= {"whole_job_s": None, "second_fill_s": None, "estimator_train_s": None, "mimic_s": None}
    out["method"] = METHOD
    out["estimator_spilled_into_sampling"] = _spilled(runs)
    out["reference_a6000_s"] = REFERENCE_A6000_S
    out["targets_h100_s"] = TARGETS_H100_S
    if not {"short", "long"} <= runs.keys():
        out["missing"] = "the short and long jobs are needed for any figure at the preset's steps"
        return out
    stages, per_step, how = _fits(runs, full)
    out["extrapolated"] = {  # which figures are not measured at the preset's steps, and from what
        stage: {"to_steps": full[key], "from_steps": {r: runs[r]["steps"][key] for r in ("short", "long")},
                "from_s": {r: runs[r]["timings_s"][stage] for r in ("short", "long")}}
        for stage, key in STEPPED.items() if runs["long"]["steps"][key] != full[key]
    }  # fmt: skip
    long = runs["long"]
    outside = long["wall_s"] - _critical(long["timings_s"])
    out |= {
        "stages_s": stages,
        "per_step_s": per_step,
        "how": how,
        "whole_job_s": outside + _critical(stages),
        "estimator_train_s": stages["estimator"],
        "mimic_s": stages["mimic"],
    }
    how["whole_job"] = (f"critical path at the preset's steps, render + max(icadapt + sample, estimator) + estimate"
                        f" + mimic, plus {outside:.2f} s the long job spent outside its stages")  # fmt: skip
    second = runs.get("second")
    if second is None:
        out["missing"] = "the second job (cache hits) did not run"
        return out
    t = dict(second["timings_s"])
    for stage in ("sample", "mimic"):  # ICAdapt and the estimator are cache loads: measured as they are
        key = STEPPED[stage]
        t[stage] += (full[key] - second["steps"][key]) * per_step[stage]
    out["second_fill_stages_s"] = t
    out["second_fill_cached"] = second["cached"]
    out["second_fill_s"] = second["wall_s"] - _critical(second["timings_s"]) + _critical(t)
    how["second_fill"] = ("the second job's wall time with its sampling and mimicking extrapolated to the preset's "
                          "steps at the per-step costs above; ICAdapt and estimator were cache loads "
                          f"(hits: {second['cached']})")  # fmt: skip
    return out


def _s(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "—"
    if value >= 600:
        return f"{value / 60:.1f} min"
    return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"


def _ref(value: float | None) -> str:
    if value is None:
        return "—"
    return f"~{value / 3600:.1f} h" if value >= 3600 else f"{value / 60:.2f} min"


def _target(name: str, value: Any) -> str:
    limit = TARGETS_H100_S.get(name)
    if limit is None:
        return "—"
    met = "" if not isinstance(value, (int, float)) else (" ✓" if value < limit else " ✗")
    return f"< {_s(limit)}{met}"


def _section(r: dict[str, Any], json_name: str) -> str:
    scene, full, runs = r["scene"], r["full_steps"], r.get("runs", {})
    steps = {name: run["steps"] for name, run in runs.items()} or r.get("run_steps", {})
    short, long = steps.get("short", {}), steps.get("long", {})
    warm = r.get("warm_server", {})

    def counts(run: dict[str, int]) -> str:
        return ", ".join(f"{k} {run[k]}" for k in ("icadapt", "ddim", "estimator", "mimic") if k in run) or "—"

    lines = [
        f"`anymole bench pipeline` (`{json_name}`): the whole `anymole` job (`AnyMoLeMethod.run`, per-stage "
        f"`Completed.timings`) for the paper's setting: {scene['character']} at {scene['fps']:g} fps, "
        f"{scene['context_frames']} context frames (2 s), {scene['gaps']} keys one second apart "
        f"(frames {', '.join(map(str, scene['keyframes']))}), {scene.get('views', '—')} views of "
        f"{scene.get('width', '—')}×{scene.get('height', '—')}. Preset `{r['preset']}` (ICAdapt "
        f"`{r['icadapt_recipe']}`), estimator backbones {' + '.join(r.get('estimator_backbones', []))}; "
        f"{r['model']}; {r['device']}, torch {r['torch']}, {r['date']}.",
        "",
        f"From a warm server (not in the job's time): prior built in {_s(warm.get('load_s'))}, `turbo` compiled in "
        f"{_s(warm.get('compile_s'))} (`anymole serve --video-warmup`), estimator backbones built in "
        f"{_s(warm.get('backbones_s'))}. Three jobs on one scene and cache: `short` ({counts(short)} steps), `long` "
        f"({counts(long)}) and `short` again (both caches hit). A stepped stage is fitted linearly in its step "
        "count through `short` and `long` and extrapolated to the preset's count; the JSON's `how` and "
        "`extrapolated` say so figure by figure.",
        "",
        f"| stage | preset's steps | timed at (short, long) | {r['device']} | per step | reference (A6000) | target (H100) |",
        "|---|---|---|---|---|---|---|",
    ]
    stages = r.get("stages_s", {})
    per = r.get("per_step_s", {})
    rows = (
        ("render (4 views)", "render", "—"),
        ("ICAdapt", "icadapt", f"{full['icadapt']}"),
        (f"two-stage sampling ({15 * scene['gaps']} frames)", "sample", f"{full['ddim']} a window"),
        ("estimator training (beside ICAdapt)", "estimator", f"{full['estimator']}"),
        ("estimation on the generated frames", "estimate", "—"),
        ("mimicking", "mimic", f"{full['mimic']} a solve"),
    )
    for label, stage, n in rows:
        key = STEPPED.get(stage)
        timed = f"{short.get(key, '—')}, {long.get(key, '—')}" if key else "—"
        step = f"{per[stage] * 1000:.1f} ms" if stage in per else "—"
        lines.append(f"| {label} | {n} | {timed} | {_s(stages.get(stage))} | {step} | "
                     f"{_ref(REFERENCE_A6000_S.get(stage))} | {_target(stage, stages.get(stage))} |")  # fmt: skip
    lines += [
        f"| **whole job** (first fill) | | | **{_s(r.get('whole_job_s'))}** | | "
        f"{_ref(REFERENCE_A6000_S['whole_job'])} | {_target('whole_job', r.get('whole_job_s'))} |",
        f"| **second fill** (caches hit) | | | **{_s(r.get('second_fill_s'))}** | | — (no cache: a whole job) | "
        f"{_target('second_fill', r.get('second_fill_s'))} |",
        "",
    ]
    if "second_fill_stages_s" in r:
        t = r["second_fill_stages_s"]
        lines.append("Second fill by stage: " + ", ".join(f"{s} {_s(t[s])}" for s in STAGES if s in t) + ".")
    measured = ", ".join(f"`{name}` {_s(run['wall_s'])}" for name, run in runs.items())
    lines.append(f"Measured job wall times: {measured or 'none'}." + (f" Missing: {r['missing']}." if r.get("missing") else "")
                 + (f" Skipped: {'; '.join(r['skipped'])}." if r.get("skipped") else ""))  # fmt: skip
    lines.append("The reference gives no mimicking time (14 solves × 100 steps); its ~5 h is ICAdapt, the "
                 "estimator and sampling on an A6000.")  # fmt: skip
    return "\n".join(lines) + "\n"


def write_markdown(
    results: dict[str, Any],
    path: Path,
    heading: str = "## Whole pipeline (anymole method)",
    json_name: str = "docs/benchmarks/pipeline.json",
) -> None:
    """Replace the ``heading`` section of ``path`` with the summarized ``results`` (`summarize`)."""
    replace_section(path, heading, _section(results, json_name))
