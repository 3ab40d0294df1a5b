"""``anymole demo --method anymole``: the whole AnyMoLe job on the bundled Fox through an in-process server, its
result as a GLB and a side-by-side MP4 of the generated frames beside the mimicked character.

The server's ``anymole`` job streams the motion; the generated frames it mimicked are not part of a motion
job's results, so the demo asks the same server for them with a ``video`` job on the same scene, preset and
seed: its ICAdapt comes from the adaptation cache the ``anymole`` job filled, and the sampler draws from the
seed alone, so it samples the same frames (the demo checks the cache hit). The character is rendered with
the scene's own camera and floor (`anymole.video.scene.render_scene` fits them to the context and keys), at the
request frame each generated frame shows.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anymole.client import FillResult, fill_remote_async
from anymole.errors import AnymoleError
from anymole.io import load_character
from anymole.rig import Character, Keyframes, Motion, cut_clip
from anymole.video.config import VideoJobConfig
from anymole.video.generate import FROM_CACHE
from anymole.video.mp4 import decode_mp4, encode_mp4
from anymole.video.sampler import RENDER_FPS
from anymole.video.scene import render_scene
from anymole.video.timeline import VideoTimeline, plan_timeline

__all__ = ["CLIP", "CONTEXT", "KEYS", "AnyMoLeDemo", "run_anymole_demo", "side_by_side"]

#: Survey is 24 fps: 2 s of context (frames 0..48) and a key 1 s later, as the video timeline needs
CLIP, CONTEXT, KEYS = "Survey", (0, 49), (72,)
#: the ``video`` method's preset of the ``anymole`` method's ``draft`` (`anymole.pipeline.methods.anymole.PRESETS`)
_VIDEO_PRESET = "turbo"


@dataclass(frozen=True)
class AnyMoLeDemo:
    """What the demo wrote: ``glb`` (the Fox with the filled clip), ``video`` (``frames`` frames of
    ``width × height``: generated left, mimicked right), the filled motion and the job's summary."""

    glb: Path
    video: Path
    motion: Motion
    frames: int
    width: int
    height: int
    summary: str
    job_id: str


def _generated_frames(timeline: VideoTimeline) -> list[int]:
    """The request frames of the generated video: the 15 fps frames of the render timeline from the last
    context frame to the last key (`anymole.video.generate.GeneratedScene.request_frames`)."""
    end = timeline.render_context_end + RENDER_FPS * timeline.num_gaps
    return [timeline.to_request(r) for r in range(timeline.render_context_end, end + 1, 2)]


def side_by_side(
    character: Character, context: Motion, keys: Keyframes, motion: Motion, generated: np.ndarray, cfg: VideoJobConfig
) -> np.ndarray:
    """The generated frames beside ``motion`` rendered from the generated view's camera.

    Args:
        character: the rig and mesh the job filled.
        context, keys: the job's context and `Keyframes` (they fit the scene's camera, as the job's renders).
        motion: the filled timeline ``(T, J, 4)`` on the request's frames.
        generated: ``(N, H, W, 3)`` uint8, the generated video of view 0.
        cfg: the job's render size and views.

    Returns:
        ``(N, H, 2·W, 3)`` uint8: generated left, mimicked right.
    """
    from anymole.render.views import render_motion

    timeline = plan_timeline(context.num_frames, context.fps, keys.frames)
    frames = _generated_frames(timeline)
    if len(frames) != generated.shape[0]:
        raise AnymoleError(f"the generated video has {generated.shape[0]} frames; its timeline {len(frames)}")
    scene = render_scene(character, context, keys, timeline, cfg)
    camera = scene.cameras.select(cfg.sample_views[0])
    mimicked = render_motion(character, motion, frames=frames, cameras=camera, style=scene.style, with_depth=False).rgb[0]
    return np.concatenate((generated, mimicked), axis=2)


async def run_anymole_demo(address: str, asset: Path, out_dir: Path, cfg: VideoJobConfig, progress: bool) -> AnyMoLeDemo:
    """The ``anymole`` job (draft preset) on ``asset``'s Survey clip through the server at ``address``, then the
    same scene's ``video`` job for the generated frames; writes ``fox_anymole.glb`` and
    ``fox_anymole_side_by_side.mp4`` into ``out_dir``. ``cfg`` is the server's render size and views."""
    glb = out_dir / "fox_anymole.glb"
    job: FillResult = await fill_remote_async(address, asset, clip=CLIP, context=CONTEXT, keys=list(KEYS), out=glb,
                                              method="anymole", preset="draft", progress=progress)  # fmt: skip
    generated_mp4 = out_dir / "fox_anymole_generated.mp4"
    video = await fill_remote_async(address, asset, clip=CLIP, context=CONTEXT, keys=list(KEYS), out=generated_mp4,
                                    method="video", preset=_VIDEO_PRESET, progress=progress)  # fmt: skip
    if FROM_CACHE not in video.summary:  # another adapted prior would sample other frames than the job mimicked
        raise AnymoleError(f"the video job did not reuse the anymole job's adapted prior: {video.summary}")
    assert job.motion is not None
    character = await asyncio.to_thread(load_character, asset)
    context, keys = cut_clip(character.motions[CLIP], CONTEXT, KEYS)
    generated = decode_mp4(generated_mp4.read_bytes(), cfg.width, cfg.height)
    generated_mp4.unlink()
    tiled = await asyncio.to_thread(side_by_side, character, context, keys, job.motion, generated, cfg)
    path = out_dir / "fox_anymole_side_by_side.mp4"
    path.write_bytes(await asyncio.to_thread(encode_mp4, tiled, RENDER_FPS / 2))
    n, h, w, _ = tiled.shape
    return AnyMoLeDemo(glb, path, job.motion, n, w, h, job.summary, job.job_id)
