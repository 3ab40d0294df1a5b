"""Test helper: non-zero weights everywhere in a tiny prior."""

from __future__ import annotations

import torch
from torch import nn


def fill_nonzero(model: nn.Module, seed: int = 0) -> None:
    """Overwrite every parameter of ``model`` with small random values from ``seed`` (norm gains around 1): the
    zero-initialised output layers of a fresh prior would hide gradients (and the dropout masks before them)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            gain = 1.0 if p.ndim == 1 and name.endswith("weight") else 0.0
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05 + gain)
