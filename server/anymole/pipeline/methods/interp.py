"""The ``interp`` method: SLERP rotations, cubic or linear root (`anymole.baseline.inbetween`), instant; streams
its frames in chunks. Presets: ``cubic`` (default), ``linear`` (the root interpolation)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator

import torch

from anymole.baseline import inbetween
from anymole.pipeline.control import CancelToken, ProgressReporter, run_in_thread
from anymole.pipeline.events import Completed, Event, MotionChunk
from anymole.pipeline.methods.base import MethodSpec
from anymole.pipeline.spec import JobSpec, key_error_deg

__all__ = ["ROOT_PRESETS", "InterpMethod"]

#: the presets (the first is the default) → `anymole.baseline.inbetween`'s ``root`` interpolation
ROOT_PRESETS = {"cubic": "cubic", "linear": "linear"}


class InterpMethod:
    """The instant baseline; always available."""

    def spec(self) -> MethodSpec:
        return MethodSpec(
            "interp",
            "SLERP rotations between context and keyframes; cubic or linear root (instant baseline)",
            presets=tuple(ROOT_PRESETS),
        )

    def validate(self, spec: JobSpec) -> None:
        """Nothing beyond the request's own checks: any keyframes in the gap will do."""

    async def run(self, spec: JobSpec, token: CancelToken, report: ProgressReporter, device: str) -> AsyncIterator[Event]:
        preset = spec.preset or next(iter(ROOT_PRESETS))
        report.set_plan([("interp", 1.0), ("stream", 1.0)])
        report("interp", 0.0)
        t0 = time.perf_counter()
        motion = await run_in_thread(
            token,
            inbetween,
            spec.context,
            spec.keyframes,
            spec.total_frames,
            method="slerp",
            root=ROOT_PRESETS[preset],
        )
        t1 = time.perf_counter()
        report("interp", 1.0)
        start, total = spec.context_frames, spec.total_frames
        n_chunks = max(1, math.ceil((total - start) / spec.chunk_frames))
        rot = motion.rotations.to(torch.float32)
        root = motion.root_translation.to(torch.float32)
        tr = None if motion.translations is None else motion.translations.to(torch.float32)
        for i, s in enumerate(range(start, total, spec.chunk_frames)):
            e = min(total, s + spec.chunk_frames)
            part = None if tr is None else tr[s:e].contiguous()
            yield MotionChunk(s, rot[s:e].contiguous(), root[s:e].contiguous(), is_final=True, translations=part)
            report("stream", (i + 1) / n_chunks)
            await asyncio.sleep(0)  # let watchers drain and cancels land between chunks
        t2 = time.perf_counter()
        err = key_error_deg(motion, spec.keyframes)
        yield Completed(
            summary=f"filled frames {start}..{total - 1} with interp/{preset} in {t2 - t0:.3f} s",
            timings=(("interp", t1 - t0), ("stream", t2 - t1)),
            metrics={"key_error_deg": err},
            total_frames=total,
            motion=motion,
        )
