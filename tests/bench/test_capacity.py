"""The capacity model (`anymole.bench.capacity`): against M/M/c theory, monotonic in GPUs, exact in the cases
with a known answer, and the committed docs/scaling.md answer reproduced from its JSON."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from anymole.bench.capacity import (
    POLICIES,
    Policy,
    ServiceTimes,
    SimResult,
    Workload,
    draw_fills,
    erlang_c_mean_wait,
    gpus_needed,
    simulate,
)
from anymole.bench.capacity_inputs import DERIVED, derived_times, load_times, pipeline_times
from cli_run import run_cli

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "docs" / "benchmarks"
TIMES = ServiceTimes(whole_job_s=330.0, second_fill_s=60.0, device="test", sources={})


def _erlang_c_prob(lam: float, mu: float, c: int) -> float:
    """P(wait > 0) in M/M/c."""
    a = lam / mu
    top = a**c / math.factorial(c) * c / (c - a)
    return top / (sum(a**k / math.factorial(k) for k in range(c)) + top)


@pytest.mark.parametrize(("lam", "mu", "c"), [(0.7, 1.0, 1), (3.0, 1.0, 4), (6.0, 0.8, 9), (1.2, 0.1, 14)])
def test_exponential_service_matches_erlang_c(lam: float, mu: float, c: int) -> None:
    """No repeat fills and exponential service make every policy's pool an M/M/c queue: the simulated mean wait
    and p90 match Erlang C within a few percent (250 k fills)."""
    jobs = 250_000
    w = Workload(
        animators=1, fill_interval_s=1 / lam, repeat_share=0.0, hours=jobs / lam / 3600,
        warmup_hours=500 / lam / 3600, service="exponential", seed=7,
    )
    times = ServiceTimes(whole_job_s=1 / mu, second_fill_s=1 / mu, device="test", sources={})
    r = simulate(draw_fills(w), times, c, "shared")
    want = erlang_c_mean_wait(lam, mu, c)
    assert r.wait_mean_s == pytest.approx(want, rel=0.08)
    # P(W > x) = C·exp(−(cμ − λ)x): the p90 is ln(C / 0.1) / (cμ − λ) when C > 0.1
    prob = _erlang_c_prob(lam, mu, c)
    p90 = math.log(prob / 0.1) / (c * mu - lam) if prob > 0.1 else 0.0
    assert r.wait_p90_s == pytest.approx(p90, rel=0.08, abs=0.02 / mu)
    assert r.utilisation == pytest.approx(lam / (c * mu), rel=0.02)


def test_erlang_c_formula() -> None:
    """M/M/1: Wq = ρ / (μ − λ); refused when unstable."""
    assert erlang_c_mean_wait(0.5, 1.0, 1) == pytest.approx(1.0)
    assert erlang_c_mean_wait(0.9, 1.0, 1) == pytest.approx(9.0)
    with pytest.raises(ValueError, match="unstable"):
        erlang_c_mean_wait(2.0, 1.0, 2)


def test_one_gpu_every_policy_is_the_same_queue() -> None:
    """With one GPU there is nothing to place: every policy gives the same waits, and every repeat fill finds
    its scene adapted (FIFO on the one GPU), so exactly the new scenes pay the whole job."""
    w = Workload(animators=3, fill_interval_s=1800.0, hours=50, seed=3)
    fills = draw_fills(w)
    rows = [simulate(fills, TIMES, 1, p) for p in POLICIES]
    assert len({(r.wait_mean_s, r.wait_p99_s) for r in rows}) == 1
    new = 1 - fills.repeat[fills.arrival_s >= fills.measure_from_s].mean()
    assert all(r.whole_job_share == pytest.approx(new) for r in rows)


def test_draw_fills() -> None:
    """Arrivals at N / interval, the repeat share as asked, an animator's first fill always a new scene."""
    w = Workload(animators=40, fill_interval_s=600.0, repeat_share=0.3, hours=100, warmup_hours=0, seed=1)
    f = draw_fills(w)
    expected = w.arrival_rate * 100 * 3600
    assert len(f.arrival_s) == pytest.approx(expected, rel=4 / math.sqrt(expected))
    assert np.all(np.diff(f.arrival_s) >= 0)
    assert f.repeat.mean() == pytest.approx(0.3, abs=0.01)
    assert np.all(f.scene[~f.repeat] == np.flatnonzero(~f.repeat))  # a new scene is named by its first fill
    assert np.all(f.scene[f.repeat] < np.flatnonzero(f.repeat))
    again = draw_fills(w)
    assert np.array_equal(f.arrival_s, again.arrival_s) and np.array_equal(f.scene, again.scene)


@pytest.mark.parametrize("policy", POLICIES)
def test_waits_fall_as_gpus_are_added(policy: Policy) -> None:
    """The 100-animator studio over the counts where a policy is stable: the median wait never rises with GPUs,
    the mean and p90 by no more than noise (0.5 %, 1 %: with many GPUs both sit on a floor of repeat fills
    waiting for their scene to finish adapting), utilisation falls, and the most GPUs wait far less than the
    fewest."""
    fills = draw_fills(Workload(hours=40, seed=5))
    rows = [r for g in range(17, 36) if not (r := simulate(fills, TIMES, g, policy)).saturated]
    assert len(rows) >= 6
    for a, b in itertools.pairwise(rows):
        assert b.wait_mean_s <= a.wait_mean_s * 1.005 + 0.01
        assert b.wait_p50_s <= a.wait_p50_s + 1e-9
        assert b.wait_p90_s <= a.wait_p90_s * 1.01 + 1.0
        assert b.utilisation < a.utilisation
    assert rows[-1].wait_mean_s < 0.5 * rows[0].wait_mean_s


def test_affinity_charges_repeats_the_second_fill() -> None:
    """Strict affinity: exactly the new scenes pay the whole job; cache-blind local caches make most repeats pay
    it; shared storage makes the pool pay at most the repeats still adapting."""
    w = Workload(hours=30, seed=2)
    fills = draw_fills(w)
    keep = fills.arrival_s >= fills.measure_from_s
    new = 1 - fills.repeat[keep].mean()
    by = {p: simulate(fills, TIMES, 30, p) for p in POLICIES}
    assert by["affinity"].whole_job_share == pytest.approx(new)
    assert by["spill"].whole_job_share == pytest.approx(new)
    assert new < by["shared"].whole_job_share < new + 0.5 * (1 - new)
    assert by["local"].whole_job_share > new + 0.8 * (1 - new)
    assert by["affinity"].utilisation < by["shared"].utilisation < by["local"].utilisation


def test_gpus_needed_is_the_first_count_under_the_limit() -> None:
    def row(g: int, p50: float) -> SimResult:
        return SimResult("affinity", g, 1, p50, p50, p50, p50, p50, 0.5, 0.5)

    rows = [row(10, 500.0), row(11, 130.0), row(12, 119.0), row(13, 0.0)]
    assert gpus_needed(rows, "affinity") == 12
    assert gpus_needed(rows, "affinity", limit_s=10.0) == 13
    assert gpus_needed(rows, "affinity", limit_s=0.0) is None
    assert gpus_needed(rows, "shared") is None


def test_derived_times_add_up_the_recorded_stages() -> None:
    """Whole job = render + ICAdapt + estimator + sampling, second fill = render + sampling, each figure named
    with its file and key."""
    t = derived_times(BENCH)
    parts = {}
    for name, (file, keys, _) in DERIVED.items():
        node = json.loads((BENCH / file).read_text())
        for k in keys:
            node = node[k]
        parts[name] = node
        assert file in t.sources[name]
    assert t.whole_job_s == pytest.approx(sum(parts.values()))
    assert t.second_fill_s == pytest.approx(parts["render_s"] + parts["sampling_s"])


def test_pipeline_json_is_read_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.json"
    how = {"whole_job_s": "render + ICAdapt + sampling"}
    path.write_text(
        json.dumps(
            {"whole_job_s": 300.0, "second_fill_s": 50.0, "mimic_s": 12.0, "estimator_train_s": None}
            | {"device": "H100", "headline_how": how}
        )
    )
    t = pipeline_times(path)
    assert (t.whole_job_s, t.second_fill_s, t.device) == (300.0, 50.0, "H100")
    assert t.sources["mimic_s"] == "12.0 s: pipeline.json `mimic_s` (H100)"
    assert t.sources["whole_job_s"].endswith("(H100): render + ICAdapt + sampling")
    assert "estimator_train_s" not in t.sources  # not measured in that run
    assert load_times("auto", tmp_path) == t  # auto prefers pipeline.json
    path.write_text(json.dumps({"whole_job_s": 300.0, "device": "H100"}))
    with pytest.raises(ValueError, match="second_fill_s"):
        pipeline_times(path)
    path.write_text(json.dumps({"whole_job_s": 30.0, "second_fill_s": 50.0}))
    with pytest.raises(ValueError, match="second_fill_s <= whole_job_s"):
        pipeline_times(path)


def test_the_committed_answer_reproduces() -> None:
    """docs/benchmarks/capacity.json (what docs/scaling.md shows) comes back from its own inputs: for each
    policy, the rows at the GPU count it needs for the median wait and one fewer are the same numbers, so the
    count is the same."""
    report = json.loads((BENCH / "capacity.json").read_text())
    w = Workload(**report["workload"])
    times = ServiceTimes(**report["service_times"])
    fills = draw_fills(w)
    rows = {(r["policy"], r["gpus"]): r for r in report["results"]}
    for policy in POLICIES:
        need = report["gpus_needed"][policy]["p50"]
        assert need is not None and (policy, need - 1) in rows
        for g in (need - 1, need):
            r = simulate(fills, times, g, policy, w.cache_load_s)
            assert asdict(r) | {"saturated": r.saturated} == rows[(policy, g)]
        assert rows[(policy, need)]["wait_p50_s"] < report["limit_s"] <= rows[(policy, need - 1)]["wait_p50_s"]


def _cli(argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``anymole bench capacity ARGV``: (exit code, stdout + stderr)."""
    code, out, err = run_cli(["bench", "capacity", *argv], monkeypatch, capsys)
    return code, out + err


def test_cli_writes_the_page_and_the_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "pipeline.json").write_text(json.dumps({"whole_job_s": 300.0, "second_fill_s": 60.0, "device": "X"}))
    args = ["--bench-dir", str(tmp_path), "--hours", "5", "--gpus", "14:16", "--studios", "10"]
    code, out = _cli([*args, "--json", str(tmp_path / "c.json"), "--markdown", str(tmp_path / "s.md")], monkeypatch, capsys)
    assert code == 0, out
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["service_times"]["whole_job_s"] == 300.0  # auto took pipeline.json
    assert [(r["policy"], r["gpus"]) for r in report["results"]] == [(p, g) for p in POLICIES for g in (14, 15, 16)]
    assert set(report["gpus_needed_by_animators"]["10"]) == set(POLICIES)
    assert 0 < report["repeats_while_adapting_share"] < 0.5  # 1 - exp(-300 s / 20 min) = 0.22 at most
    page = (tmp_path / "s.md").read_text()
    assert "## Answer" in page and "pipeline.json `whole_job_s` (X)" in page


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--from", "missing.json"], "--from"),
        (["--repeat-share", "1"], "--repeat-share"),
        (["--gpus", "5:2"], "--gpus"),
        (["--gpus", "a"], "--gpus"),
        (["--studios", "10,x"], "--studios"),
        (["--fill-interval", "0"], "--fill-interval"),
    ],
)
def test_cli_refuses_bad_options(
    argv: list[str], option: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _cli([*argv, "--markdown", "", "--json", "unused.json"], monkeypatch, capsys)
    assert code == 1 and option in out and "Traceback" not in out, out
