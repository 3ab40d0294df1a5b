"""`anymole bench capacity`: run the capacity model over GPU counts and studio sizes, and write
``docs/benchmarks/capacity.json`` and ``docs/scaling.md`` (the plot is ``scripts/plot_scaling.py``'s, from the JSON).

Times are seconds in the JSON and minutes on the page.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from anymole.bench.capacity import (
    POLICIES,
    Policy,
    ServiceTimes,
    SimResult,
    Workload,
    draw_fills,
    gpus_needed,
    simulate,
    sweep,
)

__all__ = ["auto_gpus", "run_capacity", "write_json", "write_markdown"]

#: how each policy is named on the page
POLICY_TITLES: dict[Policy, str] = {
    "affinity": "affinity (repeat waits for its scene's GPU)",
    "spill": "affinity, spilling to an idle GPU over shared storage",
    "shared": "no affinity, caches on shared storage",
    "local": "no affinity, caches local to each GPU",
}


def auto_gpus(w: Workload, times: ServiceTimes) -> range:
    """GPU counts from just under the offered load to past where even cache-blind local caches (nearly every
    fill a whole job) settle."""
    lo = max(1, math.floor(w.offered_load(times)))
    return range(lo, math.ceil(w.arrival_rate * times.whole_job_s * 1.15) + 3)


def _needed(w: Workload, times: ServiceTimes, policy: Policy, limit_s: float, stat: str) -> int | None:
    """The fewest GPUs whose ``stat`` wait is under ``limit_s`` for workload ``w`` (scanning up from the load)."""
    fills = draw_fills(w)
    for g in auto_gpus(w, times):
        if getattr(simulate(fills, times, g, policy, w.cache_load_s), stat) < limit_s:
            return g
    return None


def run_capacity(
    w: Workload, times: ServiceTimes, gpus: range, studios: tuple[int, ...] = (), limit_s: float = 120.0
) -> dict[str, Any]:
    """Every policy on ``gpus`` GPUs for workload ``w``, the GPU counts it needs for a median (and a p90) wait
    under ``limit_s``, and the same for each studio size in ``studios`` (animators; the other settings kept)."""
    fills = draw_fills(w)
    results = sweep(fills, times, gpus, w.cache_load_s)
    # repeat fills submitted less than a whole job after their scene's first fill: still adapting however idle
    # the GPUs (a property of the open arrival model, the same for every policy)
    rep = fills.repeat & (fills.arrival_s >= fills.measure_from_s)
    early = fills.arrival_s[rep] - fills.arrival_s[fills.scene[rep]] < times.whole_job_s
    need = {
        p: {"p50": gpus_needed(results, p, limit_s, "wait_p50_s"), "p90": gpus_needed(results, p, limit_s, "wait_p90_s")}
        for p in POLICIES
    }
    by_size = {
        str(n): {p: _needed(replace(w, animators=n), times, p, limit_s, "wait_p50_s") for p in POLICIES}
        for n in studios
    }
    return {
        "workload": asdict(w),
        "arrival_rate_per_s": w.arrival_rate,
        "offered_load_gpus": w.offered_load(times),
        "repeats_while_adapting_share": float(early.mean()) if early.size else 0.0,
        "service_times": asdict(times),
        "limit_s": limit_s,
        "gpus": [gpus.start, gpus.stop - 1],
        "results": [asdict(r) | {"saturated": r.saturated} for r in results],
        "gpus_needed": need,
        "gpus_needed_by_animators": by_size,
    }


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")


def _min(seconds: float) -> str:
    return f"{seconds / 60:.1f}"


def _gpus(n: int | None, report: dict[str, Any]) -> str:
    return f"**{n}**" if n is not None else f"more than {report['gpus'][1]}"


def write_markdown(report: dict[str, Any], path: Path, plot: str = "scaling_wait.png") -> None:
    """``docs/scaling.md`` from a `run_capacity` report."""
    w, t = report["workload"], report["service_times"]
    rows = [SimResult(**{k: v for k, v in r.items() if k != "saturated"}) for r in report["results"]]
    limit_min = report["limit_s"] / 60
    need = report["gpus_needed"]
    by = {(r.policy, r.gpus): r for r in rows}
    counts = sorted({r.gpus for r in rows})
    out = [
        "# Scaling: how many GPUs a studio needs",
        "",
        "Written by `anymole bench capacity` (`server/anymole/bench/capacity.py`: a seeded queueing simulation; raw "
        "results in `docs/benchmarks/capacity.json`; the plot by `scripts/plot_scaling.py`). "
        + (
            "Service times: a whole job timed by `anymole bench pipeline`; regenerate after its next run."
            if "whole_job_s" in t["sources"]  # pipeline_times names the measured figures; derived_times the stages
            else "Service times: the per-stage benchmarks summed; regenerate with `anymole bench capacity --from "
            "docs/benchmarks/pipeline.json` once a whole job has been timed."
        ),
        "",
        "## Answer",
        "",
        f"{w['animators']} animators, one fill each every {w['fill_interval_s'] / 60:.0f} min on average, "
        f"{w['repeat_share']:.0%} of fills on a scene already adapted; a fill takes {_min(t['whole_job_s'])} min of GPU "
        f"on a new scene and {_min(t['second_fill_s'])} min on an adapted one. Offered load "
        f"{report['offered_load_gpus']:.1f} GPUs busy on average when every repeat fill finds its cache.",
        "",
        f"| placement | GPUs for a median wait under {limit_min:.0f} min | GPUs for a p90 wait under {limit_min:.0f} min |",
        "|---|---:|---:|",
    ]
    out += [f"| {POLICY_TITLES[p]} | {_gpus(need[p]['p50'], report)} | {_gpus(need[p]['p90'], report)} |" for p in POLICIES]
    out += ["", _affinity_reading(report, by), ""]
    if report["gpus_needed_by_animators"]:
        sizes = report["gpus_needed_by_animators"]
        out += [
            f"GPUs for a median wait under {limit_min:.0f} min by studio size (the other assumptions kept):",
            "",
            "| animators | " + " | ".join(p for p in POLICIES) + " |",
            "|---:|" + "---:|" * len(POLICIES),
        ]
        out += [f"| {n} | " + " | ".join(_gpus(v[p], report).strip("*") for p in POLICIES) + " |" for n, v in sizes.items()]
        out += [""]
    out += [
        "## Service times",
        "",
        f"Device: {t['device']}. Whole job {t['whole_job_s']:.1f} s, second fill {t['second_fill_s']:.1f} s, from:",
        "",
    ]
    out += [f"- `{k}`: {v}" for k, v in t["sources"].items()]
    out += [
        "",
        "## Assumptions",
        "",
        f"- **Arrivals**: Poisson, {report['arrival_rate_per_s'] * 3600:.0f} fills an hour from the studio "
        f"({w['animators']} animators × one per {w['fill_interval_s'] / 60:.0f} min), independent of whether earlier "
        "fills came back (open model). An animator who waits for a result before the next fill submits less "
        "under load, so the figures err on the busy side; the same goes for repeat fills submitted while their "
        f"scene is still adapting: {report['repeats_while_adapting_share']:.0%} of repeat fills come less than a whole "
        "job after their scene's first fill, and wait for it under affinity (the floor of about a whole job under "
        "both affinity rows' p99) or adapt the scene again in a cache-blind pool.",
        f"- **Scenes**: each animator works on one scene at a time; after their first fill, a fill is another on "
        f"the current scene with probability {w['repeat_share']:.2f}, else the start of a new one.",
        "- **Service**: one fill holds one GPU for its whole time, a GPU runs one fill at a time, FIFO; service "
        f"times {w['service']} at the figures above. No compile warm-up at a worker's start (123–179 s once per "
        "process: a long-running worker pays it once), no sharing of a GPU by two fills, no priority for short "
        "fills.",
        f"- **Caches**: a GPU that adapted a scene keeps its artefacts for good (no eviction). With shared storage a "
        f"GPU that did not adapt it reads them in `cache_load_s` = {w['cache_load_s']:.0f} s (assumed, not measured: "
        "the turbo preset's adapter is 442 k parameters, 1.8 MB; the fast preset's 628 M trained parameters, 2.5 GB "
        "in fp32, take 3–5 s at 0.5–1 GB/s), once it has finished adapting somewhere; a repeat fill that starts "
        "earlier adapts the scene again (cache-blind pools) or waits for it (affinity). Without shared storage a "
        "GPU reuses only what it computed itself.",
        "- **Placement**: " + "; ".join(f"`{p}`: {POLICY_TITLES[p]}" for p in POLICIES) + " (details in the module "
        "docstring of `anymole.bench.capacity`).",
        f"- **Run**: {w['hours']:.0f} simulated hours measured after {w['warmup_hours']:.0f} h of warm-up, seed "
        f"{w['seed']}; every policy and GPU count sees the same fills. Wait = submit to the start on a GPU; the "
        "result comes one service time later.",
        "",
        f"## Waits against GPUs ({w['animators']} animators)",
        "",
        f"![wait percentiles against GPU count]({plot})",
        "",
        "Waits in minutes (p50 / p90 / p99); util = GPU time the fills took over GPU time available; whole = share "
        "of fills that paid the whole job. A row at util ≥ 0.99 has more work than GPUs: its queue grows with the "
        "simulated hours and its waits mean only that.",
        "",
        "| GPUs | " + " | ".join(f"{p}: p50 / p90 / p99 | util | whole" for p in POLICIES) + " |",
        "|---:|" + "---:|---:|---:|" * len(POLICIES),
    ]
    for g in counts:
        cells = []
        for p in POLICIES:
            r = by[(p, g)]
            waits = "saturated" if r.saturated else f"{_min(r.wait_p50_s)} / {_min(r.wait_p90_s)} / {_min(r.wait_p99_s)}"
            cells.append(f"{waits} | {r.utilisation:.2f} | {r.whole_job_share:.2f}")
        out.append(f"| {g} | " + " | ".join(cells) + " |")
    out += [
        "",
        "## Checks",
        "",
        "`tests/bench/test_capacity.py`: with exponential service and no repeat fills the simulation matches the "
        "M/M/c (Erlang C) mean wait and its p90 over several (λ, μ, c); waits fall as GPUs are added; the answer "
        "above is reproduced from this page's JSON (same inputs, same seed, same numbers).",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out))


def _affinity_reading(report: dict[str, Any], by: dict[tuple[Policy, int], SimResult]) -> str:
    """One paragraph on what cache affinity buys, from the numbers."""
    need = report["gpus_needed"]
    p50 = {p: need[p]["p50"] for p in POLICIES}
    p90 = {p: need[p]["p90"] for p in POLICIES}
    top = report["gpus"][1]

    def n(v: int | None) -> str:
        return str(v) if v is not None else f"more than {top}"

    say = [
        "**What cache affinity buys.** Without shared storage, affinity is what makes a repeat fill cheap: "
        "cache-blind placement sends almost every repeat to a GPU that never adapted its scene"
    ]
    if p50["local"] is not None:
        say.append(f" ({by[('local', p50['local'])].whole_job_share:.0%} of fills pay the whole job)")
    say.append(f", so it needs {n(p50['local'])} GPUs for the median against {n(p50['affinity'])} with affinity.")
    say.append(
        f" With shared storage the difference is small: strict affinity, affinity spilling to an idle GPU and a "
        f"cache-blind pool need {n(p50['affinity'])}, {n(p50['spill'])} and {n(p50['shared'])} GPUs for the median, "
        f"{n(p90['affinity'])}, {n(p90['spill'])} and {n(p90['shared'])} for the p90. Strict affinity's p90 falls "
        "only slowly with more GPUs: a repeat fill waits whenever its scene's GPU runs another fill, however many "
        "others idle. Spilling to an idle GPU removes that wait; a repeat submitted while its scene is still "
        "adapting waits for it in both; "
    )
    g = p50["shared"] or top
    sp, sh = by[("spill", g)], by[("shared", g)]
    say.append(
        f"the cache-blind pool adapts such a scene again instead, which costs GPU time (at {g} "
        f"GPUs {sh.whole_job_share:.0%} of its fills pay the whole job against {sp.whole_job_share:.0%}, utilisation "
        f"{sh.utilisation:.2f} against {sp.utilisation:.2f}) and buys a lower p99 once GPUs are spare."
    )
    return "".join(say)
