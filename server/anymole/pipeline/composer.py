"""The composer: `AnyMoLePipeline` checks a job's method and preset and hands the job to that method.

`Pipeline` is what the job manager (`anymole.service.jobs.JobManager`) runs; `check_method` and `check_spec`
refuse a job that cannot run before it queues. The composer holds no stage logic: each method
(`anymole.pipeline.methods`) runs its own stages.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from anymole.errors import InvalidInput, ModelUnavailable
from anymole.pipeline.control import CancelToken, ProgressReporter
from anymole.pipeline.events import Event
from anymole.pipeline.methods import Method, MethodSpec, VideoMethod, build_methods
from anymole.pipeline.pool import BackbonePool, PriorPool
from anymole.pipeline.settings import VideoSettings
from anymole.pipeline.spec import JobSpec

__all__ = ["AnyMoLePipeline", "Pipeline", "check_method", "check_spec"]


class Pipeline(Protocol):
    """What the job manager runs. Implementations: `AnyMoLePipeline`; the tests' scripted fakes.

    A pipeline may also define ``validate(spec)``: cheap method-specific checks that raise `InvalidInput`;
    `check_spec` calls it when a job is submitted, so a request that cannot run is refused before it queues.
    """

    def methods(self) -> Sequence[MethodSpec]:
        """The methods this pipeline offers."""
        ...

    def run(
        self, spec: JobSpec, token: CancelToken, report: ProgressReporter, device: str
    ) -> AsyncIterator[Event]:
        """Events of one job on ``device``; the last one is `Completed` (errors are raised)."""
        ...


def check_method(pipeline: Pipeline, method: str, preset: str) -> MethodSpec:
    """The `MethodSpec` for ``method``; `InvalidInput` for an unknown method or preset, `ModelUnavailable`
    for a method that cannot run on this server."""
    specs = {m.name: m for m in pipeline.methods()}
    if method not in specs:
        raise InvalidInput("method", f"unknown method {method!r}; this server offers {sorted(specs)}")
    spec = specs[method]
    if preset and preset not in spec.presets:
        raise InvalidInput("preset", f"method {method!r} has no preset {preset!r}; choose one of {list(spec.presets)}")
    if not spec.available:
        raise ModelUnavailable(method, spec.unavailable_reason)
    return spec


def check_spec(pipeline: Pipeline, spec: JobSpec) -> MethodSpec:
    """`check_method` for the spec's method and preset, then the pipeline's own ``validate(spec)`` if it has
    one; raises what they raise."""
    method = check_method(pipeline, spec.method, spec.preset)
    validate = getattr(pipeline, "validate", None)
    if validate is not None:
        validate(spec)
    return method


class AnyMoLePipeline:
    """The server's pipeline: the ``interp`` baseline, and, when ``video`` names a prior, the ``video`` stage
    and the whole ``anymole`` method on that prior.

    Args:
        video: how to run the ``video`` method (default: unavailable).
    """

    def __init__(self, video: VideoSettings | None = None) -> None:
        self.video = video or VideoSettings()
        self.pool = PriorPool(self.video)
        self.backbones = BackbonePool()
        self._video = VideoMethod(self.video, self.pool)
        self._methods = build_methods(self._video, self.backbones)

    def methods(self) -> Sequence[MethodSpec]:
        return tuple(m.spec() for m in self._methods.values())

    def method(self, name: str) -> Method:
        """The method called ``name`` (`KeyError` for a name `methods` does not list)."""
        return self._methods[name]

    def validate(self, spec: JobSpec) -> None:
        """The method's own checks before a job queues (`Method.validate`)."""
        self._methods[spec.method].validate(spec)

    async def warm_up(self, devices: Sequence[str]) -> None:
        """`VideoSettings.warmup`: load the video prior on ``devices`` and compile ``turbo`` where it pays
        (`VideoMethod.warm_up`)."""
        await self._video.warm_up(devices)

    async def close(self) -> None:
        """Release the models kept loaded between jobs that the server does not need once it stops (the
        estimator's frozen backbones); the server calls it after its last job."""
        self.backbones.clear()

    async def run(self, spec: JobSpec, token: CancelToken, report: ProgressReporter, device: str) -> AsyncIterator[Event]:
        check_method(self, spec.method, spec.preset)  # the method's run makes its own `validate` checks
        async for event in self._methods[spec.method].run(spec, token, report, device):
            yield event
