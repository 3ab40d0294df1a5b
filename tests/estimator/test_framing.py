"""The estimator's window around the character (`anymole.estimator.framing`): exact coordinate round trips,
crops that put image points where `to_window` says, and windows sized and placed from the masks."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from anymole.errors import InvalidInput
from anymole.estimator.framing import Framing, frame_scene, window_corners


@st.composite
def framings(draw: st.DrawFn) -> tuple[Framing, torch.Tensor]:
    hh, ww = draw(st.integers(16, 120)), draw(st.integers(16, 160))
    h, w = draw(st.integers(4, hh)), draw(st.integers(4, ww))
    inp = (8 * draw(st.integers(1, 20)), 8 * draw(st.integers(1, 20)))
    n = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    corners = torch.stack((torch.randint(0, ww - w + 1, (n,), generator=g), torch.randint(0, hh - h + 1, (n,), generator=g)), -1)
    return Framing((hh, ww), (h, w), inp), corners


@given(framings(), st.sampled_from([torch.float32, torch.float64]))
def test_window_coordinates_round_trip_exactly(fc: tuple[Framing, torch.Tensor], dtype: torch.dtype) -> None:
    fr, corners = fc
    xy = torch.rand(corners.shape[0], 7, 2, dtype=dtype) * torch.tensor([fr.image[1], fr.image[0]], dtype=dtype)
    back = fr.from_window(fr.to_window(xy, corners), corners)
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(back, xy, atol=tol * 200, rtol=0)
    # the window's corner is its origin, and its far corner its input size
    far = corners.to(dtype)[:, None] + torch.tensor([fr.window[1], fr.window[0]], dtype=dtype)
    torch.testing.assert_close(fr.to_window(corners.to(dtype)[:, None], corners), torch.zeros(corners.shape[0], 1, 2, dtype=dtype))
    torch.testing.assert_close(fr.to_window(far, corners)[:, 0], torch.tensor([fr.input[1], fr.input[0]], dtype=dtype).expand(corners.shape[0], 2))


@settings(deadline=None, max_examples=30)
@given(st.integers(0, 2**16), st.sampled_from([(40, 24), (40, 40), (24, 40), (48, 32)]))
def test_a_blob_lands_where_to_window_puts_its_centre(seed: int, inp: tuple[int, int]) -> None:
    """A smooth blob's intensity centroid, after the crop and resampling, sits at `to_window` of its image centre:
    the half-pixel conventions of the crop and of the coordinates agree (scales above and below 1)."""
    g = torch.Generator().manual_seed(seed)
    hh, ww, h, w = 64, 96, 32, 28
    fr = Framing((hh, ww), (h, w), inp)
    c = torch.stack((torch.randint(0, ww - w + 1, (1,), generator=g), torch.randint(0, hh - h + 1, (1,), generator=g)), -1)
    centre = c.double() + torch.tensor([w, h]) * (0.3 + 0.4 * torch.rand(2, generator=g, dtype=torch.float64))
    ys, xs = torch.meshgrid(torch.arange(hh) + 0.5, torch.arange(ww) + 0.5, indexing="ij")
    blob = torch.exp(-((xs - centre[0, 0]) ** 2 + (ys - centre[0, 1]) ** 2) / (2 * 3.0**2))
    out = fr.crop(blob[None, None].expand(1, 3, hh, ww).contiguous(), c)[0, 0]
    assert out.shape == inp
    wy, wx = torch.meshgrid(torch.arange(inp[0]) + 0.5, torch.arange(inp[1]) + 0.5, indexing="ij")
    got = torch.stack(((out * wx).sum() / out.sum(), (out * wy).sum() / out.sum()))
    want = fr.to_window(centre[None].to(torch.float64), c)[0, 0]
    assert float((got.double() - want).abs().max()) < 0.05 * max(inp[1] / w, inp[0] / h)


def test_a_crop_at_scale_one_is_the_image_itself() -> None:
    img = torch.rand(2, 3, 20, 30)
    fr = Framing((20, 30), (8, 16), (8, 16))
    c = torch.tensor([[3, 5], [14, 12]])
    out = fr.crop(img, c)
    assert torch.equal(out[0], img[0, :, 5:13, 3:19]) and torch.equal(out[1], img[1, :, 12:20, 14:30])


def test_the_window_fits_the_largest_extent_and_the_pixel_budget() -> None:
    masks = torch.zeros(3, 80, 128)
    masks[0, 10:60, 20:30] = 1  # 50 tall, 10 wide
    masks[1, 30:70, 100:128] = 1  # 40 tall, 28 wide, at the right edge
    fr = frame_scene(masks, 1.25, 128 * 80, 8)
    assert fr is not None and fr.image == (80, 128) and fr.window == (math.ceil(1.25 * 50), 35)
    assert fr.input[0] % 8 == 0 and fr.input[1] % 8 == 0
    # the budget is kept up to the rounding of each side to the stride, and the aspect with it
    assert abs(fr.input[0] * fr.input[1] / (128 * 80) - 1) < 0.15
    assert abs(fr.input[0] / fr.input[1] - fr.window[0] / fr.window[1]) < 0.2
    corners = window_corners(masks, fr)
    # centred on each mask's extent, kept inside the image; the empty mask centres on the image
    assert corners[0].tolist() == [round(25 - 35 / 2), round(35 - 63 / 2)]
    assert corners[1].tolist() == [128 - 35, 80 - 63]  # x and y clamped: the window stays inside
    assert corners[2].tolist() == [round(64 - 17.5), round(40 - 31.5)]
    # a character that fills the frame gains nothing from a window: the whole image
    assert frame_scene(torch.ones(1, 80, 128), 1.25, 128 * 80, 8) is None
    small = torch.zeros(1, 80, 128)
    small[0, 20:40, 50:70] = 1
    big = frame_scene(small, 1.0, 128 * 80, 8)
    assert big is not None and big.window == (20, 20) and big.input == (104, 104)  # 5.1× the pixels a side


def test_framing_errors_name_the_field() -> None:
    with pytest.raises(InvalidInput, match=r"^masks:"):
        frame_scene(torch.zeros(2, 8, 8), 1.25, 64, 8)  # no character anywhere
    with pytest.raises(InvalidInput, match=r"^frame_margin:"):
        frame_scene(torch.ones(2, 8, 8), 0.5, 64, 8)
    with pytest.raises(InvalidInput, match=r"^images:"):
        Framing((20, 30), (8, 8), (8, 8)).crop(torch.rand(1, 3, 20, 31), torch.zeros(1, 2, dtype=torch.long))
