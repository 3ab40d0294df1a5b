"""``anymole fill`` (locally, or on a server with --server) and ``anymole eval`` (a result against the truth)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from anymole.rig import Character, Skeleton

from anymole.cli._common import _RECONNECT_HELP, _pick_clip, _reconnect, _span


def fill(
    asset: Annotated[Path, typer.Argument(help="character file with at least one clip (.glb, .fbx, .bvh, .dae)")],
    keys: Annotated[str, typer.Option(help="clip frames kept as keyframes, comma-separated, after the context")],
    out: Annotated[Path, typer.Option("--out", help="result file: .glb (mesh + clip), .bvh or .json (the motion in canonical space: fps, joint_names, rotations F×J×4, root_translations F×3); with --server also .npz, and .mp4 for --method video")] = Path("fill.glb"),
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
    if out.suffix.lower() not in (".glb", ".bvh", ".json"):
        raise InvalidInput("--out", f"end the output name with .glb, .bvh or .json, got {out.name!r}")

    from anymole.baseline import inbetween
    from anymole.io import load_character, write_fill
    from anymole.rig import cut_clip

    with console.status(f"loading {asset}"):
        character = load_character(asset)
    name = _pick_clip(character, clip)
    known, keyed = cut_clip(character.motions[name], (start, stop), key_list)
    result = inbetween(known, keyed, keyed.frames[-1] + 1, root=root)  # type: ignore[arg-type]
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".json":
        from anymole.wire.motion_json import write_motion_json

        write_motion_json(out, result, character.skeleton.names)
        console.print(f"wrote {out}: {result.num_frames} frames at {result.fps:g} fps (clip frames {start}..{key_list[-1]}, "
                      "canonical space: glTF axes, metres, local xyzw rotations)")
        return
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


def evaluate(
    pred: Annotated[Path | None, typer.Argument(help="predicted motion (.glb/.bvh/… with one clip, or pick it with --pred-clip)")] = None,
    gt: Annotated[Path | None, typer.Argument(help="ground-truth asset on the same skeleton")] = None,
    oracle: Annotated[Path | None, typer.Option(help="oracle evaluation of this asset: its true gap rendered as the generated video, then estimator + mimicking, beside interp (no PRED/GT)")] = None,
    context: Annotated[str | None, typer.Option(help="with --oracle: clip frames A:B given as context (at least 2 s)")] = None,
    keys: Annotated[str | None, typer.Option(help="with --oracle: keyframes, comma-separated clip frames 1, 2, … s after the context")] = None,
    preset: Annotated[str, typer.Option(help="with --oracle: draft (CPU, minutes), fast or quality")] = "draft",
    device: Annotated[str, typer.Option(help="with --oracle: where the estimator trains and mimicking solves: cpu, cuda or cuda:N (default: cpu)")] = "cpu",
    estimator_weights: Annotated[str | None, typer.Option(help="with --oracle: models folder holding the estimator's ViT weights (`anymole models pull estimator`) for fast and quality; none: the conv backbone (default: the models folder when it holds both, else the conv backbone)")] = None,
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

    --oracle ASSET scores the motion stages alone (no video model): the true gap is rendered as if it were the generated video, the estimator trains on the context renders and mimicking fits its joints; printed for method anymole beside interp, global and local rotations, with the estimator's 2D error on the gap (px):

    [bold]anymole eval --oracle assets/Fox.glb --clip Survey --context 0:49 --keys 72 --preset draft[/]
    """
    import json

    if oracle is not None:
        if pred is not None or gt is not None:
            raise typer.BadParameter("give either --oracle ASSET or PRED GT, not both")
        from anymole.cli.oracle import run_oracle

        run_oracle(oracle, clip, context, keys, preset, json_out, estimator_weights, device)
        return
    if pred is None or gt is None:
        raise typer.BadParameter("give PRED and GT, or --oracle ASSET")

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
