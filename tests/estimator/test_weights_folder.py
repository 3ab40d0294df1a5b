"""The estimator's ViT weights in a models folder: `anymole models pull estimator` (offline: what to fetch
and where), `anymole.hub.estimator_weights` finding both backbones, and `build_backbone` loading them through
the real path (the Hub's transformers folder and FiT3D's timm file) into the features of the models saved."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from anymole import hub
from anymole.cli._common import _estimator_weights
from anymole.errors import InvalidInput, ModelUnavailable
from anymole.estimator import EstimatorConfig, ViTBackbone, build_backbone
from anymole.estimator.backbones import pretrained_vit
from cli_run import run_cli
from vit_folders import random_vit, write_models_folder


def _cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code, out, err = run_cli(args, monkeypatch, capsys)
    return code, out + err


def test_pull_estimator_offline_says_what_to_download_and_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tries: list[object] = []

    def offline(**kwargs: object) -> Path:
        tries.append(kwargs)
        raise OSError("network unreachable")

    monkeypatch.setattr(hub, "_download", offline)
    code, text = _cli(["models", "pull", "estimator", "--dest", str(tmp_path)], monkeypatch, capsys)
    assert code == 1 and "Traceback" not in text
    assert len(tries) == 1  # the second model is not tried against a Hub that did not answer
    text = " ".join(text.split())  # the CLI wraps long messages
    for repo, filename, folder in (
        ("facebook/dinov2-with-registers-base", "model.safetensors", "dinov2-with-registers-base"),
        ("yuanwenyue/FiT3D", "dinov2_reg_small_finetuned.pth", "fit3d-vits14-reg"),
    ):
        assert repo in text and filename in text and str(tmp_path / folder) in text, (repo, text)
    assert "config.json" in text and "--estimator-weights" in text


def test_pull_estimator_fills_the_folders_the_server_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[tuple[str, str]] = []

    def fake(repo_id: str, filename: str, local_dir: Path) -> Path:
        calls.append((repo_id, filename))
        (Path(local_dir) / filename).write_text(repo_id)
        return Path(local_dir) / filename

    monkeypatch.setattr(hub, "_download", fake)
    code, text = _cli(["models", "pull", "estimator", "--dest", str(tmp_path)], monkeypatch, capsys)
    assert code == 0, text
    assert set(calls) == {("facebook/dinov2-with-registers-base", "model.safetensors"),
                          ("facebook/dinov2-with-registers-base", "config.json"),
                          ("yuanwenyue/FiT3D", "dinov2_reg_small_finetuned.pth")}  # fmt: skip
    assert hub.estimator_weights(tmp_path) == {
        "dinov2_vitb14_reg": tmp_path / "dinov2-with-registers-base",
        "fit3d_vits14_reg": tmp_path / "fit3d-vits14-reg" / "dinov2_reg_small_finetuned.pth",
    }


def test_backbones_load_from_the_models_folder_exactly(tmp_path: Path) -> None:
    dinov2, fit3d = random_vit(1), random_vit(2)
    found = hub.estimator_weights(write_models_folder(tmp_path, dinov2, fit3d))
    cfg = EstimatorConfig.fast(weights=tuple(str(found[b]) for b in EstimatorConfig.fast().frozen))
    x = torch.rand(2, 3, 56, 84)
    for name, source in (("dinov2_vitb14_reg", dinov2), ("fit3d_vits14_reg", fit3d)):
        bb = build_backbone(name, cfg)  # the path comes from the config, as `SceneEstimator.load` builds it
        assert isinstance(bb, ViTBackbone) and all(not p.requires_grad for p in bb.parameters())
        with torch.no_grad():
            got = bb.model(pixel_values=x).last_hidden_state
            want = source(pixel_values=x).last_hidden_state
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    with torch.no_grad():  # the two slots really hold different weights
        a = build_backbone("dinov2_vitb14_reg", cfg).model(pixel_values=x).last_hidden_state
        b = build_backbone("fit3d_vits14_reg", cfg).model(pixel_values=x).last_hidden_state
    assert not torch.allclose(a, b)


def test_wrong_or_missing_weights_are_named(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable) as err:
        hub.estimator_weights(tmp_path)
    assert "anymole models pull estimator" in str(err.value) and str(tmp_path / "fit3d-vits14-reg") in str(err.value)
    path = tmp_path / "wide.pth"
    torch.save({"pos_embed": torch.zeros(1, 17, 48), "reg_token": torch.zeros(1, 4, 48)}, path)
    with pytest.raises(InvalidInput, match=r"48-wide ViT, not dinov2_vitb14_reg \(768 wide\)"):
        pretrained_vit("dinov2_vitb14_reg", path)
    with pytest.raises(InvalidInput, match="weights"):
        EstimatorConfig.fast(weights=("one.pth",))  # one path for two frozen backbones


def test_serve_option_takes_a_folder_none_or_finds_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full = write_models_folder(tmp_path / "models", random_vit(1), random_vit(2))
    assert _estimator_weights(str(full)) == full
    assert _estimator_weights("none") is None
    with pytest.raises(ModelUnavailable, match="anymole models pull estimator"):
        _estimator_weights(str(tmp_path / "empty"))
    monkeypatch.setenv("ANYMOLE_MODELS", str(full))
    assert _estimator_weights(None) == full  # found in the models folder
    monkeypatch.setenv("ANYMOLE_MODELS", str(tmp_path / "empty"))
    assert _estimator_weights(None) is None  # nothing there: the conv backbone, no error


def test_oracle_names_the_backbone_its_weights_give(tmp_path: Path) -> None:
    """`anymole eval --oracle`'s estimator: the preset's ViT pair with a models folder, conv without one."""
    from anymole.mimic import MimicConfig
    from anymole.pipeline.fromvideo import estimator_config
    from anymole.pipeline.oracle import oracle_eval
    from asset_files import cached_load

    models = write_models_folder(tmp_path, random_vit(1), random_vit(2))
    assert estimator_config("quality", None).backbones == ("conv",)
    assert estimator_config("draft", models) == EstimatorConfig.draft()
    est = estimator_config("fast", models, steps=10, batch_size=8)
    assert est.backbones == ("dinov2_vitb14_reg", "fit3d_vits14_reg")
    result = oracle_eval(cached_load("131_01_30fps.bvh"), "131_01_30fps", (0, 61), [90], "fast", estimator=est,
                         mimicking=MimicConfig.fast(steps=2), render=(96, 64, 2))  # fmt: skip
    assert result.to_json()["backbone"] == "dinov2_vitb14_reg+fit3d_vits14_reg"
    assert result.estimator_px > 0 and torch.isfinite(torch.tensor(result.estimator_px))
