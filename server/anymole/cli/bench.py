"""``anymole bench …``: speed benchmarks (runners and report writers in `anymole.bench`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    pass

from anymole.cli._common import _fail

bench_app = typer.Typer(help="Speed benchmarks; each writes docs/benchmarks/<name>.json and its docs/benchmarks.md section.")


@bench_app.command("video")
def bench_video(
    model: Annotated[str, typer.Option(help="full (DynamiCrafter 512, GPU) or tiny (CPU dry run)")] = "full",
    device: Annotated[str, typer.Option(help="torch device")] = "cuda",
    json_out: Annotated[Path, typer.Option("--json", help="results file")] = Path("docs/benchmarks/video.json"),
    markdown: Annotated[Path | None, typer.Option(help="page whose --heading section is rewritten")] = Path("docs/benchmarks.md"),
    heading: Annotated[str, typer.Option(help="the page's section for this card, e.g. '## Video prior on an NVIDIA H200'")] = "## Video prior",
    budget: Annotated[float, typer.Option(help="seconds after which optional measurements are skipped")] = 420.0,
    compile_unet: Annotated[bool, typer.Option("--compile/--no-compile", help="also time torch.compile")] = True,
    phase: Annotated[list[str] | None, typer.Option(help="sampling | compiled | icadapt, repeatable (default: all three)")] = None,
    icadapt_variant: Annotated[list[str] | None, typer.Option(help="MODE:CKPT(1 full|s selective|0 none):CLIPS[:c compiled|:cB compiled keeping a share B of the activations|:r regional compile], repeatable, e.g. decoder:s:4:c or lora_decoder:0:8:c0.8")] = None,
    icadapt_steps: Annotated[int, typer.Option(help="timed ICAdapt steps per variant, after a warm-up step")] = 2,
    partial: Annotated[Path | None, typer.Option(help="also write the results so far here after each ICAdapt variant")] = None,
    merge: Annotated[bool, typer.Option(help="lay the results over those already in --json (a partial rerun)")] = False,
) -> None:
    """Video prior speed with random weights: ICAdapt s/step (500 steps extrapolated) and two-stage sampling
    time for 15…90 generated frames (timed pieces, extrapolated; the results say how)."""
    import json

    from anymole.bench import video as bench
    from anymole.bench import video_report as report
    from anymole.bench import video_summary as summary

    if model not in ("full", "tiny"):
        raise _fail(f"--model must be full or tiny, got {model!r}")
    if icadapt_steps < 1:
        raise _fail(f"--icadapt-steps must be ≥ 1, got {icadapt_steps}")
    device = _bench_device(device)
    kwargs: dict = {
        "model": model, "device": device, "budget_s": budget, "compile": compile_unet, "icadapt_steps": icadapt_steps
    }
    if phase:
        known = bench.VideoBenchConfig.phases
        if unknown := [p for p in phase if p not in known]:
            raise _fail(f"--phase takes {' | '.join(known)}, got {unknown}")
        kwargs["phases"] = tuple(phase)
    if icadapt_variant:
        try:
            ckpt = {"1": "full", "s": "selective", "0": "none"}
            compiled: dict[str, bool | str] = {"": False, "c": True, "r": "regional"}

            def how(rest: list[str]) -> bool | str | float:  # "c0.8": compiled, activation memory budget 0.8
                flag = "".join(rest)
                return float(flag[1:]) if flag.startswith("c") and len(flag) > 1 else compiled[flag]

            specs = [v.split(":") for v in icadapt_variant]
            kwargs["icadapt_variants"] = tuple((m, ckpt[c], int(b), how(rest)) for m, c, b, *rest in specs)
        except (ValueError, KeyError):
            raise _fail(f"--icadapt-variant takes MODE:CKPT:CLIPS[:c|:cB|:r] (e.g. decoder:s:4:c), got {icadapt_variant}") from None
    earlier = json.loads(json_out.read_text()) if merge and json_out.exists() else None
    if earlier is not None:  # refuse another card before the run, not after it
        import torch

        summary.merge(earlier, {"device": bench.device_name(torch.device(device))})
    on_partial = None if partial is None else lambda r: report.write_json(summary.summarize(r), partial)
    results = bench.run_video_bench(
        bench.VideoBenchConfig(**kwargs), say=lambda line: typer.echo(line, err=True), on_partial=on_partial
    )
    if earlier is not None:
        results = summary.merge(earlier, results)
    results = summary.summarize(results)
    report.write_json(results, json_out)
    if markdown is not None and "sampling_s" in results and "icadapt" in results:
        report.write_markdown(results, markdown, heading=heading, json_name=str(json_out))
    typer.echo(
        f"ICAdapt {results['icadapt_step_s']} s/step, 90 frames {results['sample_90_frames_s']} s, "
        f"peak {results['peak_mem_gib']} GiB -> {json_out}"
    )


@bench_app.command("pipeline")
def bench_pipeline(
    model: Annotated[str, typer.Option(help="full (DynamiCrafter 512 with random weights, GPU) or tiny (CPU dry run)")] = "full",
    device: Annotated[str, typer.Option(help="torch device")] = "cuda",
    preset: Annotated[str, typer.Option(help="the anymole preset timed (draft: ICAdapt turbo, which the warm-up compiles)")] = "draft",
    asset: Annotated[Path | None, typer.Option(help="character file (default: the bundled CesiumMan, a humanoid)")] = None,
    scene: Annotated[Path | None, typer.Option(help="a scene file written by --export-scene, instead of --asset (for a machine without libassimp)")] = None,
    export_scene: Annotated[Path | None, typer.Option(help="write the character and its clip at 30 fps here for --scene, and stop")] = None,
    gaps: Annotated[int, typer.Option(help="one-second gaps after the 2 s context (the paper's 6)")] = 6,
    backbone: Annotated[str | None, typer.Option(help="estimator backbone: vit (the paper's frozen pair, random weights) or conv (default: vit on CUDA, conv elsewhere)")] = None,
    short: Annotated[str, typer.Option(help="step counts of the short job: ICADAPT,DDIM,ESTIMATOR,MIMIC")] = "15,2,300,2",
    long: Annotated[str, typer.Option(help="step counts of the long job: ICADAPT,DDIM,ESTIMATOR,MIMIC")] = "40,5,300,8",
    json_out: Annotated[Path, typer.Option("--json", help="results file")] = Path("docs/benchmarks/pipeline.json"),
    markdown: Annotated[Path | None, typer.Option(help="page whose --heading section is rewritten ('' for none)")] = Path("docs/benchmarks.md"),
    heading: Annotated[str, typer.Option(help="the page's section for this run")] = "## Whole pipeline (anymole method)",
    budget: Annotated[float, typer.Option(help="seconds after the start (warm-up included) after which no further job starts")] = 400.0,
    partial: Annotated[Path | None, typer.Option(help="also write the results so far here after the warm-up and at every stage")] = None,
    from_json: Annotated[Path | None, typer.Option(help="run nothing: rewrite the --markdown section from this results file (a run's --json or --partial)")] = None,
) -> None:
    """Time the whole anymole job from a warm server for the paper's setting (2 s context, 6 one-second gaps,
    30 fps): per stage and end to end, at the preset's step counts extrapolated from timed jobs at fewer steps
    (the JSON's `how` says figure by figure), and the second fill of the same scene, whose ICAdapt and estimator
    come from the caches.

    On one H100 (no libassimp there: export the scene here first, `anymole bench pipeline --export-scene
    bench_scene.pt`, untracked so that it travels with the tree; carry `.whl` with moderngl and glcontext, and the
    EGL loaders `.gl`, as the device README says; a command has 10 min, setup included):

        for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD/server || exit; cp docs/benchmarks.md $OUT/ && python3 -m anymole.cli bench pipeline --model full --device cuda --scene bench_scene.pt --json $OUT/pipeline.json --markdown $OUT/benchmarks.md --partial $OUT/pipeline.partial.json --budget 400

    A cut run leaves its partial file: `anymole bench pipeline --from-json PARTIAL` writes the section from it.
    CPU dry run: anymole bench pipeline --model tiny --device cpu --gaps 1 --short 1,1,2,2 --long 2,2,4,4
    """
    from anymole.bench import pipeline as bench
    from anymole.bench import pipeline_report as report

    def steps(flag: str, text: str) -> bench.Steps:
        try:
            return bench.Steps(*(int(v) for v in text.split(",")))
        except (TypeError, ValueError):
            raise _fail(f"{flag} takes four step counts ICADAPT,DDIM,ESTIMATOR,MIMIC (each >= 1), got {text!r}") from None

    if from_json is not None:
        import json

        if (page := _page(markdown)) is None:
            raise _fail("--from-json rewrites the --markdown page's section: name the page")
        try:
            results = report.summarize(json.loads(from_json.read_text()))
        except (OSError, ValueError, KeyError) as exc:
            raise _fail(f"--from-json: {from_json} is not a results file of this benchmark ({exc})") from None
        report.write_markdown(results, page, heading=heading, json_name=str(from_json))
        typer.echo(f"rewrote the {heading!r} section of {page} from {from_json}")
        return
    if export_scene is not None:
        from anymole.bench.scene_file import save_scene

        character, clip, _ = bench.load_source(asset)
        save_scene(export_scene, character, clip)
        typer.echo(f"wrote {export_scene}: {character.name}, {clip.num_frames} frames at {clip.fps:g} fps")
        return
    device = _bench_device(device)
    backbone = backbone or ("vit" if device.startswith("cuda") else "conv")
    cfg = bench.PipelineBenchConfig(model=model, device=device, preset=preset, asset=asset, scene=scene, gaps=gaps,
                                    backbone=backbone, short=steps("--short", short), long=steps("--long", long),
                                    budget_s=budget)  # fmt: skip
    on_partial = None if partial is None else lambda r: report.write_json(report.summarize(r), partial)
    results = report.summarize(bench.run_pipeline_bench(cfg, say=lambda line: typer.echo(line, err=True), on_partial=on_partial))
    report.write_json(results, json_out)
    if (page := _page(markdown)) is not None:
        report.write_markdown(results, page, heading=heading, json_name=str(json_out))
    typer.echo(f"whole job {results['whole_job_s']} s, second fill {results['second_fill_s']} s, estimator "
               f"{results['estimator_train_s']} s, mimic {results['mimic_s']} s -> {json_out}")  # fmt: skip


def _page(markdown: Path | None) -> Path | None:
    """The page a benchmark rewrites; ``None`` for none (``--markdown ''``, which typer hands over as ``.``)."""
    return None if markdown is None or str(markdown) in ("", ".") else markdown


def _bench_device(name: str) -> str:
    """``name`` as the one device a benchmark runs on, refused before any model is built if it is not here."""
    from anymole.errors import InvalidInput
    from anymole.service.server import resolve_devices

    try:
        return resolve_devices((name,))[0][0]
    except InvalidInput as exc:
        raise InvalidInput("--device", f"{exc.reason}; `anymole bench video --model tiny --device cpu` is a CPU dry run") from None


@bench_app.command("capacity")
def bench_capacity(
    source: Annotated[
        str, typer.Option("--from", help="service times: auto (BENCH_DIR/pipeline.json if present, else derived), derived (summed from the per-stage benchmarks), or a pipeline.json path")
    ] = "auto",
    bench_dir: Annotated[Path, typer.Option(help="folder of the benchmark JSON files")] = Path("docs/benchmarks"),
    animators: Annotated[int, typer.Option(min=1, help="animators submitting fills")] = 100,
    fill_interval: Annotated[float, typer.Option(help="mean minutes between one animator's fills")] = 20.0,
    repeat_share: Annotated[float, typer.Option(help="share of fills on an already-adapted scene, in [0, 1)")] = 0.5,
    cache_load: Annotated[float, typer.Option(help="seconds to read a scene's artefacts from shared storage")] = 5.0,
    hours: Annotated[float, typer.Option(help="simulated hours measured (after 4 h of warm-up)")] = 200.0,
    seed: Annotated[int, typer.Option(help="seed of every random draw")] = 0,
    gpus: Annotated[str | None, typer.Option(help="GPU counts A:B (B included) (default: from the offered load)")] = None,
    studios: Annotated[str, typer.Option(help="studio sizes (animators, comma-separated) for the GPUs-needed table; '' for none")] = "25,50,100,200",
    wait_limit: Annotated[float, typer.Option(help="minutes: the median wait the GPU count must stay under")] = 2.0,
    json_out: Annotated[Path, typer.Option("--json", help="results file")] = Path("docs/benchmarks/capacity.json"),
    markdown: Annotated[Path | None, typer.Option(help="page to write ('' for none)")] = Path("docs/scaling.md"),
) -> None:
    """Capacity model: a seeded queueing simulation of ANIMATORS submitting fills to a pool of GPUs (Poisson
    arrivals, measured per-fill GPU times), with and without cache affinity; wait percentiles per GPU count and
    the GPUs a median wait under --wait-limit needs (docs/scaling.md; plot: scripts/plot_scaling.py)."""
    from anymole.bench import capacity, capacity_inputs, capacity_report

    checks = {
        "--fill-interval": (fill_interval > 0, "must be > 0 minutes"),
        "--repeat-share": (0 <= repeat_share < 1, "must be in [0, 1)"),
        "--cache-load": (cache_load >= 0, "must be >= 0 seconds"),
        "--hours": (hours > 0, "must be > 0"),
        "--wait-limit": (wait_limit > 0, "must be > 0 minutes"),
    }
    for option, (ok, rule) in checks.items():
        if not ok:
            raise _fail(f"{option} {rule}")
    try:
        times = capacity_inputs.load_times(source, bench_dir)
    except ValueError as exc:
        raise _fail(f"--from {source}: {exc}") from None
    w = capacity.Workload(
        animators=animators, fill_interval_s=fill_interval * 60, repeat_share=repeat_share,
        hours=hours, cache_load_s=cache_load, seed=seed,
    )
    try:
        sizes = tuple(int(s) for s in studios.split(",") if s.strip())
        if any(n < 1 for n in sizes):
            raise ValueError
    except ValueError:
        raise _fail(f"--studios takes animator counts >= 1, comma-separated, got {studios!r}") from None
    if gpus is None:
        counts = capacity_report.auto_gpus(w, times)
    else:
        lo, _, hi = gpus.partition(":")
        try:
            counts = range(int(lo), int(hi or lo) + 1)
        except ValueError:
            counts = range(0)
        if not counts or counts.start < 1:
            raise _fail(f"--gpus takes A:B with 1 <= A <= B, got {gpus!r}")
    report = capacity_report.run_capacity(w, times, counts, sizes, limit_s=wait_limit * 60)
    capacity_report.write_json(report, json_out)
    if markdown is not None and str(markdown) not in ("", "."):
        capacity_report.write_markdown(report, markdown)
    need = report["gpus_needed"]
    typer.echo(
        f"{animators} animators, load {report['offered_load_gpus']:.1f} GPUs; GPUs for a median wait under "
        f"{wait_limit:g} min: " + ", ".join(f"{p} {need[p]['p50'] or '>' + str(counts.stop - 1)}" for p in need)
        + f" -> {json_out}"
    )
