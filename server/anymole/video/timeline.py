"""How a request's timeline maps onto the two-stage sampler's 30 fps render timeline.

The request's timeline is the context clip's: frame 0 is the first context frame, ``C − 1`` the last, at the
context's fps. The sampler's timeline is the render timeline whose keyframes lie exactly 30 frames apart after
the context (see `anymole.video.sampler`). `plan_timeline` maps one onto the other:

* the context in real time: resampled to 30 fps ending exactly at its last frame (`resample_context`; the
  sampler's first coarse window reaches 2 s back, so at least `MIN_CONTEXT_SECONDS` of context);
* each gap, whatever its length ``L`` (keys on any request frames, at any fps), as one render second: gap ``g``'s
  request frames ``k_g … k_{g+1}`` map linearly onto render frames ``r0 + 30·g … r0 + 30·(g + 1)``. The fine
  window that writes the gap's frames is then exactly the gap, keys at both ends, its 16 frames ``L / 15`` s
  apart, and its fps condition says so (`anymole.video.sampler.window_fps`). Gaps longer than `MAX_GAP_SECONDS`
  are refused (add a key between); gaps shorter than `SHORTEST_SAMPLED_GAP` are sampled at the top of the
  trained fps range, in slow motion, and played back at their own speed.

Why warp instead of cutting a gap into real-time 1 s windows: a 16-frame window needs a real frame at both ends
(DynamiCrafter's interpolation conditions on frames 0 and 15), so a gap that is not a whole number of seconds
cannot be tiled by 1 s windows without inventing anchor frames, and a gap shorter than 1 s not at all. The
warp keeps every window's layout (and so the reference's guidance schedule) and changes only the fps number,
which the prior was trained to read. What it bends: a coarse window of gap ``g`` reaches 2 render seconds
back, over the context (real time) and earlier gaps (one render second each), so where neighbouring gaps
differ in length its guiding frames play at another speed than the gap it writes; those frames only guide the
coarse frames, and the coarse frames only guide the fine window while the noise is high.

Generated frames are 15-a-render-second frames; `VideoTimeline.request_positions` gives their (fractional)
request frames and `VideoTimeline.to_request` the nearest request frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from anymole.errors import InvalidInput
from anymole.rig import Motion
from anymole.video.sampler import (
    MAX_GAP_SECONDS,
    RENDER_FPS,
    SHORTEST_SAMPLED_GAP,
    WindowPlan,
    plan_stage1,
    plan_stage2,
)

__all__ = [
    "MAX_GAP_SECONDS",
    "MIN_CONTEXT_SECONDS",
    "SHORTEST_SAMPLED_GAP",
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
        key_frames: request frames of the ``K`` keyframes, increasing, after ``C − 1``; key ``j`` is render frame
            ``r0 + 30·(j + 1)``.
        render_context_frames: ``N``, context frames at 30 fps; render frame ``r0 = N − 1`` is request frame
            ``C − 1``.
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

    @property
    def gap_bounds(self) -> tuple[int, ...]:
        """``K + 1`` request frames: the last context frame, then every key (gap ``g`` runs from bound ``g`` to
        ``g + 1``)."""
        return (self.context_frames - 1, *self.key_frames)

    @property
    def gap_seconds(self) -> tuple[float, ...]:
        """Each gap's real length (s), for its windows' fps condition."""
        b = self.gap_bounds
        return tuple((b[g + 1] - b[g]) / self.fps for g in range(self.num_gaps))

    def request_positions(self, render_frames: torch.Tensor) -> torch.Tensor:
        """``(F,)`` float64 request-timeline positions (fractional request frames) of ``render_frames (F,)``:
        the context in real time, each gap's 30 render frames spread linearly over the gap."""
        r = render_frames.to(torch.float64).cpu() - self.render_context_end
        bounds = torch.tensor(self.gap_bounds, dtype=torch.float64)
        g = (torch.ceil(r / RENDER_FPS) - 1).clamp(0, self.num_gaps - 1).long()
        u = r / RENDER_FPS - g
        inside = bounds[g] + u * (bounds[g + 1] - bounds[g])
        return torch.where(r <= 0, bounds[0] + r / RENDER_FPS * self.fps, inside)

    def render_positions(self, request_frames: torch.Tensor) -> torch.Tensor:
        """``(F,)`` float64 render-timeline positions of request frames ``C − 1 … k_K`` (the inverse of
        `request_positions` after the context)."""
        f = request_frames.to(torch.float64).cpu()
        bounds = torch.tensor(self.gap_bounds, dtype=torch.float64)
        g = (torch.searchsorted(bounds, f, right=False) - 1).clamp(0, self.num_gaps - 1)
        u = (f - bounds[g]) / (bounds[g + 1] - bounds[g])
        return self.render_context_end + RENDER_FPS * (g + u)

    def to_request(self, render_frame: int) -> int:
        """The request frame nearest to ``render_frame`` of the 30 fps render timeline."""
        pos = float(self.request_positions(torch.tensor([render_frame]))[0])
        return math.floor(pos + 0.5)

    def render_times(self) -> torch.Tensor:
        """``(N,)`` float64 request-timeline positions (in request frames) of the 30 fps context frames."""
        back = torch.arange(self.render_context_frames - 1, -1, -1, dtype=torch.float64)
        return (self.context_frames - 1) - back * (self.fps / RENDER_FPS)


def plan_timeline(context_frames: int, fps: float, key_frames: Sequence[int]) -> VideoTimeline:
    """Check that a request fits the sampler's timeline and map it; pure and cheap (call it before any work).

    Args:
        context_frames: ``C`` context frames at ``fps``.
        fps: the request's frame rate.
        key_frames: request frames of the keyframes, strictly increasing, after the context.

    Raises:
        InvalidInput: ``context`` shorter than `MIN_CONTEXT_SECONDS`, or ``keyframes`` empty, out of order or
            with a gap longer than `MAX_GAP_SECONDS`; the message says what to send instead.
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
            f"the video methods need at least {MIN_CONTEXT_SECONDS} s of context ({need} frames at {fps:g} fps): "
            f"the sampler's first window reaches {MIN_CONTEXT_SECONDS} s back from the last context frame; got "
            f"{context_frames} frames ({duration:.2f} s). Send a longer context, or use method 'interp'.",
        )
    if not key_frames:
        raise InvalidInput("keyframes", "send at least one keyframe after the last context frame")
    bounds = [end, *key_frames]
    for g in range(len(key_frames)):
        a, b = bounds[g], bounds[g + 1]
        if b <= a:
            raise InvalidInput(
                "keyframes", f"must increase after the last context frame {end}; got {list(key_frames)}"
            )
        if (b - a) / fps > MAX_GAP_SECONDS + _ON_SECOND / fps:
            longest = math.floor(MAX_GAP_SECONDS * fps + _ON_SECOND)
            raise InvalidInput(
                "keyframes",
                f"the gap from frame {a} to keyframe {b} is {(b - a) / fps:.3g} s; the video methods fill gaps of "
                f"at most {MAX_GAP_SECONDS:g} s ({longest} frames at {fps:g} fps): add a keyframe in between, "
                "or use method 'interp'.",
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
    end, gaps, seconds = timeline.render_context_end, timeline.num_gaps, timeline.gap_seconds
    return plan_stage1(end, gaps, seconds) + plan_stage2(end, gaps, seconds)


def preview_frames(timeline: VideoTimeline) -> list[int]:
    """Render frames the sampler's previews will show, window by window: the middle frame each window writes
    (what `TwoStageSampler` reports with each preview), known before sampling starts."""
    return [p.frames[p.preview_slot] for p in sampler_windows(timeline)]
