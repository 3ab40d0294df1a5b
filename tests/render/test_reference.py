"""Renders match committed reference images (made on Mesa llvmpipe, the CI renderer).

Regenerate after an intended change of the looks with ``ANYMOLE_REGEN_REFERENCE=1 pytest tests/render``,
look at the PNGs, and commit them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anymole.render import Style, pose_motion, render_motion, scene_style
from anymole.render.sheet import contact_sheet
from anymole.rig import Character

REFERENCE = Path(__file__).parent / "reference"
ASSETS = Path(__file__).resolve().parents[2] / "assets"


def _check(name: str, sheet: np.ndarray) -> None:
    path = REFERENCE / f"{name}.png"
    if os.environ.get("ANYMOLE_REGEN_REFERENCE"):
        Image.fromarray(sheet).save(path, optimize=True)
        pytest.skip(f"wrote {path}")
    _compare(path, sheet)


def _compare(path: Path, sheet: np.ndarray) -> None:
    ref = np.asarray(Image.open(path).convert("RGB"))
    assert ref.shape == sheet.shape
    diff = np.abs(ref.astype(np.int16) - sheet.astype(np.int16)).max(axis=-1)
    # Tolerant of rasteriser rounding (llvmpipe versions, the NVIDIA driver: measured 0.05 levels mean,
    # 0.04% of pixels > 8 levels), not of a moved limb, a changed camera or a missing texture.
    assert diff.mean() < 2.0, diff.mean()
    assert (diff > 48).mean() < 0.005, (diff > 48).mean()
    # Nor of a changed light: ambient 0.35 -> 0.4 moves 1.4% of the CesiumMan/Fox sheets' pixels by > 8.
    assert (diff > 8).mean() < 0.005, (diff > 8).mean()


def _sheet(character: Character, clip: str, frames: list[int], gl, style: Style | None = None) -> np.ndarray:
    r = render_motion(
        character, character.motions[clip], views=4, frames=frames, rasterizer=gl, with_depth=False, style=style
    )
    return contact_sheet(r, columns=len(frames), labels=False)


def test_synthetic_biped_matches_reference(character, gl):
    _check("biped_walk", _sheet(character, "walk", [0, 4, 8], gl))


@pytest.mark.parametrize(
    ("asset", "clip", "frames"), [("CesiumMan.glb", None, [0, 12, 24]), ("Fox.glb", "Walk", [0, 6, 12])]
)
def test_bundled_assets_match_reference(asset, clip, frames, gl):
    from anymole.io import load_character

    character = load_character(ASSETS / asset)
    name = clip or next(iter(character.motions))
    _check(Path(asset).stem, _sheet(character, name, frames, gl))


def test_reference_check_catches_a_changed_pose(character, gl):
    """The tolerance is tight enough to see a different frame of the same clip."""
    # Compare only: regenerating must not write these frames over the reference.
    with pytest.raises(AssertionError):
        _compare(REFERENCE / "biped_walk.png", _sheet(character, "walk", [1, 5, 9], gl))


def test_reference_check_catches_a_changed_light(character, gl):
    frames = [0, 4, 8]
    _, positions, _ = pose_motion(character, character.motions["walk"])
    brighter = scene_style(positions[frames], ambient=0.45)  # the default is 0.35
    with pytest.raises(AssertionError):
        _compare(REFERENCE / "biped_walk.png", _sheet(character, "walk", frames, gl, brighter))
