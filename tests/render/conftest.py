"""Small synthetic characters and one shared GL context for the renderer tests (CPU, Mesa llvmpipe)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch

from anymole.render import GLRasterizer
from anymole.rig import Character, Motion, Skeleton
from anymole.rig.quat import axis_angle_to_unitquat

# Small images keep llvmpipe fast; the aspect is the reference's 512×320.
W, H = 128, 80


def biped() -> Skeleton:
    """A 7-joint biped standing on y = 0 (hips at 0.9 m), facing +Z."""
    names = ("hips", "spine", "head", "l_arm", "r_arm", "l_leg", "r_leg")
    parents = (-1, 0, 1, 1, 1, 0, 0)
    offsets = torch.tensor(
        [
            [0, 0.9, 0],
            [0, 0.3, 0],
            [0, 0.3, 0],
            [0.3, 0.2, 0],
            [-0.3, 0.2, 0],
            [0.12, -0.45, 0],
            [-0.12, -0.45, 0],
        ]
    )
    ends = {
        2: torch.tensor([0.0, 0.15, 0.0]),
        5: torch.tensor([0.0, -0.4, 0.0]),
        6: torch.tensor([0.0, -0.4, 0.0]),
    }
    return Skeleton(names, parents, offsets, torch.tensor([[0.0, 0.0, 0.0, 1.0]] * 7), end_sites=ends)


def walk(frames: int = 12, distance: float = 1.5) -> Motion:
    """Swinging arms and legs while the root moves ``distance`` m along +Z."""
    t = torch.linspace(0.0, 1.0, frames)
    swing = torch.sin(t * 2.0 * math.pi)
    aa = torch.zeros(frames, 7, 3)
    aa[:, 3, 2] = 0.8 * swing
    aa[:, 4, 2] = -0.8 * swing
    aa[:, 5, 0] = 0.5 * swing
    aa[:, 6, 0] = -0.5 * swing
    root = torch.stack((torch.zeros(frames), torch.full((frames,), 0.9), distance * t), -1)
    return Motion(fps=30.0, rotations=axis_angle_to_unitquat(aa), root_translation=root, name="walk")


@pytest.fixture(scope="session")
def character() -> Character:
    """A skeleton-only character: renders use the capsule body."""
    return Character(name="biped", skeleton=biped(), motions={"walk": walk()})


@pytest.fixture(scope="session")
def gl() -> Iterator[GLRasterizer]:
    r = GLRasterizer(W, H)
    yield r
    r.release()
