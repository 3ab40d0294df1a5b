"""Profile one ICAdapt optimiser step of the full-size prior on a GPU (random weights).

Prints the top CUDA kernels of a whole step by self time (torch.profiler); with ``--micro`` also the time of
conditioning from images (image encoder and VAE of the clip ends; the caption tokens are memoised after the
warm-up, and ICAdapt itself conditions from frames encoded once, see `icadapt.encode_clip_frames`), of a
denoiser forward, and micro-benchmarks of the memory-bound layers (torch's GroupNorm + SiLU under autocast
against a compiled fused one, the temporal (3,1,1) convolution) that decide the eager speed.

    python scripts/profile_icadapt.py --mode spatial --batch 8 --trace $OUT/step.json
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from anymole.video.clips import ClipBank, gather_clips
from anymole.video.dynamicrafter import DynamiCrafterConfig, DynamiCrafterPrior
from anymole.video.icadapt import RECIPES, ICAdaptConfig, icadapt
from anymole.video.sampler import WINDOW_SLOTS


def timed(fn: Callable[[], object], reps: int = 5, warmup: int = 2) -> float:
    """Mean seconds of ``fn`` over ``reps`` calls after ``warmup`` calls (CUDA synchronised)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / reps


def micro(device: torch.device) -> None:
    """Memory-bound layers at the first level's shape (8 clips × 16 frames, 320 channels, 40×64 latents)."""
    b, c, t, h, w = 8, 320, 16, 40, 64
    x = torch.randn(b * t, c, h, w, device=device, dtype=torch.bfloat16, requires_grad=True)
    gn = torch.nn.GroupNorm(32, c).to(device)

    def fwd_bwd(f: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            with torch.autocast("cuda", torch.bfloat16):
                y = f(x)
            y.float().sum().backward()

        return run

    print(
        f"GroupNorm+SiLU fwd+bwd, autocast (fp32 norm): {timed(fwd_bwd(lambda v: F.silu(gn(v)))) * 1e3:.2f} ms"
    )
    fused = torch.compile(lambda v: F.silu(F.group_norm(v.float(), 32, gn.weight, gn.bias).to(v.dtype)))
    start = time.perf_counter()
    run = fwd_bwd(fused)
    run()
    torch.cuda.synchronize()
    print(f"  compile of a fused GroupNorm+SiLU: {time.perf_counter() - start:.1f} s")
    print(f"GroupNorm+SiLU fwd+bwd, compiled fused (bf16 out): {timed(run) * 1e3:.2f} ms")

    conv3 = torch.nn.Conv3d(c, c, (3, 1, 1), padding=(1, 0, 0)).to(device)
    y5 = torch.randn(b, c, t, h, w, device=device, dtype=torch.bfloat16, requires_grad=True)
    for name, f in (
        ("conv3d (3,1,1) on (B,C,T,h,w)", lambda: conv3(y5)),
        (
            "conv2d (3,1) on (B,C,T,h*w)",
            lambda: F.conv2d(y5.flatten(3), conv3.weight[..., 0], conv3.bias, padding=(1, 0)),
        ),
    ):

        def run2(f: Callable[[], torch.Tensor] = f) -> None:
            with torch.autocast("cuda", torch.bfloat16):
                out = f()
            out.float().sum().backward()

        print(f"{name} fwd+bwd: {timed(run2) * 1e3:.2f} ms")
    flops = 3 * 2 * 3 * c * c * b * t * h * w
    print(f"  (one temporal conv fwd+bwd = {flops / 1e12:.2f} TFLOP)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=tuple(RECIPES), default="",
                    help="an ICAdaptConfig preset (8 clips a step); overrides --mode/--batch/--ckpt")
    ap.add_argument("--mode", default="spatial")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--ckpt", default="full", choices=("full", "selective", "none"))
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--micro", action="store_true", help="also time the conditioning, a forward pass and layers")
    ap.add_argument("--trace", default="")
    ap.add_argument("--rows", type=int, default=45)
    args = ap.parse_args()
    device = torch.device("cuda")
    torch.manual_seed(0)
    prior = DynamiCrafterPrior(DynamiCrafterConfig.full(), device=device, dtype=torch.float32).eval()
    size = tuple(prior.config.resolution)
    frames = WINDOW_SLOTS - 1 + 8
    videos = torch.rand(1, 3, frames, *size, device=device)
    bank = ClipBank(videos, gather_clips(1, frames, k=WINDOW_SLOTS, strides=(1,)), "a character walking")
    if args.micro:
        index = torch.arange(args.batch)
        first, last = bank.endpoints(index)
        fps = bank.fps[index].to(device)
        with torch.no_grad(), torch.autocast("cuda", torch.bfloat16):
            cond_s = timed(lambda: prior.condition([bank.caption] * args.batch, first, last, fps), reps=3)
            cond = prior.condition([bank.caption] * args.batch, first, last, fps)
            x = torch.randn(args.batch, 4, WINDOW_SLOTS, size[0] // 8, size[1] // 8, device=device)
            tt = torch.full((args.batch,), 500, device=device)
            fwd_s = timed(lambda: prior.predict(x, tt, cond), reps=3)
        print(f"conditioning of {args.batch} clips from images (image encoder + VAE of ends): {cond_s:.3f} s")
        print(f"denoiser forward, {args.batch} clips, no grad: {fwd_s:.3f} s")
        micro(device)

    if args.preset:
        cfg = RECIPES[args.preset](steps=args.steps)
    else:
        cfg = ICAdaptConfig(
            steps=args.steps,
            mode=args.mode,
            batch_size=args.batch,
            grad_accum=8 // args.batch,
            gradient_checkpointing=args.ckpt != "none",
            selective_checkpointing=args.ckpt == "selective",
        )
    stamps: list[float] = []

    def on_step(stage: str, fraction: float, **_: object) -> None:
        torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    icadapt(prior, bank, cfg, on_step=on_step)
    steps = [b - a for a, b in itertools.pairwise(stamps)]
    print(f"ICAdapt {cfg}")
    print(f"first step (compile included) {stamps[0] - start:.1f} s; then steps {[round(s, 3) for s in steps]} s")
    print(f"peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    one = ICAdaptConfig(**{**cfg.__dict__, "steps": 1})
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
        icadapt(prior, bank, one)
        torch.cuda.synchronize()
    avg = prof.key_averages()
    print(avg.table(sort_by="self_device_time_total", row_limit=args.rows, max_name_column_width=60))
    shaped = prof.key_averages(group_by_input_shape=True)
    print(
        shaped.table(
            sort_by="self_device_time_total",
            row_limit=30,
            max_name_column_width=40,
            max_shapes_column_width=90,
        )
    )
    if args.trace:
        prof.export_chrome_trace(args.trace)


if __name__ == "__main__":
    main()
