"""`anymole models verify`: a local checkpoint is checked key by key without being loaded on a device."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from anymole.video.dynamicrafter import DynamiCrafterConfig, DynamiCrafterPrior
from anymole.video.weights import export_checkpoint
from cli_run import run_cli


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: v.contiguous() for k, v in export_checkpoint(DynamiCrafterPrior(DynamiCrafterConfig.tiny())).items()}


def _verify(path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code, out, err = run_cli(["models", "verify", str(path), "--model", "tiny"], monkeypatch, capsys)
    return code, out + err


def test_complete_checkpoint_verifies(
    tiny_checkpoint: dict[str, torch.Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "tiny.safetensors"
    save_file(tiny_checkpoint, str(path))
    code, text = _verify(path, monkeypatch, capsys)
    assert code == 0, text
    assert f"{len(tiny_checkpoint)} entries" in text


def test_broken_checkpoint_lists_every_problem(
    tiny_checkpoint: dict[str, torch.Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = dict(tiny_checkpoint)
    missing = next(k for k in state if k.startswith("model.diffusion_model."))
    misshaped = next(k for k in state if k.startswith("first_stage_model.") and state[k].ndim == 4)
    del state[missing]
    state[misshaped] = torch.zeros(1, 2, 3, 4)
    state["model.diffusion_model.extra.weight"] = torch.zeros(3)
    path = tmp_path / "broken.safetensors"
    save_file(state, str(path))
    code, text = _verify(path, monkeypatch, capsys)
    assert code == 1
    assert missing in text and misshaped in text and "model.diffusion_model.extra.weight" in text
    assert "1 missing" in text and "1 unexpected" in text and "1 mis-shaped" in text


def test_missing_file_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = _verify(tmp_path / "nope.ckpt", monkeypatch, capsys)
    assert code == 1
    assert "anymole models pull" in text


def test_verify_accepts_what_the_loader_accepts(
    tiny_checkpoint: dict[str, torch.Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # older checkpoints name the fps MLP `framestride_embed`; `load_pretrained` renames it, so verify must too
    state = {k.replace("fps_embedding", "framestride_embed"): v for k, v in tiny_checkpoint.items()}
    assert state.keys() != tiny_checkpoint.keys()
    path = tmp_path / "old_names.safetensors"
    save_file(state, str(path))
    code, text = _verify(path, monkeypatch, capsys)
    assert code == 0, text
    assert f"{len(state)} entries" in text
