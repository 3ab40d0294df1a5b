"""`Motion`: an animation clip sampled on a regular time grid."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from anymole.rig.quat import unitquat_slerp

__all__ = ["MAX_FPS", "Motion"]

MAX_FPS = 1000.0
"""The highest frame rate a clip may come in with (a request's context, a BVH's Frame Time). Optical mocap
records at a few hundred Hz; far beyond that a rate is a typo or an attack (1e30 fps puts every frame at
time ~0 and gives the video method frames no second holds)."""


@dataclass(frozen=True, eq=False)
class Motion:
    """Local joint rotations and root translation at a fixed frame rate.

    Attributes:
        fps: frames per second (> 0).
        rotations: ``(F, J, 4)`` float, unit, xyzw, parent-relative (full local rotation, not a delta
            from the rest pose).
        root_translation: ``(F, 3)`` float, local translation of the root joint (m); equals its world
            position when the root has no parent transform.
        translations: optional ``(F, J, 3)`` local translations of every joint (m), for clips that
            animate non-root translations (e.g. a hip under a static root). ``None`` means the skeleton's
            rest offsets for every non-root joint. When given, ``translations[:, root]`` equals
            ``root_translation``.
        name: clip name (``""`` when the file has none).
    """

    fps: float
    rotations: torch.Tensor
    root_translation: torch.Tensor
    translations: torch.Tensor | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if not self.fps > 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.rotations.ndim != 3 or self.rotations.shape[-1] != 4:
            raise ValueError(f"rotations must have shape (F, J, 4), got {tuple(self.rotations.shape)}")
        f = self.rotations.shape[0]
        if tuple(self.root_translation.shape) != (f, 3):
            raise ValueError(f"root_translation must have shape ({f}, 3), got {tuple(self.root_translation.shape)}")
        if self.translations is not None and tuple(self.translations.shape) != (f, self.rotations.shape[1], 3):
            raise ValueError(
                f"translations must have shape ({f}, {self.rotations.shape[1]}, 3), "
                f"got {tuple(self.translations.shape)}"
            )

    @property
    def num_frames(self) -> int:
        return int(self.rotations.shape[0])

    @property
    def num_joints(self) -> int:
        return int(self.rotations.shape[1])

    @property
    def duration(self) -> float:
        """Seconds from the first to the last frame: ``(F - 1) / fps``."""
        return (self.num_frames - 1) / self.fps

    def to(self, device: torch.device | str) -> Motion:
        """The same clip with its tensors on ``device``."""
        tr = None if self.translations is None else self.translations.to(device)
        return Motion(self.fps, self.rotations.to(device), self.root_translation.to(device), tr, self.name)

    def slice(self, start: int, stop: int) -> Motion:
        """Frames ``start:stop`` (Python slice semantics) as a new clip."""
        return Motion(
            fps=self.fps,
            rotations=self.rotations[start:stop],
            root_translation=self.root_translation[start:stop],
            translations=None if self.translations is None else self.translations[start:stop],
            name=self.name,
        )

    def sample(self, positions: torch.Tensor, fps: float) -> Motion:
        """The clip at fractional frame ``positions (N,)`` (frames of this clip, clamped to ``[0, F − 1]``), as
        a new clip at ``fps``: rotations by SLERP and translations linearly between the two surrounding
        frames. When every position is a whole frame (within 1e-6) the frames come back exactly."""
        pos = positions.to(torch.float64).clamp(0, self.num_frames - 1)
        dev = self.rotations.device
        lo = pos.floor()
        a = pos - lo
        i0 = lo.long().to(dev)
        tr = self.translations
        if bool((a < 1e-6).all()):
            return Motion(
                fps=fps,
                rotations=self.rotations[i0],
                root_translation=self.root_translation[i0],
                translations=None if tr is None else tr[i0],
                name=self.name,
            )
        i1 = (i0 + 1).clamp(max=self.num_frames - 1)

        def lerp(x: torch.Tensor) -> torch.Tensor:
            w = a.to(device=x.device, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
            return (1 - w) * x[i0] + w * x[i1]

        rot = self.rotations
        return Motion(
            fps=fps,
            rotations=unitquat_slerp(rot[i0], rot[i1], a.to(device=dev, dtype=rot.dtype)[:, None]),
            root_translation=lerp(self.root_translation),
            translations=None if tr is None else lerp(tr),
            name=self.name,
        )
