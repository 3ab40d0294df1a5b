"""ICAdapt training clips from the context renders (AnyMoLe supplementary, Algorithm 1).

For every view ``v`` and frame interval ``s ∈ S`` the algorithm takes every ``k``-frame clip
``[start + i·s for i in 0 … k−1]`` that lies inside the view's ``N_fpv`` frames. The printed bound,
"``for start ← 0 to N_fpv − k·s``", is off by ``s − 1`` from the reference code and from the paper's own
count: the last frame of a clip is ``start + (k−1)·s``, so the starts are ``0 … N_fpv − (k−1)·s − 1``.
For the paper's 61 context frames, ``k = 16`` and ``S = [1, 2, 3]`` this gives 46 + 31 + 16 = 93 clips a view
(372 for 4 views), the reference's number; the printed bound would give 46 + 30 + 14 and leave the last
frames of the context unused at strides 2 and 3. A clip at interval ``s`` of a 30 fps render plays at
``30 / s`` fps (30, 15, 10), the value fed to the fps embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from anymole.errors import InvalidInput

__all__ = ["Clip", "ClipBank", "gather_clips"]


@dataclass(frozen=True)
class Clip:
    """One training clip.

    Attributes:
        view: index of the rendered view.
        frames: ``k`` frame indices into that view's frames.
        stride: the frame interval ``s``.
        fps: playback rate of the clip, ``render_fps / s``.
    """

    view: int
    frames: tuple[int, ...]
    stride: int
    fps: float


def gather_clips(
    num_views: int,
    frames_per_view: int,
    k: int = 16,
    strides: Sequence[int] = (1, 2, 3),
    render_fps: float = 30.0,
) -> list[Clip]:
    """Algorithm 1: every ``k``-frame clip at every interval in ``strides``, for every view.

    Args:
        num_views: ``N`` (4 in the paper).
        frames_per_view: ``N_fpv`` (61 for 2 s of context at 30 fps).
        k: frames per clip (16).
        strides: frame intervals ``S`` (1, 2, 3).
        render_fps: frame rate of the renders (30).

    Returns:
        Clips ordered by view, then stride (as given), then start.

    Raises:
        InvalidInput: if no clip fits at the largest stride, or an argument is not positive.
    """
    if num_views < 1 or k < 1 or not strides or min(strides) < 1:
        raise InvalidInput("clips", f"views={num_views}, k={k}, strides={list(strides)}: all must be ≥ 1")
    span = (k - 1) * max(strides) + 1
    if frames_per_view < span:
        raise InvalidInput(
            "context",
            f"{frames_per_view} frames per view are too few for {k}-frame clips at stride {max(strides)} "
            f"(need {span}); render a longer context or use smaller strides",
        )
    return [
        Clip(v, tuple(start + i * s for i in range(k)), s, render_fps / s)
        for v in range(num_views)
        for s in strides
        for start in range(frames_per_view - (k - 1) * s)
    ]


class ClipBank:
    """The context renders, the clips cut from them and the scene's one caption.

    Args:
        videos: ``(V, 3, F, H, W)`` renders in [0, 1], ``V`` views of ``F`` frames.
        clips: from `gather_clips` (views and frames must index into ``videos``).
        caption: the text prompt used for every clip (`anymole.video.caption.scene_caption`).
    """

    def __init__(self, videos: torch.Tensor, clips: Sequence[Clip], caption: str) -> None:
        if videos.ndim != 5 or videos.shape[1] != 3:
            raise InvalidInput("videos", f"expected (views, 3, frames, H, W), got {tuple(videos.shape)}")
        if not clips:
            raise InvalidInput("clips", "no clips to train on")
        self.videos = videos
        self.clips = list(clips)
        self.caption = caption
        self.views = torch.tensor([c.view for c in clips], dtype=torch.long)
        self.frames = torch.tensor([c.frames for c in clips], dtype=torch.long)
        self.fps = torch.tensor([c.fps for c in clips], dtype=torch.float32)
        if int(self.views.max()) >= videos.shape[0] or int(self.frames.max()) >= videos.shape[2]:
            raise InvalidInput("clips", "a clip indexes past the rendered views or frames")

    def __len__(self) -> int:
        return len(self.clips)

    def endpoints(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """First and last frames ``(B, 3, H, W)`` of clips ``index (B,)``."""
        v, f = self.views[index], self.frames[index]
        return self.videos[v, :, f[:, 0]], self.videos[v, :, f[:, -1]]

    def frames_flat(self) -> torch.Tensor:
        """Every rendered frame as images ``(V·F, 3, H, W)``, view-major (frame ``f`` of view ``v`` at
        ``v·F + f``), the order `frame_rows` index."""
        return self.videos.transpose(1, 2).flatten(0, 1)

    def frame_rows(self, index: torch.Tensor) -> torch.Tensor:
        """Rows of `frames_flat` holding the frames of clips ``index (B,)``: ``(B, k)`` int64, on the CPU."""
        return self.views[index, None] * self.videos.shape[2] + self.frames[index]
