"""``anymole demo --method anymole``: the whole job on the bundled Fox through an in-process server (tiny prior,
draft preset with fewer steps) writes the Fox with the filled clip, context and key exact, and a side-by-side
MP4 of the generated frames and the mimicked Fox from the same camera."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import torch

from anymole.cli.demo_anymole import AnyMoLeDemo
from anymole.cli.server import run_demo_async
from anymole.io import load_character
from anymole.video.mp4 import decode_mp4
from asset_files import cached_load

CONTEXT, KEY, WIDTH, HEIGHT = 49, 72, 128, 80  # the demo's gap (Survey at 24 fps) and render size


def _probe(path: Path) -> tuple[int, int, float, int]:
    """``(width, height, fps, frames)`` of an MP4's video stream, as ffmpeg reports them while decoding it all."""
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-i", str(path), "-map", "0:v:0", "-f", "null", "-"]
    log = subprocess.run(cmd, capture_output=True, text=True, check=True, start_new_session=True).stderr
    size = re.search(r"Video: .*?, (\d+)x(\d+)", log)
    fps = re.search(r"([\d.]+) fps", log)
    frames = re.findall(r"frame=\s*(\d+)", log)
    assert size and fps and frames, log
    return int(size[1]), int(size[2]), float(fps[1]), int(frames[-1])


async def test_demo_writes_the_filled_fox_and_the_side_by_side_video(tmp_path):
    res = await run_demo_async(tmp_path, method="anymole", progress=False, estimator_steps=20, mimic_steps=4)
    assert isinstance(res, AnyMoLeDemo)
    assert "anymole/draft" in res.summary and "the motion follows noise" in res.summary

    filled = load_character(res.glb)
    truth = cached_load("Fox.glb").motions["Survey"]
    assert set(filled.motions) == {*cached_load("Fox.glb").motions, "Survey_filled"}  # a copy with the clip added
    clip = filled.motions["Survey_filled"]
    assert clip.num_frames == KEY + 1 and clip.fps == truth.fps
    torch.testing.assert_close(clip.rotations[:CONTEXT].float(), truth.rotations[:CONTEXT].float(), rtol=0, atol=1e-6)
    torch.testing.assert_close(clip.rotations[KEY].float(), truth.rotations[KEY].float(), rtol=0, atol=1e-6)
    torch.testing.assert_close(clip.root_translation[KEY].float(), truth.root_translation[KEY].float(), rtol=0, atol=1e-5)
    torch.testing.assert_close(clip.rotations.float(), res.motion.rotations.float(), rtol=0, atol=1e-6)

    # What ffmpeg reads from the file: 16 frames (the last context frame, then 1 s at 15 fps), two renders wide.
    assert _probe(res.video) == (2 * WIDTH, HEIGHT, 15.0, 16) and res.frames == 16
    frames = decode_mp4(res.video.read_bytes(), 2 * WIDTH, HEIGHT).astype(np.float64)
    generated, mimicked = frames[..., :WIDTH, :], frames[..., WIDTH:, :]
    # The two ends are known poses: the generated side shows their renders, the mimicked side the same poses
    # from the same camera (within the codec's error); between them the tiny prior's noise differs from any render.
    for i in (0, -1):
        assert np.abs(generated[i] - mimicked[i]).mean() < 6, i
    assert np.abs(generated[8] - mimicked[8]).mean() > 3 * np.abs(generated[0] - mimicked[0]).mean()


async def test_the_video_job_after_an_anymole_job_samples_the_frames_it_mimicked(make_server, connect, tmp_path):
    """What the demo relies on: a ``video`` job on the same scene, seed and ICAdapt preset after an ``anymole``
    job reuses its adapted prior and samples the same frames; every sampler window's preview is byte-identical."""
    from anymole.pipeline import AnyMoLePipeline, Preview, VideoSettings
    from anymole.rig import Keyframes
    from asset_files import ASSETS

    settings = VideoSettings(prior="tiny", icadapt_steps=1, ddim_steps=2, width=96, height=64, views=2,
                             estimator_steps=10, mimic_steps=2, cache_dir=tmp_path / "cache")  # fmt: skip
    _, port = await make_server(pipeline=AnyMoLePipeline(settings))
    client = await connect(port)
    up = await client.upload_file(ASSETS / "Fox.glb")
    truth = cached_load("Fox.glb").motions["Survey"]
    key = Keyframes.of_clip(truth, [KEY])
    previews = {}
    for method, preset in (("anymole", "draft"), ("video", "turbo")):
        request = client.request(up, truth.slice(0, CONTEXT), key, method=method, preset=preset)
        events = [st.event async for st in client.inbetween(request)]
        previews[method] = [(e.frame, e.data) for e in events if isinstance(e, Preview)]
        summary = events[-1].summary
    assert "adapted weights from the cache" in summary  # the video job's ICAdapt came from the anymole job's
    assert len(previews["video"]) == 2 and previews["anymole"] == previews["video"]
