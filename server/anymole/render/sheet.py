"""Images a person can look at: contact sheets (views × frames) and per-frame view grids for videos."""

from __future__ import annotations

import math

import numpy as np

from anymole.errors import InvalidInput
from anymole.render.gl import Renders

__all__ = ["contact_sheet", "view_grid"]


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    """``tile`` with ``text`` written in its top-left corner (PIL's built-in bitmap font)."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(tile)
    draw = ImageDraw.Draw(img)
    box = draw.textbbox((4, 3), text)
    draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(0, 0, 0))
    draw.text((4, 3), text, fill=(255, 255, 255))
    return np.asarray(img)


def contact_sheet(
    renders: Renders, columns: int = 6, frame_numbers: list[int] | None = None, labels: bool = True
) -> np.ndarray:
    """One row per view, ``columns`` frames spread evenly over the clip.

    Args:
        renders: ``C`` views × ``F`` frames.
        columns: frames shown per row (at most ``F``).
        frame_numbers: the clip frame index of each rendered frame, for the labels (default ``0..F-1``).
        labels: write "view · frame" on every tile.

    Returns:
        ``(C·H, n·W, 3)`` uint8 image.
    """
    c, f = renders.rgb.shape[:2]
    if columns < 1:
        raise InvalidInput("columns", f"need at least 1, got {columns}")
    n = min(columns, f)
    picks = np.unique(np.linspace(0, f - 1, n).round().astype(int))
    numbers = frame_numbers if frame_numbers is not None else list(range(f))
    rows = []
    for v in range(c):
        tiles = [np.ascontiguousarray(renders.rgb[v, k]) for k in picks]
        if labels:
            tiles = [
                _label(t, f"{renders.cameras.names[v]} #{numbers[k]}")
                for t, k in zip(tiles, picks, strict=True)
            ]
        rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)


def view_grid(renders: Renders) -> np.ndarray:
    """All views of each frame side by side in a near-square grid: ``(F, rows·H, cols·W, 3)`` uint8."""
    c, f, h, w, _ = renders.rgb.shape
    cols = math.ceil(math.sqrt(c))
    rows = math.ceil(c / cols)
    out = np.zeros((f, rows * h, cols * w, 3), np.uint8)
    for v in range(c):
        r, q = divmod(v, cols)
        out[:, r * h : (r + 1) * h, q * w : (q + 1) * w] = renders.rgb[v]
    return out
