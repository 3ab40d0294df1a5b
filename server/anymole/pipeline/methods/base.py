"""What a method is: `MethodSpec` (what clients see of it) and the `Method` protocol (what the composer calls)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from anymole.pipeline.control import CancelToken, ProgressReporter
from anymole.pipeline.events import Event
from anymole.pipeline.spec import JobSpec

__all__ = ["Method", "MethodSpec"]


@dataclass(frozen=True)
class MethodSpec:
    """A method a pipeline offers: its presets (first = default), whether it can run here, and what its jobs
    produce: ``result`` is ``"motion"`` (GLB/BVH/NPZ results) or ``"video"`` (an MP4 result). The timing rules
    its requests must follow, advertised so that a client can check a request before sending it:
    ``min_context_seconds`` of context at least (0: one frame), keys exactly ``key_spacing_seconds`` apart from
    the last context frame on (0: any frames), gaps of at most ``max_gap_seconds`` (0: no limit but
    `Limits.max_frames`)."""

    name: str
    description: str
    presets: tuple[str, ...]
    available: bool = True
    unavailable_reason: str = ""
    sends_previews: bool = False
    result: str = "motion"
    min_context_seconds: float = 0.0
    key_spacing_seconds: float = 0.0
    max_gap_seconds: float = 0.0


class Method(Protocol):
    """One way to fill a job, as the composer (`anymole.pipeline.composer.AnyMoLePipeline`) runs it.

    A method declares its stages' plan on ``report`` (``report.set_plan([(stage, cost), …])``), runs each stage
    (a plain blocking function taking an `OnStep`) with ``await run_in_thread(token, stage_fn, …,
    on_step=report)``, yields `Preview` and provisional `MotionChunk` events between stages and ends with
    `Completed`; errors are raised. ``run`` makes ``validate``'s checks itself, with the plans they produce
    (the ``video`` method's timeline), so that a job is planned once a run.
    """

    def spec(self) -> MethodSpec:
        """How clients see the method on this server (presets, availability)."""
        ...

    def validate(self, spec: JobSpec) -> None:
        """Cheap checks of a job before it queues; raises `InvalidInput` naming the field."""
        ...

    def run(self, spec: JobSpec, token: CancelToken, report: ProgressReporter, device: str) -> AsyncIterator[Event]:
        """Events of one job on ``device``."""
        ...
