"""SLERP fill of a held-out gap on every bundled animation, scored by the metrics."""

from __future__ import annotations

import pytest
import torch

from anymole.baseline import interpolate
from anymole.metrics import evaluate
from asset_files import ASSET_FILES, cached_load


@pytest.mark.parametrize("asset", ASSET_FILES)
def test_held_out_gap_is_filled_and_scored(asset: str) -> None:
    ch = cached_load(asset)
    for motion in ch.motions.values():
        F = motion.num_frames
        a = F // 2 - 5
        gap = slice(a, a + 10)
        known = torch.ones(F, dtype=torch.bool)
        known[gap] = False
        pred = interpolate(motion, known)
        assert torch.equal(pred.rotations[known], motion.rotations[known])
        assert all(v == 0.0 for v in evaluate(ch.skeleton, motion, motion, gap).values())
        for space in ("global", "local"):
            scores = evaluate(ch.skeleton, pred, motion, gap, space=space)
            # a real gap costs something, but SLERP over 10 frames stays far from the 180° worst case (0.5)
            assert 0.0 < scores["l2q_per_joint_mse"] < 0.05, (motion.name, space, scores)
            assert scores["hl2q_full"] == pytest.approx(scores["l2q_per_joint_mse"])
            assert 0.0 < scores["npss"] < 1.0
