"""Service times for the capacity model (`anymole.bench.capacity.ServiceTimes`) from the recorded benchmarks.

Two sources:

- ``pipeline.json`` (`anymole bench pipeline`: a whole job timed on one GPU): keys ``whole_job_s``,
  ``second_fill_s`` and ``device``; ``estimator_train_s``, ``mimic_s`` and each figure's ``headline_how`` are
  carried into the sources when present.
- ``derived``: summed from the per-stage figures in ``docs/benchmarks/*.json`` (`DERIVED`), each named with its
  file and key, for use until a whole job has been timed. The stages' cards differ (the table says which).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from anymole.bench.capacity import ServiceTimes

__all__ = ["DERIVED", "derived_times", "load_times", "pipeline_times"]

#: stage → (benchmark file, key path, what it is): the figures a derived whole job and second fill add up
DERIVED: dict[str, tuple[str, tuple[str, ...], str]] = {
    "render_s": ("render.json", ("views4_frames300_s",), "render 4 views × 300 frames at 512×320"),
    "icadapt_s": (
        "video_h200.json",
        ("icadapt_fast_per_scene_500_steps_s",),
        "ICAdapt, turbo preset (lora_top, compiled), 500 steps, in a process that has compiled it; timed on an "
        "H200 only (an H100 took 1.12× as long a step for spatial_b8x1)",
    ),
    "estimator_train_s": ("estimator.json", ("estimator_train_s",), "estimator training, fast preset (1200 steps)"),
    "sampling_s": ("video.json", ("sampling_compiled_s", "50"), "two-stage sampling of 90 frames, compiled, 50 DDIM steps"),
}
#: the stages a fill on an already-adapted scene still runs
SECOND_FILL_STAGES = ("render_s", "sampling_s")


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def _get(data: dict[str, Any], keys: tuple[str, ...], path: Path) -> tuple[float, str]:
    """The number under ``keys`` and the card it was measured on."""
    node: Any = data
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            raise ValueError(f"{path}: no key {'.'.join(keys)}")
        node = node[k]
    if not isinstance(node, int | float) or node <= 0:
        raise ValueError(f"{path}: {'.'.join(keys)} must be a positive number, got {node!r}")
    return float(node), str(data.get("device", "unknown device"))


def derived_times(bench_dir: Path) -> ServiceTimes:
    """A whole job as render + ICAdapt + estimator training + sampling, a second fill as render + sampling.

    Assumes the estimator trains after ICAdapt on the same GPU (the server runs them side by side, so this
    errs long by up to the estimator's time) and leaves out mimicking, which no GPU benchmark has timed."""
    parts: dict[str, float] = {}
    sources: dict[str, str] = {}
    devices: dict[str, str] = {}
    for name, (file, keys, what) in DERIVED.items():
        path = bench_dir / file
        value, device = _get(_read(path), keys, path)
        parts[name] = value
        devices[name] = device
        sources[name] = f"{value:.1f} s: {what}; {file} `{'.'.join(keys)}` ({device})"
    sources["mimic_s"] = "not measured on a GPU: left out (0 s)"
    return ServiceTimes(
        whole_job_s=sum(parts.values()),
        second_fill_s=sum(parts[s] for s in SECOND_FILL_STAGES),
        device=" + ".join(sorted(set(devices.values()))),
        sources=sources,
    )


def pipeline_times(path: Path) -> ServiceTimes:
    """The measured whole job and second fill from ``pipeline.json``."""
    data = _read(path)
    whole, device = _get(data, ("whole_job_s",), path)
    second, _ = _get(data, ("second_fill_s",), path)
    found = data.get("headline_how")
    how: dict[str, Any] = found if isinstance(found, dict) else {}
    sources = {}
    for key in ("whole_job_s", "second_fill_s", "estimator_train_s", "mimic_s"):
        value = data.get(key)
        if isinstance(value, int | float):
            note = f": {how[key]}" if isinstance(how.get(key), str) else ""
            sources[key] = f"{value:.1f} s: {path.name} `{key}` ({device}){note}"
    return ServiceTimes(whole_job_s=whole, second_fill_s=second, device=device, sources=sources)


def load_times(source: str, bench_dir: Path) -> ServiceTimes:
    """``source``: ``auto`` (``bench_dir/pipeline.json`` when it exists, else ``derived``), ``derived``, or the
    path of a ``pipeline.json``."""
    if source == "auto":
        found = bench_dir / "pipeline.json"
        return pipeline_times(found) if found.exists() else derived_times(bench_dir)
    if source == "derived":
        return derived_times(bench_dir)
    return pipeline_times(Path(source))
