"""Estimator training speed at full size on a GPU (random-init frozen ViTs, random images and labels).

    python scripts/bench_estimator.py OUT.json [--presets fast quality]

The paper's setting: 4 views x (61 context frames at 30 fps + 6 keys) = 268 renders of 320x512, 24 joints.
`fit_estimator` runs twice per preset, for 60 and 360 steps (CUDA-synchronised); the per-step cost is their
difference / 300, encode and setup the rest of the 60-step run, and the preset's full training time is
extrapolated linearly from the two. docs/benchmarks.md's "Estimator training" section reports the result.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from anymole.estimator import EstimatorConfig, build_backbone, fit_estimator

SHORT, LONG = 60, 360


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="results JSON")
    ap.add_argument("--presets", nargs="+", default=["fast", "quality"], choices=["draft", "fast", "quality"])
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU: the figures are for the ViT presets at full size")
    dev = "cuda"
    n, joints, h, w = 4 * 61 + 4 * 6, 24, 320, 512
    g = torch.Generator(device=dev).manual_seed(0)
    images = torch.rand(n, 3, h, w, device=dev, generator=g)
    j2d = torch.rand(n, joints, 2, device=dev, generator=g) * torch.tensor([w - 1, h - 1], device=dev)
    depth = torch.rand(n, joints, device=dev, generator=g) + 2
    weight = torch.ones(n, device=dev)
    weight[-24:] = 3  # the keyframes
    out: dict[str, object] = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    for preset in args.presets:
        cfg = EstimatorConfig.preset(preset)
        bbs = [build_backbone(b, cfg, random_init=True).to(dev) for b in cfg.backbones]
        times = {}
        for steps in (SHORT, LONG):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            fit_estimator(images, j2d, depth, weight, replace(cfg, steps=steps), backbones=bbs, device=dev)
            torch.cuda.synchronize()
            times[str(steps)] = time.perf_counter() - start
        step_s = (times[str(LONG)] - times[str(SHORT)]) / (LONG - SHORT)
        setup = times[str(SHORT)] - SHORT * step_s
        out[preset] = {
            "steps": cfg.steps,
            "step_s": step_s,
            "encode_and_setup_s": setup,
            "train_s_extrapolated": setup + cfg.steps * step_s,
            "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
            "measured": times,
        }
        print(preset, json.dumps(out[preset]), flush=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
