"""`Keyframes`: the poses an animator keyed and where they lie on a job's timeline, and `cut_clip`, the one way a
context and keys are cut out of a clip (``anymole fill`` locally and through a server)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from anymole.errors import InvalidInput
from anymole.rig.motion import Motion

__all__ = ["Keyframes", "cut_clip"]


@dataclass(frozen=True, eq=False)
class Keyframes:
    """``K`` keyframes.

    Attributes:
        frames: ``K`` strictly increasing frames of the timeline the keys belong to.
        poses: the key poses as a ``K``-frame `Motion`: ``rotations (K, J, 4)`` unit xyzw, ``root_translation
            (K, 3)`` m, optional ``translations (K, J, 3)`` m; its ``fps`` is the clip's.
    """

    frames: tuple[int, ...]
    poses: Motion

    def __post_init__(self) -> None:
        if len(self.frames) != self.poses.num_frames:
            raise InvalidInput("keyframes", f"{len(self.frames)} frames for {self.poses.num_frames} key poses")
        if any(b <= a for a, b in zip(self.frames, self.frames[1:], strict=False)):
            raise InvalidInput("keyframes", f"frames must increase strictly, got {list(self.frames)}")

    @classmethod
    def of_clip(cls, clip: Motion, frames: Sequence[int], offset: int = 0) -> Keyframes:
        """The poses of ``clip`` at its frames ``frames``, placed at ``frame - offset`` on the timeline."""
        idx = list(frames)
        poses = Motion(
            fps=clip.fps,
            rotations=clip.rotations[idx],
            root_translation=clip.root_translation[idx],
            translations=None if clip.translations is None else clip.translations[idx],
            name=clip.name,
        )
        return cls(tuple(int(f) - offset for f in idx), poses)

    def __len__(self) -> int:
        return len(self.frames)


def cut_clip(clip: Motion, context: tuple[int, int], keys: Sequence[int]) -> tuple[Motion, Keyframes]:
    """Cut a job out of ``clip``: its frames ``context = (A, B)`` (``A`` included, ``B`` excluded) as the
    context, and its frames ``keys`` (increasing, after the context) as keyframes on the job's timeline, whose
    frame 0 is clip frame ``A``.

    Raises:
        InvalidInput: naming ``--context`` or ``--keys`` (the options that give them on the command line).
    """
    start, stop = context
    n = clip.num_frames
    if not 0 <= start < stop <= n:
        raise InvalidInput(
            "--context", f"{start}:{stop} is not a non-empty range of the clip's {n} frames; give A:B with 0 <= A < B < {n}"
        )
    keys = list(keys)
    if not keys or sorted(set(keys)) != keys or keys[0] < stop or keys[-1] >= n:
        raise InvalidInput("--keys", f"give increasing clip frames in {stop}..{n - 1} (after the context), got {keys}")
    return clip.slice(start, stop), Keyframes.of_clip(clip, keys, offset=start)
