"""`Timeline`: every chunk written reads back bit for bit, final ones from the result files, provisional ones
from drafts.f32, and the whole result loads as written (property test over shapes and chunk layouts)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from anymole.pipeline import MotionChunk
from anymole.rig import Motion
from anymole.service.timeline import Timeline


@st.composite
def layouts(draw):
    frames = draw(st.integers(1, 40))
    joints = draw(st.integers(1, 5))
    with_tr = draw(st.booleans())
    chunks = []
    for _ in range(draw(st.integers(1, 6))):
        start = draw(st.integers(0, frames - 1))
        count = draw(st.integers(1, frames - start))
        chunks.append((start, count, draw(st.booleans())))
    return frames, joints, with_tr, chunks, draw(st.integers(0, 2**31 - 1))


def _chunk(start: int, count: int, joints: int, with_tr: bool, final: bool, g: torch.Generator) -> MotionChunk:
    tr = torch.randn(count, joints, 3, generator=g) if with_tr else None
    return MotionChunk(start, torch.randn(count, joints, 4, generator=g), torch.randn(count, 3, generator=g), final, tr)


def _overlap(a: MotionChunk, b: MotionChunk) -> bool:
    return a.frame_start < b.frame_start + b.frame_count and b.frame_start < a.frame_start + a.frame_count


def _same(a: MotionChunk, b: MotionChunk) -> bool:
    return (
        (a.frame_start, a.is_final) == (b.frame_start, b.is_final)
        and torch.equal(a.rotations, b.rotations)
        and torch.equal(a.root_translation, b.root_translation)
        and (a.translations is None) == (b.translations is None)
        and (a.translations is None or torch.equal(a.translations, b.translations))
    )


@settings(max_examples=40, deadline=None)
@given(layouts())
def test_chunks_read_back_as_written(layout):
    frames, joints, with_tr, chunks, seed = layout
    g = torch.Generator().manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        timeline = Timeline(Path(tmp))
        timeline.create(frames, joints, with_tr)
        assert timeline.shape() == (frames, joints, with_tr) and not timeline.complete
        written = []
        for start, count, final in chunks:
            chunk = _chunk(start, count, joints, with_tr, final, g)
            written.append((timeline.write(chunk), chunk))
        # A chunk reads back as written, unless it is final and a later final chunk rewrote some of its frames.
        for i, (ref, chunk) in enumerate(written):
            if not (chunk.is_final and any(c.is_final and _overlap(c, chunk) for _, c in written[i + 1 :])):
                assert _same(timeline.read(ref), chunk)

        motion = Motion(
            fps=24.0,
            rotations=torch.randn(frames, joints, 4, generator=g),
            root_translation=torch.randn(frames, 3, generator=g),
            translations=torch.randn(frames, joints, 3, generator=g) if with_tr else None,
        )
        timeline.write_motion(motion)
        loaded = Timeline(Path(tmp)).load()
        assert timeline.complete and loaded.fps == 24.0
        assert torch.equal(loaded.rotations, motion.rotations) and torch.equal(loaded.root_translation, motion.root_translation)
        assert (loaded.translations is None) == (not with_tr)


def test_a_chunk_outside_the_timeline_or_of_another_skeleton_is_refused(tmp_path):
    timeline = Timeline(tmp_path)
    timeline.create(10, 3, False)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="does not fit the job's timeline of 10 frames × 3 joints"):
        timeline.write(_chunk(8, 3, 3, False, True, g))
    with pytest.raises(ValueError, match="does not fit"):
        timeline.write(_chunk(0, 2, 4, False, True, g))
    with pytest.raises(ValueError, match="does not match the motion chunks streamed before it"):
        timeline.write_motion(Motion(fps=30.0, rotations=torch.randn(11, 3, 4), root_translation=torch.zeros(11, 3)))
