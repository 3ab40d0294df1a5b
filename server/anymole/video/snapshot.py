"""Host copies of the prior's weights that a job overwrites (ICAdapt, cached adapted weights): `snapshot` before,
`restore` after, bit for bit, so a job leaves the prior as it found it."""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

import torch

from anymole.video.prior import VideoPrior

__all__ = ["HostCopy", "restore", "snapshot"]


@dataclass(eq=False)
class HostCopy:
    """A host copy of one parameter, and the parameter's `_weight_state` when the two were last equal."""

    param: weakref.ref[torch.nn.Parameter]
    value: torch.Tensor
    state: tuple[object, ...]


def _weight_state(p: torch.Tensor) -> tuple[object, ...]:
    """What changes when a tensor's values are replaced other than through ``.data``: its storage address,
    dtype, device, layout, or its version counter (which every in-place write bumps, ``load_state_dict``,
    ``copy_`` and optimiser steps included)."""
    return (p.data_ptr(), p._version, p.dtype, p.device, tuple(p.shape), p.stride())


#: per prior, the host copies of the parameters jobs have snapshotted, by ``id`` of the parameter (held weakly:
#: a prior or parameter that is dropped takes its copies with it)
_host_copies: weakref.WeakKeyDictionary[VideoPrior, dict[int, HostCopy]] = weakref.WeakKeyDictionary()
_host_copies_lock = threading.Lock()


def _sync(devices: set[torch.device]) -> None:
    for device in devices:
        if device.type == "cuda":
            torch.cuda.synchronize(device)


@torch.no_grad()
def snapshot(prior: VideoPrior, mode: str) -> list[tuple[torch.nn.Parameter, HostCopy]]:
    """Host copies of the parameters ICAdapt (or cached adapted weights) will overwrite, in host rather than
    device memory, which ICAdapt needs (the full model's spatial set is 938 M parameters, 3.8 GB).

    The copies are kept per prior and parameter across jobs (pinned for CUDA parameters, so restoring is a
    fast asynchronous copy) and only refreshed for parameters whose `_weight_state` moved since they were
    last snapshotted or restored: weights changed outside a job (another checkpoint loaded, say). Not seen:
    a write through ``.data`` (it bumps no version counter), or a ``.data`` swap to a storage at the freed
    address of the old one with the same shape and version count."""
    with _host_copies_lock:
        copies = _host_copies.setdefault(prior, {})
    for pid in [pid for pid, c in copies.items() if c.param() is None]:  # parameters since dropped
        del copies[pid]
    saved, refreshed = [], set()
    for p in prior.trainable_parameters(mode):
        copy = copies.get(id(p))
        if copy is None or copy.param() is not p or copy.state != _weight_state(p):
            value = copy.value if copy is not None and copy.value.shape == p.shape and copy.value.dtype == p.dtype else None
            if value is None:
                value = torch.empty(p.shape, dtype=p.dtype, pin_memory=p.is_cuda)
            value.copy_(p.detach(), non_blocking=True)
            copy = copies[id(p)] = HostCopy(weakref.ref(p), value, _weight_state(p))
            refreshed.add(p.device)
        saved.append((p, copy))
    _sync(refreshed)  # a non-blocking copy to pinned memory is complete only after this
    return saved


@torch.no_grad()
def restore(saved: list[tuple[torch.nn.Parameter, HostCopy]]) -> None:
    """Write the snapshotted values back (bit for bit) and freeze the parameters again; the copies stay valid
    for the next job on this prior."""
    for p, copy in saved:
        p.copy_(copy.value, non_blocking=True)
        p.requires_grad_(False)
    _sync({p.device for p, _ in saved})
    for p, copy in saved:
        copy.state = _weight_state(p)
