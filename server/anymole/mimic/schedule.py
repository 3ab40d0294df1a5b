"""Which frames each mimicking solve takes, and the smoothing that keeps known frames exact.

Gaps are filled from both of their keys toward the middle, as the reference does: phase ``k`` solves frame
``a + k`` (initialised from frame ``a + k − 1``'s solution) and frame ``b − k`` (from ``b − k + 1``) of
every gap ``(a, b)`` at once; a gap's odd middle frame starts from both neighbours. All gaps share the
phases, so one batched solve serves every gap (the reference's batch of 6 for 6 gaps).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from anymole.errors import InvalidInput
from anymole.rig.quat import quat_continuity, quat_normalize

__all__ = ["Phase", "find_gaps", "phases", "smooth_keep_known"]


def find_gaps(known: torch.Tensor) -> list[tuple[int, int]]:
    """``(a, b)`` pairs of known frames with only unknown frames between them, from a ``(F,)`` bool mask.

    Unknown frames before the first or after the last known frame are refused: mimicking needs a key on
    both sides.
    """
    k = known.bool().cpu()
    if k.ndim != 1 or not bool(k.any()):
        raise InvalidInput("known", f"must be a (F,) mask with a known frame, got shape {tuple(k.shape)}")
    idx = torch.nonzero(k).flatten().tolist()
    if idx[0] != 0 or idx[-1] != k.shape[0] - 1:
        raise InvalidInput("known", f"the first and last frames must be known (a key on both sides of every gap); "
                           f"known from {idx[0]} to {idx[-1]} of {k.shape[0]}")  # fmt: skip
    return [(a, b) for a, b in itertools.pairwise(idx) if b - a > 1]


@dataclass(frozen=True)
class Phase:
    """One batched solve.

    Attributes:
        frames: ``(B,)`` frames solved together.
        prev: ``(B,)`` the already-solved neighbour each frame starts from.
        other: ``(B,)`` the second neighbour of a gap's middle frame, or ``-1``.
    """

    frames: torch.Tensor
    prev: torch.Tensor
    other: torch.Tensor

    def to(self, device: torch.device | str) -> Phase:
        """The same phase with its index tensors on ``device`` (where the clip's tensors are)."""
        return Phase(*(t.to(device) for t in (self.frames, self.prev, self.other)))


def phases(gaps: list[tuple[int, int]]) -> list[Phase]:
    """The solves that fill ``gaps`` from both ends toward the middle (see the module docstring)."""
    longest = max((b - a - 1 for a, b in gaps), default=0)
    out = []
    for k in range(1, math.ceil(longest / 2) + 1):
        rows: list[tuple[int, int, int]] = []
        for a, b in gaps:
            f, g = a + k, b - k
            if f < g:
                rows += [(f, f - 1, -1), (g, g + 1, -1)]
            elif f == g:
                rows.append((f, f - 1, f + 1))
        t = torch.tensor(rows, dtype=torch.long)
        out.append(Phase(t[:, 0], t[:, 1], t[:, 2]))
    return out


def _gaussian(sigma: float, dtype: torch.dtype) -> torch.Tensor:
    r = max(1, math.ceil(3 * sigma))
    x = torch.arange(-r, r + 1, dtype=dtype)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def smooth_keep_known(
    rotations: torch.Tensor, root: torch.Tensor, known: torch.Tensor, sigma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian-filter a clip over time without moving its known frames.

    Quaternion signs are made continuous over time first (a filter of ``q`` and ``−q`` would cancel), the
    filter runs over every frame (edges reflected), and the known frames get their exact input values back:
    an unknown frame next to a key averages toward it, so the boundary stays continuous.

    Args:
        rotations: ``(F, J, 4)`` unit xyzw.
        root: ``(F, 3)`` (m).
        known: ``(F,)`` bool.
        sigma: filter width (frames); 0 returns the inputs.

    Returns:
        ``(rotations (F, J, 4) unit, root (F, 3))``.
    """
    if sigma == 0 or rotations.shape[0] < 2:
        return rotations, root
    f, j, _ = rotations.shape
    q = quat_continuity(rotations, dim=0)
    sig = torch.cat((q.reshape(f, j * 4), root), 1).T.unsqueeze(1)  # (channels, 1, F)
    w = _gaussian(sigma, sig.dtype).to(sig.device)
    pad = min(w.numel() // 2, f - 1)
    if pad < w.numel() // 2:  # a clip shorter than the kernel: reflect what there is, trim the kernel
        w = w[w.numel() // 2 - pad : w.numel() // 2 + pad + 1]
        w = w / w.sum()
    x = torch.nn.functional.pad(sig, (pad, pad), mode="reflect")
    y = torch.nn.functional.conv1d(x, w.view(1, 1, -1)).squeeze(1).T  # (F, channels)
    q_s = quat_normalize(y[:, : j * 4].reshape(f, j, 4))
    keep = known.bool().to(rotations.device)
    return (
        torch.where(keep[:, None, None], rotations, q_s),
        torch.where(keep[:, None], root, y[:, j * 4 :]),
    )
