"""MP4 in and out through the ffmpeg that imageio-ffmpeg ships: `encode_mp4`, `decode_mp4`, `ffmpeg_problem`."""

from __future__ import annotations

import functools
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

__all__ = ["decode_mp4", "encode_mp4", "ffmpeg_problem"]


@functools.cache
def ffmpeg_problem() -> str:
    """Why the MP4 of a video job could not be written here (no ffmpeg found), or ``""``; checked once per
    process, so a server says so when it starts instead of after a job's GPU work."""
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as exc:
        return (
            f"the video method writes MP4 with ffmpeg, which is not available ({exc}): reinstall the package "
            "(imageio-ffmpeg ships one), install ffmpeg, or point IMAGEIO_FFMPEG_EXE at one"
        )
    return ""


def _ffmpeg(args: list[str], stdin: bytes) -> bytes:
    """Run the ffmpeg that imageio-ffmpeg ships. Called directly rather than through imageio's writer and
    reader, which pass ``preexec_fn=os.setpgrp``: that forces a fork that runs Python code in the child, and
    in a process with gRPC and torch threads (the server) such a child can crash. Without it, Python spawns
    the child with vfork; ``start_new_session`` keeps a terminal's Ctrl-C away from it just the same."""
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", *args]
    proc = subprocess.run(cmd, input=stdin, capture_output=True, start_new_session=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg exited with {proc.returncode}: {proc.stderr.decode(errors='replace')[-400:]}")
    return proc.stdout


def encode_mp4(frames: torch.Tensor | np.ndarray, fps: float) -> bytes:
    """Encode ``(N, H, W, 3)`` uint8 RGB frames (``H``, ``W`` even) as MP4 bytes: H.264, yuv420p, CRF 18,
    every frame kept at its size."""
    arr = np.ascontiguousarray(frames.cpu().numpy() if isinstance(frames, torch.Tensor) else frames)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8 or arr.shape[1] % 2 or arr.shape[2] % 2:
        raise ValueError(f"frames: expected (N, H, W, 3) uint8 with even H and W, got {arr.shape} {arr.dtype}")
    _, h, w, _ = arr.shape
    with tempfile.TemporaryDirectory(prefix="anymole-mp4-") as tmp:
        out = Path(tmp) / "video.mp4"
        _ffmpeg(
            ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", f"{fps:g}", "-i", "pipe:0",
             "-an", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18", str(out)],
            arr.tobytes(),
        )  # fmt: skip
        return out.read_bytes()


def decode_mp4(data: bytes, width: int, height: int) -> np.ndarray:
    """Decode MP4 bytes of ``width × height`` frames to ``(N, height, width, 3)`` uint8 RGB."""
    with tempfile.TemporaryDirectory(prefix="anymole-mp4-") as tmp:
        src = Path(tmp) / "video.mp4"
        src.write_bytes(data)
        raw = _ffmpeg(["-i", str(src), "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "pipe:1"], b"")
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, height, width, 3)
