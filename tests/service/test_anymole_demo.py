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
