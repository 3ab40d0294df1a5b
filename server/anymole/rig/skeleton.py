"""`Skeleton`: joint names, hierarchy and rest pose of any rig.

Conventions (ARCHITECTURE.md): glTF space (right-handed, +Y up, +Z forward, metres), quaternions xyzw.
Joints are stored in topological order: ``parents[j] < j`` and the root(s) have parent ``-1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["Skeleton", "joint_depths"]


def joint_depths(parents: tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """Depth of each joint (roots 0) for topologically ordered ``parents`` (``parents[j] < j``)."""
    d: list[int] = []
    for p in parents:
        d.append(0 if p < 0 else d[p] + 1)
    return tuple(d)


@dataclass(frozen=True, eq=False)
class Skeleton:
    """A joint hierarchy with its rest (bind) pose.

    Attributes:
        names: ``J`` unique joint names, in topological order.
        parents: ``J`` parent indices; ``parents[j] < j``; roots have ``-1``.
        offsets: ``(J, 3)`` float, rest local translation of each joint in its parent's frame (m).
            For a root this is its rest position in world space.
        rest_rotations: ``(J, 4)`` float, unit, xyzw, rest local rotation of each joint.
        end_sites: joint index → ``(3,)`` offset (m) of a leaf tip that is not a joint (BVH End Site,
            glTF ``_end`` leaves). Used for drawing and bounding volumes only.
    """

    names: tuple[str, ...]
    parents: tuple[int, ...]
    offsets: torch.Tensor
    rest_rotations: torch.Tensor
    end_sites: dict[int, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.names)
        if n == 0:
            raise ValueError("Skeleton needs at least one joint")
        if len(self.parents) != n:
            raise ValueError(f"parents has {len(self.parents)} entries, names has {n}")
        if len(set(self.names)) != n:
            dup = sorted({x for x in self.names if self.names.count(x) > 1})
            raise ValueError(f"joint names must be unique; repeated: {dup}")
        for j, p in enumerate(self.parents):
            if not -1 <= p < j:
                raise ValueError(
                    f"parents[{j}] = {p}: joints must be in topological order (parent index < own index, root -1)"
                )
        if tuple(self.offsets.shape) != (n, 3):
            raise ValueError(f"offsets must have shape ({n}, 3), got {tuple(self.offsets.shape)}")
        if tuple(self.rest_rotations.shape) != (n, 4):
            raise ValueError(f"rest_rotations must have shape ({n}, 4), got {tuple(self.rest_rotations.shape)}")

    # ------------------------------------------------------------------ structure
    @property
    def num_joints(self) -> int:
        return len(self.names)

    @property
    def depths(self) -> tuple[int, ...]:
        """Depth of each joint in the hierarchy (root = 0)."""
        return joint_depths(self.parents)

    @property
    def max_depth(self) -> int:
        return max(self.depths)

    @property
    def roots(self) -> tuple[int, ...]:
        return tuple(j for j, p in enumerate(self.parents) if p < 0)

    def children(self, j: int) -> tuple[int, ...]:
        return tuple(c for c, p in enumerate(self.parents) if p == j)

    def index(self, name: str) -> int:
        """Index of the joint called ``name``; `KeyError` listing a few names if absent."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"no joint {name!r}; joints are {list(self.names[:8])}…") from None

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Skeleton:
        """A copy with tensors moved/cast (dtype applies to floating tensors)."""
        return Skeleton(
            names=self.names,
            parents=self.parents,
            offsets=self.offsets.to(device=device, dtype=dtype),
            rest_rotations=self.rest_rotations.to(device=device, dtype=dtype),
            end_sites={k: v.to(device=device, dtype=dtype) for k, v in self.end_sites.items()},
        )
