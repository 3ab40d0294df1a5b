"""Baseline fill: known frames exact, SLERP midpoints, linear/cubic root, translations, inbetween()."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from anymole.baseline import inbetween, interpolate, monotone_cubic
from anymole.rig import Keyframes, Motion
from anymole.rig.quat import (
    axis_angle_to_unitquat,
    quat_conj,
    quat_identity,
    quat_mul,
    quat_normalize,
    unitquat_angle,
)


def _random_motion(F: int, J: int, seed: int = 0, translations: bool = False) -> Motion:
    g = torch.Generator().manual_seed(seed)
    root = torch.randn(F, 3, generator=g, dtype=torch.float64)
    tr = None
    if translations:
        tr = torch.randn(F, J, 3, generator=g, dtype=torch.float64)
        tr[:, 0] = root
    return Motion(
        fps=30.0,
        rotations=quat_normalize(torch.randn(F, J, 4, generator=g, dtype=torch.float64)),
        root_translation=root,
        translations=tr,
    )


@given(
    seed=st.integers(0, 2**16),
    known=st.lists(st.integers(0, 19), min_size=1, max_size=6, unique=True).map(sorted),
    root=st.sampled_from(["cubic", "linear"]),
)
def test_known_frames_exact_and_unit_norm(seed: int, known: list[int], root: str) -> None:
    m = _random_motion(20, 4, seed, translations=True)
    out = interpolate(m, torch.tensor(known), root=root)  # type: ignore[arg-type]
    assert out.rotations.shape == (20, 4, 4) and out.translations is not None
    assert torch.equal(out.rotations[known], m.rotations[known])
    assert torch.equal(out.root_translation[known], m.root_translation[known])
    assert torch.equal(out.translations[known], m.translations[known])  # type: ignore[index]
    torch.testing.assert_close(out.rotations.norm(dim=-1), torch.ones(20, 4, dtype=torch.float64))
    torch.testing.assert_close(out.translations[:, 0], out.root_translation)
    # frames outside the known range hold the nearest known frame
    torch.testing.assert_close(out.rotations[: known[0]], m.rotations[known[0]].expand(known[0], 4, 4))
    tail = 20 - known[-1] - 1
    torch.testing.assert_close(out.root_translation[known[-1] + 1 :], m.root_translation[known[-1]].expand(tail, 3))
    # a bool mask means the same as indices
    mask = torch.zeros(20, dtype=torch.bool)
    mask[known] = True
    assert torch.equal(interpolate(m, mask, root=root).rotations, out.rotations)  # type: ignore[arg-type]


def test_slerp_midpoint_of_90_degrees_is_45() -> None:
    F = 11
    rot = quat_identity((F, 2), dtype=torch.float64)
    q90 = axis_angle_to_unitquat(torch.tensor([0, math.pi / 2, 0], dtype=torch.float64))
    rot[10, 1] = -q90  # the wrong hemisphere: must still take the short way (90°, not 270°)
    m = Motion(fps=30.0, rotations=rot, root_translation=torch.zeros(F, 3, dtype=torch.float64))
    out = interpolate(m, [0, 10])
    ang = unitquat_angle(out.rotations[:, 1])
    torch.testing.assert_close(ang, torch.linspace(0, math.pi / 2, F, dtype=torch.float64))
    assert ang[5].item() == pytest.approx(math.pi / 4)
    # about the same axis throughout
    torch.testing.assert_close(out.rotations[5, 1, [0, 2]], torch.zeros(2, dtype=torch.float64))
    assert unitquat_angle(quat_mul(quat_conj(out.rotations[5, 1]), q90)).item() == pytest.approx(math.pi / 4)


def test_linear_root_is_exactly_linear_and_cubic_matches_it_on_a_line() -> None:
    F = 13
    keys = [0, 4, 12]
    root = torch.zeros(F, 3, dtype=torch.float64)
    root[keys] = torch.tensor([[0.0, 1.0, 0.0], [4.0, 1.0, 2.0], [12.0, 1.0, 0.0]], dtype=torch.float64)
    m = Motion(fps=30.0, rotations=quat_identity((F, 1), dtype=torch.float64), root_translation=root)
    lin = interpolate(m, keys, root="linear").root_translation
    f = torch.arange(F, dtype=torch.float64)
    torch.testing.assert_close(lin[:, 0], f)  # x = f on both segments
    torch.testing.assert_close(lin[:, 1], torch.ones(F, dtype=torch.float64))
    expected_z = torch.where(f <= 4, f / 2, 2 - (f - 4) / 4)
    torch.testing.assert_close(lin[:, 2], expected_z)
    cub = interpolate(m, keys, root="cubic").root_translation
    torch.testing.assert_close(cub[:, :2], lin[:, :2])  # collinear knots: the monotone cubic is the line
    # z rises then falls: the peak knot gets a zero tangent, so the cubic never exceeds it (no overshoot)
    assert float(cub[:, 2].max()) == pytest.approx(2.0)
    assert bool((cub[:, 2] >= 0).all())
    assert not torch.allclose(cub[:, 2], lin[:, 2])


@given(seed=st.integers(0, 2**16))
def test_monotone_cubic_never_overshoots(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    times = torch.cumsum(torch.randint(1, 6, (6,), generator=g), 0).to(torch.float64)
    values = torch.randn(6, 3, generator=g, dtype=torch.float64)
    s = torch.linspace(0, 1, 9, dtype=torch.float64).repeat(5)
    seg = torch.arange(5).repeat_interleave(9)
    out = monotone_cubic(times, values, seg, s)
    lo = torch.minimum(values[seg], values[seg + 1])
    hi = torch.maximum(values[seg], values[seg + 1])
    assert bool((out >= lo - 1e-12).all() and (out <= hi + 1e-12).all())
    torch.testing.assert_close(out[s == 0], values[seg[s == 0]])


def test_cubic_continues_context_velocity() -> None:
    # context moves at 1 m/frame along x; a key far ahead on the same line keeps the speed exactly
    C = 5
    ctx = Motion(
        fps=30.0,
        rotations=quat_identity((C, 3), dtype=torch.float64),
        root_translation=torch.stack([torch.arange(C, dtype=torch.float64), torch.zeros(C), torch.zeros(C)], -1),
    )
    key_rot = axis_angle_to_unitquat(torch.tensor([[[0.0, 0, 1.0]] * 3], dtype=torch.float64))
    out = inbetween(ctx, Keyframes((10,), Motion(30.0, key_rot, torch.tensor([[10.0, 0, 0]], dtype=torch.float64))), 12)
    assert out.num_frames == 12
    assert torch.equal(out.rotations[:C], ctx.rotations)
    torch.testing.assert_close(out.rotations[10], key_rot[0])
    torch.testing.assert_close(out.rotations[11], key_rot[0])  # after the last key: hold
    torch.testing.assert_close(out.root_translation[:11, 0], torch.arange(11, dtype=torch.float64))
    # rotation angle grows linearly from the last context frame (4) to the key (10)
    ang = unitquat_angle(out.rotations[4:11, 1])
    torch.testing.assert_close(ang, torch.linspace(0, 1.0, 7, dtype=torch.float64))


def test_inbetween_translations_and_errors() -> None:
    ctx = _random_motion(4, 3, seed=1, translations=True)
    keys = [5, 9]
    key_rot = quat_identity((2, 3), dtype=torch.float64)
    key_root = torch.ones(2, 3, dtype=torch.float64)
    out = inbetween(ctx, Keyframes(tuple(keys), Motion(30.0, key_rot, key_root)), 10, root="linear")
    assert out.translations is not None and ctx.translations is not None
    torch.testing.assert_close(out.translations[:, 0], out.root_translation)
    torch.testing.assert_close(out.translations[9, 1:], ctx.translations[-1, 1:])  # keys reuse the last pose
    torch.testing.assert_close(out.root_translation[4], (ctx.root_translation[3] + key_root[0]) / 2)
    with pytest.raises(ValueError, match=r"^keyframes: must lie in \[4, 10\)"):
        inbetween(ctx, Keyframes((2, 6), Motion(30.0, key_rot, key_root)), 10)
    with pytest.raises(ValueError, match=r"^keyframes: frames must increase strictly"):
        inbetween(ctx, Keyframes((9, 6), Motion(30.0, key_rot, key_root)), 10)
    with pytest.raises(ValueError, match=r"^keyframes: key poses have 2 joints, the context 3"):
        inbetween(ctx, Keyframes((5, 9), Motion(30.0, key_rot[:, :2], key_root)), 10)
    with pytest.raises(ValueError, match=r"^known:"):
        interpolate(ctx, [2, 1])
    with pytest.raises(ValueError, match=r"^known:"):
        interpolate(ctx, torch.zeros(4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"^root:"):
        interpolate(ctx, [0], root="spline")  # type: ignore[arg-type]
