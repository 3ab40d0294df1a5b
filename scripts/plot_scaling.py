"""Draw docs/scaling_wait.png from docs/benchmarks/capacity.json (written by `anymole bench capacity`): wait-time
percentiles against GPU count, one panel per percentile, one line per placement policy.

Needs matplotlib, which the package does not depend on: run it with any Python that has matplotlib and the
standard library (it reads only the JSON), e.g. ``python -m pip install matplotlib`` in a scratch environment.

    python scripts/plot_scaling.py [--json docs/benchmarks/capacity.json] [--out docs/scaling_wait.png]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

STYLE = {  # policy → (label, colour, line style)
    "affinity": ("strict affinity", "tab:blue", "-"),
    "spill": ("affinity, spill to an idle GPU (shared storage)", "tab:green", "-"),
    "shared": ("no affinity, shared storage", "tab:orange", "--"),
    "local": ("no affinity, GPU-local caches", "tab:red", ":"),
}
PERCENTILES = (("wait_p50_s", "median"), ("wait_p90_s", "p90"), ("wait_p99_s", "p99"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=Path("docs/benchmarks/capacity.json"))
    parser.add_argument("--out", type=Path, default=Path("docs/scaling_wait.png"))
    args = parser.parse_args()
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        print("error: this script needs matplotlib (python -m pip install matplotlib)", file=sys.stderr)
        return 1
    report = json.loads(args.json.read_text())
    w = report["workload"]
    limit_min = report["limit_s"] / 60
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), sharey=True)
    for ax, (key, name) in zip(axes, PERCENTILES, strict=True):
        for policy, (label, colour, dash) in STYLE.items():
            rows = [r for r in report["results"] if r["policy"] == policy and not r["saturated"]]
            ax.plot([r["gpus"] for r in rows], [r[key] / 60 for r in rows], dash, color=colour, marker="o", ms=3, label=label)
        ax.axhline(limit_min, color="grey", lw=0.8)
        ax.set_title(f"{name} wait")
        ax.set_xlabel("GPUs")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(0, 15)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("wait from submit to start (min)")
    axes[0].legend(fontsize=8, loc="upper right")
    t = report["service_times"]
    fig.suptitle(
        f"{w['animators']} animators, a fill each per {w['fill_interval_s'] / 60:.0f} min, {w['repeat_share']:.0%} on an "
        f"adapted scene; {t['whole_job_s'] / 60:.1f} / {t['second_fill_s'] / 60:.1f} GPU-min a new / repeat fill "
        f"(saturated counts left out; grey: {limit_min:.0f} min)",
        fontsize=10,
    )
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
