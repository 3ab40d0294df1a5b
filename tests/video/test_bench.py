"""The video benchmark's report writer: it rewrites only its own section, from the numbers it is given."""

from __future__ import annotations

import json

import pytest

from anymole.bench.video import _default_variant, _variant_name
from anymole.bench.video_report import write_json, write_markdown
from anymole.bench.video_summary import _best, _mode_of, merge, summarize
from anymole.errors import InvalidInput

RESULTS = {
    "device": "NVIDIA H100 80GB HBM3",
    "torch": "2.11.0",
    "date": "2026-11-28 06:00 UTC",
    "model": "dynamicrafter-512-interp (full, random weights)",
    "resolution": [320, 512],
    "sampling_s": {"50": {"15": 10.0, "90": 55.5}, "25": {"15": 5.0, "90": 28.25}},
    "extrapolation_check": {"frames": 15, "steps": 10, "measured_s": 2.5, "predicted_s": 2.4},
    "sampling_peak_mem_gib": 12.0,
    "icadapt": {
        "spatial": {"clips_per_step": 8, "step_s": 0.5, "trainable_parameters": 938_218_180, "peak_mem_gib": 40.0},
        "lora_no_ckpt": {"step_s": None, "error": "out of memory"},
    },
    "denoiser_variants_s": {"bf16_sdpa": 0.1, "bf16_math_attention": "out of memory"},
    "sample_90_frames_unbatched_stage2_s": 70.0,
    "sample_90_frames_s": 55.5,
    "icadapt_step_s": 0.5,
    "icadapt_500_steps_s": 250.0,
    "peak_mem_gib": 40.0,
}


def test_markdown_replaces_only_its_section(tmp_path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text(
        "# Benchmarks\n\nintro\n\n## Renderer\n\nrender numbers\n\n## Video prior\n\n_(old)_\n\n## Later\n\nkept\n"
    )
    write_markdown(RESULTS, page)
    text = page.read_text()
    assert "_(old)_" not in text and "render numbers" in text and "## Later\n\nkept\n" in text
    assert text.index("## Renderer") < text.index("## Video prior") < text.index("## Later")
    section = text.split("## Video prior", 1)[1].split("## Later", 1)[0]
    assert (
        "| 90 | 8.08 | 144 | 55.5 | 28.2 |" in section
    )  # paper min, reference est. (12 windows × 12 s), ours
    assert "| spatial | 8 | 938.2 M | 0.500 | — | 4.2 | 40.0 |" in section
    assert "| lora_no_ckpt | — | — | out of memory | — | — | — |" in section
    # Speed-ups are computed from the numbers: batching 70.0 s → 55.5 s.
    assert (
        "| batching the independent stage-2 windows | 90 frames, 50 steps | 70.000 s | 55.500 s | 1.26× |"
        in section
    )
    write_markdown(RESULTS, page)  # idempotent
    assert page.read_text() == text


def test_markdown_appends_missing_section(tmp_path) -> None:
    page = tmp_path / "b.md"
    page.write_text("# Benchmarks\n")
    write_markdown(RESULTS, page)
    assert page.read_text().startswith("# Benchmarks\n\n## Video prior\n\nDevice: NVIDIA H100")


def test_sections_of_two_cards_live_side_by_side(tmp_path) -> None:
    page = tmp_path / "b.md"
    page.write_text("# Benchmarks\n\n## Video prior\n\nold H100\n\n## Video prior on an H200\n\nold H200\n")
    other = {**RESULTS, "device": "NVIDIA H200"}
    write_markdown(other, page, heading="## Video prior on an H200", json_name="docs/benchmarks/video_h200.json")
    text = page.read_text()
    assert "old H100" in text and "old H200" not in text  # a heading is matched as a whole line
    h200 = text.split("## Video prior on an H200\n", 1)[1]
    assert "(`docs/benchmarks/video_h200.json`)" in h200 and "Headline (`video_h200.json`)" in h200
    assert "measured on one NVIDIA H200" in h200
    write_markdown(RESULTS, page)
    assert "old H100" not in page.read_text() and page.read_text().count("## Video prior on an H200\n") == 1


def test_json_round_trip(tmp_path) -> None:
    path = tmp_path / "d" / "video.json"
    write_json(RESULTS, path)
    loaded = json.loads(path.read_text())
    assert loaded == RESULTS
    assert {
        "device",
        "torch",
        "date",
        "icadapt_step_s",
        "icadapt_500_steps_s",
        "sample_90_frames_s",
        "peak_mem_gib",
    } <= set(loaded)


def test_variant_names() -> None:
    assert _variant_name("spatial", "full", 4) == "spatial" == _default_variant()  # ICAdaptConfig(): 4 × 2
    assert _variant_name("spatial", "full", 8) == "spatial_b8x1"
    assert _variant_name("spatial", "none", 2) == "spatial_no_ckpt_b2x4"
    assert _variant_name("decoder", "selective", 4, True) == "decoder_sac_compiled"
    assert _variant_name("lora_decoder", "none", 8, 0.8) == "lora_decoder_no_ckpt_b8x1_compiled_mem80"


def test_a_variant_belongs_to_its_longest_mode() -> None:
    assert _mode_of("lora_decoder_no_ckpt_b8x1_compiled", {}) == "lora_decoder"
    assert _mode_of("lora_b8x1", {}) == "lora" and _mode_of("decoder", {}) == "decoder"
    assert _mode_of("spatial_sac", {"mode": "full"}) == "full"  # what the run recorded wins
    assert _mode_of("mystery_b8x1", {}) is None
    runs = {"lora_decoder_b8x1": {"clips_per_step": 8, "step_s": 1.0, "peak_mem_gib": 20.0}}
    assert _best(runs, ("lora",)) is None and _best(runs, ("lora_decoder",)) == "lora_decoder_b8x1"


def test_headlines_pick_best_reference_and_fast_variants_with_compile_cost() -> None:
    runs = {
        "spatial": {"clips_per_step": 8, "step_s": 2.0, "peak_mem_gib": 30.0},
        "spatial_b8x1": {"clips_per_step": 5, "step_s": 1.0, "peak_mem_gib": 30.0},  # fewer clips: not a headline
        "spatial_sac": {"clips_per_step": 8, "step_s": 1.6, "peak_mem_gib": 60.0},
        # only fits a bigger card: not a headline
        "spatial_sac_b2x4": {"clips_per_step": 8, "step_s": 1.0, "peak_mem_gib": 90.0},
        # 0.9 s/step but 400 s of compile: 850 s for 500 steps, slower than decoder_sac's 1.2 × 500 = 600 s.
        "decoder_sac_compiled": {"clips_per_step": 8, "step_s": 0.9, "compile_s": 400.0, "peak_mem_gib": 40.0},
        "decoder_sac": {"clips_per_step": 8, "step_s": 1.2, "peak_mem_gib": 40.0},
        "decoder_no_ckpt": {"step_s": None, "error": "out of memory"},
    }
    r = summarize({"icadapt": runs, "sampling_peak_mem_gib": 12.0})
    assert (r["icadapt_variant"], r["icadapt_step_s"], r["icadapt_500_steps_s"]) == ("spatial_sac", 1.6, 800.0)
    assert (r["icadapt_fast_variant"], r["icadapt_fast_500_steps_s"]) == ("decoder_sac", 600.0)
    assert r["icadapt_default_step_s"] == 2.0 and r["peak_mem_gib"] == 60.0
    runs["decoder_sac_compiled"]["compile_s"] = 50.0
    r = summarize({"icadapt": runs})
    assert r["icadapt_fast_variant"] == "decoder_sac_compiled"
    assert r["icadapt_fast_500_steps_s"] == pytest.approx(500 * 0.9 + 50.0)


def test_warm_compile_cache_runs_are_reported_beside_cold_ones(tmp_path) -> None:
    runs = {
        "spatial": {"clips_per_step": 8, "step_s": 2.0, "peak_mem_gib": 30.0},
        "lora_top_no_ckpt_b8x1": {"mode": "lora_top", "clips_per_step": 8, "step_s": 0.65, "peak_mem_gib": 56.0},
        "lora_top_no_ckpt_b8x1_compiled": {
            "mode": "lora_top",
            "clips_per_step": 8,
            "step_s": 0.5,
            "compile_s": 200.0,
            "compile_warm_s": 30.0,
            "peak_mem_gib": 47.5,
        },
    }
    r = summarize({**RESULTS, "icadapt": runs})
    # empty caches: 0.5 × 500 + 200 = 450 s loses to eager's 325 s; warm: 280 s wins
    assert (r["icadapt_fast_variant"], r["icadapt_fast_500_steps_s"]) == ("lora_top_no_ckpt_b8x1", 325.0)
    assert r["icadapt_fast_500_steps_warm_cache_s"] == 325.0  # the headline variant's own figure
    assert _best(runs, ("lora_top",), "warm") == "lora_top_no_ckpt_b8x1_compiled"
    # per scene in a server that has compiled: 0.5 × 500
    assert r["icadapt_fast_per_scene_variant"] == "lora_top_no_ckpt_b8x1_compiled"
    assert r["icadapt_fast_per_scene_500_steps_s"] == 250.0
    page = tmp_path / "benchmarks.md"
    write_markdown(r, page)
    text = page.read_text()
    assert "| lora_top_no_ckpt_b8x1_compiled | 8 | — | 0.500 | 200 / 30 | 7.5 / 4.7 | 47.5 |" in text
    assert "| lora_top_no_ckpt_b8x1 | 8 | — | 0.650 | — | 5.4 | 56.0 |" in text
    assert (
        "lora_top_no_ckpt_b8x1_compiled needs 7.5 min (not met) with empty compile caches, 4.7 min (met) with "
        "warm ones and 4.2 min (met) a scene once its process has compiled" in text
    )
    assert "reference-faithful: spatial needs 16.7 min (not met)" in text
    assert "`icadapt_fast_per_scene_500_steps_s` = 250 s" in text


def test_merge_keeps_each_phase_date_and_refuses_another_card() -> None:
    sampling = {"device": "NVIDIA H100 80GB HBM3", "date": "06:09", "sampling_date": "06:09", "icadapt": {"spatial": {"step_s": 2.0}}}
    later = {"device": "NVIDIA H100 80GB HBM3", "date": "06:53", "icadapt_date": "06:53", "icadapt": {"spatial_b8x1": {"step_s": 1.5}}}
    merged = merge(sampling, later)
    assert (merged["sampling_date"], merged["icadapt_date"], merged["date"]) == ("06:09", "06:53", "06:53")
    assert set(merged["icadapt"]) == {"spatial", "spatial_b8x1"}
    with pytest.raises(InvalidInput, match="NVIDIA H200"):
        merge(sampling, later | {"device": "NVIDIA H200"})


def test_markdown_dates_each_phase(tmp_path) -> None:
    page = tmp_path / "b.md"
    write_markdown(RESULTS | {"sampling_date": "2026-11-28 06:09 UTC", "icadapt_date": "2026-11-28 06:53 UTC"}, page)
    text = page.read_text()
    assert "Measured 2026-11-28 06:09 UTC. Reference code" in text
    assert "Measured on NVIDIA H100 80GB HBM3, 2026-11-28 06:53 UTC." in text


def test_cli_merge_refuses_another_card_before_running(tmp_path, monkeypatch, capsys) -> None:
    from anymole.cli import main

    earlier = tmp_path / "video.json"
    write_json(RESULTS, earlier)  # measured on an H100; this run would be on the CPU
    argv = ["anymole", "bench", "video", "--model", "tiny", "--device", "cpu", "--merge", "--json", str(earlier)]
    monkeypatch.setattr("sys.argv", [*argv, "--markdown", str(tmp_path / "b.md")])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 1
    assert "NVIDIA H100 80GB HBM3" in capsys.readouterr().err
    assert json.loads(earlier.read_text()) == RESULTS and not (tmp_path / "b.md").exists()


def test_variants_of_fewer_clips_are_not_compared(tmp_path) -> None:
    """A run that trained fewer clips a step than the recipe is listed, but no table row compares it."""
    runs = {
        "spatial": {"clips_per_step": 8, "step_s": 2.5, "peak_mem_gib": 29.0},
        "spatial_b8x1": {"clips_per_step": 5, "step_s": 1.5, "peak_mem_gib": 29.0},
        "spatial_sac": {"clips_per_step": 8, "step_s": 2.4, "peak_mem_gib": 70.0},
    }
    page = tmp_path / "b.md"
    write_markdown(summarize(RESULTS | {"icadapt": runs}), page)
    text = page.read_text()
    assert "| spatial_b8x1 | 5 | — | 1.500 |" in text
    assert "spatial → spatial_b8x1" not in text and "| spatial → spatial_sac | 2.500 | 2.400 |" in text


def test_each_icadapt_variant_runs_without_another_modes_adapters() -> None:
    """Adapters stay in a prior once injected: a LoRA variant timed on a prior an earlier variant of another
    mode adapted would also run (and pay for) that variant's adapters."""
    import torch

    from anymole.bench.video import VideoBenchConfig, run_video_bench
    from anymole.video.dynamicrafter import DynamiCrafterConfig, DynamiCrafterPrior

    built: list[DynamiCrafterPrior] = []

    def make_prior(dtype: torch.dtype) -> DynamiCrafterPrior:
        built.append(DynamiCrafterPrior(DynamiCrafterConfig.tiny(), device="cpu", dtype=dtype))
        return built[-1]

    variants = (("lora_decoder", "none", 8, False), ("lora_decoder", "full", 8, False), ("lora_top", "none", 8, False))
    cfg = VideoBenchConfig(model="tiny", device="cpu", phases=("icadapt",), icadapt_steps=1, icadapt_variants=variants)
    out = run_video_bench(cfg, make_prior=make_prior)
    assert all(v["step_s"] > 0 for v in out["icadapt"].values()), out["icadapt"]
    adapted = [{tuple(n.split(".")[:2]) for n, _ in prior.unet.named_parameters() if "lora_" in n} for prior in built]
    blocks = len(built[0].unet.output_blocks)
    top = {("output_blocks", str(i)) for i in range(blocks - built[0].config.unet.num_res_blocks - 1, blocks)}
    # the two lora_decoder variants share a prior; lora_top gets a fresh one, with its own blocks' adapters only
    assert len(built) == 2 and adapted[0] > top and adapted[1] == top


def test_a_failed_warm_compile_keeps_the_variants_cold_figures(monkeypatch) -> None:
    from anymole.bench import video as bench
    from anymole.video.dynamicrafter import DynamiCrafterConfig, DynamiCrafterPrior
    from anymole.video.icadapt import AdaptedWeights

    calls: list[int] = []

    def fake_icadapt(prior, bank, cfg, on_step=None):  # a compiled run: its first step took 5 s
        calls.append(cfg.steps)
        if len(calls) == 2:
            raise RuntimeError("the warm compile broke")
        for s in range(cfg.steps):
            on_step("icadapt", (s + 1) / cfg.steps)
        return AdaptedWeights(cfg, losses=[1.0] * cfg.steps, trainable_parameters=7, first_step_seconds=5.0)

    monkeypatch.setattr(bench, "icadapt", fake_icadapt)
    cfg = bench.VideoBenchConfig(
        model="tiny", device="cpu", phases=("icadapt",), icadapt_steps=2, icadapt_variants=(("lora_top", "none", 8, True),)
    )
    out = bench.run_video_bench(cfg, make_prior=lambda dtype: DynamiCrafterPrior(DynamiCrafterConfig.tiny(), dtype=dtype))
    row = out["icadapt"]["lora_top_no_ckpt_b8x1_compiled"]
    assert calls == [3, 1]  # the timed run (warm-up + 2), then the warm compile's one step
    assert row["step_s"] >= 0 and row["compile_s"] == pytest.approx(5.0 - row["step_s"])
    assert row["compile_warm_error"] == "RuntimeError: the warm compile broke" and "compile_warm_s" not in row


def test_compiled_90_frame_headline_comes_from_the_compiled_run_at_the_default_steps() -> None:
    compiled = {"frames": 90, "stage2_batch": 1, "compile_warmup_s": 120.0, "50": 53.7, "25": 27.0, "peak_mem_gib": 12.5}
    r = summarize({"icadapt": {}, "sampling_compiled_s": compiled})
    assert r["sample_90_frames_compiled_s"] == 53.7
    assert summarize({"icadapt": {}, "sampling_compiled_s": {**compiled, "frames": 45}})["sample_90_frames_compiled_s"] is None
    assert summarize({"icadapt": {}})["sample_90_frames_compiled_s"] is None
