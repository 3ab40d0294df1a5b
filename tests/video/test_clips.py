"""Algorithm 1: clip index sets, hand-checked."""

from __future__ import annotations

import pytest
import torch

from anymole.errors import InvalidInput
from anymole.video.clips import ClipBank, gather_clips


def test_small_case_by_hand() -> None:
    # N_fpv = 7, k = 3: a clip at interval s ends at start + 2s, so starts run 0 … 6 − 2s.
    clips = gather_clips(num_views=1, frames_per_view=7, k=3, strides=(1, 2, 3))
    got = [(c.stride, c.frames) for c in clips]
    assert got == [
        (1, (0, 1, 2)), (1, (1, 2, 3)), (1, (2, 3, 4)), (1, (3, 4, 5)), (1, (4, 5, 6)),
        (2, (0, 2, 4)), (2, (1, 3, 5)), (2, (2, 4, 6)),
        (3, (0, 3, 6)),
    ]  # fmt: skip
    assert [c.fps for c in clips] == [30.0] * 5 + [15.0] * 3 + [10.0]


def test_paper_counts_93_per_view() -> None:
    clips = gather_clips(num_views=4, frames_per_view=61)
    assert len(clips) == 372
    view0 = [c for c in clips if c.view == 0]
    assert [sum(c.stride == s for c in view0) for s in (1, 2, 3)] == [46, 31, 16]
    # The last clip of each stride ends on the last context frame (60): nothing left unused.
    for s in (1, 2, 3):
        last = [c for c in view0 if c.stride == s][-1]
        assert last.frames[-1] == 60 and last.frames[0] == 60 - 15 * s
    # The printed bound "start ← 0 to N_fpv − k·s" would stop at start 29 for s = 2; start 30 fits.
    assert (30, *range(32, 61, 2)) == next(c.frames for c in view0 if c.stride == 2 and c.frames[0] == 30)
    assert {c.view for c in clips} == {0, 1, 2, 3}
    assert all(len(c.frames) == 16 for c in clips)


def test_too_few_frames_is_an_error() -> None:
    with pytest.raises(InvalidInput, match="too few"):
        gather_clips(num_views=1, frames_per_view=45, k=16, strides=(1, 2, 3))
    assert len(gather_clips(num_views=1, frames_per_view=46, k=16, strides=(3,))) == 1


def test_clip_bank_gathers_frame_rows_and_endpoints() -> None:
    views, frames = 2, 10
    videos = torch.rand(views, 3, frames, 4, 6)
    clips = gather_clips(views, frames, k=4, strides=(1, 3))
    bank = ClipBank(videos, clips, "caption")
    index = torch.tensor([0, len(clips) - 1, 3])
    rows = bank.frame_rows(index)
    flat = bank.frames_flat()
    first, last = bank.endpoints(index)
    assert rows.shape == (3, 4) and rows.dtype == torch.int64
    for b, i in enumerate(index.tolist()):
        c = clips[i]
        torch.testing.assert_close(flat[rows[b]], videos[c.view][:, list(c.frames)].transpose(0, 1))
        torch.testing.assert_close(first[b], videos[c.view, :, c.frames[0]])
        torch.testing.assert_close(last[b], videos[c.view, :, c.frames[-1]])
    assert bank.fps[index].tolist() == [clips[i].fps for i in index.tolist()]
