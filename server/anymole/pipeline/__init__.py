"""The in-betweening job as an async stream of domain events.

A `Pipeline` turns one `JobSpec` into an async generator of events (`Progress`, `Preview`, `MotionChunk`, and
finally `Completed`). It never sees gRPC: the service layer (`anymole.service.jobs.JobManager`) stamps each
event with the job id and a sequence number, stores it and fans it out to watchers.

Modules, in dependency order:
    ``spec``      `JobSpec`, the request as the pipeline sees it; `JobState` and `JobInfo`.
    ``events``    the `Event` union (`Queued` … `Interrupted`), `VideoClip`, and `Stamped` (an event of a job).
    ``control``   `CancelToken`, `ProgressReporter` (the `OnStep` stages report to), `run_in_thread`.
    ``settings``  `VideoSettings`, how the server runs its video prior.
    ``pool``      `PriorPool`, each device's prior: loading, the one-job-at-a-time lock, warm-up.
    ``methods``   the `Method` protocol and registry; ``interp``, ``video``, ``anymole``: one module each.
    ``composer``  `AnyMoLePipeline`: checks a job's method and preset, then lets that method run it.

Adding a stage: write it as a plain blocking function in its own package that takes ``on_step`` (an `OnStep`)
and calls it at every step (that call raises `JobCancelled` after a cancel); the method that needs it declares
it in its plan (``report.set_plan([(name, relative_cost), …])``) and runs it with ``await run_in_thread(token,
stage_fn, …, on_step=report)``. Adding a method: a module in ``methods/`` and a line in `build_methods`.
"""

from __future__ import annotations

from anymole.pipeline.composer import AnyMoLePipeline, Pipeline, check_method, check_spec
from anymole.pipeline.control import CancelToken, OnStep, ProgressReporter, in_daemon_thread, run_in_thread
from anymole.pipeline.events import (
    Cancelled,
    Completed,
    Event,
    Failed,
    Interrupted,
    MotionChunk,
    Preview,
    Progress,
    Queued,
    Stamped,
    VideoClip,
    is_terminal,
)
from anymole.pipeline.methods import Method, MethodSpec
from anymole.pipeline.settings import TINY_PRIOR, VideoSettings
from anymole.pipeline.spec import DEFAULT_CHUNK_FRAMES, JobInfo, JobSpec, JobState, key_error_deg

__all__ = [
    "DEFAULT_CHUNK_FRAMES",
    "TINY_PRIOR",
    "AnyMoLePipeline",
    "CancelToken",
    "Cancelled",
    "Completed",
    "Event",
    "Failed",
    "Interrupted",
    "JobInfo",
    "JobSpec",
    "JobState",
    "Method",
    "MethodSpec",
    "MotionChunk",
    "OnStep",
    "Pipeline",
    "Preview",
    "Progress",
    "ProgressReporter",
    "Queued",
    "Stamped",
    "VideoClip",
    "VideoSettings",
    "check_method",
    "check_spec",
    "in_daemon_thread",
    "is_terminal",
    "key_error_deg",
    "run_in_thread",
]
