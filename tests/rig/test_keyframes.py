"""`cut_clip` / `Keyframes`: a job cut out of a real clip keeps the clip's numbers and puts the keys on the job's
timeline; bad ranges name the option to fix."""

from __future__ import annotations

import pytest
import torch

from anymole.errors import InvalidInput
from anymole.rig import Keyframes, cut_clip
from asset_files import cached_load


def test_cut_clip_keeps_the_clips_numbers_on_the_jobs_timeline() -> None:
    clip = cached_load("Fox.glb").motions["Survey"]
    context, keys = cut_clip(clip, (5, 40), [60, 82])
    assert context.num_frames == 35 and torch.equal(context.rotations, clip.rotations[5:40])
    assert keys.frames == (55, 77) and len(keys) == 2 and keys.poses.fps == clip.fps
    assert torch.equal(keys.poses.rotations, clip.rotations[[60, 82]])
    assert torch.equal(keys.poses.root_translation, clip.root_translation[[60, 82]])
    assert (keys.poses.translations is None) == (clip.translations is None)


@pytest.mark.parametrize(
    ("context", "keys", "field"),
    [((40, 40), [60], "--context"), ((0, 999), [60], "--context"), ((0, 40), [], "--keys"),
     ((0, 40), [30], "--keys"), ((0, 40), [70, 60], "--keys"), ((0, 40), [60, 60], "--keys"), ((0, 40), [999], "--keys")],
)  # fmt: skip
def test_cut_clip_refuses_what_no_job_can_be_cut_from(context, keys, field) -> None:
    clip = cached_load("Fox.glb").motions["Survey"]
    with pytest.raises(InvalidInput) as err:
        cut_clip(clip, context, keys)
    assert err.value.field == field


def test_keyframes_need_one_increasing_frame_per_pose() -> None:
    clip = cached_load("Fox.glb").motions["Survey"]
    poses = Keyframes.of_clip(clip, [3, 9]).poses
    with pytest.raises(InvalidInput):
        Keyframes((3,), poses)
    with pytest.raises(InvalidInput):
        Keyframes((9, 3), poses)
