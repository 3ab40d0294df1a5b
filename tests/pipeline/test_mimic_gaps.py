"""`mimic_gaps` on uneven gaps (issue 14.4): the video's frames (one render second a gap) are mapped back to the
request's own frames gap by gap, context and keys exact, and each solve reports the frames it settled."""

from __future__ import annotations

import pytest
import torch

from anymole.mimic import MimicConfig, MimicTargets, mimic
from anymole.pipeline import fromvideo
from anymole.pipeline.fromvideo import mimic_gaps, solve_sizes
from anymole.render import Cameras, orbit_cameras, pose_motion
from anymole.rig import Character, Motion, Skeleton
from anymole.rig.quat import quat_mul
from anymole.video.sampler import RENDER_FPS
from anymole.video.timeline import VideoTimeline, plan_timeline

FPS, CONTEXT, KEYS = 24.0, 49, (60, 84, 125)  # gaps of 0.5 s, 1 s and 1.71 s after 2 s of context


def _spinning(frames: int, joints: int) -> Motion:
    """Every joint turns about +Y at 0.5 rad/s, the root moves at constant speed: SLERP and lerp between any
    two samples are the motion itself, so a resampling that puts every frame back where it was is exact."""
    t = torch.arange(frames, dtype=torch.float64) / FPS
    half = 0.25 * t[:, None] + 0.3 * torch.arange(joints, dtype=torch.float64)
    q = torch.stack((torch.zeros_like(half), half.sin(), torch.zeros_like(half), half.cos()), -1)
    tilt = torch.tensor([0.2, 0.0, 0.0, 1.0], dtype=torch.float64)
    root = t[:, None] * torch.tensor([0.3, 0.0, -0.5], dtype=torch.float64)
    return Motion(FPS, quat_mul(tilt / tilt.norm(), q), root)


def _chain() -> Character:
    offsets = torch.tensor([[0.0, 0.9, 0.0], [0.0, 0.3, 0.0], [0.1, 0.3, 0.0], [0.0, 0.3, 0.1]])
    rest = torch.tensor([[0.0, 0.0, 0.0, 1.0]] * 4)
    return Character("chain", Skeleton(("a", "b", "c", "d"), (-1, 0, 1, 2), offsets, rest))


def _scene() -> tuple[Character, Motion, VideoTimeline, torch.Tensor, Cameras]:
    """The chain spinning over the three uneven gaps: its fill, timeline, the video's render frames (15 fps)
    and one camera on it."""
    character = _chain()
    fill = _spinning(KEYS[-1] + 1, character.skeleton.num_joints)
    timeline = plan_timeline(CONTEXT, FPS, KEYS)
    r0 = timeline.render_context_end
    render_frames = torch.arange(r0, r0 + RENDER_FPS * len(KEYS) + 1, 2)
    joints, _, _ = pose_motion(character, fill)
    return character, fill, timeline, render_frames, orbit_cameras(joints, 1, width=64, height=48)


def test_uneven_gaps_come_back_on_their_own_frames_gap_by_gap() -> None:
    character, fill, timeline, render_frames, camera = _scene()
    f, j = render_frames.numel(), character.skeleton.num_joints
    targets = MimicTargets(torch.zeros(f, j, 2), torch.ones(f, j))
    # No loss term: every solve keeps its start, the fill sampled at the video's frames; so the motion that
    # comes back is the fill wherever the video-to-request mapping is right.
    still = MimicConfig.draft(steps=2, w_joints=0.0, w_root=0.0, w_rot=0.0, w_silhouette=0.0, smooth_sigma=0.0)
    settled: list[tuple[range, Motion]] = []
    out = mimic_gaps(character, fill, timeline, render_frames, camera, targets, still, solves=[1, 1, 1],
                     on_settled=lambda frames, m: settled.append((frames, m)))  # fmt: skip
    assert [s for s, _ in settled] == [range(49, 61), range(61, 85), range(85, 126)]
    assert out.num_frames == fill.num_frames and out.fps == FPS
    dot = (out.rotations * fill.rotations).sum(-1).abs()
    torch.testing.assert_close(dot, torch.ones_like(dot), rtol=0, atol=1e-9)
    torch.testing.assert_close(out.root_translation, fill.root_translation, rtol=0, atol=1e-9)
    exact = [*range(CONTEXT), *KEYS]
    assert torch.equal(out.rotations[exact], fill.rotations[exact])
    assert torch.equal(out.root_translation[exact], fill.root_translation[exact])
    # Each report holds the gaps settled so far and the fill after them.
    first = settled[0][1]
    assert torch.equal(first.rotations[61:], fill.rotations[61:]) and torch.equal(settled[-1][1].rotations, out.rotations)

    batched: list[range] = []
    again = mimic_gaps(character, fill, timeline, render_frames, camera, targets, still,
                       on_settled=lambda frames, m: batched.append(frames))  # fmt: skip
    assert batched == [range(49, 126)]
    torch.testing.assert_close(again.rotations, out.rotations, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))],
)
def test_solves_run_on_the_given_device_and_the_motion_comes_back(device: str, monkeypatch) -> None:
    character, fill, timeline, render_frames, camera = _scene()
    f, j = render_frames.numel(), character.skeleton.num_joints
    # targets that pull every joint toward the image centre: the solves move the motion away from the fill
    targets = MimicTargets(torch.full((f, j, 2), 24.0), torch.full((f, j), 3.0))
    cfg = MimicConfig.draft(steps=3, w_silhouette=0.0)
    seen: list[torch.device] = []

    def spy(skeleton, cam, init, *args, **kwargs):
        seen.extend({init.rotations.device, skeleton.offsets.device, cam.world_to_camera.device})
        return mimic(skeleton, cam, init, *args, **kwargs)

    ref = mimic_gaps(character, fill, timeline, render_frames, camera, targets, cfg)
    monkeypatch.setattr(fromvideo, "mimic", spy)
    out = mimic_gaps(character, fill, timeline, render_frames, camera, targets, cfg, device=device)
    assert [d.type for d in seen] == [device]  # one device for all inputs (CUDA's reads "cuda:0")
    assert out.rotations.device == fill.rotations.device and out.root_translation.device == fill.root_translation.device
    exact = [*range(CONTEXT), *KEYS]
    assert torch.equal(out.rotations[exact], fill.rotations[exact])
    assert not torch.allclose(out.rotations, fill.rotations, atol=1e-3)  # the solves did move the gaps
    tol = 0 if device == "cpu" else 1e-5  # float64 on both; only the order of reductions differs on a GPU
    torch.testing.assert_close(out.rotations, ref.rotations, rtol=0, atol=tol)
    torch.testing.assert_close(out.root_translation, ref.root_translation, rtol=0, atol=tol)


def test_solve_sizes_double_after_the_first_gap() -> None:
    assert [solve_sizes(k, batched=False) for k in (1, 2, 3, 6, 7, 8)] == [
        [1], [1, 1], [1, 2], [1, 2, 3], [1, 2, 4], [1, 2, 4, 1]]  # fmt: skip
    assert solve_sizes(6, batched=True) == [6]
