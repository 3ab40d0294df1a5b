"""``anymole serve`` (the gRPC server the plugins talk to) and ``anymole demo`` (a server in-process, filled
through the client)."""

from __future__ import annotations

import asyncio
import importlib.resources
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from anymole.cli.demo_anymole import AnyMoLeDemo
    from anymole.client import FillResult
    from anymole.pipeline import VideoSettings


def _keep_compiled_graphs(data_dir: Path) -> None:
    """Point torch's compile caches into the server's data directory (unless ``TORCHINDUCTOR_CACHE_DIR`` is
    set): the ``turbo`` preset's compile takes minutes with empty caches and about half a minute with filled
    ones, and torch's default, under /tmp, does not survive a reboot."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(data_dir / "torchinductor"))


def _video_settings(prior: str, icadapt_steps: int | None, ddim_steps: int | None, size: str | None) -> VideoSettings:
    """``anymole serve``'s --video-* flags as `VideoSettings` (``none`` turns the method off)."""
    from anymole.errors import InvalidInput
    from anymole.pipeline import VideoSettings

    width = height = None
    if size is not None:
        w, sep, h = size.lower().partition("x")
        if not (sep and w.isdigit() and h.isdigit()):
            raise InvalidInput("--video-size", f"expected WIDTHxHEIGHT in pixels, e.g. 512x320, got {size!r}")
        width, height = int(w), int(h)
        if width < 8 or height < 8 or width % 8 or height % 8:
            raise InvalidInput("--video-size", f"width and height must be multiples of 8 (the VAE's factor), got {size!r}")
    return VideoSettings(
        prior=None if prior.lower() == "none" else prior,
        icadapt_steps=icadapt_steps,
        ddim_steps=ddim_steps,
        width=width,
        height=height,
    )


def serve(
    host: Annotated[str, typer.Option(help="interface to bind; 0.0.0.0 exposes the server (use --token and TLS)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0 picks a free one)")] = 50051,
    data_dir: Annotated[Path, typer.Option(help="job directories and uploaded characters")] = Path("~/.cache/anymole/server"),
    device: Annotated[list[str] | None, typer.Option(help="torch device per worker, repeatable (default: auto = every GPU, else cpu)")] = None,
    max_queue: Annotated[int, typer.Option(help="most waiting jobs before SubmitJob answers RESOURCE_EXHAUSTED")] = 64,
    token: Annotated[str | None, typer.Option(envvar="ANYMOLE_TOKEN", help="demand 'authorization: Bearer <token>'")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate chain: serve TLS (with --tls-key)")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key for --tls-cert")] = None,
    grace: Annotated[float, typer.Option(help="seconds running jobs get to finish on SIGTERM before they are interrupted")] = 30.0,
    stage_stop: Annotated[float | None, typer.Option(help="seconds a stopping server then waits for the interrupted jobs to stop: a stage sees the interrupt at its next step, so this is how long one step (an ICAdapt or sampler step, a mimicking iteration) may take; a stage still running then (a hung GPU or load) is left behind in its thread, its job is marked interrupted and the server exits anyway; 0 leaves it at once (default: 30)")] = None,
    finished_in_memory: Annotated[int | None, typer.Option(min=0, help="finished jobs whose events stay in memory; older ones replay from disk (default: 16)")] = None,
    keep_days: Annotated[float | None, typer.Option(min=0, help="delete finished jobs, and characters no job uses, older than this many days (checked at start and every 10 minutes; queued and running jobs are kept) (default: keep)")] = None,
    max_disk: Annotated[str | None, typer.Option(help="most disk for job directories and uploaded characters, e.g. 20G; beyond it the longest-finished jobs, then unused characters, are deleted first (default: no bound)")] = None,
    memory_budget: Annotated[str | None, typer.Option(help="memory jobs may take, e.g. 16G; sets the largest job (frames × joints) and queue, published in Limits (default: half the memory available at start)")] = None,
    video_prior: Annotated[str, typer.Option(help="prior of the 'video' method: none (method off), tiny (random weights: a dry run whose previews are noise) or PATH to a DynamiCrafter 512 interp checkpoint, or the folder `anymole models pull dynamicrafter-512-interp` fills; loaded on the first video job (at start with --video-warmup)")] = "none",
    video_icadapt_steps: Annotated[int | None, typer.Option(min=1, help="ICAdapt steps of every video job (default: the presets' 500)")] = None,
    video_ddim_steps: Annotated[int | None, typer.Option(min=1, help="DDIM steps per sampler window of a video job (default: 50)")] = None,
    video_size: Annotated[str | None, typer.Option(help="render size WxH of video jobs, multiples of 8 (default: the prior's: 512x320, 64x64 for tiny)")] = None,
    video_warmup: Annotated[bool, typer.Option(help="load the video prior on every device at start and compile the turbo preset on GPUs (minutes the first time on a machine, under a minute later), so the first jobs don't wait for it")] = False,
    estimator_steps: Annotated[int | None, typer.Option(min=1, help="joint-estimator training steps of every anymole job (default: the preset's)")] = None,
    mimic_steps: Annotated[int | None, typer.Option(min=1, help="mimicking iterations per solve of every anymole job (default: the preset's)")] = None,
    estimator_weights: Annotated[str | None, typer.Option(help="models folder holding the joint estimator's ViT weights, as `anymole models pull estimator` fills it: the anymole method's fast and quality presets then use the paper's frozen DINOv2-reg ViT-B/14 + FiT3D ViT-S/14; none: the conv backbone for every preset (default: the models folder ($ANYMOLE_MODELS, else ~/.cache/anymole/models) when it holds both)")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="where per-scene artefacts (adapted prior, estimator) are cached; with --ray, a path every node shares (default: DATA_DIR/icadapt)")] = None,
    ray: Annotated[str | None, typer.Option(help="run jobs on a Ray cluster: auto (the one `ray start` runs here, else a local one) or HOST:PORT of `ray start --head`; one worker per --device (auto: per GPU of the cluster); needs `pip install 'anymole[ray]'` (docs/ray.md)")] = None,
    ray_worker_cpus: Annotated[float, typer.Option(help="CPUs Ray reserves for each worker")] = 1.0,
) -> None:
    """Run the gRPC server the Unity and Unreal plugins talk to (anymole.v1.AnyMoLeService).

    Stops gracefully on SIGTERM/Ctrl-C: health goes NOT_SERVING, new jobs are refused, running jobs finish
    (or are marked interrupted after --grace; a stage that does not stop within --stage-stop of that is left
    behind), queued jobs run after the next start.

      anymole serve --port 50051 --data-dir /srv/anymole --token $SECRET --tls-cert cert.pem --tls-key key.pem

    The 'video' method (render, ICAdapt, two-stage sampling; previews stream, the result is an MP4) needs a prior:

      anymole serve --video-prior ~/.cache/anymole/models/dynamicrafter-512-interp/model.ckpt --video-warmup

      anymole serve --video-prior tiny --video-icadapt-steps 2 --video-ddim-steps 2 --video-size 96x64   # CPU dry run

    Beyond one machine, the jobs run on a Ray cluster's GPUs (docs/ray.md):

      anymole serve --ray 10.0.0.1:6379 --cache-dir /shared/anymole-cache --video-prior /shared/models/model.ckpt
    """
    import asyncio
    import dataclasses
    import logging

    from anymole.cli._common import _estimator_weights
    from anymole.errors import InvalidInput
    from anymole.service.budget import parse_size
    from anymole.service.retention import RetentionPolicy
    from anymole.service.server import ServerConfig
    from anymole.service.server import serve as run_server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    video = dataclasses.replace(
        _video_settings(video_prior, video_icadapt_steps, video_ddim_steps, video_size),
        warmup=video_warmup,
        estimator_steps=estimator_steps,
        mimic_steps=mimic_steps,
        estimator_weights=_estimator_weights(estimator_weights),
    )
    if video_warmup and video.prior is None:
        raise InvalidInput("--video-warmup", "there is no video prior to warm up: add --video-prior PATH (or tiny)")
    if cache_dir is not None:
        video = dataclasses.replace(video, cache_dir=cache_dir.expanduser())
    if ray is not None:
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise InvalidInput("--ray", "Ray is not installed here: pip install 'anymole[ray]' (on every node)")
    if video.prior is not None:
        _keep_compiled_graphs(data_dir.expanduser())
    cfg = ServerConfig(host=host, port=port, data_dir=data_dir.expanduser(), devices=tuple(device or ("auto",)),
                       max_queue=max_queue, token=token, tls_cert=tls_cert, tls_key=tls_key, grace_s=grace, video=video)
    if finished_in_memory is not None:
        cfg = dataclasses.replace(cfg, finished_in_memory=finished_in_memory)
    if stage_stop is not None:
        cfg = dataclasses.replace(cfg, stage_stop_s=stage_stop)  # checked there: --stage-stop must be >= 0
    retention = RetentionPolicy(keep_days, None if max_disk is None else parse_size(max_disk, "--max-disk"))
    budget = None if memory_budget is None else parse_size(memory_budget, "--memory-budget")
    cfg = dataclasses.replace(cfg, retention=retention, memory_budget=budget, ray=ray, ray_worker_cpus=ray_worker_cpus)
    asyncio.run(run_server(cfg, on_ready=lambda p: typer.echo(f"anymole listening on {host}:{p}", err=True)))


def demo(
    out_dir: Annotated[Path, typer.Option(help="where the result goes")] = Path("anymole-demo"),
    method: Annotated[str, typer.Option(help="in-betweening method on the in-process server: interp; video (tiny random-weight prior: a dry run whose video is noise); anymole (the whole job with that prior: GLB and a side-by-side MP4)")] = "interp",
) -> None:
    """Offline end-to-end run: start a server in-process, upload the bundled Fox, fill a gap of its Survey
    clip (context 0:40, keys 60 and 82) through the same client the plugins mirror, write the GLB.
    With --method video: context 0:49 (2 s), key 72 (1 s later), previews stream, writes fox_video.mp4.
    With --method anymole: the same gap filled by the whole AnyMoLe job (draft preset; minutes on a CPU), writes
    fox_anymole.glb and fox_anymole_side_by_side.mp4."""
    import time

    from anymole.cli.demo_anymole import CLIP, CONTEXT, KEYS, AnyMoLeDemo

    t0 = time.perf_counter()
    res = asyncio.run(run_demo_async(out_dir, method=method))
    if isinstance(res, AnyMoLeDemo):
        (a, b), last = CONTEXT, KEYS[-1]
        typer.echo(f"wrote {res.glb}: the Fox with {CLIP}_filled, frames {b}..{last} filled by the anymole job "
                   f"{res.job_id} (context {a}..{b - 1} and keys {', '.join(map(str, KEYS))} exact): {res.summary}")  # fmt: skip
        typer.echo(f"wrote {res.video}: {res.frames} frames at 15 fps, {res.width}x{res.height}: left the video the "
                   "prior generated for the gap, right the mimicked Fox rendered from the same camera")  # fmt: skip
        typer.echo("the tiny prior has random weights: its video is noise, so the mimicked motion follows noise; "
                   "with real weights (anymole serve --video-prior PATH) it follows the generated motion. "
                   f"{time.perf_counter() - t0:.0f} s in all")  # fmt: skip
        return
    if res.motion is None:  # method video: the result is the MP4 itself
        typer.echo(f"wrote {res.path} (job {res.job_id}): {res.summary}")
        return
    typer.echo(f"wrote {res.path} ({res.motion.num_frames} frames, job {res.job_id}): {res.summary}")
    typer.echo(f"look at it: anymole render {res.path} --out {out_dir / 'fox_fill.png'}")


async def run_demo_async(
    out_dir: Path,
    method: str = "interp",
    progress: bool = True,
    estimator_steps: int | None = None,
    mimic_steps: int | None = None,
) -> FillResult | AnyMoLeDemo:
    """Start a server in-process, fill a gap of the bundled Fox's "Survey" clip through it, stop it.

    Method ``video`` runs the video stage with the tiny random-weight prior (a dry run of seconds on a CPU
    whose video is noise) on 2 s of context and a key 1 s later, and writes ``fox_video.mp4``. Method ``anymole``
    runs the whole job on the same gap with that prior and the draft preset (``estimator_steps`` and
    ``mimic_steps`` override its step counts) and writes `anymole.cli.demo_anymole.run_anymole_demo`'s files."""
    from anymole.client import fill_remote_async
    from anymole.errors import InvalidInput
    from anymole.pipeline import TINY_PRIOR, VideoSettings
    from anymole.service.server import ServerConfig, build_server

    if method not in ("interp", "video", "anymole"):
        raise InvalidInput("--method", f"expected interp, video or anymole, got {method!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="anymole-demo-") as tmp:
        asset = Path(tmp) / "Fox.glb"
        with importlib.resources.as_file(importlib.resources.files("anymole") / "data" / "Fox.glb") as src:
            shutil.copyfile(src, asset)
        video = VideoSettings(prior=TINY_PRIOR, icadapt_steps=1, ddim_steps=2, width=128, height=80,
                              cache_dir=Path(tmp) / "cache", estimator_steps=estimator_steps,
                              mimic_steps=mimic_steps)  # fmt: skip
        cfg = ServerConfig(port=0, data_dir=Path(tmp) / "server", devices=("auto",), video=video)
        server, port = build_server(cfg)
        await server.start()
        # Survey is 24 fps: the video method needs 2 s of context (frames 0..48) and a key 1 s later (72).
        context, keys, out = ((0, 49), [72], "fox_video.mp4") if method == "video" else ((0, 40), [60, 82], "fox_fill.glb")
        try:
            if method == "anymole":
                from anymole.cli.demo_anymole import run_anymole_demo
                from anymole.video.config import VideoJobConfig

                scene = VideoJobConfig(width=128, height=80, views=video.views)  # the server's renders
                return await run_anymole_demo(f"127.0.0.1:{port}", asset, out_dir, scene, progress)
            return await fill_remote_async(
                f"127.0.0.1:{port}",
                asset,
                clip="Survey",
                context=context,
                keys=keys,
                out=out_dir / out,
                method=method,
                preset="fast" if method == "video" else "",
                progress=progress,
            )
        finally:
            await server.stop(2.0)
