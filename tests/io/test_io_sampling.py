"""The time sampler and the canonical-space helpers, on synthetic data (property tests)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import anymole.io as aio
from anymole.io._keys import clip_grid, sample_quat_keys, sample_vec_keys
from anymole.io._scene import _axis_matrix
from anymole.rig import Motion
from anymole.rig.quat import quat_normalize, unitquat_slerp


def _keys(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    times = np.cumsum(rng.uniform(0.01, 0.2, n)) - 0.05
    quats = quat_normalize(torch.from_numpy(rng.normal(size=(n, 4)))).numpy()
    vecs = rng.normal(size=(n, 3))
    return times, quats, vecs


@given(st.integers(2, 12), st.integers(0, 10_000))
def test_sampling_at_keys_returns_the_keys(n, seed):
    rng = np.random.default_rng(seed)
    times, quats, vecs = _keys(rng, n)
    t = torch.from_numpy(times)
    q = sample_quat_keys([(times, quats)], t)[0]
    d = torch.minimum((q - torch.from_numpy(quats)).norm(dim=-1), (q + torch.from_numpy(quats)).norm(dim=-1))
    assert float(d.max()) < 1e-9
    v = sample_vec_keys([(times, vecs)], t)[0]
    assert torch.allclose(v, torch.from_numpy(vecs), atol=1e-12)


@given(st.integers(2, 12), st.integers(0, 10_000), st.floats(0.0, 1.0))
def test_between_keys_is_slerp_and_lerp(n, seed, a):
    rng = np.random.default_rng(seed)
    times, quats, vecs = _keys(rng, n)
    k = int(rng.integers(0, n - 1))
    t = torch.tensor([times[k] + a * (times[k + 1] - times[k])], dtype=torch.float64)
    q = sample_quat_keys([(times, quats)], t)[0, 0]
    want = unitquat_slerp(torch.from_numpy(quats[k]), torch.from_numpy(quats[k + 1]), a)
    assert float(torch.minimum((q - want).norm(), (q + want).norm())) < 1e-9
    v = sample_vec_keys([(times, vecs)], t)[0, 0]
    assert torch.allclose(v, torch.from_numpy((1 - a) * vecs[k] + a * vecs[k + 1]), atol=1e-12)


def test_channels_of_different_lengths_are_sampled_together():
    """Sparse channels: one key holds its value; beyond the last key the last value holds."""
    rng = np.random.default_rng(0)
    t_long, q_long, v_long = _keys(rng, 9)
    t = torch.linspace(-1.0, 3.0, 17, dtype=torch.float64)
    one = (np.array([0.5]), np.array([[0.0, 0.0, 0.0, 1.0]]))
    q = sample_quat_keys([(t_long, q_long), one], t)
    assert q.shape == (2, 17, 4)
    assert torch.allclose(q[1], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64).expand(17, 4))
    last = torch.from_numpy(q_long[-1])
    assert float(torch.minimum((q[0, -1] - last).norm(), (q[0, -1] + last).norm())) < 1e-12
    v = sample_vec_keys([(t_long, v_long), (np.array([0.0]), np.ones((1, 3)))], t)
    assert torch.allclose(v[0, 0], torch.from_numpy(v_long[0])) and torch.equal(v[1], torch.ones(17, 3, dtype=torch.float64))


@pytest.mark.parametrize(
    ("duration", "keys", "fps", "want"),
    [
        (2.0, 49, None, (24.0, 49)),  # CesiumMan
        (3.416666748046875, 83, None, (24.0, 83)),  # Fox Survey, float32 times
        (1.158333251953125, 25, None, (24 / 1.158333251953125, 25)),  # Fox Run: a hole, one frame per key
        (248 / 30.00003, 249, None, (248 / (248 / 30.00003), 249)),  # not a whole number of 1/30 s
        (0.708333, 18, 30.0, (30.0, 22)),  # override
        (0.0, 1, None, (aio.clip_grid(0.0, 1, None)[0], 1)),  # a pose
    ],
)
def test_clip_grid(duration, keys, fps, want):
    rate, frames = clip_grid(duration, keys, fps)
    assert frames == want[1] and rate == pytest.approx(want[0], rel=1e-12)


def test_fbx_axis_metadata():
    assert np.array_equal(_axis_matrix({"UpAxis": 1, "FrontAxis": 2, "CoordAxis": 0}), np.eye(3))
    # 3ds Max style: Z up, −Y front → a −90° turn about X, +Z(file) becomes +Y
    m = _axis_matrix({"UpAxis": 2, "UpAxisSign": 1, "FrontAxis": 1, "FrontAxisSign": -1, "CoordAxis": 0})
    assert np.allclose(m @ [0, 0, 1], [0, 1, 0]) and np.allclose(m @ [0, -1, 0], [0, 0, 1])
    assert math.isclose(np.linalg.det(m), 1.0)
    # contradictory metadata is ignored rather than collapsing space
    assert np.array_equal(_axis_matrix({"UpAxis": 1, "FrontAxis": 1, "CoordAxis": 0}), np.eye(3))


def test_public_api_matches_all():
    assert sorted(aio.__all__) == sorted(dir(aio))
    for name in aio.__all__:
        assert getattr(aio, name) is not None
    with pytest.raises(AttributeError):
        _ = aio.not_a_name


def test_bvh_resampled_to_twice_its_rate_slerps_between_its_frames(load):
    native = load("131_01_30fps.bvh").motions["131_01_30fps"]  # 30.00003 fps (Frame Time 0.0333333)
    double = load("131_01_30fps.bvh", fps=60.0).motions["131_01_30fps"]
    assert double.fps == pytest.approx(60.0) and double.num_frames == 2 * native.num_frames - 1
    pos = (torch.arange(double.num_frames, dtype=torch.float64) / double.fps * native.fps).clamp(
        max=native.num_frames - 1
    )
    i0 = pos.floor().long()
    i1, a = (i0 + 1).clamp(max=native.num_frames - 1), pos - pos.floor()
    rot = native.rotations.double()
    want = unitquat_slerp(rot[i0], rot[i1], a[:, None]).float()
    torch.testing.assert_close(double.rotations, want, atol=2e-6, rtol=0)
    root = native.root_translation.double()
    want_root = ((1 - a[:, None]) * root[i0] + a[:, None] * root[i1]).float()
    torch.testing.assert_close(double.root_translation, want_root, atol=2e-6, rtol=1e-6)
    assert (a[::2] < 1e-3).all() and (a[1::2] - 0.5).abs().max() < 1e-3  # every other frame is a native one


def test_motion_sample_is_exact_on_whole_frames_and_clamps() -> None:
    g = torch.Generator().manual_seed(0)
    rot = quat_normalize(torch.randn(5, 3, 4, generator=g))
    m = Motion(fps=10.0, rotations=rot, root_translation=torch.randn(5, 3, generator=g))
    exact = m.sample(torch.tensor([4.0, 0.0, 2.0]), 5.0)
    assert exact.fps == 5.0 and torch.equal(exact.rotations, rot[[4, 0, 2]])
    out = m.sample(torch.tensor([-1.0, 1.25, 9.0]), 20.0)
    torch.testing.assert_close(out.rotations[0], rot[0])
    torch.testing.assert_close(out.rotations[2], rot[4])
    torch.testing.assert_close(out.rotations[1], unitquat_slerp(rot[1], rot[2], torch.tensor([[0.25]]))[0])
    torch.testing.assert_close(out.root_translation[1], 0.75 * m.root_translation[1] + 0.25 * m.root_translation[2])
