"""Framing: the estimator reads a window around the character, not the whole render.

A scene's cameras frame the whole context and its keys, so a character that travels (a walk) covers a small
part of every frame: the CMU walker is 50 of 80 px tall and 11–28 of 128 px wide at 128×80. The estimator's
cost is its input's pixels, so it reads a fixed-size window centred on the character in each image, resampled
to a pixel budget: the same cost, the character larger. The window's size is fixed per scene (the largest
extent of the character over the training images, times a margin), so only its position changes from image
to image and the character keeps one scale, as in the renders the estimator trained on.

Coordinates: pixel ``i`` spans ``[i, i + 1)`` (centres at ``+0.5``, `anymole.render.Cameras`). A window's corner
is a whole pixel ``(x0, y0)`` and the resampling is ``align_corners=False``, so an image point ``x`` is window
point ``(x − x0) · s`` with ``s = input / window`` per axis, and back ``x' / s + x0``: `to_window` and
`from_window` are exact inverses (up to float rounding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from anymole.errors import InvalidInput

__all__ = ["MIN_ZOOM", "Framing", "frame_scene", "window_corners"]

#: The least enlargement a window must bring: below it the estimator reads the whole image. A character that
#: fills the frame gains nothing from a window, and resampling by a factor near 1 blurs it (docs/quality.md: the
#: Fox, framed at 1.0×, lost a quarter of its depth accuracy).
MIN_ZOOM = 1.25


@dataclass(frozen=True)
class Framing:
    """A scene's window and the estimator input it is resampled to.

    Attributes:
        image: ``(H, W)`` of the images the windows are cut from.
        window: ``(h, w)`` of a window, image px (``h ≤ H``, ``w ≤ W``).
        input: ``(h', w')`` the window is resampled to (the estimator's input, a multiple of its stride).
    """

    image: tuple[int, int]
    window: tuple[int, int]
    input: tuple[int, int]

    def scale(self) -> tuple[float, float]:
        """``(sx, sy)``: input px per image px along x and y."""
        return self.input[1] / self.window[1], self.input[0] / self.window[0]

    def crop(self, images: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
        """Windows ``(N, C, h', w')`` of ``images (N, C, H, W)`` at ``corners (N, 2)`` ``(x0, y0)`` whole px."""
        n, _, hh, ww = images.shape
        if (hh, ww) != self.image:
            raise InvalidInput("images", f"must be {self.image[0]}x{self.image[1]}, got {hh}x{ww}")
        h, w = self.window
        c0 = corners.to(images.device).long()
        rows = c0[:, 1, None] + torch.arange(h, device=images.device)  # (N, h)
        cols = c0[:, 0, None] + torch.arange(w, device=images.device)  # (N, w)
        bi = torch.arange(n, device=images.device)[:, None, None]
        out = images[bi, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # advanced dims first
        if (h, w) == self.input:
            return out.contiguous()
        return nn.functional.interpolate(out, size=self.input, mode="bilinear", align_corners=False,
                                         antialias=self.input[0] < h)  # fmt: skip

    def origin(self, corners: torch.Tensor) -> torch.Tensor:
        """``(N, 2)`` window corners ``(x0, y0)`` (image px) in [−1, 1] of the image, as the depth MLP reads them."""
        size = torch.tensor([self.image[1], self.image[0]], dtype=corners.dtype, device=corners.device)
        return 2.0 * corners / size - 1.0

    def to_window(self, xy: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
        """Image points ``xy (N, J, 2)`` (px) in the windows at ``corners (N, 2)``, input px."""
        s = torch.tensor(self.scale(), dtype=xy.dtype, device=xy.device)
        return (xy - corners.to(xy)[:, None]) * s

    def from_window(self, xy: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
        """Window points ``xy (N, J, 2)`` (input px) back in the images, px: the inverse of `to_window`."""
        s = torch.tensor(self.scale(), dtype=xy.dtype, device=xy.device)
        return xy / s + corners.to(xy)[:, None]


def _extents(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per mask ``(N, H, W)``: first and last covered row and column ``(N,)`` each (``-1`` where empty)."""
    rows, cols = masks.any(-1), masks.any(-2)  # (N, H), (N, W)

    def ends(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.arange(a.shape[-1], device=a.device)
        first = torch.where(a, idx, a.shape[-1]).amin(-1)
        last = torch.where(a, idx, -1).amax(-1)
        return torch.where(last >= 0, first, -1), last

    y0, y1 = ends(rows)
    x0, x1 = ends(cols)
    return x0, x1, y0, y1


def frame_scene(masks: torch.Tensor, margin: float, pixels: int, stride: int) -> Framing | None:
    """The window of a scene: the largest extent of the character over ``masks`` times ``margin`` (capped at
    the image), resampled to about ``pixels`` input pixels, each side a multiple of ``stride``; ``None`` where
    that would enlarge the character less than `MIN_ZOOM` times (read the whole image).

    Args:
        masks: ``(N, H, W)`` where the character covers the training images (> 0.5).
        margin: window side over the character's largest extent (≥ 1).
        pixels: the estimator's input budget (its cost): ``h' · w' ≤ pixels`` up to the rounding to ``stride``.
        stride: the estimator's feature stride.
    """
    if masks.ndim != 3:
        raise InvalidInput("masks", f"must have shape (N, H, W), got {tuple(masks.shape)}")
    if margin < 1 or pixels < stride * stride:
        raise InvalidInput("frame_margin", f"need margin ≥ 1 and pixels ≥ {stride * stride}, got {margin}, {pixels}")
    hh, ww = int(masks.shape[1]), int(masks.shape[2])
    x0, x1, y0, y1 = _extents(masks > 0.5)
    seen = x1 >= 0
    if not bool(seen.any()):
        raise InvalidInput("masks", "the character covers no pixel of any training image")
    h = min(hh, math.ceil(margin * float((y1 - y0 + 1)[seen].max())))
    w = min(ww, math.ceil(margin * float((x1 - x0 + 1)[seen].max())))
    s = math.sqrt(pixels / (h * w))
    if s < MIN_ZOOM:
        return None

    def fit(n: int) -> int:
        return max(stride, round(n * s / stride) * stride)

    return Framing((hh, ww), (h, w), (fit(h), fit(w)))


def window_corners(masks: torch.Tensor, framing: Framing) -> torch.Tensor:
    """``(N, 2)`` whole-pixel corners ``(x0, y0)`` of windows centred on the character's extent in each mask
    ``(N, H, W)`` (> 0.5), kept inside the image; an empty mask centres its window on the image."""
    hh, ww = framing.image
    if tuple(masks.shape[1:]) != (hh, ww):
        raise InvalidInput("masks", f"must be (N, {hh}, {ww}), got {tuple(masks.shape)}")
    x0, x1, y0, y1 = _extents(masks > 0.5)
    empty = x1 < 0
    cx = torch.where(empty, ww / 2, (x0 + x1 + 1) / 2)
    cy = torch.where(empty, hh / 2, (y0 + y1 + 1) / 2)
    h, w = framing.window
    x = (cx - w / 2).round().clamp(0, ww - w)
    y = (cy - h / 2).round().clamp(0, hh - h)
    return torch.stack((x, y), -1).long()
