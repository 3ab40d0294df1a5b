"""Blocking, user-facing client flows: ``anymole fill --server`` (`fill_remote`; ``anymole demo`` runs it against
a server in-process, `anymole.cli.server.run_demo`).

`fill_remote` loads the asset locally only to cut the context and keyframes out of one of its clips; the
server imports the same file bytes (uploaded once, cached by content hash) and must report the same joint
order. It says the job id as soon as the server queued the job, draws a live progress bar with the server's
ETA, watches again after the last event seen when the server goes away (restarts) mid-job (`Reconnect`),
cancels the job on Ctrl-C, and writes the result file (GLB, BVH or NPZ, by the ``out`` suffix; MP4 for method
``video``, whose result is the generated video).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anymole.client._watch import Reconnect, follow, read_tls_ca, retrying, rpc_errors
from anymole.errors import AssetError, InvalidInput
from anymole.rig import Motion, cut_clip
from anymole.wire.convert import MOTION_RESULT_SUFFIX, VIDEO_RESULT_SUFFIX

__all__ = ["FillResult", "fill_remote", "fill_remote_async"]

RESULT_SUFFIXES = tuple(MOTION_RESULT_SUFFIX.values())
VIDEO_SUFFIXES = tuple(VIDEO_RESULT_SUFFIX.values())


@dataclass(frozen=True)
class FillResult:
    """What a remote fill produced: the job, the file written and the result timeline ``(T, J, 4)`` (``None``
    for method ``video``, whose file is the generated MP4)."""

    job_id: str
    path: Path
    motion: Motion | None
    summary: str
    metrics: dict[str, float]


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
    reconnect: Reconnect | None = None,
    on_submit: Callable[[str], None] | None = None,
    replace_clip: bool = False,
    units: str | None = None,
) -> FillResult:
    """Fill the gap after ``context`` up to the ``keys`` of one clip of ``asset`` on a remote server.

    Args:
        server: ``"host:port"``.
        asset: a .glb, .fbx or .bvh file with at least one clip.
        keys: clip frames to keep as keyframes, strictly increasing, each ``>= context[1]``.
        out: result file; its suffix (.glb, .bvh, .npz, or .json: `anymole.wire.motion_json`) picks the format;
            .mp4 for method ``video``.
        clip: clip name (default: the first clip of the asset).
        context: ``(start, stop)`` clip frames (Python slice) used as known motion.
        method: in-betweening method offered by the server (``interp``, ``video``, ``anymole``); ``video``
            needs keys at whole seconds after the context's last frame.
        preset: a preset of that method (``""``: its default).
        token: bearer token, if the server demands one.
        tls_ca: PEM root certificate to trust; the connection uses TLS when given.
        progress: draw a progress bar on the terminal.
        reconnect: how long to wait for the server to come back when it goes away mid-job (default
            `Reconnect()`); the job itself lives on the server.
        on_submit: called with the job id once the server queued the job.
        replace_clip, units: how a .glb or .bvh ``out`` is written from ``asset`` (`anymole.io.write_fill`).
    """
    from anymole.client._client import AnyMoLeClient
    from anymole.io import load_character

    asset, out = Path(asset), Path(out)
    wanted = VIDEO_SUFFIXES if method == "video" else (*RESULT_SUFFIXES, ".json")
    if out.suffix.lower() not in wanted:
        what = "method 'video' generates a video" if method == "video" else f"method {method!r} produces motion"
        raise InvalidInput("--out", f"{what}: end the output name with one of {wanted}")
    character = await asyncio.to_thread(load_character, asset)
    if not character.motions:
        raise AssetError(asset, "has no animation clip to take the context and keyframes from")
    name = clip if clip is not None else next(iter(character.motions))
    if name not in character.motions:
        raise InvalidInput("--clip", f"{asset.name} has no clip {name!r}; it has {list(character.motions)}")
    start = context[0]
    ctx, cut = cut_clip(character.motions[name], context, keys)
    ca = read_tls_ca(tls_ca)
    reconnect = reconnect or Reconnect()
    with rpc_errors(server, frame_offset=start):
        client = await AnyMoLeClient.connect(server, token=token, tls_ca=ca)
        async with client:
            up = await client.upload_file(asset)
            if up.skeleton.names != character.skeleton.names:
                raise AssetError(asset, "the server imports a different joint order than this client; update one of them")
            joints = up.skeleton.num_joints
            request = client.request(
                up,
                ctx,
                cut,
                method=method,
                preset=preset,
                label=f"{asset.name}:{name}",
            )
            # Shielded, so that a Ctrl-C while SubmitJob is in flight still learns the job id to cancel.
            submit = asyncio.ensure_future(client.submit(request))
            try:
                job_id, _ = await asyncio.shield(submit)
                if on_submit is not None:
                    on_submit(job_id)
                completed = await follow(client, job_id, joints, progress, reconnect, server)
            except asyncio.CancelledError:  # Ctrl-C: stop the job on the server too, then leave
                with contextlib.suppress(Exception):
                    job_id, _ = await asyncio.wait_for(submit, 5.0)
                    await client.cancel(job_id, timeout=5.0)
                raise
            result: Motion | None = None
            if method == "video":
                data = (await retrying(lambda: client.video(job_id), reconnect, server, job_id)).data
            else:
                suffix = "" if out.suffix.lower() == ".json" else out.suffix  # JSON: the motion alone, written here
                result, data = await retrying(lambda: client.result(job_id, joints, suffix), reconnect, server, job_id)
    out.parent.mkdir(parents=True, exist_ok=True)
    if result is not None and out.suffix.lower() == ".json":
        from anymole.wire.motion_json import write_motion_json

        write_motion_json(out, result, up.skeleton.names)
    elif result is not None and out.suffix.lower() in (".glb", ".bvh"):
        # written here, from the input file: a GLB of a glTF keeps everything else in it, a BVH its units
        # and channel orders (the server only has the character, not the file)
        from anymole.io import write_fill

        await asyncio.to_thread(
            write_fill, out, character, name, result, replace_clip=replace_clip, start=start, units=units
        )
    else:
        out.write_bytes(data)
    return FillResult(job_id, out, result, completed.summary, dict(completed.metrics))


def fill_remote(server: str, asset: str | Path, **kwargs: Any) -> FillResult:
    """Blocking `fill_remote_async` (Ctrl-C cancels the job on the server, then raises KeyboardInterrupt)."""
    return asyncio.run(fill_remote_async(server, asset, **kwargs))
