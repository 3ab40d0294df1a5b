"""The ``anymole`` job's progress plan (`progress_plan`): the stages' relative costs that its fraction and ETA
are weighted by."""

from __future__ import annotations

import pytest

from anymole.estimator import EstimatorConfig
from anymole.mimic import MimicConfig
from anymole.pipeline.methods.anymole import PRESETS, progress_plan
from anymole.pipeline.methods.video import ICADAPT_PRESETS
from anymole.video.config import VideoJobConfig
from anymole.video.timeline import plan_timeline


def _plan(preset: str, **mimic: int) -> dict[str, float]:
    """The paper's setting: 2 s of context and six 1 s gaps at 30 fps, 4 views of 512 × 320."""
    timeline = plan_timeline(61, 30.0, [90, 120, 150, 180, 210, 240])
    video = VideoJobConfig(icadapt=ICADAPT_PRESETS[PRESETS[preset]]())
    plan = progress_plan(video, timeline, preset, EstimatorConfig.preset(preset), MimicConfig.preset(preset, **mimic))
    assert [s for s, _ in plan] == ["render", "icadapt", "sample", "estimator", "mimic"]
    assert all(w > 0 for _, w in plan)
    return dict(plan)


@pytest.mark.parametrize(("preset", "low", "high"), [("draft", 0.02, 0.15), ("fast", 0.08, 0.35), ("quality", 0.1, 0.45)])
def test_mimickings_share_of_the_plan_follows_its_solver(preset: str, low: float, high: float) -> None:
    """Mimicking's share of a job's planned work is in the band its solver's measured cost gives (docs/quality.md,
    "Mimicking's weight in a job's progress"): a Levenberg–Marquardt iteration costs 0.54 (draft, no silhouette),
    3.6 (fast) and 7.2 (quality) of the Adam step the plan's weights were calibrated on, so the presets with a
    silhouette weigh several times the draft's (before: one weight for every preset, 5 % of fast's and quality's
    plans, where their mimicking is measured at 3.6 and 7.2 times the old step)."""
    plan = _plan(preset)
    share = plan["mimic"] / sum(plan.values())
    assert low < share < high, (preset, share)


def test_mimickings_weight_per_iteration_follows_the_presets_solver_cost() -> None:
    assert _plan("fast", steps=20)["mimic"] == pytest.approx(2 * _plan("fast")["mimic"])
    per_iteration = {p: _plan(p)["mimic"] / MimicConfig.preset(p).steps for p in PRESETS}
    assert per_iteration["draft"] < per_iteration["fast"] < per_iteration["quality"]
