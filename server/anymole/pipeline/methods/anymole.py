"""The ``anymole`` method, the whole pipeline: video → scene-specific joint estimator → motion video mimicking.

Listed but unavailable until the estimator (`anymole.estimator`) and mimicking (`anymole.mimic`) stages exist;
its stages will run here, after the ``video`` method's render, ICAdapt and sampling stages.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from anymole.errors import ModelUnavailable
from anymole.pipeline.control import CancelToken, ProgressReporter
from anymole.pipeline.events import Event
from anymole.pipeline.methods.base import MethodSpec
from anymole.pipeline.spec import JobSpec

__all__ = ["AnyMoLeMethod"]

_UNAVAILABLE = (
    "the joint estimator and motion mimicking stages are not built yet; use method 'interp' for motion, or "
    "'video' for the generated video"
)


class AnyMoLeMethod:
    """The full method's place in the registry; every job is refused before it queues (`spec` says why)."""

    def spec(self) -> MethodSpec:
        return MethodSpec(
            "anymole",
            "video diffusion prior + scene-specific joint estimator + motion video mimicking",
            presets=("quality", "fast"),
            available=False,
            unavailable_reason=_UNAVAILABLE,
            sends_previews=True,
        )

    def validate(self, spec: JobSpec) -> None:
        """Nothing to check before the stages exist (`check_method` refuses the method)."""

    def run(self, spec: JobSpec, token: CancelToken, report: ProgressReporter, device: str) -> AsyncIterator[Event]:
        raise ModelUnavailable("anymole", _UNAVAILABLE)
