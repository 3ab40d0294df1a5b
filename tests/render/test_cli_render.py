"""`anymole render`: a contact sheet and a video of a bundled asset."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
from typer.testing import CliRunner

from anymole.cli import app
from anymole.errors import InvalidInput

FOX = Path(__file__).resolve().parents[2] / "assets" / "Fox.glb"


def test_render_writes_a_sheet_and_a_video(tmp_path):
    sheet, video = tmp_path / "sheet.png", tmp_path / "fox.mp4"
    args = ["render", str(FOX), "--views", "2", "--clip", "Walk", "--frames", "2:8", "--out", str(sheet)]
    result = CliRunner().invoke(app, [*args, "--video", str(video), "--columns", "4"])
    assert result.exit_code == 0, result.output
    img = iio.imread(sheet)
    assert img.shape == (2 * 320, 4 * 512, 3)  # one row per view, 4 of the 6 frames
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50  # a picture, not a blank
    frames = iio.imread(video, index=None)
    assert frames.shape[0] == 6 and frames.shape[1:3] == (320, 2 * 512)


def test_render_rejects_an_unknown_clip(tmp_path):
    result = CliRunner().invoke(
        app, ["render", str(FOX), "--clip", "Dance", "--out", str(tmp_path / "s.png")]
    )
    assert isinstance(result.exception, InvalidInput) and result.exception.field == "--clip"
    assert not (tmp_path / "s.png").exists()
