"""Oracle evaluation of every bundled asset, written into docs/quality.md's results table (issue 14.3).

    python scripts/oracle_table.py [--preset draft] [--device cpu] [--only NAME ...] [--json OUT.json]

Runs `anymole.pipeline.oracle.oracle_eval` on one 1 s gap per bundled asset (`CASES`) and rewrites the table
between the ``<!-- oracle:PRESET:DEVICE -->`` markers of docs/quality.md (appending the section if it is
missing): per asset, ``anymole`` beside ``interp``, global and local rotations, HL2Q(1/2) and L2Q per joint,
L2P, the estimator's 2D error on the gap frames and its backbone, wall and process CPU time. CesiumMan's only
clip lasts 2 s and is a seamless walk cycle in place (its last frame equals its first), so it is looped three
times to give 2 s of context and a 1 s gap; the Fox's Walk (a 0.71 s cycle, last frame = first) is looped five
times, a second Fox gap beside the slow Survey turn that SLERP already fills almost exactly.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from anymole.io import load_character
from anymole.pipeline.oracle import oracle_eval
from anymole.rig import Character, Motion

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "quality.md"


@dataclass(frozen=True)
class Case:
    """One asset's gap: ``context`` clip frames ``a:b``, the key 1 s after frame ``b − 1``; ``loops`` > 1 repeats
    the clip (a cycle whose last frame equals its first)."""

    name: str
    kind: str
    asset: str
    clip: str
    context: tuple[int, int]
    key: int
    loops: int = 1


CASES = (
    Case("CMU 131_01 walk", "mocap", "131_01_30fps.bvh", "131_01_30fps", (0, 61), 90),
    Case("Fox Survey", "quadruped", "Fox.glb", "Survey", (0, 49), 72),
    Case("CesiumMan walk ×3", "humanoid", "CesiumMan.glb", "animation_0", (0, 49), 72, loops=3),
    Case("Fox Walk ×5", "quadruped", "Fox.glb", "Walk", (0, 49), 72, loops=5),
)


def looped(motion: Motion, loops: int) -> Motion:
    """``motion`` played ``loops`` times: frames ``0 … F−2`` repeated, then the last frame (= the first)."""
    f = motion.num_frames
    idx = torch.cat([torch.arange(f - 1)] * loops + [torch.tensor([f - 1])])
    tr = motion.translations[idx] if motion.translations is not None else None
    return Motion(motion.fps, motion.rotations[idx], motion.root_translation[idx], tr, motion.name)


def character(case: Case) -> Character:
    ch = load_character(ROOT / "assets" / case.asset)
    if case.loops > 1:
        ch = replace(ch, motions={**ch.motions, case.clip: looped(ch.motions[case.clip], case.loops)})
    return ch


def run(case: Case, preset: str, device: str) -> dict[str, object]:
    ch = character(case)
    wall, cpu = time.perf_counter(), time.process_time()
    res = oracle_eval(ch, case.clip, case.context, [case.key], preset, device=device)
    out = res.to_json()
    out.update(wall_s=time.perf_counter() - wall, cpu_s=time.process_time() - cpu, preset=preset, device=device)
    return out


def _g(x: float) -> str:
    return f"{x:.3g}"


def table(results: dict[str, dict], preset: str, device: str) -> str:
    """The markdown block for ``results`` (by case name)."""
    lines = [
        f"<!-- oracle:{preset}:{device} -->",
        f"`python scripts/oracle_table.py --preset {preset} --device {device}` ({time.strftime('%Y-%m-%d')}). "
        "Ratio: anymole / interp on global HL2Q(1/2) (the target is ≤ 0.5).",
        "",
        "| asset (gap) | fill | HL2Q(1/2) global | L2Q pj global | HL2Q(1/2) local | L2Q pj local | L2P "
        "| ratio | estimator px (size) | backbone | wall s / CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in CASES:
        r = results.get(case.name)
        if r is None:
            continue
        a, b = r["frames"]
        w, h = r["image_size"]
        ratio = r["anymole"]["global"]["hl2q_1_2"] / max(r["interp"]["global"]["hl2q_1_2"], 1e-12)
        extra = (f"| {ratio:.2f} | {r['estimator_px']:.2f} ({w}×{h}) | {r['backbone']} "
                 f"| {r['wall_s']:.0f} / {r['cpu_s']:.0f} |")  # fmt: skip
        for method in ("anymole", "interp"):
            m = r[method]
            lines.append(
                f"| {case.name} ({case.kind}, {a}–{b}) | `{method}` | {_g(m['global']['hl2q_1_2'])} "
                f"| {_g(m['global']['l2q_per_joint_mse'])} | {_g(m['local']['hl2q_1_2'])} "
                f"| {_g(m['local']['l2q_per_joint_mse'])} | {_g(m['global']['l2p'])} "
                + (extra if method == "anymole" else "| | | | |")
            )
    lines.append(f"<!-- /oracle:{preset}:{device} -->")
    return "\n".join(lines)


def write_doc(block: str, preset: str, device: str) -> None:
    text = DOC.read_text()
    pat = re.compile(rf"<!-- oracle:{preset}:{device} -->.*?<!-- /oracle:{preset}:{device} -->", re.S)
    if pat.search(text):
        text = pat.sub(lambda _: block, text)
    else:
        text = text.rstrip("\n") + f"\n\n### `{preset}` preset, {device}\n\n{block}\n"
    DOC.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="draft", choices=["draft", "fast", "quality"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", nargs="+", help="case names to run (the others keep their rows from --json's file)")
    ap.add_argument("--json", type=Path, help="results file: read for the cases not run, then rewritten")
    args = ap.parse_args()
    results: dict[str, dict] = json.loads(args.json.read_text()) if args.json and args.json.exists() else {}
    for case in CASES:
        if args.only and case.name not in args.only:
            continue
        results[case.name] = run(case, args.preset, args.device)
        print(case.name, json.dumps({k: results[case.name][k] for k in ("estimator_px", "wall_s", "cpu_s")}), flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    write_doc(table(results, args.preset, args.device), args.preset, args.device)


if __name__ == "__main__":
    main()
