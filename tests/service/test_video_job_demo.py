"""The offline demo and ``fill --server`` with method ``video``: an in-process server with the tiny prior
writes the generated MP4 of the bundled Fox."""

from __future__ import annotations

import pytest

from anymole.cli.server import run_demo_async
from anymole.client._fill import fill_remote_async
from anymole.errors import InvalidInput
from anymole.pipeline import AnyMoLePipeline, VideoSettings
from anymole.video.generate import decode_mp4
from asset_files import ASSETS


async def test_demo_writes_the_fox_video(tmp_path):
    res = await run_demo_async(tmp_path, method="video", progress=False)
    assert res.path == tmp_path / "fox_video.mp4" and res.motion is None
    frames = decode_mp4(res.path.read_bytes(), 128, 80)
    # The last context frame, then one 1 s gap at 15 fps (key included); the demo's 128×80 renders.
    assert frames.shape == (16, 80, 128, 3)
    assert "random weights: previews are noise" in res.summary and res.metrics["video_frames"] == 16
    assert "for frames 48..72" in res.summary  # the clip's own frames: context 0:49, key 72

    # Both ends are renders (the random-weight prior writes noise between them): their pixel-to-pixel
    # roughness is a fraction of a generated frame's (measured 6.5 against 20 levels).
    def roughness(frame):
        return float(abs(frame.astype(float)[:, 1:] - frame.astype(float)[:, :-1]).mean())

    generated = min(roughness(f) for f in frames[1:-1])
    assert roughness(frames[0]) < 0.6 * generated and roughness(frames[-1]) < 0.6 * generated


@pytest.mark.parametrize(("method", "out"), [("video", "f.glb"), ("video", "f.npz"), ("interp", "f.mp4")])
async def test_fill_output_must_match_what_the_method_produces(tmp_path, method, out):
    with pytest.raises(InvalidInput) as err:  # refused before any connection: nothing listens on port 9
        await fill_remote_async("127.0.0.1:9", ASSETS / "Fox.glb", keys=[72], out=tmp_path / out, method=method)
    assert err.value.field == "--out"


async def test_fill_keys_off_the_video_timeline_name_the_clip_frames(make_server, tmp_path):
    """The server counts frames from the context's start; fill takes clip frames: with context 10:71 (2 s at
    30 fps) a key at clip frame 131 is request frame 121, 2.03 s after the last context frame (request 60),
    past the video methods' longest gap; the refusal names the request frames and says how to get from them to
    clip frames."""
    _, port = await make_server(pipeline=AnyMoLePipeline(VideoSettings(prior="tiny")))
    with pytest.raises(InvalidInput) as err:
        await fill_remote_async(
            f"127.0.0.1:{port}", ASSETS / "131_01_30fps.bvh", context=(10, 71), keys=[131],
            out=tmp_path / "f.mp4", method="video", progress=False,
        )  # fmt: skip
    assert err.value.field == "keyframes"
    assert "from frame 60 to keyframe 121" in err.value.reason and "add 10 for clip frames" in err.value.reason
