"""Classic in-betweening: SLERP of local rotations, monotone cubic (or linear) root, linear translations.

Everything is vectorised over frames and joints: each frame finds its surrounding known frames with one
`torch.searchsorted`, then all frames are interpolated at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from anymole.errors import InvalidInput
from anymole.rig.keyframes import Keyframes
from anymole.rig.motion import Motion
from anymole.rig.quat import unitquat_slerp

__all__ = ["inbetween", "interpolate", "monotone_cubic"]

RootMode = Literal["cubic", "linear"]


def _key_indices(known: torch.Tensor | Sequence[int], num_frames: int) -> torch.Tensor:
    """``(K,)`` int64 known-frame indices from a ``(F,)`` bool mask or sorted indices; validated."""
    k = torch.as_tensor(known)
    if k.dtype == torch.bool:
        if k.shape != (num_frames,):
            raise InvalidInput("known", f"a mask must have shape ({num_frames},), got {tuple(k.shape)}")
        k = torch.nonzero(k).flatten()
    elif k.dtype.is_floating_point or k.ndim != 1:
        raise InvalidInput("known", f"must be a (F,) bool mask or (K,) integer indices, got {k.dtype} {tuple(k.shape)}")
    k = k.long().cpu()
    if k.numel() == 0:
        raise InvalidInput("known", "no known frame: give at least one key or context frame")
    if int(k.min()) < 0 or int(k.max()) >= num_frames:
        raise InvalidInput("known", f"indices must lie in [0, {num_frames}), got {k.tolist()[:8]}")
    if k.numel() > 1 and not bool((k[1:] > k[:-1]).all()):
        raise InvalidInput("known", "indices must be strictly increasing")
    return k


def _segments(keys: torch.Tensor, num_frames: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """For every frame: the index ``seg`` of its left key in ``keys`` and the fraction ``s`` in [0, 1].

    Frames before the first / after the last key get ``s`` clamped to 0 / 1: they hold that key.
    """
    f = torch.arange(num_frames)
    if keys.numel() == 1:
        return torch.zeros(num_frames, dtype=torch.long), torch.zeros(num_frames, dtype=dtype)
    seg = (torch.searchsorted(keys, f, right=True) - 1).clamp(0, keys.numel() - 2)
    k0, k1 = keys[seg], keys[seg + 1]
    s = ((f - k0).to(dtype) / (k1 - k0).to(dtype)).clamp(0.0, 1.0)
    return seg, s


def monotone_cubic(
    times: torch.Tensor, values: torch.Tensor, seg: torch.Tensor, s: torch.Tensor
) -> torch.Tensor:
    """Monotone piecewise-cubic Hermite interpolation (Fritsch–Carlson/PCHIP), per coordinate.

    Interior tangents are the weighted harmonic mean of the neighbouring secant slopes (Fritsch–Butland
    weights), or 0 where the slopes change sign, so the curve never overshoots the knots (no root dipping
    through the floor between keys). End tangents are the one-sided secants ("clamped to linear"), so
    two knots give a straight line.

    Args:
        times: ``(K,)`` strictly increasing knot times (frames).
        values: ``(K, C)`` knot values.
        seg: ``(F,)`` left-knot index of each query, in ``[0, K-2]``.
        s: ``(F,)`` normalised position in the segment, in ``[0, 1]``.

    Returns:
        ``(F, C)`` interpolated values; exact at the knots.
    """
    h = (times[1:] - times[:-1]).to(values.dtype)  # (K-1,)
    d = (values[1:] - values[:-1]) / h[:, None]  # (K-1, C) secant slopes
    m = torch.empty_like(values)
    m[0], m[-1] = d[0], d[-1]
    if values.shape[0] > 2:
        d0, d1 = d[:-1], d[1:]
        h0, h1 = h[:-1, None], h[1:, None]
        w0, w1 = 2 * h1 + h0, h1 + 2 * h0
        same_sign = d0 * d1 > 0
        # where the slopes disagree the harmonic mean is replaced by 0; a safe denominator avoids 0/0
        denom = torch.where(same_sign, w0 / torch.where(same_sign, d0, 1.0) + w1 / torch.where(same_sign, d1, 1.0), 1.0)
        m[1:-1] = torch.where(same_sign, (w0 + w1) / denom, 0.0)
    hh = h[seg][:, None]
    t = s[:, None]
    t2, t3 = t * t, t * t * t
    return (
        (2 * t3 - 3 * t2 + 1) * values[seg]
        + (t3 - 2 * t2 + t) * hh * m[seg]
        + (-2 * t3 + 3 * t2) * values[seg + 1]
        + (t3 - t2) * hh * m[seg + 1]
    )


def interpolate(motion: Motion, known: torch.Tensor | Sequence[int], *, root: RootMode = "cubic") -> Motion:
    """Fill the unknown frames of ``motion`` from its known frames.

    * Local rotations: SLERP between the two surrounding known frames, along the shortest arc (signs
      aligned per joint), at constant angular speed.
    * Root translation: `monotone_cubic` through all known frames (``root="cubic"``) or piecewise linear.
    * Non-root ``translations`` (if present): piecewise linear; their root column follows the root.
    * Frames before the first / after the last known frame hold that frame. Known frames are returned
      exactly (bit for bit).

    Args:
        motion: a clip whose values at unknown frames are ignored (``F`` frames, ``J`` joints).
        known: ``(F,)`` bool mask or strictly increasing ``(K,)`` frame indices.
        root: ``"cubic"`` or ``"linear"``.

    Returns:
        A new `Motion` with the same fps, name, shape and dtype.
    """
    if root not in ("cubic", "linear"):
        raise InvalidInput("root", f"must be 'cubic' or 'linear', got {root!r}")
    F = motion.num_frames
    keys = _key_indices(known, F)
    dev, dtype = motion.rotations.device, motion.rotations.dtype
    seg, s = _segments(keys, F, dtype)
    keys_d, seg_d, s_d = keys.to(dev), seg.to(dev), s.to(dev)
    is_known = torch.zeros(F, dtype=torch.bool, device=dev)
    is_known[keys_d] = True
    if keys.numel() == 1:
        i0 = i1 = keys_d[seg_d]
    else:
        i0, i1 = keys_d[seg_d], keys_d[seg_d + 1]

    rot = unitquat_slerp(motion.rotations[i0], motion.rotations[i1], s_d[:, None])
    rot = torch.where(is_known[:, None, None], motion.rotations, rot)

    rt = motion.root_translation
    lin_w = s_d.to(rt.dtype)[:, None]
    if root == "cubic" and keys.numel() > 2:
        root_tr = monotone_cubic(keys_d.to(rt.dtype), rt[keys_d], seg_d, s_d.to(rt.dtype))
    else:
        root_tr = (1 - lin_w) * rt[i0] + lin_w * rt[i1]
    root_tr = torch.where(is_known[:, None], rt, root_tr)

    tr = None
    if motion.translations is not None:
        T = motion.translations
        w = s_d.to(T.dtype)[:, None, None]
        tr = torch.where(is_known[:, None, None], T, (1 - w) * T[i0] + w * T[i1])
        tr = torch.cat((root_tr[:, None].to(T.dtype), tr[:, 1:]), dim=1)
    return Motion(fps=motion.fps, rotations=rot, root_translation=root_tr, translations=tr, name=motion.name)


def inbetween(
    context: Motion,
    keys: Keyframes,
    num_frames: int,
    *,
    method: Literal["slerp"] = "slerp",
    root: RootMode = "cubic",
) -> Motion:
    """Classic fill after a context clip: the CLI's ``--method interp`` and the server's instant fallback.

    Frames ``0..C-1`` are the context (all known), keyframe ``i`` sits at absolute frame ``keys.frames[i]``
    (``C <= index < num_frames``, strictly increasing), and every other frame is filled by `interpolate`
    (so the cubic root also uses the context's velocity at its last frames). Frames after the last key
    hold it.

    Args:
        context: ``C`` known frames, ``J`` joints.
        keys: ``K`` keyframes at absolute frames ``keys.frames``: ``poses.rotations (K, J, 4)`` unit xyzw,
            ``poses.root_translation (K, 3)`` m, optional ``poses.translations (K, J, 3)`` m, used when
            ``context`` has ``translations`` (``None``: the keys reuse the last context frame's non-root
            translations).
        num_frames: total frames of the result (context + gap + keys), ``> max(keys.frames)``.
        method: ``"slerp"`` (the only classic method for now).
        root: ``"cubic"`` (monotone Hermite) or ``"linear"``.

    Returns:
        A `Motion` of ``num_frames`` frames whose first ``C`` frames equal ``context`` and whose key frames
        equal the given keys exactly.
    """
    if method != "slerp":
        raise InvalidInput("method", f"unknown classic method {method!r}; use 'slerp'")
    C, J = context.num_frames, context.num_joints
    key_rotations, key_root = keys.poses.rotations, keys.poses.root_translation
    key_translations = keys.poses.translations
    frames = torch.tensor(keys.frames, dtype=torch.long)
    K = len(keys)
    if C == 0:
        raise InvalidInput("context", "needs at least one frame")
    if keys.poses.num_joints != J:
        raise InvalidInput("keyframes", f"key poses have {keys.poses.num_joints} joints, the context {J}")
    if K and (int(frames.min()) < C or int(frames.max()) >= num_frames):
        raise InvalidInput(
            "keyframes", f"must lie in [{C}, {num_frames}) (after the context, inside the clip), got {frames.tolist()[:8]}"
        )
    if num_frames < C:
        raise InvalidInput("num_frames", f"must be >= the {C} context frames, got {num_frames}")

    dev, dtype = context.rotations.device, context.rotations.dtype
    keys_d = frames.to(dev)
    rot = context.rotations[-1:].expand(num_frames, J, 4).clone()
    rot[:C] = context.rotations
    rot[keys_d] = key_rotations.to(device=dev, dtype=dtype)
    rt = context.root_translation[-1:].expand(num_frames, 3).clone()
    rt[:C] = context.root_translation
    rt[keys_d] = key_root.to(device=dev, dtype=rt.dtype)
    tr = None
    if context.translations is not None:
        T = context.translations
        tr = T[-1:].expand(num_frames, J, 3).clone()
        tr[:C] = T
        if key_translations is not None:
            tr[keys_d] = key_translations.to(device=dev, dtype=T.dtype)
        tr[keys_d, 0] = rt[keys_d].to(T.dtype)
    known = torch.cat((torch.arange(C), frames))
    full = Motion(fps=context.fps, rotations=rot, root_translation=rt, translations=tr, name=context.name)
    return interpolate(full, known, root=root)
