"""`anymole` command line: serve, fill, jobs, demo, inspect, eval, render, bench, models.

Flags become frozen config dataclasses and library calls; heavy imports live inside the commands so that
``anymole --help`` answers at once. Exit codes: 0 ok, 1 user error (message, no traceback), 2 internal error.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from anymole.client import Reconnect, Remote
    from anymole.pipeline import VideoSettings
    from anymole.rig import Character, Skeleton
    from anymole.service.jobs import JobState

app = typer.Typer(
    name="anymole",
    help=(
        "AnyMoLe Bridge: motion in-betweening for any rigged character.\n\n"
        "Typical session:\n\n"
        "  anymole inspect Fox.glb                      # what is in an asset\n\n"
        "  anymole fill Fox.glb --clip Survey --context 0:40 --keys 60,82 --out fox_fill.glb\n\n"
        "  anymole eval fox_fill.glb Fox.glb --clip Survey --frames 40:82\n\n"
        "  anymole serve                                # the gRPC server the Unity/Unreal plugins talk to\n\n"
        "  anymole demo                                 # offline end-to-end run on a bundled character"
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    """``--version``: the package and the wire protocol it speaks (what a plugin must match)."""
    if value:
        from anymole import __version__
        from anymole.wire.version import PROTOCOL_VERSION

        typer.echo(f"anymole {__version__} (protocol {PROTOCOL_VERSION[0]}.{PROTOCOL_VERSION[1]})")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    pass


def _fail(message: str, code: int = 1) -> typer.Exit:
    from rich.console import Console
    from rich.markup import escape

    # soft_wrap: paths and commands in messages must stay copy-pasteable, never broken mid-word;
    # escape: messages quote user input and shapes such as "[1, 2]", which are not markup
    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code)


_RECONNECT_HELP = (
    "seconds to keep trying when the server goes away mid-job (a restart): the job runs on there, and the "
    "watch resumes after the last event seen; 0 gives up at once [default: 120]"
)


def _reconnect(total_s: float | None) -> Reconnect:
    from anymole.client import Reconnect

    return Reconnect() if total_s is None else Reconnect(total_s=total_s)


def _span(text: str | None, option: str) -> tuple[int | None, int | None]:
    """Parse ``A:B`` (Python slice: A included, B excluded; either may be empty)."""
    from anymole.errors import InvalidInput

    a, sep, b = (text or ":").partition(":")
    try:
        if not sep:
            raise ValueError
        return (int(a) if a else None, int(b) if b else None)
    except ValueError:
        raise InvalidInput(option, f"expected A:B with integers (A included, B excluded), got {text!r}") from None


def _pick_clip(character: Character, clip: str | None, option: str = "--clip") -> str:
    """The name of ``clip`` (default: the first clip) in ``character``; a user error naming ``option``."""
    from anymole.errors import AssetError, InvalidInput

    motions = character.motions
    if not motions:
        raise AssetError(character.source or character.name, "has no animation clip; pick an animated asset")
    name = clip if clip is not None else next(iter(motions))
    if name not in motions:
        raise InvalidInput(option, f"no clip {name!r}; the clips are {list(motions)}: pass one of them to {option}")
    return name


@app.command()
def inspect(
    asset: Annotated[Path, typer.Argument(help="character file: .glb/.gltf, .fbx, .bvh or .dae")],
    json_out: Annotated[bool, typer.Option("--json", help="print machine-readable JSON instead of a tree")] = False,
) -> None:
    """Show what an asset holds: skeleton tree, joint count, mesh statistics, clips (frames, seconds).

    Clip lengths: 'last frame' is (frames - 1) / fps for every format; 'duration' is the length as the file format counts it, which for BVH is Frames × Frame Time (one frame time longer) and otherwise equals the last frame's time. --json gives both (seconds, duration_s).

    Example: anymole inspect assets/Fox.glb --json
    """
    import json

    from rich.console import Console
    from rich.table import Table
    from rich.tree import Tree

    from anymole.io import describe, load_character

    with Console(stderr=True).status(f"loading {asset}"):
        info = describe(load_character(asset))
    if json_out:
        typer.echo(json.dumps(info, indent=2))
        return
    console = Console()
    sk = info["skeleton"]
    console.print(f"[bold]{info['name']}[/]  ({asset})")
    units = info["units"]
    console.print(f"joint_count: [bold]{info['joint_count']}[/]   max depth: {sk['max_depth']}")
    console.print(f"units: {units['name']} ({units['metres_per_unit']:g} m per unit)   rest extent: "
                  f"{', '.join(f'{x:.3f}' for x in sk['rest_extent_file'])} file units = "
                  f"{', '.join(f'{x:.3f}' for x in sk['rest_extent_m'])} m")
    by_name = {j["name"]: j for j in sk["joints"]}
    tree = Tree("[dim]skeleton[/]")

    def add(node: Tree, name: str) -> None:
        j = by_name[name]
        branch = node.add(f"{j['index']:>3} {name}")
        for child in j["children"]:
            add(branch, child)

    for root in sk["roots"]:
        add(tree, root)
    console.print(tree)
    mesh = info["mesh"]
    if mesh is None:
        console.print("mesh: none (skeleton only; renders use a stick body)")
    else:
        console.print(f"mesh: {mesh['vertices']} vertices, {mesh['faces']} triangles, up to "
                      f"{mesh['max_influences']} joints per vertex, {len(mesh['materials'])} materials, "
                      f"{mesh['textures']} textures{', vertex colours' if mesh['has_colors'] else ''}")
    bvh = asset.suffix.lower() == ".bvh"
    table = Table(
        "clip", "frames", "fps", "last frame (s)", "duration (s)", title="animations",
        caption="duration = Frames × Frame Time (BVH)" if bvh else "duration = time of the last key",
    )  # fmt: skip
    for c in info["clips"]:
        table.add_row(c["name"], str(c["frames"]), f"{c['fps']:.3f}", f"{c['seconds']:.4f}", f"{c['duration_s']:.4f}")
    console.print(table)


@app.command()
def fill(
    asset: Annotated[Path, typer.Argument(help="character file with at least one clip (.glb, .fbx, .bvh, .dae)")],
    keys: Annotated[str, typer.Option(help="clip frames kept as keyframes, comma-separated, after the context")],
    out: Annotated[Path, typer.Option("--out", help="result file: .glb (mesh + clip) or .bvh; with --server also .npz, and .mp4 for --method video")] = Path("fill.glb"),
    context: Annotated[str, typer.Option(help="clip frames A:B used as known motion (B excluded)")] = "0:30",
    clip: Annotated[str | None, typer.Option(help="clip name (default: the first clip)")] = None,
    method: Annotated[str, typer.Option(help="'interp' (SLERP + cubic root, instant) or a server method")] = "interp",
    root: Annotated[str, typer.Option(help="root interpolation for interp: cubic or linear")] = "cubic",
    preset: Annotated[str, typer.Option(help="a preset of a server method (the server lists them), e.g. for video: quality (the reference ICAdapt), fast, or turbo (compiled on the server's GPU: its first turbo job compiles for minutes unless it was started with --video-warmup)")] = "",
    server: Annotated[str | None, typer.Option(help="HOST:PORT of an anymole server; local when omitted")] = None,
    token: Annotated[str | None, typer.Option(envvar="ANYMOLE_TOKEN", help="bearer token for --server")] = None,
    tls_ca: Annotated[Path | None, typer.Option(help="PEM root certificate: talk TLS to --server")] = None,
    force: Annotated[bool, typer.Option(help="allow --out to be the input asset itself (the source file is overwritten)")] = False,
    replace_clip: Annotated[bool, typer.Option(help="GLB: write the source clip with the gap filled, under its name and in its place, instead of adding the filled frames as <clip>_filled")] = False,
    units: Annotated[str | None, typer.Option(help="BVH output units: m, cm, mm, inch or cmu (default: the input BVH's, else m)")] = None,
    reconnect_wait: Annotated[float | None, typer.Option(min=0, help=_RECONNECT_HELP)] = None,
) -> None:
    """Fill the motion between a context and keyframes of a clip, and write the result.

    The result covers clip frames A..last key: the context frames and the keyframes are kept exactly, every other frame is generated (interp: SLERP of local rotations, cubic or linear root).

    A .glb from a glTF/GLB input is a copy of the input with the filled clip added as <clip>_filled (or, with --replace-clip, the source clip with the gap filled, under its own name): every other node, mesh, material, clip and extension is kept. From FBX, Collada or BVH it is a new file; the command says what it keeps. A .bvh keeps an input BVH's units, rotation orders and frame time.

    Example, Fox's Survey clip with context frames 0..39 and keyframes 60 and 82:

    [bold]anymole fill assets/Fox.glb --clip Survey --context 0:40 --keys 60,82 --out fox_fill.glb[/]

    It prints the `anymole eval` command that scores the generated frames.
    """
    from rich.console import Console

    from anymole.errors import InvalidInput

    try:
        key_list = [int(k) for k in keys.split(",") if k.strip()]
    except ValueError:
        raise InvalidInput("--keys", f"expected comma-separated frame numbers, got {keys!r}") from None
    start, stop = _span(context, "--context")
    start = start or 0
    if stop is None:
        raise InvalidInput("--context", "give the end of the context, e.g. 0:30")
    if method == "interp" and preset:  # on a server too: its interp preset is --root
        raise InvalidInput("--preset", "presets are for server methods; interp takes --root cubic|linear")
    _refuse_overwriting(asset, out, force)
    console = Console(stderr=True, soft_wrap=True)  # paths and the printed commands stay copy-pasteable
    if server is not None:
        from anymole.client import fill_remote

        res = fill_remote(server, asset, keys=key_list, out=out, clip=clip, context=(start, stop),
                          method=method, preset=root if method == "interp" else preset, token=token, tls_ca=tls_ca,
                          replace_clip=replace_clip, units=units,
                          reconnect=_reconnect(reconnect_wait), on_submit=lambda job_id: _say_submitted(job_id, server))
        console.print(f"wrote {res.path} (job {res.job_id})")
        return
    if method != "interp":
        raise InvalidInput("--method", f"{method!r} needs a GPU server: pass --server HOST:PORT, or use interp")
    if root not in ("cubic", "linear"):
        raise InvalidInput("--root", f"must be cubic or linear, got {root!r}")
    if out.suffix.lower() not in (".glb", ".bvh"):
        raise InvalidInput("--out", f"end the output name with .glb or .bvh, got {out.name!r}")

    from anymole.baseline import inbetween
    from anymole.io import load_character, write_fill

    with console.status(f"loading {asset}"):
        character = load_character(asset)
    name = _pick_clip(character, clip)
    motion = character.motions[name]
    F = motion.num_frames
    if not 0 <= start < stop <= F:
        raise InvalidInput(
            "--context", f"{start}:{stop} is not a non-empty range of the clip's {F} frames; give A:B with 0 <= A < B < {F}"
        )
    if not key_list or sorted(set(key_list)) != key_list or key_list[0] < stop or key_list[-1] >= F:
        raise InvalidInput("--keys", f"give increasing clip frames in {stop}..{F - 1} (after the context), got {key_list}")
    result = inbetween(
        motion.slice(start, stop),
        [k - start for k in key_list],
        motion.rotations[key_list],
        motion.root_translation[key_list],
        key_list[-1] - start + 1,
        root=root,  # type: ignore[arg-type]
        key_translations=None if motion.translations is None else motion.translations[key_list],
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    filled, summary = write_fill(out, character, name, result, replace_clip=replace_clip, start=start, units=units)
    console.print(f"wrote {out}: {result.num_frames} frames at {result.fps:g} fps "
                  f"(clip frames {start}..{key_list[-1]}; {stop - start} context + {len(key_list)} keys kept)")
    console.print(summary)
    gap = f"{stop}:{key_list[-1]}"
    offset = 0 if replace_clip else start  # a replaced clip keeps the source clip's frame numbers
    console.print(f"score it: anymole eval {out} {asset} --clip {name} --pred-clip {filled} --offset {offset} --frames {gap}")


def _say_submitted(job_id: str, server: str) -> None:
    """The job id, as soon as the server has it: the job outlives this command (Ctrl-Z, a lost connection)."""
    typer.echo(f"job {job_id} queued on {server} (reach it again with: anymole jobs watch {job_id} --server {server})", err=True)


def _refuse_overwriting(asset: Path, out: Path, force: bool) -> None:
    """A fill written over its own input overwrites the source asset: refuse it unless ``--force``."""
    from anymole.errors import InvalidInput

    if force:
        return
    same = out.resolve() == asset.resolve() or (out.exists() and asset.exists() and out.samefile(asset))
    if same:
        raise InvalidInput(
            "--out", f"{out} is the input asset: writing there would overwrite the source file; "
            "pick another file name, or pass --force to overwrite it"
        )


def _load_in_units_of(path: Path, reference: Skeleton) -> Character:
    """Load ``path``; a BVH file (which does not state its unit) is read in the unit of ``reference``.

    The scale is the least-squares fit of the file's rest offsets to the reference's,
    ``s = <o_file, o_ref> / <o_file, o_file>``, so a prediction written in metres by `anymole fill` and
    one in centimetres from elsewhere both compare with the ground truth's positions.
    """
    from anymole.io import load_character

    if path.suffix.lower() != ".bvh":
        return load_character(path)
    raw = load_character(path, scale=1.0)
    o_file, o_ref = raw.skeleton.offsets.double(), reference.offsets.double()
    if o_file.shape != o_ref.shape or float((o_file * o_file).sum()) == 0.0:
        return load_character(path)  # not the same rig: the joint-count check reports it
    return load_character(path, scale=float((o_file * o_ref).sum() / (o_file * o_file).sum()))


@app.command("eval")
def evaluate(
    pred: Annotated[Path, typer.Argument(help="predicted motion (.glb/.bvh/… with one clip, or pick it with --pred-clip)")],
    gt: Annotated[Path, typer.Argument(help="ground-truth asset on the same skeleton")],
    clip: Annotated[str | None, typer.Option(help="ground-truth clip name (default: the first)")] = None,
    pred_clip: Annotated[str | None, typer.Option(help="predicted clip name (default: the first)")] = None,
    frames: Annotated[str | None, typer.Option(help="ground-truth frames A:B to score (B excluded); default: all overlapping")] = None,
    offset: Annotated[int, typer.Option(help="ground-truth frame of the prediction's first frame")] = 0,
    space: Annotated[str, typer.Option(help="quaternions compared: global (FK, LaFAN1) or local")] = "global",
    json_out: Annotated[bool, typer.Option("--json", help="print the metrics as JSON")] = False,
) -> None:
    """Score a predicted clip against ground truth: L2Q, HL2Q (1/4, 1/2, 3/4, full), L2P, NPSS.

    l2q: LaFAN1's reduction (per frame the norm over all joints of the global-quaternion difference, mean over frames). l2q_per_joint_mse and hl2q_*: AnyMoLe's per-joint mean scale, the mean over frames, joints and the 4 quaternion components (torch's MSE; its paper's figures are around 0.001); hl2q_1_2 keeps joints of depth <= 1/2 of the deepest. l2p: LaFAN1 reduction of global positions, in metres. npss: power-spectrum distance, lower is better.

    --offset says which ground-truth frame the prediction's first frame is; --frames picks the ground-truth frames to score (the generated ones). Example, after `anymole fill ... --context 0:40 --keys 60,82`:

    [bold]anymole eval fox_fill.glb assets/Fox.glb --clip Survey --offset 0 --frames 40:82[/]
    """
    import json

    from rich.console import Console
    from rich.table import Table

    from anymole.errors import InvalidInput
    from anymole.io import load_character
    from anymole.metrics import evaluate as score

    with Console(stderr=True).status(f"loading {pred} and {gt}"):
        g_char = load_character(gt)
        p_char = _load_in_units_of(pred, g_char.skeleton)
    p_motion = p_char.motions[_pick_clip(p_char, pred_clip, "--pred-clip")]
    g_name = _pick_clip(g_char, clip)
    g_motion = g_char.motions[g_name]
    sk = g_char.skeleton
    if p_motion.num_joints != sk.num_joints:
        raise InvalidInput(
            "pred",
            f"has {p_motion.num_joints} joints, the ground truth {sk.num_joints}: not the same skeleton; "
            "score a prediction against the asset it was filled from",
        )
    if abs(p_motion.fps - g_motion.fps) > 1e-3:
        raise InvalidInput(
            "pred", f"runs at {p_motion.fps:g} fps, the ground truth at {g_motion.fps:g} fps; resample one of them"
        )
    lo, hi = offset, offset + p_motion.num_frames
    a, b = _span(frames, "--frames")
    a = lo if a is None else a
    b = min(hi, g_motion.num_frames) if b is None else b
    if not (lo <= a < b <= min(hi, g_motion.num_frames)):
        raise InvalidInput("--frames", f"{a}:{b} must be a non-empty range inside the overlap {lo}:{min(hi, g_motion.num_frames)}")
    result = score(sk, p_motion.slice(a - offset, b - offset), g_motion.slice(a, b), slice(None), space=space)  # type: ignore[arg-type]
    if json_out:
        typer.echo(json.dumps({"frames": [a, b], "space": space, **result}, indent=2))
        return
    table = Table("metric", "value", title=f"{pred.name} vs {gt.name}:{g_name} frames {a}:{b} ({space} quaternions)")
    for k, v in result.items():
        table.add_row(k, f"{v:.6g}")
    Console().print(table)


@app.command()
def render(
    asset: Annotated[Path, typer.Argument(help="character file (glTF/GLB, FBX, BVH, Collada)")],
    out: Annotated[Path, typer.Option("--out", help="contact sheet PNG: one row per view")] = Path("sheet.png"),
    views: Annotated[int, typer.Option(min=1, help="orbit views (4: frame/left/right/back as the reference)")] = 4,
    video: Annotated[Path | None, typer.Option(help="also write an MP4 of every frame, views in a grid")] = None,
    clip: Annotated[str | None, typer.Option(help="clip name (default: the first clip)")] = None,
    frames: Annotated[str | None, typer.Option(help="frame range A:B of the clip (Python slice)")] = None,
    columns: Annotated[int, typer.Option(min=1, help="frames per row of the sheet")] = 6,
) -> None:
    """Render a character's clip from orbit views: a contact sheet to look at, optionally a video."""
    import imageio.v3 as iio

    _check_suffix(out, "--out", (".png", ".jpg", ".jpeg"))
    if video is not None:
        _check_suffix(video, "--video", (".mp4",))

    from anymole.io import load_character
    from anymole.render.sheet import contact_sheet, view_grid
    from anymole.render.views import render_motion

    character = load_character(asset)
    name = _pick_clip(character, clip)
    motion = character.motions[name]
    numbers = list(range(motion.num_frames))[slice(*_span(frames, "--frames"))]
    renders = render_motion(character, motion, views=views, frames=numbers, with_depth=False)
    iio.imwrite(out, contact_sheet(renders, columns=columns, frame_numbers=numbers))
    typer.echo(f"wrote {out} ({len(renders.cameras)} views x {len(numbers)} frames of {name!r})")
    if video is not None:
        iio.imwrite(video, view_grid(renders), fps=motion.fps, codec="libx264", macro_block_size=1)
        typer.echo(f"wrote {video}")


def _check_suffix(path: Path, option: str, suffixes: tuple[str, ...]) -> None:
    """Refuse an output name whose suffix picks no writer we use, before any work is done."""
    from anymole.errors import InvalidInput

    if path.suffix.lower() not in suffixes:
        raise InvalidInput(option, f"end the file name with {' or '.join(suffixes)}, got {path.name!r}")


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


@app.command()
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
    finished_in_memory: Annotated[int | None, typer.Option(min=0, help="finished jobs whose events stay in memory; older ones replay from disk [default: 16]")] = None,
    keep_days: Annotated[float | None, typer.Option(min=0, help="delete finished jobs, and characters no job uses, older than this many days (checked at start and every 10 minutes; queued and running jobs are kept) [default: keep]")] = None,
    max_disk: Annotated[str | None, typer.Option(help="most disk for job directories and uploaded characters, e.g. 20G; beyond it the longest-finished jobs, then unused characters, are deleted first [default: no bound]")] = None,
    memory_budget: Annotated[str | None, typer.Option(help="memory jobs may take, e.g. 16G; sets the largest job (frames × joints) and queue, published in Limits [default: half the memory available at start]")] = None,
    video_prior: Annotated[str, typer.Option(help="prior of the 'video' method: none (method off), tiny (random weights: a dry run whose previews are noise) or PATH to a DynamiCrafter 512 interp checkpoint, or the folder `anymole models pull dynamicrafter-512-interp` fills; loaded on the first video job (at start with --video-warmup)")] = "none",
    video_icadapt_steps: Annotated[int | None, typer.Option(min=1, help="ICAdapt steps of every video job (default: the presets' 500)")] = None,
    video_ddim_steps: Annotated[int | None, typer.Option(min=1, help="DDIM steps per sampler window of a video job (default: 50)")] = None,
    video_size: Annotated[str | None, typer.Option(help="render size WxH of video jobs, multiples of 8 (default: the prior's: 512x320, 64x64 for tiny)")] = None,
    video_warmup: Annotated[bool, typer.Option(help="load the video prior on every device at start and compile the turbo preset on GPUs (minutes the first time on a machine, under a minute later), so the first jobs don't wait for it")] = False,
) -> None:
    """Run the gRPC server the Unity and Unreal plugins talk to (anymole.v1.AnyMoLeService).

    Stops gracefully on SIGTERM/Ctrl-C: health goes NOT_SERVING, new jobs are refused, running jobs finish
    (or are marked interrupted after --grace), queued jobs run after the next start.

      anymole serve --port 50051 --data-dir /srv/anymole --token $SECRET --tls-cert cert.pem --tls-key key.pem

    The 'video' method (render, ICAdapt, two-stage sampling; previews stream, the result is an MP4) needs a prior:

      anymole serve --video-prior ~/.cache/anymole/models/dynamicrafter-512-interp/model.ckpt --video-warmup

      anymole serve --video-prior tiny --video-icadapt-steps 2 --video-ddim-steps 2 --video-size 96x64   # CPU dry run
    """
    import asyncio
    import dataclasses
    import logging

    from anymole.errors import InvalidInput
    from anymole.service.budget import parse_size
    from anymole.service.retention import RetentionPolicy
    from anymole.service.server import ServerConfig
    from anymole.service.server import serve as run_server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    video = dataclasses.replace(
        _video_settings(video_prior, video_icadapt_steps, video_ddim_steps, video_size), warmup=video_warmup
    )
    if video_warmup and video.prior is None:
        raise InvalidInput("--video-warmup", "there is no video prior to warm up: add --video-prior PATH (or tiny)")
    if video.prior is not None:
        _keep_compiled_graphs(data_dir.expanduser())
    cfg = ServerConfig(host=host, port=port, data_dir=data_dir.expanduser(), devices=tuple(device or ("auto",)),
                       max_queue=max_queue, token=token, tls_cert=tls_cert, tls_key=tls_key, grace_s=grace, video=video)
    if finished_in_memory is not None:
        cfg = dataclasses.replace(cfg, finished_in_memory=finished_in_memory)
    retention = RetentionPolicy(keep_days, None if max_disk is None else parse_size(max_disk, "--max-disk"))
    budget = None if memory_budget is None else parse_size(memory_budget, "--memory-budget")
    cfg = dataclasses.replace(cfg, retention=retention, memory_budget=budget)
    asyncio.run(run_server(cfg, on_ready=lambda p: typer.echo(f"anymole listening on {host}:{p}", err=True)))


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option(help="where the result goes")] = Path("anymole-demo"),
    method: Annotated[str, typer.Option(help="in-betweening method on the in-process server: interp, or video (tiny random-weight prior: a dry run whose video is noise)")] = "interp",
) -> None:
    """Offline end-to-end run: start a server in-process, upload the bundled Fox, fill a gap of its Survey
    clip (context 0:40, keys 60 and 82) through the same client the plugins mirror, write the GLB.
    With --method video: context 0:49 (2 s), key 72 (1 s later), previews stream, writes fox_video.mp4."""
    from anymole.client import run_demo

    res = run_demo(out_dir, method=method)
    if res.motion is None:  # method video: the result is the MP4 itself
        typer.echo(f"wrote {res.path} (job {res.job_id}): {res.summary}")
        return
    typer.echo(f"wrote {res.path} ({res.motion.num_frames} frames, job {res.job_id}): {res.summary}")
    typer.echo(f"look at it: anymole render {res.path} --out {out_dir / 'fox_fill.png'}")


bench_app = typer.Typer(help="Speed benchmarks; each writes docs/benchmarks/<name>.json and its docs/benchmarks.md section.")
app.add_typer(bench_app, name="bench")


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
            compiled = {"": False, "c": True, "r": "regional"}

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


def _bench_device(name: str) -> str:
    """``name`` as the one device a benchmark runs on, refused before any model is built if it is not here."""
    from anymole.errors import InvalidInput
    from anymole.service.server import resolve_devices

    try:
        return resolve_devices((name,))[0][0]
    except InvalidInput as exc:
        raise InvalidInput("--device", f"{exc.reason}; `anymole bench video --model tiny --device cpu` is a CPU dry run") from None


models_app = typer.Typer(help="Model weights: download them where there is internet.")
app.add_typer(models_app, name="models")


@models_app.command("pull")
def models_pull(
    name: Annotated[str, typer.Argument(help="model name")] = "dynamicrafter-512-interp",
    dest: Annotated[Path | None, typer.Option(help="folder (default ~/.cache/anymole/models/NAME)")] = None,
) -> None:
    """Download a model's checkpoint and tokenizer files; offline, say which files to place by hand."""
    from anymole.video.hub import pull

    typer.echo(f"{name}: {pull(name, dest)}")



@models_app.command("verify")
def models_verify(
    weights: Annotated[Path, typer.Argument(help="checkpoint file: model.ckpt or .safetensors")],
    model: Annotated[str, typer.Option(help="architecture the file must fit: full (the published model) or tiny")] = "full",
) -> None:
    """Check a local checkpoint against the architecture without loading it onto a device.

    Every entry must map onto the model with the right shape; missing, unexpected and mis-shaped keys are
    listed. Example: anymole models verify ~/.cache/anymole/models/dynamicrafter-512-interp/model.ckpt
    """
    from anymole.errors import InvalidInput
    from anymole.video.dynamicrafter import DynamiCrafterConfig, DynamiCrafterPrior
    from anymole.video.weights import check_checkpoint, read_checkpoint

    configs = {"full": DynamiCrafterConfig.full, "tiny": DynamiCrafterConfig.tiny}
    if model not in configs:
        raise InvalidInput("--model", f"must be one of {sorted(configs)}, got {model!r}")
    state = read_checkpoint(weights)
    check_checkpoint(DynamiCrafterPrior(configs[model](), device="meta"), state, str(weights))
    numel = sum(v.numel() for v in state.values())
    typer.echo(f"{weights}: ok, {len(state)} entries, {numel:,} values fit the {model} DynamiCrafter model")

jobs_app = typer.Typer(
    help="A server's jobs by id: list them, watch one (through server restarts), get its result, cancel it. "
    "`anymole fill --server` prints the id of its job when the server queues it."
)
app.add_typer(jobs_app, name="jobs")

_Server = Annotated[str, typer.Option(help="HOST:PORT of the anymole server")]
_Token = Annotated[str | None, typer.Option(envvar="ANYMOLE_TOKEN", help="bearer token for --server")]
_TlsCa = Annotated[Path | None, typer.Option(help="PEM root certificate: talk TLS to --server")]
_JobId = Annotated[str, typer.Argument(help="job id, as `anymole fill --server` or `anymole jobs list` print it")]


def _remote(server: str, token: str | None, tls_ca: Path | None, reconnect_wait: float | None = None) -> Remote:
    from anymole.client import Remote

    return Remote(server, token, tls_ca, _reconnect(reconnect_wait))


def _job_states(names: list[str] | None) -> tuple[JobState, ...]:
    from anymole.errors import InvalidInput
    from anymole.service.jobs import JobState

    known = [s.value for s in JobState]
    for name in names or ():
        if name not in known:
            raise InvalidInput("--state", f"no job state {name!r}; use one of {', '.join(known)}")
    return tuple(JobState(n) for n in names or ())


@jobs_app.command("list")
def jobs_list(
    server: _Server = "127.0.0.1:50051",
    state: Annotated[list[str] | None, typer.Option(help="only jobs in this state, repeatable: queued, running, completed, failed, cancelled, interrupted")] = None,
    limit: Annotated[int, typer.Option(min=0, help="newest jobs shown (0: all)")] = 20,
    json_out: Annotated[bool, typer.Option("--json", help="print the jobs as JSON")] = False,
    token: _Token = None,
    tls_ca: _TlsCa = None,
) -> None:
    """List a server's jobs, newest first: id, state, method, label, frames, when submitted."""
    import asyncio
    import dataclasses
    import json
    import time

    from rich.console import Console
    from rich.table import Table

    from anymole.client import list_jobs

    jobs = asyncio.run(list_jobs(_remote(server, token, tls_ca), _job_states(state), limit))
    if json_out:
        rows = [{**dataclasses.asdict(j), "state": j.state.value} for j in jobs]
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("job", "state", "method", "label", "frames", "submitted", title=f"jobs on {server}")
    for j in jobs:
        method = f"{j.method}:{j.preset}" if j.preset else j.method
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j.created))
        table.add_row(j.job_id, j.state.value, method, j.label, str(j.total_frames), when)
    Console().print(table)


@jobs_app.command("watch")
def jobs_watch(
    job_id: _JobId,
    server: _Server = "127.0.0.1:50051",
    reconnect_wait: Annotated[float | None, typer.Option(min=0, help=_RECONNECT_HELP)] = None,
    token: _Token = None,
    tls_ca: _TlsCa = None,
) -> None:
    """Follow a job's progress to its end (events it already had are replayed first); exit 1 unless it
    completes. Then `anymole jobs get JOB --out FILE` writes its result."""
    import asyncio

    from anymole.client import watch_job

    completed = asyncio.run(watch_job(_remote(server, token, tls_ca, reconnect_wait), job_id))
    typer.echo(f"job {job_id} completed: {completed.summary}", err=True)
    typer.echo(f"get the result: anymole jobs get {job_id} --server {server} --out RESULT.glb", err=True)


@jobs_app.command("get")
def jobs_get(
    job_id: _JobId,
    out: Annotated[Path, typer.Option("--out", help="result file: .glb, .bvh or .npz for motion; .mp4 for a video job")],
    server: _Server = "127.0.0.1:50051",
    token: _Token = None,
    tls_ca: _TlsCa = None,
) -> None:
    """Write a completed job's result, in the format the --out suffix names."""
    import asyncio

    from anymole.client import get_result

    _check_suffix(out, "--out", (".glb", ".bvh", ".npz", ".mp4"))
    path = asyncio.run(get_result(_remote(server, token, tls_ca), job_id, out))
    typer.echo(f"wrote {path} (job {job_id})", err=True)


@jobs_app.command("cancel")
def jobs_cancel(
    job_id: _JobId,
    server: _Server = "127.0.0.1:50051",
    token: _Token = None,
    tls_ca: _TlsCa = None,
) -> None:
    """Cancel a queued or running job; a finished job keeps its state."""
    import asyncio

    from anymole.client import cancel_job

    state = asyncio.run(cancel_job(_remote(server, token, tls_ca), job_id))
    typer.echo(f"job {job_id}: {state.value}", err=True)


def main() -> None:
    """Console-script entry point: maps our exceptions to exit codes without tracebacks."""
    from anymole.errors import AnymoleError

    try:
        app()
    except SystemExit as exc:
        # click ends a usage error (unknown option, value out of range) with 2, which is our internal-error code
        raise SystemExit(1 if exc.code == 2 else exc.code) from None
    except AnymoleError as exc:
        raise SystemExit(_fail(str(exc)).exit_code) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as exc:  # an internal error: say so, point at the log
        import logging

        logging.getLogger("anymole").exception("internal error")
        print(f"internal error: {exc!r} (please report it with the command you ran)", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
