"""``anymole serve --video-*`` flags: how the server is told which video prior to use."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from anymole.cli import app
from anymole.cli.server import _keep_compiled_graphs, _video_settings
from anymole.errors import InvalidInput
from anymole.pipeline import AnyMoLePipeline, VideoSettings


def test_flags_become_video_settings() -> None:
    assert _video_settings("none", None, None, None) == VideoSettings()
    assert _video_settings("NONE", None, None, None).prior is None
    tiny = _video_settings("tiny", 2, 3, "96x64")
    assert tiny == VideoSettings(prior="tiny", icadapt_steps=2, ddim_steps=3, width=96, height=64)
    assert _video_settings("/models/dc/model.ckpt", None, None, "512X320").prior == "/models/dc/model.ckpt"
    # The method's availability follows: off, on for tiny, off with the path named when the file is missing.
    methods = {m.name: m for m in AnyMoLePipeline(_video_settings("/nowhere/model.ckpt", None, None, None)).methods()}
    assert not methods["video"].available and "/nowhere/model.ckpt" in methods["video"].unavailable_reason
    assert {m.name: m for m in AnyMoLePipeline(tiny).methods()}["video"].available


def test_video_prior_may_name_the_pulled_folder(tmp_path) -> None:
    settings = _video_settings(str(tmp_path), None, None, None)
    assert settings.checkpoint() == tmp_path / "model.ckpt"
    (video,) = [m for m in AnyMoLePipeline(settings).methods() if m.name == "video"]
    assert not video.available and str(tmp_path / "model.ckpt") in video.unavailable_reason
    (tmp_path / "model.ckpt").write_bytes(b"")
    (video,) = [m for m in AnyMoLePipeline(settings).methods() if m.name == "video"]
    assert video.available
    assert _video_settings("tiny", None, None, None).checkpoint() is None


@pytest.mark.parametrize(("size", "field"), [("96", "--video-size"), ("ax64", "--video-size"), ("100x64", "--video-size")])
def test_bad_video_size_names_the_flag(size: str, field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        _video_settings("tiny", None, None, size)
    assert err.value.field == field


def test_serve_help_teaches_the_video_flags() -> None:
    res = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "240"})  # rich wraps to COLUMNS
    assert res.exit_code == 0, res.output
    for flag in ("--video-prior", "--video-icadapt-steps", "--video-ddim-steps", "--video-size", "--video-warmup", "models pull"):
        assert flag in res.output, flag


def test_serve_keeps_compiled_graphs_in_its_data_dir_unless_told_otherwise(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    _keep_compiled_graphs(tmp_path)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "torchinductor")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/fast/disk/inductor")
    _keep_compiled_graphs(tmp_path)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/fast/disk/inductor"


def test_serve_refuses_a_warm_up_without_a_prior(tmp_path) -> None:
    res = CliRunner().invoke(app, ["serve", "--port", "0", "--data-dir", str(tmp_path), "--video-warmup"])
    assert res.exit_code != 0 and "--video-warmup" in str(res.exception) and "--video-prior" in str(res.exception)
