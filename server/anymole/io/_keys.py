"""Clip sampling: the regular frame grid of a clip (`clip_grid`) and its keys sampled on it, batched over
channels (slerp for rotations, linear for translations), in float64."""

from __future__ import annotations

import numpy as np
import torch

from anymole.rig.quat import unitquat_slerp

__all__ = ["DEFAULT_FPS", "ON_GRID", "clip_grid", "sample_quat_keys", "sample_vec_keys"]

DEFAULT_FPS = 24.0  # for a clip with a single key (no rate can be read from it)
# A clip whose mean key rate is within this of an integer is taken to be keyed at that integer rate.
_INTEGER_RATE_TOL = 0.01
_WHOLE_FRAME_TOL = 1e-5
ON_GRID = 1e-3  # frames: keys closer than this to the regular grid are taken as its samples
_F64 = torch.float64


# ------------------------------------------------------------------------------------------- sampling grid
def clip_grid(duration_s: float, n_keys: int, fps: float | None) -> tuple[float, int]:
    """Frame rate and frame count for sampling a clip of ``duration_s`` seconds.

    With ``fps`` given: ``round(duration · fps) + 1`` frames. Otherwise one frame per key of the clip's
    densest channel, at the mean key rate ``(n_keys − 1) / duration``, so frame count and duration both
    match the file even when keys are irregular (Fox.glb ``Run`` has a 0.2 s hole). The rate is reported
    as a whole number (24, 30) when it is one and the clip spans a whole number of those frames to within
    1e-5 frame (glTF stores seconds as float32); otherwise the exact mean rate is kept, so re-sampling our
    own exports hits their keys exactly.
    """
    if fps is not None:
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        return float(fps), round(duration_s * fps) + 1
    if n_keys < 2 or duration_s <= 0:
        return DEFAULT_FPS, 1
    rate = (n_keys - 1) / duration_s
    whole = float(round(rate))
    if abs(rate - whole) < _INTEGER_RATE_TOL and abs(duration_s * whole - (n_keys - 1)) < _WHOLE_FRAME_TOL:
        return whole, n_keys
    return rate, n_keys


def _searchsorted_pairs(times: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bracketing key indices and blend factor. ``times (C, K)`` ascending (padded by repeating the last
    time), ``t (F,)`` → ``i0, i1 (C, F)`` and ``alpha (C, F)`` in [0, 1] (clamped outside the keys)."""
    tt = t.to(times.dtype).expand(times.shape[0], -1).contiguous()
    i1 = torch.searchsorted(times.contiguous(), tt, right=True).clamp(max=times.shape[1] - 1)
    i0 = (i1 - 1).clamp(min=0)
    t0 = times.gather(1, i0)
    t1 = times.gather(1, i1)
    span = t1 - t0
    alpha = torch.where(span > 0, (tt - t0) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(span))
    return i0, i1, alpha.clamp(0.0, 1.0)


def _pad(keys: list[tuple[np.ndarray, np.ndarray]], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    kmax = max(len(k[0]) for k in keys)
    times = torch.empty((len(keys), kmax), dtype=_F64)
    values = torch.empty((len(keys), kmax, width), dtype=_F64)
    for c, (kt, kv) in enumerate(keys):  # one copy per channel; the sampling itself is batched
        n = len(kt)
        times[c, :n] = torch.from_numpy(np.asarray(kt, dtype=np.float64))
        times[c, n:] = float(kt[-1])
        values[c, :n] = torch.from_numpy(np.asarray(kv, dtype=np.float64))
        values[c, n:] = values[c, n - 1]
    return times, values


def sample_vec_keys(keys: list[tuple[np.ndarray, np.ndarray]], t: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of ``C`` key tracks ``(times (K_c,), values (K_c, D))`` at ``t (F,)`` s →
    ``(C, F, D)`` float64; held constant before the first and after the last key."""
    times, values = _pad(keys, keys[0][1].shape[-1])
    i0, i1, a = _searchsorted_pairs(times, t)
    v0 = values.gather(1, i0.unsqueeze(-1).expand(-1, -1, values.shape[-1]))
    v1 = values.gather(1, i1.unsqueeze(-1).expand(-1, -1, values.shape[-1]))
    return v0 + a.unsqueeze(-1) * (v1 - v0)


def sample_quat_keys(keys: list[tuple[np.ndarray, np.ndarray]], t: torch.Tensor) -> torch.Tensor:
    """Slerp of ``C`` rotation tracks ``(times (K_c,), xyzw (K_c, 4))`` at ``t (F,)`` s → unit ``(C, F, 4)``."""
    times, values = _pad(keys, 4)
    values = values / values.norm(dim=-1, keepdim=True)
    i0, i1, a = _searchsorted_pairs(times, t)
    q0 = values.gather(1, i0.unsqueeze(-1).expand(-1, -1, 4))
    q1 = values.gather(1, i1.unsqueeze(-1).expand(-1, -1, 4))
    return unitquat_slerp(q0, q1, a)
