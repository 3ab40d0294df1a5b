"""`anymole bench pipeline`, the runner: the whole ``anymole`` job, stage by stage, from a warm server.

The paper's setting: a bundled humanoid (CesiumMan) at 30 fps, 2 s of context (61 frames), 6 keys one second
apart (context end + 30, 60, … 180 frames), 4 views. The server is warm as ``anymole serve --video-warmup``
leaves it: the prior loaded and the ``turbo`` ICAdapt preset compiled (`VideoMethod.compile_turbo`, on CUDA),
and the estimator's frozen backbones built. Those one-time costs are recorded beside the job's, not in them.

Every job runs the real path, `AnyMoLeMethod.run` (the composer's method) with its per-stage
`Completed.timings`, at reduced step counts (`VideoSettings.icadapt_steps`, ``ddim_steps``,
``estimator_steps``, ``mimic_steps``), three times on the same scene with one cache directory:

- ``short``: few steps of each loop (caches empty);
- ``long``: more steps (a different config: both caches miss again);
- ``second``: ``short`` again: the ICAdapt and estimator caches hit, as a second fill of the scene does.

`anymole.bench.pipeline_report.summarize` fits each stepped stage linearly in its step count from ``short``
and ``long`` and extrapolates to the preset's counts; the results say which figure came from where.

The H100 run (`anymole bench pipeline --help` has the whole device command with its setup)::

    python3 -m anymole.cli bench pipeline --model full --device cuda --scene bench_scene.pt \
        --json $OUT/pipeline.json --markdown $OUT/benchmarks.md --partial $OUT/pipeline.partial.json --budget 400

(``bench_scene.pt`` from ``anymole bench pipeline --export-scene bench_scene.pt`` on a machine with libassimp.)
At the default step counts the run is about: prior build and cold ``turbo`` compile 3 min, then three jobs of
about a minute each (ICAdapt 15 / 40 steps of about 0.5 s, sampling at 2 / 5 DDIM steps, mimicking at 2 / 8
iterations a solve). Mimicking runs where the job's motion lies, on the CPU: about 8 s an iteration of the
12-frame batch at 512×320 on 2 shared cores here, nearly all in the soft silhouette. A job starts only within
``--budget`` seconds of the start, and ``--partial`` keeps what finished if the command is cut.

On a GPU the estimator trains on the paper's frozen ViT pair with random weights (same FLOPs as the published
weights; `anymole.estimator.build_backbone` with ``random_init``), handed to the method as its
`BackboneFactory`, under the preset's heads; on the CPU on the conv backbone (or tiny ViTs: a dry run).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as _dt
import functools
import hashlib
import importlib.resources
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from anymole.bench.scene_file import read_scene
from anymole.bench.video import device_name
from anymole.errors import InvalidInput
from anymole.estimator import EstimatorConfig, build_backbone
from anymole.mimic import MimicConfig
from anymole.pipeline.control import CancelToken, ProgressReporter
from anymole.pipeline.events import Completed, Event, Progress
from anymole.pipeline.methods.anymole import PRESETS, AnyMoLeMethod, BackboneFactory
from anymole.pipeline.methods.video import ICADAPT_PRESETS, VideoMethod
from anymole.pipeline.pool import LoadedPrior, PriorPool
from anymole.pipeline.settings import TINY_PRIOR, VideoSettings
from anymole.pipeline.spec import JobSpec
from anymole.rig import Character, Keyframes, Motion
from anymole.video.sampler import RENDER_FPS, SamplerConfig
from anymole.video.schedule import DDIMSchedule

__all__ = ["RUNS", "PipelineBenchConfig", "Steps", "load_source", "paper_scene", "run_pipeline_bench"]

#: the jobs, in order: (name, which step counts, what it measures)
RUNS = (
    ("short", "short", "first fill at the short step counts (caches empty)"),
    ("long", "long", "first fill at the long step counts (a cache of its own: both caches miss)"),
    ("second", "short", "the short job again on the same scene: ICAdapt and estimator caches hit"),
)
CONTEXT_SECONDS = 2
GIB = 2**30

Say = Callable[[str], None]


@dataclass(frozen=True)
class Steps:
    """Step counts of a job's loops: ICAdapt optimiser steps, DDIM steps per sampler window, estimator
    training steps, mimicking iterations per solve."""

    icadapt: int
    ddim: int
    estimator: int
    mimic: int

    def __post_init__(self) -> None:
        for name, value in dataclasses.asdict(self).items():
            if value < 1:
                raise InvalidInput(name, f"steps must be >= 1, got {value}")


@dataclass(frozen=True)
class PipelineBenchConfig:
    """What the pipeline benchmark runs.

    Attributes:
        model: ``"full"`` (DynamiCrafter 512 with random weights, GPU) or ``"tiny"`` (CPU dry run).
        device: torch device.
        preset: the ``anymole`` preset (``draft``: ICAdapt ``turbo``, the recipe the warm-up compiles).
        asset: the character file (default: the bundled CesiumMan, a humanoid).
        scene: a `anymole.bench.scene_file` export of the character and its clip at 30 fps, instead of ``asset``.
        gaps: one-second gaps after the 2 s context (the paper's 6).
        backbone: ``"vit"`` (the paper's frozen pair with random weights; tiny ViTs of the same code with the tiny
            model) or ``"conv"`` (trained per scene).
        short, long: step counts of the ``short`` and ``long`` jobs (``second`` repeats ``short``). Estimator
            training runs beside ICAdapt on the same device and its GPU work lands in ICAdapt's time: both jobs
            train it alike (the ``draft`` preset's 300 steps, in full), so that it cancels in ICAdapt's slope, and
            ICAdapt is long enough in both for the estimator to finish inside it (the results flag a job where it
            did not: ``estimator_spilled_into_sampling``).
        budget_s: no job starts once this many seconds have passed since the start (warm-up included).
    """

    model: str = "full"
    device: str = "cuda"
    preset: str = "draft"
    asset: Path | None = None
    scene: Path | None = None
    gaps: int = 6
    backbone: str = "vit"
    short: Steps = field(default_factory=lambda: Steps(icadapt=15, ddim=2, estimator=300, mimic=2))
    long: Steps = field(default_factory=lambda: Steps(icadapt=40, ddim=5, estimator=300, mimic=8))
    budget_s: float = 400.0

    def __post_init__(self) -> None:
        if self.model not in ("full", "tiny"):
            raise InvalidInput("model", f"must be full or tiny, got {self.model!r}")
        if self.preset not in PRESETS:
            raise InvalidInput("preset", f"must be one of {tuple(PRESETS)}, got {self.preset!r}")
        if self.backbone not in ("vit", "conv"):
            raise InvalidInput("backbone", f"must be vit or conv, got {self.backbone!r}")
        if self.gaps < 1:
            raise InvalidInput("gaps", f"must be >= 1, got {self.gaps}")


def full_steps(preset: str) -> Steps:
    """The preset's own step counts (what the figures are extrapolated to)."""
    return Steps(
        icadapt=ICADAPT_PRESETS[PRESETS[preset]]().steps,
        ddim=SamplerConfig().num_steps,
        estimator=EstimatorConfig.preset(preset).steps,
        mimic=MimicConfig.preset(preset).steps,
    )


def load_source(asset: Path | None = None, scene: Path | None = None) -> tuple[Character, Motion, str]:
    """The character, its first clip at 30 fps and a content id (``"sha256:…"`` of the file), from ``asset``
    (default: the bundled CesiumMan) or from a `anymole.bench.scene_file.save_scene` file (``scene``: for a
    machine without libassimp)."""
    if scene is not None:
        character, clip = read_scene(scene)
        if abs(clip.fps - RENDER_FPS) > 1e-6:
            raise InvalidInput("scene", f"{scene}'s clip runs at {clip.fps:g} fps; export it at {RENDER_FPS}")
        return character, clip, f"sha256:{hashlib.sha256(Path(scene).read_bytes()).hexdigest()}"
    if asset is None:
        with importlib.resources.as_file(importlib.resources.files("anymole") / "data" / "CesiumMan.glb") as path:
            return load_source(Path(path))
    from anymole.io import load_character

    character = load_character(asset, fps=float(RENDER_FPS))
    if not character.motions:
        raise InvalidInput("asset", f"{asset} has no clip to take the context and keys from")
    clip = next(iter(character.motions.values()))
    return character, clip, f"sha256:{hashlib.sha256(Path(asset).read_bytes()).hexdigest()}"


def paper_scene(character: Character, clip: Motion, character_id: str, gaps: int = 6, preset: str = "draft") -> JobSpec:
    """The paper's setting on ``clip`` (30 fps): 2 s of context, ``gaps`` keys one second apart.

    A clip shorter than the timeline is looped (the walk cycle of CesiumMan is 2 s): frame ``f`` takes the
    pose of clip frame ``f mod (F − 1)`` and the root moves on by the clip's horizontal travel each cycle.
    """
    context = CONTEXT_SECONDS * RENDER_FPS + 1
    total = context + RENDER_FPS * gaps
    frames = torch.arange(total)
    period = clip.num_frames - 1
    if clip.num_frames >= total or period < 1:
        idx, cycle = frames.clamp(max=clip.num_frames - 1), torch.zeros(total)
    else:
        idx, cycle = frames % period, (frames // period).to(torch.float64)
    travel = clip.root_translation[-1] - clip.root_translation[0]
    travel[1] = 0.0  # glTF +Y up: walk on along the floor, not up
    root = clip.root_translation[idx] + cycle[:, None].to(travel.dtype) * travel
    rot = clip.rotations[idx]
    tr = clip.translations
    if tr is not None:  # joint 0 is the root: its translation is the root's
        tr = tr[idx].clone()
        tr[:, 0] = root
    whole = Motion(clip.fps, rot, root, tr, clip.name)
    keys = list(range(context - 1 + RENDER_FPS, total, RENDER_FPS))
    return JobSpec(
        character_id=character_id,
        character=character,
        context=whole.slice(0, context),
        keyframes=Keyframes(tuple(keys), Motion(clip.fps, rot[keys], root[keys])),
        total_frames=total,
        method="anymole",
        preset=preset,
        label="anymole bench pipeline",
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _vit_factory(device: torch.device, tiny: bool) -> BackboneFactory:
    """Random-weight frozen ViTs on ``device`` (``tiny``: 2-layer, 32-wide ones of the same code), built once per
    (name, stride) and shared by every job, as a server holds its backbones."""
    built: dict[tuple[str, int], nn.Module] = {}
    lock = threading.Lock()

    def make(name: str, config: EstimatorConfig) -> nn.Module:
        with lock:
            key = (name, config.feature_stride)
            if key not in built:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    built[key] = build_backbone(name, config, random_init=True, tiny=tiny).to(device).eval()
            return built[key]

    return make


def _full_prior(device: torch.device) -> LoadedPrior:
    """DynamiCrafter 512 at full size with random weights (seed 0) on ``device``, as the pool holds a prior."""
    from anymole.video.dynamicrafter import DynamiCrafterConfig, DynamiCrafterPrior

    config = DynamiCrafterConfig.full()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        prior = DynamiCrafterPrior(config, device=device, dtype=torch.float32).eval()
    return LoadedPrior(
        prior, DDIMSchedule(**config.scheduler_kwargs()), "dynamicrafter-512-interp@random-seed-0",
        config.to_dict(), config.resolution,
    )  # fmt: skip


async def _job(
    method: AnyMoLeMethod, spec: JobSpec, device: torch.device, on_stage: Callable[[str], None]
) -> dict[str, Any]:
    """One job through `AnyMoLeMethod.run`: its wall time (CUDA-synchronised), `Completed.timings`, cache
    hits, when each stage first reported (s after the start) and the peak memory."""
    token = CancelToken()
    seen: dict[str, float] = {}
    lock = threading.Lock()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    start = time.perf_counter()

    def emit(event: Event) -> None:
        if isinstance(event, Progress):
            with lock:
                new = event.stage not in seen
                if new:
                    seen[event.stage] = time.perf_counter() - start
            if new:
                on_stage(event.stage)

    done: Completed | None = None
    async for event in method.run(spec, token, ProgressReporter(emit, token), str(device)):
        if isinstance(event, Completed):
            done = event
    _sync(device)
    wall = time.perf_counter() - start
    assert done is not None  # run() ends with Completed or raises
    return {
        "wall_s": wall,
        "timings_s": dict(done.timings),
        "cached": {k: bool(done.metrics[f"{k}_cached"]) for k in ("icadapt", "estimator")},
        "stage_starts_s": seen,
        "peak_mem_gib": torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None,
    }


def run_pipeline_bench(
    cfg: PipelineBenchConfig, say: Say | None = None, on_partial: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Warm the server, run the ``short``, ``long`` and ``second`` jobs and return the raw results (see the
    module docstring); ``on_partial(results)`` after the warm-up and whenever a job starts a stage or ends."""
    return asyncio.run(_run(cfg, say or (lambda _line: None), on_partial or (lambda _r: None)))


def _stage_partial(partial: Callable[..., None], run: str, stage: str) -> None:
    partial(run=run, stage=stage)


async def _run(cfg: PipelineBenchConfig, say: Say, on_partial: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    device = torch.device(cfg.device)
    started = time.perf_counter()
    spec = paper_scene(*load_source(cfg.asset, cfg.scene), cfg.gaps, cfg.preset)
    full = full_steps(cfg.preset)
    out: dict[str, Any] = {
        "device": device_name(device),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "model": f"dynamicrafter-512-interp ({cfg.model}, random weights)",
        "preset": cfg.preset,
        "icadapt_recipe": PRESETS[cfg.preset],
        "scene": {
            "character": spec.character.name,
            "fps": spec.context.fps,
            "context_frames": spec.context_frames,
            "keyframes": list(spec.keyframes.frames),
            "total_frames": spec.total_frames,
            "gaps": cfg.gaps,
        },
        "full_steps": dataclasses.asdict(full),
        "run_steps": {name: dataclasses.asdict(getattr(cfg, steps)) for name, steps, _ in RUNS},
        "runs": {},
        "skipped": [],
    }
    write_lock = threading.Lock()

    def partial(**progress: Any) -> None:
        with write_lock:
            out["in_progress"] = progress or None
            out["bench_seconds"] = time.perf_counter() - started
            on_partial(out)

    with tempfile.TemporaryDirectory(prefix="anymole-bench-pipeline-") as cache:
        base = VideoSettings(
            prior=TINY_PRIOR if cfg.model == "tiny" else None, cache_dir=Path(cache), warmup=True
        )
        pool = PriorPool(base)
        t = time.perf_counter()
        if cfg.model == "tiny":
            loaded = await pool.get(str(device))
        else:
            loaded = await asyncio.to_thread(_full_prior, device)
            pool.priors[str(device)] = loaded
        _sync(device)
        warm: dict[str, Any] = {"load_s": time.perf_counter() - t}
        height, width = loaded.resolution
        out["scene"] |= {"width": base.width or width, "height": base.height or height, "views": base.views}
        if device.type == "cuda":  # what `anymole serve --video-warmup` compiles (PriorPool.warm_up)
            say("compiling the turbo preset (the server's warm-up)")
            with loaded.exclusive(CancelToken()):
                warm["compile_s"] = await asyncio.to_thread(VideoMethod(base, pool).compile_turbo, str(device), loaded)
        factory = _vit_factory(device, cfg.model == "tiny") if cfg.backbone == "vit" else None
        if factory is not None:
            t = time.perf_counter()
            est_cfg, _ = AnyMoLeMethod(VideoMethod(base, pool), factory).configs(cfg.preset)
            for name in est_cfg.frozen:
                factory(name, est_cfg)
            _sync(device)
            warm["backbones_s"] = time.perf_counter() - t
        out["warm_server"] = warm
        out["estimator_backbones"] = list(AnyMoLeMethod(VideoMethod(base, pool), factory).configs(cfg.preset)[0].backbones)
        say(f"warm server: {warm}")
        partial()
        for name, which, _ in RUNS:
            elapsed = time.perf_counter() - started
            if elapsed > cfg.budget_s:
                out["skipped"].append(f"{name}: the budget of {cfg.budget_s:g} s was spent ({elapsed:.0f} s)")
                say(out["skipped"][-1])
                continue
            steps: Steps = getattr(cfg, which)
            # `long` keeps its own cache: its estimator has `short`'s steps and key, and must train, not load
            settings = replace(base, icadapt_steps=steps.icadapt, ddim_steps=steps.ddim, estimator_steps=steps.estimator,
                               mimic_steps=steps.mimic, cache_dir=Path(cache) / ("long" if name == "long" else "shared"))  # fmt: skip
            method = AnyMoLeMethod(VideoMethod(settings, pool), factory)
            say(f"job {name}: {steps}")
            result = await _job(method, spec, device, functools.partial(_stage_partial, partial, name))
            result["steps"] = dataclasses.asdict(steps)
            out["runs"][name] = result
            say(f"job {name}: {result['wall_s']:.1f} s, {result['timings_s']}")
            partial()
    out.pop("in_progress", None)
    out["bench_seconds"] = time.perf_counter() - started
    return out
