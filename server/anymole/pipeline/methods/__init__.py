"""The pipeline's methods: the `Method` protocol, one module per method, and `build_methods`, the registry.

A new method is a module here with a class that follows `Method` (``spec``, ``validate``, ``run``), listed in
`build_methods`; its stages are plain functions in their own packages (`anymole.video`, `anymole.estimator`,
`anymole.mimic`), which the method runs one after another.
"""

from __future__ import annotations

from anymole.pipeline.methods.anymole import AnyMoLeMethod
from anymole.pipeline.methods.base import Method, MethodSpec
from anymole.pipeline.methods.interp import InterpMethod
from anymole.pipeline.methods.video import VideoMethod
from anymole.pipeline.pool import BackbonePool

__all__ = ["AnyMoLeMethod", "InterpMethod", "Method", "MethodSpec", "VideoMethod", "build_methods"]


def build_methods(video: VideoMethod, vits: BackbonePool | None = None) -> dict[str, Method]:
    """The registry: method name → method, in the order clients see them (``video`` is the composer's, which
    also warms it up; ``vits``, the composer's pool of the estimator's loaded ViTs, which it releases)."""
    methods: tuple[Method, ...] = (InterpMethod(), video, AnyMoLeMethod(video, vits=vits))
    return {m.spec().name: m for m in methods}
