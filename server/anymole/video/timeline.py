"""How a request's timeline maps onto the two-stage sampler's 30 fps render timeline.

The request's timeline is the context clip's: frame 0 is the first context frame, ``C − 1`` the last, at the
context's fps. The sampler's timeline is the 30 fps render timeline whose keyframes lie exactly 30 frames (1 s)
apart after the context (see `anymole.video.sampler`). `plan_timeline` maps one onto the other honestly: the
context is resampled to 30 fps ending exactly at its last frame (`resample_context`, needs at least 2 s of
context), and keyframe ``j`` must lie exactly ``j + 1`` seconds after the last context frame (one key a second,
none skipped), else `InvalidInput` names ``keyframes`` and lists the frames to use. Generated frames are 15 fps
frames of the render timeline; `VideoTimeline.to_request` gives their frame on the request's timeline (rounded
to the nearest frame when the request's fps is not a multiple of 15).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from anymole.errors import InvalidInput
from anymole.rig import Motion
from anymole.video.sampler import RENDER_FPS, WindowPlan, plan_stage1, plan_stage2

__all__ = [
    "MIN_CONTEXT_SECONDS",
    "VideoTimeline",
    "plan_timeline",
    "preview_frames",
    "resample_context",
    "sampler_windows",
]

#: seconds of context the two-stage sampler needs (its first coarse window reaches 2 s back).
MIN_CONTEXT_SECONDS = 2
#: a keyframe (or the first 30 fps context frame) within this many frames of a whole second counts as on it.
_ON_SECOND = 1e-3

@dataclass(frozen=True)
class VideoTimeline:
    """How a request's timeline maps onto the sampler's 30 fps render timeline.

    Attributes:
        fps: frame rate of the request's timeline (its context clip), > 0.
        context_frames: ``C``, context frames on the request's timeline (frames ``0 … C − 1``).
        key_frames: request frames of the ``K`` keyframes; key ``j`` is ``j + 1`` seconds after frame ``C − 1``.
        render_context_frames: ``N``, context frames at 30 fps; render frame ``N − 1`` is request frame ``C − 1``.
    """

    fps: float
    context_frames: int
    key_frames: tuple[int, ...]
    render_context_frames: int

    @property
    def num_gaps(self) -> int:
        return len(self.key_frames)

    @property
    def render_context_end(self) -> int:
        """The last context frame on the render timeline (the sampler's ``context_end``)."""
        return self.render_context_frames - 1

    def to_request(self, render_frame: int) -> int:
        """The request frame nearest to ``render_frame`` of the 30 fps render timeline."""
        seconds = (render_frame - self.render_context_end) / RENDER_FPS
        return math.floor(self.context_frames - 1 + seconds * self.fps + 0.5)

    def render_times(self) -> torch.Tensor:
        """``(N,)`` float64 request-timeline positions (in request frames) of the 30 fps context frames."""
        back = torch.arange(self.render_context_frames - 1, -1, -1, dtype=torch.float64)
        return (self.context_frames - 1) - back * (self.fps / RENDER_FPS)


def plan_timeline(context_frames: int, fps: float, key_frames: Sequence[int]) -> VideoTimeline:
    """Check that a request fits the sampler's timeline and map it; pure and cheap (call it before any work).

    Args:
        context_frames: ``C`` context frames at ``fps``.
        fps: the request's frame rate.
        key_frames: request frames of the keyframes, increasing.

    Raises:
        InvalidInput: ``context`` shorter than 2 s, or ``keyframes`` not exactly at 1, 2, … s after the last
            context frame; the message lists the frames to use.
    """
    if not fps > 0:
        raise InvalidInput("context.fps", f"must be > 0, got {fps}")
    end = context_frames - 1
    duration = end / fps
    # 30 fps frames back from the last context frame; a position within 1e-3 frame of the first one counts
    # (float frame rates such as a BVH's 0.0333333 s frame time give 30.00003 fps).
    frames = math.floor(duration * RENDER_FPS + _ON_SECOND) + 1
    if frames < MIN_CONTEXT_SECONDS * RENDER_FPS + 1:
        need = math.ceil(MIN_CONTEXT_SECONDS * fps - _ON_SECOND) + 1
        raise InvalidInput(
            "context",
            f"the video method needs at least {MIN_CONTEXT_SECONDS} s of context ({need} frames at {fps:g} fps); "
            f"got {context_frames} frames ({duration:.2f} s). Send a longer context, or use method 'interp'.",
        )
    if not key_frames:
        raise InvalidInput("keyframes", "send at least one keyframe, 1 s after the last context frame")
    wanted = [end + (j + 1) * fps for j in range(len(key_frames))]
    if any(abs(k - w) > _ON_SECOND for k, w in zip(key_frames, wanted, strict=True)):
        got = ", ".join(f"{k} ({(k - end) / fps:.3g} s)" for k, w in zip(key_frames, wanted, strict=True))
        if any(abs(w - round(w)) > _ON_SECOND for w in wanted):
            todo = f"at {fps:g} fps no frame lies on a whole second: resample the clip to 24, 30 or 60 fps"
        else:
            todo = f"put them at frames {[round(w) for w in wanted]}"
        raise InvalidInput(
            "keyframes",
            f"the video method generates 1 s gaps: keyframe j must lie exactly j + 1 seconds after the last "
            f"context frame {end} (one a second, none skipped); got frames {got}. To fix: {todo}, or use "
            "method 'interp' for keyframes at any frame.",
        )
    return VideoTimeline(float(fps), int(context_frames), tuple(int(k) for k in key_frames), frames)


def resample_context(context: Motion, timeline: VideoTimeline) -> Motion:
    """The context at 30 fps, ending exactly on its last frame: SLERP of rotations, linear translations.

    A context already at 30 fps comes back unchanged; 60 fps takes every second frame exactly.

    Args:
        context: ``C`` frames at ``timeline.fps`` (``rotations (C, J, 4)``).
        timeline: from `plan_timeline` for this context.

    Returns:
        ``N = timeline.render_context_frames`` frames at 30 fps.
    """
    if context.num_frames != timeline.context_frames:
        raise InvalidInput("context", f"has {context.num_frames} frames, the timeline {timeline.context_frames}")
    return context.sample(timeline.render_times(), float(RENDER_FPS))


def sampler_windows(timeline: VideoTimeline) -> list[WindowPlan]:
    """The sampler's windows in the order it finishes them: stage 1, then stage 2 (one preview each)."""
    return plan_stage1(timeline.render_context_end, timeline.num_gaps) + plan_stage2(
        timeline.render_context_end, timeline.num_gaps
    )


def preview_frames(timeline: VideoTimeline) -> list[int]:
    """Render frames the sampler's previews will show, window by window: the middle frame each window writes
    (what `TwoStageSampler` reports with each preview), known before sampling starts."""
    return [p.frames[p.preview_slot] for p in sampler_windows(timeline)]
