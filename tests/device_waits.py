"""Counting, on the CPU, the operations that make the host wait for a GPU: a test asserts that a loop would not
stall the device without a GPU to run on."""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class DeviceWaits(TorchDispatchMode):
    """Counts, by kind, the ATen calls run inside ``with DeviceWaits() as w:`` that wait for the device on CUDA.

    ``read``: a tensor's value read on the host (``int(t)``, ``t.item()``, ``bool(t)``: ``_local_scalar_dense``);
    ``shape``: an output whose size depends on the data (``unique*``, ``nonzero``, ``masked_select``, indexing
    with a boolean mask);
    ``upload``: a tensor made from host data (``torch.tensor([...])``), beyond a 0-d scalar, which CUDA kernels
    take by value: a copy from pageable memory that waits for the stream.
    """

    SHAPE = ("unique", "nonzero", "masked_select")

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func.overloadpacket.__name__
        out = func(*args, **(kwargs or {}))
        if name == "_local_scalar_dense":
            self.counts["read"] += 1
        elif any(s in name for s in self.SHAPE) or (
            name == "index" and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1])
        ):
            self.counts["shape"] += 1
        elif name == "lift_fresh" and out.ndim > 0:
            self.counts["upload"] += 1
        return out
