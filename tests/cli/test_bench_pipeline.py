"""`anymole bench pipeline` (issue 14.6): the whole anymole job timed through the real method on the tiny prior on
the CPU, its figures extrapolated from the timed jobs by the stated arithmetic, its report section, and the paper's
scene built from the bundled humanoid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from anymole.bench.pipeline import load_source, paper_scene
from anymole.bench.pipeline_report import STAGES, summarize, write_markdown
from cli_run import run_cli

HEADING = "## Whole pipeline (anymole method)"


def _cli(argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code, _, err = run_cli(argv, monkeypatch, capsys)
    return code, err


def _critical(t: dict[str, float]) -> float:
    return t["render"] + max(t["icadapt"] + t["sample"], t["estimator"]) + t["estimate"] + t["mimic"]


def test_bench_pipeline_tiny_cpu_writes_consistent_figures(tmp_path: Path, monkeypatch, capsys) -> None:
    out, page, part = tmp_path / "pipeline.json", tmp_path / "benchmarks.md", tmp_path / "partial.json"
    page.write_text("# Benchmarks\n\n## Renderer\n\nkept\n")
    code, err = _cli(["bench", "pipeline", "--model", "tiny", "--device", "cpu", "--gaps", "1", "--short", "1,1,2,2",
                      "--long", "2,2,2,4", "--backbone", "vit", "--json", str(out), "--markdown", str(page), "--partial", str(part)],
                     monkeypatch, capsys)  # fmt: skip
    assert code == 0, err
    r = json.loads(out.read_text())
    for key in ("whole_job_s", "second_fill_s", "estimator_train_s", "mimic_s", "device", "preset", "stages_s", "how"):
        assert r[key] is not None, key
    # the method's backbone factory put tiny random ViTs of the paper's pair under the draft heads
    assert r["preset"] == "draft" and r["estimator_backbones"] == ["dinov2_vitb14_reg", "fit3d_vits14_reg"]
    assert r["full_steps"] == {"icadapt": 500, "ddim": 50, "estimator": 300, "mimic": 10}  # draft: 10 LM iterations a solve
    assert r["scene"]["keyframes"] == [90] and r["scene"]["context_frames"] == 61 and r["scene"]["fps"] == 30
    runs = r["runs"]
    assert list(runs) == ["short", "long", "second"] and not r["skipped"]
    assert runs["short"]["steps"] == runs["second"]["steps"] == {"icadapt": 1, "ddim": 1, "estimator": 2, "mimic": 2}
    assert runs["long"]["steps"] == {"icadapt": 2, "ddim": 2, "estimator": 2, "mimic": 4}
    # the first two jobs train (the long one in a cache of its own: its estimator has the short one's key, as at
    # the GPU defaults), the third loads both caches
    assert runs["short"]["cached"] == runs["long"]["cached"] == {"icadapt": False, "estimator": False}
    assert runs["second"]["cached"] == r["second_fill_cached"] == {"icadapt": True, "estimator": True}
    for run in runs.values():
        assert set(STAGES) <= set(run["timings_s"])
        assert _critical(run["timings_s"]) <= run["wall_s"] + 1e-6  # the stages lie inside the job
    # every stepped figure is the stated line through the short and long jobs, at the preset's steps
    s, lg, full = runs["short"]["timings_s"], runs["long"]["timings_s"], r["full_steps"]
    for stage, key in (("icadapt", "icadapt"), ("sample", "ddim"), ("estimator", "estimator"), ("mimic", "mimic")):
        n1, n2 = runs["short"]["steps"][key], runs["long"]["steps"][key]
        if n1 == n2:  # the estimator here: the long job's time scaled
            assert r["stages_s"][stage] == pytest.approx(lg[stage] * full[key] / n2)
            assert r["how"][stage].startswith(f"scaled from {n2} to {full[key]} steps")
            continue
        b = max(0.0, (lg[stage] - s[stage]) / (n2 - n1))
        assert r["per_step_s"][stage] == pytest.approx(b)
        assert r["stages_s"][stage] == pytest.approx(lg[stage] + (full[key] - n2) * b)
        assert r["how"][stage].startswith("extrapolated") and f"{full[key]} steps" in r["how"][stage]
        assert r["extrapolated"][stage]["from_steps"] == {"short": n1, "long": n2}
    assert r["stages_s"]["render"] == lg["render"] and r["how"]["render"] == "measured (long job)"
    outside = runs["long"]["wall_s"] - _critical(lg)
    assert r["whole_job_s"] == pytest.approx(outside + _critical(r["stages_s"]))
    assert r["estimator_train_s"] == r["stages_s"]["estimator"] and r["mimic_s"] == r["stages_s"]["mimic"]
    second = r["second_fill_stages_s"]
    assert second["icadapt"] == runs["second"]["timings_s"]["icadapt"]  # a cache load, as measured
    assert second["sample"] == pytest.approx(runs["second"]["timings_s"]["sample"] + 49 * r["per_step_s"]["sample"])
    assert r["second_fill_s"] < r["whole_job_s"]  # 500 ICAdapt steps skipped
    # the partial file after the last job holds the same jobs; the page keeps its other sections
    assert list(json.loads(part.read_text())["runs"]) == ["short", "long", "second"]
    text = page.read_text()
    assert "## Renderer\n\nkept\n" in text and text.count(HEADING) == 1
    section = text.split(HEADING, 1)[1]
    assert "| ICAdapt | 500 |" in section and "**whole job** (first fill)" in section and "~1.5 h" in section


RAW = {
    "device": "NVIDIA H100 80GB HBM3", "torch": "2.11", "date": "2026-12-07 16:00 UTC", "model": "m", "preset": "draft",
    "icadapt_recipe": "turbo", "estimator_backbones": ["dinov2_vitb14_reg", "fit3d_vits14_reg"],
    "scene": {"character": "CesiumMan", "fps": 30, "context_frames": 61, "keyframes": [90, 120, 150, 180, 210, 240],
              "total_frames": 241, "gaps": 6, "width": 512, "height": 320, "views": 4},
    "full_steps": {"icadapt": 500, "ddim": 50, "estimator": 300, "mimic": 40},
    "warm_server": {"load_s": 20.0, "compile_s": 147.0, "backbones_s": 2.0},
    "skipped": [],
    "runs": {
        "short": {"wall_s": 40.0, "steps": {"icadapt": 5, "ddim": 2, "estimator": 60, "mimic": 10}, "cached": {},
                  "timings_s": {"render": 1.0, "icadapt": 5.0, "sample": 6.0, "estimator": 4.0, "estimate": 0.5, "mimic": 20.0}},
        "long": {"wall_s": 75.0, "steps": {"icadapt": 25, "ddim": 5, "estimator": 300, "mimic": 40}, "cached": {},
                 "timings_s": {"render": 1.0, "icadapt": 15.0, "sample": 12.0, "estimator": 10.0, "estimate": 0.5, "mimic": 44.0}},
        "second": {"wall_s": 30.0, "steps": {"icadapt": 5, "ddim": 2, "estimator": 60, "mimic": 10},
                   "cached": {"icadapt": True, "estimator": True},
                   "timings_s": {"render": 1.0, "icadapt": 0.5, "sample": 6.0, "estimator": 0.2, "estimate": 0.5, "mimic": 20.0}},
    },
}  # fmt: skip


def test_summary_extrapolates_by_the_stated_arithmetic() -> None:
    r = summarize(RAW)
    # ICAdapt 0.5 s a step: 15 + 475 × 0.5; sampling 2 s a DDIM step: 12 + 45 × 2; mimicking measured at 40
    assert r["stages_s"]["icadapt"] == pytest.approx(252.5)
    # the estimator and mimicking ran their preset's steps in the long job: only ICAdapt and sampling extrapolate
    assert r["extrapolated"] == {
        "icadapt": {"to_steps": 500, "from_steps": {"short": 5, "long": 25}, "from_s": {"short": 5.0, "long": 15.0}},
        "sample": {"to_steps": 50, "from_steps": {"short": 2, "long": 5}, "from_s": {"short": 6.0, "long": 12.0}},
    }
    assert r["stages_s"]["sample"] == pytest.approx(102.0)
    assert r["estimator_train_s"] == pytest.approx(10.0) and "measured at the preset's 300" in r["how"]["estimator"]
    assert r["mimic_s"] == pytest.approx(44.0)
    # long: critical 1 + 27 + 0.5 + 44 = 72.5 of 75 s; at full steps 1 + 354.5 + 0.5 + 44 = 400, plus 2.5
    assert r["whole_job_s"] == pytest.approx(402.5)
    # second: sampling 6 + 48 × 2 = 102, mimicking 20 + 30 × 0.8 = 44 (cache loads as measured); its measured
    # critical path 1 + 6.5 + 0.5 + 20 = 28 of 30 s, at full steps 1 + 102.5 + 0.5 + 44 = 148
    assert r["second_fill_stages_s"]["mimic"] == pytest.approx(44.0)
    assert r["second_fill_stages_s"]["icadapt"] == 0.5
    assert r["second_fill_s"] == pytest.approx(30.0 - 28.0 + 148.0)


def test_summary_flags_estimator_training_that_outlasted_icadapt() -> None:
    assert summarize(RAW)["estimator_spilled_into_sampling"] == []
    short = {**RAW["runs"]["short"], "timings_s": {**RAW["runs"]["short"]["timings_s"], "estimator": 8.0}}
    r = summarize({**RAW, "runs": {**RAW["runs"], "short": short}})
    assert r["estimator_spilled_into_sampling"] == ["short"]
    assert "caution" in r["how"]["sample"] and "caution" in r["how"]["icadapt"] and "caution" not in r["how"]["mimic"]
    # the second job loaded its estimator: never flagged, however long the load took
    second = {**RAW["runs"]["second"], "timings_s": {**RAW["runs"]["second"]["timings_s"], "estimator": 9.0}}
    assert summarize({**RAW, "runs": {**RAW["runs"], "second": second}})["estimator_spilled_into_sampling"] == []


def test_summary_of_a_cut_run_says_what_is_missing(tmp_path: Path) -> None:
    cut = {**RAW, "runs": {"short": RAW["runs"]["short"]}, "skipped": ["long: the budget of 1 s was spent (2 s)"]}
    r = summarize(cut)
    assert r["whole_job_s"] is None and r["second_fill_s"] is None and "short and long" in r["missing"]
    no_second = summarize({**RAW, "runs": {k: RAW["runs"][k] for k in ("short", "long")}})
    assert no_second["whole_job_s"] == pytest.approx(402.5) and no_second["second_fill_s"] is None
    page = tmp_path / "b.md"
    write_markdown(r, page)
    write_markdown(r, page)  # rewrites its own section only
    text = page.read_text()
    assert text.count(HEADING) == 1 and "Skipped: long: the budget" in text and "| **whole job** (first fill) | | | **—** |" in text


def test_paper_scene_loops_the_humanoid_walk_to_six_keys(tmp_path: Path, monkeypatch, capsys) -> None:
    character, clip, cid = load_source()
    assert character.name and clip.fps == 30 and clip.num_frames == 61 and cid.startswith("sha256:")
    spec = paper_scene(character, clip, cid)
    assert spec.context_frames == 61 and spec.total_frames == 241
    assert spec.keyframes.frames == (90, 120, 150, 180, 210, 240)
    torch.testing.assert_close(spec.context.rotations, clip.rotations, rtol=0, atol=0)
    # key 90 is clip frame 30 one walk cycle on: the same pose, the root moved on by one cycle's travel
    travel = clip.root_translation[-1] - clip.root_translation[0]
    travel[1] = 0
    torch.testing.assert_close(spec.keyframes.poses.rotations[0], clip.rotations[30], rtol=0, atol=0)
    torch.testing.assert_close(spec.keyframes.poses.root_translation[0], clip.root_translation[30] + travel)
    # the scene file (for a machine without libassimp) gives the same scene back
    scene = tmp_path / "scene.pt"
    code, err = _cli(["bench", "pipeline", "--export-scene", str(scene)], monkeypatch, capsys)
    assert code == 0, err
    again, clip2, _ = load_source(scene=scene)
    assert again.skeleton.names == character.skeleton.names
    torch.testing.assert_close(clip2.rotations, clip.rotations, rtol=0, atol=0)


def test_from_json_rewrites_the_section_and_bad_flags_are_refused(tmp_path: Path, monkeypatch, capsys) -> None:
    results, page = tmp_path / "pipeline.json", tmp_path / "b.md"
    results.write_text(json.dumps(RAW))
    code, err = _cli(["bench", "pipeline", "--from-json", str(results), "--markdown", str(page)], monkeypatch, capsys)
    assert code == 0, err
    section = page.read_text().split(HEADING, 1)[1]
    assert "| ICAdapt | 500 | 5, 25 | 252.5 s | 500.0 ms | ~1.5 h | — |" in section
    assert "**402.5 s** | | ~5.0 h | < 480.0 s ✓ |" in section and "**150.0 s** |" in section
    for argv, flag in (
        (["--short", "1,2,3"], "--short"),
        (["--long", "1,0,3,4"], "--long"),
        (["--preset", "turbo"], "preset"),
        (["--from-json", str(results), "--markdown", ""], "--from-json"),
    ):
        code, err = _cli(["bench", "pipeline", "--model", "tiny", "--device", "cpu", *argv], monkeypatch, capsys)
        assert code == 1 and flag in err and "Traceback" not in err, (argv, err)
