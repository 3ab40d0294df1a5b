"""A job's motion on disk, written as it streams: the result timeline and the provisional drafts.

Motion stays neither in the server's memory nor in events.jsonl. A `MotionChunk` the pipeline emits is written
at once into the job's timeline files (a provisional one into ``drafts.f32``), and the job's log — in memory
and in events.jsonl — holds a `MotionRef` to it; a watcher reads each chunk back when it sends it, so a replay
is byte-identical to the live stream and the server's memory holds one chunk per watcher, not the timeline.
Final chunks are final (the pipeline's result repeats them), so the result timeline is the one copy of them.

Layout in a job directory (float32, little-endian; the ``.npy`` files are NumPy's format, readable with
``np.load``)::

    result.rotations.npy          (T, J, 4) local rotations, xyzw
    result.root_translation.npy   (T, 3) root translation (m)
    result.translations.npy       (T, J, 3) every joint's local translation (m), when the request had them
    result.json                   {"fps": ...}: written after the whole result, marks the timeline complete
    drafts.f32                    provisional chunks back to back: rotations, root, translations of each
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from anymole.pipeline import MotionChunk
from anymole.rig import Motion

__all__ = ["MotionRef", "Timeline"]

_F32 = np.dtype("<f4")


@dataclass(frozen=True)
class MotionRef:
    """A stored `MotionChunk`: frames ``frame_start .. frame_start + frame_count - 1`` of a skeleton of
    ``joints`` joints, in the result timeline (final) or at byte ``offset`` of drafts.f32 (provisional)."""

    frame_start: int
    frame_count: int
    is_final: bool
    joints: int
    translations: bool
    offset: int = -1


def _widths(joints: int, translations: bool) -> dict[str, tuple[int, ...]]:
    """Per-frame shape of each stored array."""
    shapes: dict[str, tuple[int, ...]] = {"rotations": (joints, 4), "root_translation": (3,)}
    if translations:
        shapes["translations"] = (joints, 3)
    return shapes


def _f32(t: torch.Tensor) -> bytes:
    return t.detach().cpu().to(torch.float32).contiguous().numpy().astype(_F32, copy=False).tobytes()


class Timeline:
    """The motion files of one job directory (see the module docstring). Writes come from the event loop,
    reads from worker threads; each call opens the file it needs, so neither needs a lock."""

    def __init__(self, job_dir: Path) -> None:
        self.dir = Path(job_dir)
        self._layouts: dict[str, tuple[int, tuple[int, ...]]] = {}

    def _path(self, name: str) -> Path:
        return self.dir / f"result.{name}.npy"

    @property
    def created(self) -> bool:
        return self._path("rotations").is_file()

    @property
    def complete(self) -> bool:
        return (self.dir / "result.json").is_file()

    def create(self, frames: int, joints: int, translations: bool) -> None:
        """Allocate the timeline files (sparse until written)."""
        self._layouts.clear()
        for name, shape in _widths(joints, translations).items():
            arr = np.lib.format.open_memmap(self._path(name), mode="w+", dtype=_F32, shape=(frames, *shape))
            del arr  # only the header and the file's length were needed

    def _layout(self, name: str) -> tuple[int, tuple[int, ...]]:
        """Byte offset of the data in a timeline file and the array's shape."""
        if name not in self._layouts:
            with open(self._path(name), "rb") as fh:
                version = np.lib.format.read_magic(fh)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, _ = read(fh)
                self._layouts[name] = (fh.tell(), tuple(shape))
        return self._layouts[name]

    def shape(self) -> tuple[int, int, bool]:
        """``(frames, joints, translations)`` of the timeline."""
        _, (frames, joints, _) = self._layout("rotations")
        return int(frames), int(joints), self._path("translations").is_file()

    def write(self, chunk: MotionChunk) -> MotionRef:
        """Store ``chunk`` (final: into the timeline at its frames; provisional: appended to drafts.f32)."""
        n, joints = chunk.frame_count, int(chunk.rotations.shape[1])
        parts = {"rotations": chunk.rotations, "root_translation": chunk.root_translation}
        if chunk.translations is not None:
            parts["translations"] = chunk.translations
        if not chunk.is_final:
            path = self.dir / "drafts.f32"
            offset = path.stat().st_size if path.exists() else 0
            with open(path, "ab") as fh:
                for t in parts.values():
                    fh.write(_f32(t))
            return MotionRef(chunk.frame_start, n, False, joints, chunk.translations is not None, offset)
        frames, stored_joints, stored_tr = self.shape()
        if stored_joints != joints or stored_tr != (chunk.translations is not None) or chunk.frame_start + n > frames:
            raise ValueError(
                f"motion chunk of frames {chunk.frame_start}..{chunk.frame_start + n - 1} × {joints} joints does not "
                f"fit the job's timeline of {frames} frames × {stored_joints} joints"
            )
        for name, t in parts.items():
            start, (_, *shape) = self._layout(name)
            with open(self._path(name), "r+b") as fh:
                fh.seek(start + chunk.frame_start * int(np.prod(shape)) * _F32.itemsize)
                fh.write(_f32(t))
        return MotionRef(chunk.frame_start, n, True, joints, stored_tr)

    def read(self, ref: MotionRef) -> MotionChunk:
        """The chunk ``ref`` points to, as it was written."""
        arrays: dict[str, torch.Tensor] = {}
        offset = ref.offset
        for name, shape in _widths(ref.joints, ref.translations).items():
            count = ref.frame_count * int(np.prod(shape))
            if ref.is_final:
                start, _ = self._layout(name)
                path, at = self._path(name), start + ref.frame_start * int(np.prod(shape)) * _F32.itemsize
            else:
                path, at = self.dir / "drafts.f32", offset
                offset += count * _F32.itemsize
            with open(path, "rb") as fh:
                fh.seek(at)
                data = fh.read(count * _F32.itemsize)
            arrays[name] = torch.from_numpy(np.frombuffer(data, dtype=_F32).reshape(ref.frame_count, *shape).copy())
        return MotionChunk(
            ref.frame_start, arrays["rotations"], arrays["root_translation"], ref.is_final, arrays.get("translations")
        )

    def write_motion(self, motion: Motion) -> None:
        """Store the whole result (the timeline's shape, or a new timeline of the motion's), then mark it
        complete. Frames already written by final chunks are written again with the same values."""
        frames, joints = int(motion.rotations.shape[0]), int(motion.rotations.shape[1])
        with_tr = motion.translations is not None
        if not self.created:
            self.create(frames, joints, with_tr)
        elif self.shape() != (frames, joints, with_tr):
            raise ValueError(
                f"the result ({frames} frames × {joints} joints) does not match the motion chunks streamed before "
                f"it ({self.shape()[0]} frames × {self.shape()[1]} joints)"
            )
        chunk = MotionChunk(0, motion.rotations, motion.root_translation, True, motion.translations)
        self.write(chunk)
        (self.dir / "result.json").write_text(json.dumps({"fps": motion.fps}))

    def load(self) -> Motion:
        """The complete result, memory-mapped copy-on-write: pages are read as they are used."""
        fps = float(json.loads((self.dir / "result.json").read_text())["fps"])
        arrays = {}
        for name in ("rotations", "root_translation", "translations"):
            if self._path(name).is_file():
                arrays[name] = torch.from_numpy(np.load(self._path(name), mmap_mode="c"))
        return Motion(
            fps=fps,
            rotations=arrays["rotations"],
            root_translation=arrays["root_translation"],
            translations=arrays.get("translations"),
        )
