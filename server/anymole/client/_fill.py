"""Blocking, user-facing client flows: ``anymole fill --server`` (`fill_remote`) and ``anymole demo`` (`run_demo`).

`fill_remote` loads the asset locally only to cut the context and keyframes out of one of its clips; the
server imports the same file bytes (uploaded once, cached by content hash) and must report the same joint
order. It draws a live progress bar with the server's ETA, re-attaches with ``after_seq`` if the stream
drops, cancels the job on Ctrl-C, and writes the result file (GLB, BVH or NPZ, by the ``out`` suffix; MP4 for
method ``video``, whose result is the generated video).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from anymole.errors import AnymoleError, AssetError, InvalidInput, JobCancelled
from anymole.pipeline import Cancelled, Completed, Failed, Interrupted, MotionChunk, Preview, Progress, Queued
from anymole.rig import Motion
from anymole.service.convert import MOTION_RESULT_SUFFIX, VIDEO_RESULT_SUFFIX

if TYPE_CHECKING:
    from rich.progress import Progress as ProgressView

    from anymole.client._client import AnyMoLeClient
    from anymole.service.jobs import Stamped

__all__ = ["FillResult", "fill_remote", "fill_remote_async", "run_demo"]

RESULT_SUFFIXES = tuple(MOTION_RESULT_SUFFIX.values())
VIDEO_SUFFIXES = tuple(VIDEO_RESULT_SUFFIX.values())
_RETRIES = 3


@dataclass(frozen=True)
class FillResult:
    """What a remote fill produced: the job, the file written and the result timeline ``(T, J, 4)`` (``None``
    for method ``video``, whose file is the generated MP4)."""

    job_id: str
    path: Path
    motion: Motion | None
    summary: str
    metrics: dict[str, float]


@contextlib.contextmanager
def _rpc_errors(server: str, frame_offset: int = 0) -> Iterator[None]:
    """Turn gRPC failures into `AnymoleError`s with a next step (the CLI prints them without a traceback);
    ``frame_offset``: the clip frame the request's frame 0 is (the context's start)."""
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
        if code is grpc.StatusCode.UNAVAILABLE:
            raise AnymoleError(
                f"no AnyMoLe server answers at {server} ({exc.details()}); start one with `anymole serve` "
                "or fix --server"
            ) from None
        if code is grpc.StatusCode.INVALID_ARGUMENT:
            raise _invalid_input(exc, frame_offset) from None
        raise AnymoleError(f"server answered {code.name}: {exc.details()}") from None


def _invalid_input(exc: grpc.aio.AioRpcError, frame_offset: int = 0) -> InvalidInput:
    """The server's `InvalidInput` again, its field and reason read from the status's BadRequest detail; a
    keyframe's reason also says how its frames map to clip frames when the context starts after frame 0."""
    status = rpc_status.from_call(exc)  # an AioRpcError carries the trailers of a finished call
    for detail in status.details if status is not None else ():
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad) and bad.field_violations:
            field, reason = bad.field_violations[0].field, bad.field_violations[0].description
            if frame_offset and field.startswith("keyframes"):
                reason += f" (frames of the request count from the --context start: add {frame_offset} for clip frames)"
            return InvalidInput(field, reason)
    return InvalidInput("request", exc.details() or "rejected by the server")


def _progress_view(enabled: bool) -> ProgressView | None:
    if not enabled:
        return None
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description:<18}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("ETA {task.fields[eta]}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[received]}"),
    )


async def _events_with_reattach(client: AnyMoLeClient, job_id: str, joints: int) -> AsyncIterator[Stamped]:
    """WatchJob from the start, re-attaching after a dropped stream with the last seen sequence number."""
    last_seq, attempts = 0, 0
    while True:
        try:
            async for st in client.watch(job_id, joints, after_seq=last_seq):
                last_seq, attempts = st.seq, 0
                yield st
            return
        except grpc.aio.AioRpcError as exc:
            attempts += 1
            if exc.code() is not grpc.StatusCode.UNAVAILABLE or attempts > _RETRIES:
                raise
            await asyncio.sleep(0.5 * attempts)


async def fill_remote_async(
    server: str,
    asset: str | Path,
    *,
    keys: Sequence[int],
    out: str | Path,
    clip: str | None = None,
    context: tuple[int, int] = (0, 1),
    method: str = "interp",
    preset: str = "",
    token: str | None = None,
    tls_ca: str | Path | None = None,
    progress: bool = True,
    replace_clip: bool = False,
    units: str | None = None,
) -> FillResult:
    """Fill the gap after ``context`` up to the ``keys`` of one clip of ``asset`` on a remote server.

    Args:
        server: ``"host:port"``.
        asset: a .glb, .fbx or .bvh file with at least one clip.
        keys: clip frames to keep as keyframes, strictly increasing, each ``>= context[1]``.
        out: result file; its suffix (.glb, .bvh, .npz) picks the format; .mp4 for method ``video``.
        clip: clip name (default: the first clip of the asset).
        context: ``(start, stop)`` clip frames (Python slice) used as known motion.
        method: in-betweening method offered by the server (``interp``, ``video``, ``anymole``); ``video``
            needs keys at whole seconds after the context's last frame.
        preset: a preset of that method (``""``: its default).
        token: bearer token, if the server demands one.
        tls_ca: PEM root certificate to trust; the connection uses TLS when given.
        progress: draw a progress bar on the terminal.
        replace_clip, units: how a .glb or .bvh ``out`` is written from ``asset`` (`anymole.io.write_fill`).
    """
    from anymole.client._client import AnyMoLeClient
    from anymole.io import load_character

    asset, out = Path(asset), Path(out)
    wanted = VIDEO_SUFFIXES if method == "video" else RESULT_SUFFIXES
    if out.suffix.lower() not in wanted:
        what = "method 'video' generates a video" if method == "video" else f"method {method!r} produces motion"
        raise InvalidInput("--out", f"{what}: end the output name with one of {wanted}")
    character = await asyncio.to_thread(load_character, asset)
    if not character.motions:
        raise AssetError(asset, "has no animation clip to take the context and keyframes from")
    name = clip if clip is not None else next(iter(character.motions))
    if name not in character.motions:
        raise InvalidInput("--clip", f"{asset.name} has no clip {name!r}; it has {list(character.motions)}")
    motion = character.motions[name]
    start, stop = context
    if not 0 <= start < stop <= motion.num_frames:
        raise InvalidInput("--context", f"{start}:{stop} is not a non-empty range of the clip's {motion.num_frames} frames")
    keys = list(keys)
    if not keys or any(k < stop or k >= motion.num_frames for k in keys) or sorted(set(keys)) != keys:
        raise InvalidInput(
            "--keys", f"give increasing clip frames in {stop}..{motion.num_frames - 1} (after the context), got {keys}"
        )
    ctx = motion.slice(start, stop)
    ca = Path(tls_ca).read_bytes() if tls_ca else None
    with _rpc_errors(server, frame_offset=start):
        client = await AnyMoLeClient.connect(server, token=token, tls_ca=ca)
        async with client:
            up = await client.upload_file(asset)
            if up.skeleton.names != character.skeleton.names:
                raise AssetError(asset, "the server imports a different joint order than this client; update one of them")
            joints = up.skeleton.num_joints
            request = client.request(
                up,
                ctx,
                [k - start for k in keys],
                motion.rotations[keys],
                motion.root_translation[keys],
                key_translations=None if motion.translations is None else motion.translations[keys],
                method=method,
                preset=preset,
                label=f"{asset.name}:{name}",
            )
            # Shielded, so that a Ctrl-C while SubmitJob is in flight still learns the job id to cancel.
            submit = asyncio.ensure_future(client.submit(request))
            try:
                job_id, _ = await asyncio.shield(submit)
                completed = await _follow(client, job_id, joints, progress)
            except asyncio.CancelledError:  # Ctrl-C: stop the job on the server too, then leave
                with contextlib.suppress(Exception):
                    job_id, _ = await asyncio.wait_for(submit, 5.0)
                    await client.cancel(job_id, timeout=5.0)
                raise
            result: Motion | None = None
            if method == "video":
                data = (await client.video(job_id)).data
            else:
                result, data = await client.result(job_id, joints, out.suffix)
    out.parent.mkdir(parents=True, exist_ok=True)
    if result is not None and out.suffix.lower() in (".glb", ".bvh"):
        # written here, from the input file: a GLB of a glTF keeps everything else in it, a BVH its units
        # and channel orders (the server only has the character, not the file)
        from anymole.io import write_fill

        await asyncio.to_thread(
            write_fill, out, character, name, result, replace_clip=replace_clip, start=start, units=units
        )
    else:
        out.write_bytes(data)
    return FillResult(job_id, out, result, completed.summary, dict(completed.metrics))


async def _follow(client: AnyMoLeClient, job_id: str, joints: int, progress: bool) -> Completed:
    """Watch a job to its end, drawing progress; return its `Completed` event or raise why it ended."""
    frames = previews = 0
    view = _progress_view(progress)
    with view if view is not None else contextlib.nullcontext():
        task = view.add_task("queued", total=100, eta="?", received="") if view is not None else None
        async for st in _events_with_reattach(client, job_id, joints):
            ev = st.event
            if isinstance(ev, MotionChunk):
                frames += ev.frame_count
            elif isinstance(ev, Preview):
                previews += 1
            if view is not None and task is not None:
                if isinstance(ev, Queued):
                    view.update(task, description=f"queued (#{ev.position + 1})")
                elif isinstance(ev, Progress):
                    eta = "?" if ev.eta_seconds is None else f"{ev.eta_seconds:4.1f}s"
                    view.update(task, description=ev.stage, completed=100 * ev.fraction, eta=eta)
                elif isinstance(ev, MotionChunk):
                    view.update(task, received=f"{frames} frames")
                elif isinstance(ev, Preview):
                    view.update(task, received=f"{previews} previews (frame {ev.frame})")
                elif isinstance(ev, Completed):
                    view.update(task, description="done", completed=100, eta="0s")
            if isinstance(ev, Completed):
                return ev
            if isinstance(ev, Failed):
                if ev.field:
                    raise InvalidInput(ev.field, ev.message)
                raise AnymoleError(f"job {job_id} failed: {ev.message}")
            if isinstance(ev, Cancelled):
                raise JobCancelled(f"job {job_id} was cancelled: {ev.reason}")
            if isinstance(ev, Interrupted):
                raise AnymoleError(f"job {job_id} was interrupted: {ev.reason}")
    raise AnymoleError(f"the event stream of job {job_id} ended without a result; run `anymole fill` again")


def fill_remote(server: str, asset: str | Path, **kwargs: Any) -> FillResult:
    """Blocking `fill_remote_async` (Ctrl-C cancels the job on the server, then raises KeyboardInterrupt)."""
    return asyncio.run(fill_remote_async(server, asset, **kwargs))


async def run_demo_async(out_dir: Path, method: str = "interp", progress: bool = True) -> FillResult:
    """Start a server in-process, fill a gap of the bundled Fox's "Survey" clip through it, stop it.

    Method ``video`` runs the video stage with the tiny random-weight prior (a dry run of seconds on a CPU
    whose video is noise) on 2 s of context and a key 1 s later, and writes ``fox_video.mp4``."""
    from anymole.pipeline import TINY_PRIOR, VideoSettings
    from anymole.service.server import ServerConfig, build_server

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="anymole-demo-") as tmp:
        asset = Path(tmp) / "Fox.glb"
        with importlib.resources.as_file(importlib.resources.files("anymole") / "data" / "Fox.glb") as src:
            shutil.copyfile(src, asset)
        video = VideoSettings(prior=TINY_PRIOR, icadapt_steps=1, ddim_steps=2, width=128, height=80)
        cfg = ServerConfig(port=0, data_dir=Path(tmp) / "server", devices=("auto",), video=video)
        server, port = build_server(cfg)
        await server.start()
        # Survey is 24 fps: the video method needs 2 s of context (frames 0..48) and a key 1 s later (72).
        context, keys, out = ((0, 49), [72], "fox_video.mp4") if method == "video" else ((0, 40), [60, 82], "fox_fill.glb")
        try:
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


def run_demo(out_dir: str | Path, method: str = "interp", progress: bool = True) -> FillResult:
    """Blocking `run_demo_async`."""
    return asyncio.run(run_demo_async(Path(out_dir), method, progress))
