"""Run the video stage (render → ICAdapt → two-stage sampling) end to end on one device, without a server.

A check that the whole stage runs on a device (CUDA correctness of rendering, adaptation and sampling
together) and a per-stage timing of a scene. The character is a BVH (mesh-less: a capsule body is rendered),
so no asset importer is needed on the device. Random weights: the video is noise.

    python scripts/video_stage.py --prior tiny --device cuda
    python scripts/video_stage.py --prior full --device cuda --icadapt-steps 3 --ddim-steps 5 --out $OUT/stage.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from anymole.io import read_bvh
from anymole.rig import Keyframes, Motion
from anymole.video.dynamicrafter import DynamiCrafterConfig, DynamiCrafterPrior
from anymole.video.generate import VideoJobConfig, generate_video, plan_timeline, render_scene
from anymole.video.icadapt import RECIPES
from anymole.video.sampler import SamplerConfig

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prior", choices=("tiny", "full"), default="tiny")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--bvh", type=Path, default=ROOT / "assets" / "131_01_30fps.bvh", help="a 30 fps BVH clip")
    ap.add_argument("--gaps", type=int, default=1, help="keyframes, 1 s apart after 2 s of context")
    ap.add_argument("--preset", choices=tuple(RECIPES), default="fast")
    ap.add_argument("--icadapt-steps", type=int, default=2)
    ap.add_argument("--ddim-steps", type=int, default=2)
    ap.add_argument("--out", type=Path, help="write the timings here as JSON")
    args = ap.parse_args()

    device = torch.device(args.device)
    character = read_bvh(args.bvh)
    motion = next(iter(character.motions.values()))
    fps = round(motion.fps)
    context = motion.slice(0, 2 * fps + 1)
    keys = [2 * fps + fps * (j + 1) for j in range(args.gaps)]
    config = DynamiCrafterConfig.full() if args.prior == "full" else DynamiCrafterConfig.tiny()
    dtype = torch.float32
    start = time.perf_counter()
    prior = DynamiCrafterPrior(config, device=device, dtype=dtype).eval()
    build_s = time.perf_counter() - start
    height, width = config.resolution
    job = VideoJobConfig(
        width=width,
        height=height,
        icadapt=RECIPES[args.preset](steps=args.icadapt_steps),
        sampler=SamplerConfig(num_steps=args.ddim_steps),
    )
    previews: list[int] = []

    def on_step(stage: str, fraction: float, message: str = "", *, preview: object = None, frame: int = 0) -> None:
        if preview is not None:
            previews.append(preview.frame)  # type: ignore[attr-defined]

    timeline = plan_timeline(context.num_frames, context.fps, keys)
    t0 = time.perf_counter()
    keyed = Keyframes(tuple(keys), Motion(motion.fps, motion.rotations[keys], motion.root_translation[keys]))
    renders = render_scene(character, context, keyed, timeline, job, device=device)
    render_s = time.perf_counter() - t0
    scene = generate_video(prior, renders, timeline, job, on_step=on_step)
    if device.type == "cuda":
        torch.cuda.synchronize()
    frames = scene.frames
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "prior": args.prior,
        "preset": args.preset,
        "icadapt_steps": args.icadapt_steps,
        "ddim_steps": args.ddim_steps,
        "gaps": args.gaps,
        "build_s": build_s,
        "timings_s": {"render": render_s, **dict(scene.timings)},
        "frames_shape": list(frames.shape),
        "finite": bool(torch.isfinite(frames).all()),
        "range": [float(frames.min()), float(frames.max())],
        "preview_frames": previews,
        "losses": scene.adaptation.losses if scene.adaptation else None,
        "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
