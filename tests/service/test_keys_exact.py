"""Keyframes come back exactly (issue 15.5): an ``interp`` job's result holds the sent key poses bit for bit
at the key frames, and ``key_error_deg`` reads exactly 0 for them; the metric itself (float64, atan2 form)
against the textbook acos form on random pairs."""

from __future__ import annotations

import math

import pytest
import torch
from service_fakes import collect

from anymole.pipeline import Completed
from anymole.pipeline.spec import key_error_deg
from anymole.rig import Keyframes, Motion
from anymole.rig.quat import quat_normalize


@pytest.mark.parametrize("preset", ["cubic", "linear"])
async def test_interp_returns_the_keys_bit_for_bit_and_key_error_reads_zero(
    make_server, connect, tiny, make_req, preset
):
    _, port = await make_server()
    client = await connect(port)
    up = await client.upload_character(tiny(7))
    req = make_req(up, context_frames=4, keys=(9, 20, 31), preset=preset)
    events = await collect(client.inbetween(req))
    done = events[-1].event
    assert isinstance(done, Completed)
    assert done.metrics["key_error_deg"] == 0.0
    motion, _ = await client.result(events[0].job_id, 7)
    for key in req.keyframes:
        assert motion.rotations[key.frame].flatten().tolist() == list(key.rotations)
        assert motion.root_translation[key.frame].tolist() == list(key.root_translation)


def _keys(rotations: torch.Tensor) -> Keyframes:
    """Keys at frames ``0 .. K-1`` with these ``(K, J, 4)`` rotations."""
    k = rotations.shape[0]
    return Keyframes(tuple(range(k)), Motion(30.0, rotations, torch.zeros(k, 3, dtype=rotations.dtype)))


def test_key_error_is_zero_for_identical_or_negated_quaternions_and_matches_acos_elsewhere():
    g = torch.Generator().manual_seed(0)
    keys = quat_normalize(torch.randn(64, 9, 4, generator=g))
    same = Motion(30.0, keys.clone(), torch.zeros(64, 3))
    assert key_error_deg(same, _keys(keys)) == 0.0
    negated = Motion(30.0, -keys, torch.zeros(64, 3))
    assert key_error_deg(negated, _keys(keys)) == 0.0
    for seed in range(20):  # property: the atan2 form equals 2·acos|dot| (float64) away from 0
        gs = torch.Generator().manual_seed(seed + 1)
        a = quat_normalize(torch.randn(1, 5, 4, generator=gs, dtype=torch.float64))
        b = quat_normalize(a + 0.3 * torch.randn(1, 5, 4, generator=gs, dtype=torch.float64))
        expected = math.degrees((2 * torch.acos((a * b).sum(-1).abs().clamp(max=1.0))).max().item())
        assert key_error_deg(Motion(30.0, a, torch.zeros(1, 3)), _keys(b)) == pytest.approx(expected, abs=1e-9)
    # a known angle: 90° about z against identity
    q = torch.tensor([[[0.0, 0.0, math.sin(math.pi / 4), math.cos(math.pi / 4)]]])
    ident = torch.tensor([[[0.0, 0.0, 0.0, 1.0]]])
    assert key_error_deg(Motion(30.0, q, torch.zeros(1, 3)), _keys(ident)) == pytest.approx(90.0, abs=1e-5)
