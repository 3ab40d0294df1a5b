"""`OnStep`: the one progress callback every stage takes (`anymole.video`, `anymole.baseline`, the pipeline).

A stage is a plain blocking function that calls ``on_step(stage, fraction)`` at each step. Raising from the
callback (the pipeline's `ProgressReporter` raises `JobCancelled` once a job is cancelled) stops the stage at
that step. The protocol lives here, below every stage package, so that stages and the pipeline that drives
them name the same type (`anymole.pipeline.control` re-exports it); it imports nothing.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["OnStep", "no_step"]


class OnStep(Protocol):
    """``on_step(stage, fraction, message="", *, preview=None, frame=0)`` (``stage`` and ``fraction`` positional).

    Args:
        stage: the stage's name (``"render"``, ``"icadapt"``, ``"sample"``, …).
        fraction: how much of the stage is done, in [0, 1].
        message: a line for a user (``""``: none).
        preview: something to show for this step, in the stage's own type (the sampler's ``(3, H, W)`` image
            tensor, the video stage's `anymole.video.generate.VideoPreview`); ``None`` for a plain report.
        frame: the frame ``preview`` shows on the stage's timeline (with a preview only).
    """

    def __call__(
        self, stage: str, fraction: float, /, message: str = "", *, preview: Any = None, frame: int = 0
    ) -> None:
        ...


def no_step(stage: str, fraction: float, message: str = "", *, preview: Any = None, frame: int = 0) -> None:
    """The `OnStep` of a caller that does not follow progress."""
