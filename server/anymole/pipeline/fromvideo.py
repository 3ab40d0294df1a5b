"""Motion from a generated video: the stages after sampling, shared by the ``anymole`` method and the oracle
evaluation (`anymole.pipeline.oracle`).

* `estimator_config`: a preset's estimator on the backbones this machine has weights for.
* `training_set` / `train_estimator`: the scene-specific joint estimator trained on a job's renders, the
  context of every view at weight 1 and the keyframes at weight 3 (paper A.2), plus, beyond the paper,
  `gap_poses`: the gaps' SLERP fill and randomly perturbed copies of it rendered with the same cameras and
  floor. The context shows only the poses of the context; the fill's poses lie near the unknown gap's, and
  the perturbations teach the estimator to read where a limb leaves them (measured in docs/quality.md).
* `background`: the scene without the character, from the context renders themselves (the camera is fixed,
  so every floor pixel shows up uncovered in some context frame), for the silhouette term's character mask.
* `estimate`: the estimator's joints and depths, and the character's mask, on the generated frames.
* `mimic_gaps`: motion video mimicking (`anymole.mimic.mimic`) on the video's own frames (15 a gap), a few gaps
  per solve, then the result brought back to the request's timeline and frame rate, context and keys exact.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from anymole.errors import InvalidInput
from anymole.estimator import EstimatorConfig, SceneEstimator, fit_estimator
from anymole.hub import estimator_weights
from anymole.mimic import MimicConfig, MimicTargets, character_mask, mimic
from anymole.mimic.config import REFERENCE_HEIGHT
from anymole.mimic.prior import rotation_prior
from anymole.progress import OnStep, no_step
from anymole.render.cameras import Cameras
from anymole.rig import Character, Motion
from anymole.rig.quat import axis_angle_to_unitquat, quat_mul
from anymole.video.sampler import RENDER_FPS
from anymole.video.scene import SceneRenders
from anymole.video.timeline import VideoTimeline

if TYPE_CHECKING:
    from anymole.render.gl import Style

__all__ = [
    "KEY_WEIGHT",
    "PoseSamples",
    "background",
    "estimate",
    "estimator_config",
    "gap_fill",
    "gap_poses",
    "mimic_gaps",
    "relative_targets",
    "solve_sizes",
    "train_estimator",
    "training_set",
]

#: weight of a keyframe render against a context render in the estimator's loss (the paper's 3).
KEY_WEIGHT = 3.0


def estimator_config(preset: str, weights: Path | None, **overrides: Any) -> EstimatorConfig:
    """``preset``'s estimator (`EstimatorConfig.preset`, with ``overrides``): its frozen ViT pair on the weights in
    the models folder ``weights`` (`anymole.hub.estimator_weights`, which raises `ModelUnavailable` naming what
    is missing there), or, without a folder, the conv backbone trained from scratch in its place (``draft``
    needs no weights either way)."""
    frozen = EstimatorConfig.preset(preset).frozen
    if frozen and weights is not None:
        found = estimator_weights(weights)
        overrides["weights"] = tuple(str(found[b]) for b in frozen)
    elif frozen:
        overrides["backbones"] = ("conv",)
    return EstimatorConfig.preset(preset, **overrides)


@dataclass(frozen=True)
class PoseSamples:
    """Extra labelled renders for the estimator (`gap_poses`), every view of every pose, weight 1.

    Attributes:
        images: ``(M, 3, H, W)`` in [0, 1].
        joints_px: ``(M, J, 2)`` px.
        joints_depth: ``(M, J)`` m.
        masks: ``(M, H, W)`` bool, where the character covers the image.
    """

    images: torch.Tensor
    joints_px: torch.Tensor
    joints_depth: torch.Tensor
    masks: torch.Tensor


def training_set(
    renders: SceneRenders, extra: PoseSamples | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The estimator's samples from a job's renders: every view's ``N`` context frames and ``K`` keys, then
    ``extra``'s ``E`` samples.

    Returns:
        ``images (M, 3, H, W)``, ``joints2d (M, J, 2)`` px, ``depths (M, J)`` m, ``weights (M,)``, ``masks (M, H,
        W)`` bool with ``M = V·(N + K) + E`` (context and extra samples weigh 1, keys `KEY_WEIGHT`).
    """
    n = renders.context.shape[2]
    images = torch.cat((renders.context.transpose(1, 2).flatten(0, 1), renders.keys.transpose(1, 2).flatten(0, 1)))
    joints = torch.cat((renders.joints_px[:, :n].flatten(0, 1), renders.joints_px[:, n:].flatten(0, 1)))
    depths = torch.cat((renders.joints_depth[:, :n].flatten(0, 1), renders.joints_depth[:, n:].flatten(0, 1)))
    masks = torch.cat((renders.mask[:, :n].flatten(0, 1), renders.mask[:, n:].flatten(0, 1)))
    v, k = renders.views, renders.keys.shape[2]
    weights = torch.cat((torch.ones(v * n), torch.full((v * k,), KEY_WEIGHT)))
    if extra is not None:
        images = torch.cat((images, extra.images.to(images)))
        joints = torch.cat((joints, extra.joints_px.to(joints)))
        depths = torch.cat((depths, extra.joints_depth.to(depths)))
        weights = torch.cat((weights, torch.ones(extra.images.shape[0])))
        masks = torch.cat((masks, extra.masks.to(masks)))
    return images, joints, depths, weights, masks


def _scene_style(character: Character, fill: Motion, timeline: VideoTimeline) -> Style:
    """The floor `render_scene` drew: fitted to the 30 fps context and the key poses (``fill`` holds both)."""
    from anymole.render.views import pose_motion, scene_style

    keys = torch.tensor(timeline.key_frames, dtype=torch.float64)
    shown = fill.sample(torch.cat((timeline.render_times(), keys)), float(RENDER_FPS))
    _, verts, _ = pose_motion(character, shown)
    return scene_style(verts)


def relative_targets(
    estimator: SceneEstimator,
    targets: MimicTargets,
    character: Character,
    fill: Motion,
    timeline: VideoTimeline,
    render_frames: torch.Tensor,
    camera: Cameras,
    trust_px: float,
    deadband_px: float = 0.0,
    confidence_px: float = 0.0,
) -> MimicTargets:
    """``targets`` corrected by the estimator's own error on the first guess, where the video agrees with it.

    The fill is rendered at the video's frames from the video's camera, so its joints and depths there are
    known exactly, and the estimator runs on those renders too. Its error on them, ``fill joint − estimate on
    the fill's render``, is added to the estimate on the video with weight ``exp(−(d / trust_px)²)``, ``d`` the
    distance between the two estimates (px of a `REFERENCE_HEIGHT` image): an error the estimator makes on
    both images (a bias of this pose, this joint, this part of the frame) cancels where the video shows about
    the fill's pose (the target is then the fill's own joint and mimicking keeps the fill), and where the video
    moves away from the fill the images differ, so does the error, and the plain estimate stands. Within that
    correction a change of the 2D reading, ``d``, shorter than ``deadband_px`` counts as the estimator's noise
    (a conv net's reading of a still joint moves when another part of the image changes): the change is
    shrunk by ``deadband_px`` (soft threshold), so joints the video does not move stay at the fill's.

    Args:
        estimator: the scene's estimator.
        targets: `estimate` of the video's ``F`` frames.
        character, fill, timeline: as `mimic_gaps` takes them.
        render_frames: ``(F,)`` the video's frames on the 30 fps render timeline.
        camera: the video's camera (one).
        trust_px: the distance scale (px of a `REFERENCE_HEIGHT` image); 0: no correction (the joints and depths
            stay as estimated).
        deadband_px: the soft threshold of the 2D change (px of a `REFERENCE_HEIGHT` image; 0: none).
        confidence_px: the scale of the joints' confidence (`MimicConfig.confidence_px`; 0: none): a joint the
            estimator misses by ``e`` on the fill's renders next to the keys weighs ``1 / (1 + (e / confidence_px)²)``
            in 2D and, by its depth miss ``e`` on all of them (in pixels at the frame's mean depth),
            ``exp(−(e / confidence_px)²)`` in depth. With
            ``trust_px`` also 0, ``targets`` come back as they are.

    Returns:
        The same mask; joints ``(F, J, 2)`` and depths ``(F, J)`` corrected.
    """
    if trust_px <= 0 and confidence_px <= 0:
        return targets
    from anymole.render.views import render_motion

    r = render_frames.long().cpu()
    step = int(r[1] - r[0]) if r.numel() > 1 else 1
    positions = timeline.request_positions(r)
    shown = render_motion(character, fill.sample(positions, RENDER_FPS / step), cameras=camera,
                          style=_scene_style(character, fill, timeline))  # fmt: skip
    assert shown.joints_px is not None and shown.joints_depth is not None
    xy, depth = estimator.predict(shown.images()[0], torch.from_numpy(shown.mask[0]))
    j, d = targets.joints_px, targets.depth
    xy, depth = xy.to(j), depth.to(d)
    err_d = shown.joints_depth[0].to(d) - depth  # (F, J) the estimator's depth error on the fill's render
    change = j - xy  # (F, J, 2) what the estimator sees move between the fill's render and the video
    dist = change.norm(dim=-1) * (REFERENCE_HEIGHT / camera.height)  # (F, J)
    # trust 0 keeps the estimates (the confidence below still needs the renders)
    w = torch.exp(-((dist / trust_px) ** 2))[..., None] if trust_px > 0 else torch.zeros_like(dist)[..., None]
    keep = (1 - deadband_px / dist.clamp_min(1e-9)).clamp_min(0)[..., None]
    # the fill's joints plus the (shrunk) change: without a dead band, the reading minus its error on the fill
    relative = shown.joints_px[0].to(j) + keep * change
    conf = None
    if confidence_px > 0:  # the estimator's mean miss per joint on the fill's renders (px of REFERENCE_HEIGHT)
        # 2D: on the frames next to a key only. Inside a gap the fill (a SLERP between two phases of a walk) holds
        # poses the estimator never saw, where it misreads a walk's legs 4x worse than on the video; next to a key
        # the fill is within a frame of a real pose (docs/quality.md, "Depth that misses by more than its scale").
        # Its depth miss is about the same on both (0.13 m and 0.12 m on CMU), so it takes every frame.
        phase = (r - timeline.render_context_end) % RENDER_FPS
        near = (phase == step) | (phase == RENDER_FPS - step)  # (F,) on the host: no device wait
        near = (near if bool(near.any()) else torch.ones_like(near)).to(j.device)
        miss_xy = (shown.joints_px[0].to(j) - xy).norm(dim=-1)[near].mean(0)  # (J,)
        z_bar = shown.joints_depth[0].to(d).mean(-1, keepdim=True)  # (F, 1): depth as pixels there, as joint_loss
        miss_z = (err_d.abs() * camera.focal / z_bar).mean(0)  # (J,)
        k = REFERENCE_HEIGHT / camera.height
        # 2D: an inverse variance (floored at the scale). Depth: a Gaussian, which drops a depth the estimator
        # misses by several scales. Its miss is a bias the video shares (CMU: 0.13 m on the fill's renders, 0.12 m
        # on the video), and the 2D joints with the rig's bone lengths already fix each bone's depth up to its
        # flip, so such a depth only pulls the hips' turn off; at 1/(1 + m²) it still outweighed the 2D of joints
        # the estimator misreads on the fill (docs/quality.md, "Depth that misses by more than its scale").
        conf = torch.stack((1.0 / (1.0 + (miss_xy * k / confidence_px) ** 2),
                            torch.exp(-((miss_z * k / confidence_px) ** 2))), -1)  # (J, 2)  # fmt: skip
    return MimicTargets(w * relative + (1 - w) * j, d + w[..., 0] * err_d, targets.mask, conf)


def gap_fill(fill: Motion, timeline: VideoTimeline) -> Motion:
    """``fill``'s frames inside the gaps (context and keys excluded), in order: the poses `gap_poses` renders."""
    inside = torch.ones(fill.num_frames, dtype=torch.bool)
    inside[: timeline.context_frames] = False
    inside[list(timeline.key_frames)] = False
    frames = torch.nonzero(inside).flatten()
    tr = fill.translations[frames] if fill.translations is not None else None
    return Motion(fill.fps, fill.rotations[frames], fill.root_translation[frames], tr, fill.name)


def gap_poses(
    character: Character,
    fill: Motion,
    timeline: VideoTimeline,
    cameras: Cameras,
    copies: int,
    noise_deg: float,
    seed: int = 0,
) -> PoseSamples:
    """The gaps' first guess and perturbations of it, rendered like the context, as estimator training samples.

    Uses only what a job knows before sampling: ``fill`` (the SLERP fill, context and keys exact) and the
    scene's cameras; the floor is placed as `render_scene` placed it (from the context and key poses).

    Args:
        character: the rig and its mesh.
        fill: the request's whole timeline (``T`` frames at ``timeline.fps``, last frame the last key).
        timeline: the job's `plan_timeline`.
        cameras: the scene's ``V`` cameras (`SceneRenders.cameras`).
        copies: poses per gap frame: the fill itself, then ``copies − 1`` copies whose every local rotation
            (root included) is turned by a random rotation vector of ``noise_deg`` degrees per axis (std).
        noise_deg: std of the perturbation.
        seed: RNG seed of the perturbations.

    Returns:
        ``V · copies · G`` samples, ``G`` the request frames inside the gaps (context and keys excluded).
    """
    from anymole.render.views import render_motion  # moderngl loads only when used

    gap = gap_fill(fill, timeline)
    gen = torch.Generator().manual_seed(seed)
    rot = gap.rotations.repeat(copies, 1, 1)
    noise = torch.randn((*rot.shape[:-1], 3), generator=gen, dtype=torch.float64) * math.radians(noise_deg)
    noise[: gap.num_frames] = 0.0  # the first copy is the fill itself
    rot = quat_mul(rot, axis_angle_to_unitquat(noise).to(rot))
    root = gap.root_translation.repeat(copies, 1)
    tr = gap.translations.repeat(copies, 1, 1) if gap.translations is not None else None
    poses = Motion(fill.fps, rot, root, tr, fill.name)
    r = render_motion(character, poses, cameras=cameras, style=_scene_style(character, fill, timeline))
    assert r.joints_px is not None and r.joints_depth is not None
    return PoseSamples(r.images().flatten(0, 1), r.joints_px.flatten(0, 1).float(), r.joints_depth.flatten(0, 1).float(),
                       torch.from_numpy(r.mask).flatten(0, 1))  # fmt: skip


def train_estimator(
    renders: SceneRenders,
    config: EstimatorConfig,
    on_step: OnStep = no_step,
    device: torch.device | str = "cpu",
    extra: PoseSamples | None = None,
    *,
    backbones: Sequence[nn.Module] | None = None,
) -> SceneEstimator:
    """`fit_estimator` on `training_set` with ``extra`` samples (reports ``("estimator", fraction)``; a raising
    ``on_step`` stops it), with built ``backbones`` in ``config.backbones`` order (default: built from the config)."""
    images, joints, depths, weights, masks = training_set(renders, extra)
    on_step("estimator", 0.0)
    return fit_estimator(images, joints, depths, weights, config, on_step, backbones=backbones, device=device,
                         masks=masks)  # fmt: skip


def background(context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The view without the character: per pixel, the mean of the context frames where it is uncovered.

    Args:
        context: ``(3, N, H, W)`` one view's context renders in [0, 1].
        mask: ``(N, H, W)`` bool, True where the character covers the pixel.

    Returns:
        ``(3, H, W)``; a pixel the character covers in every frame takes the mean of all frames (it is then
        character in every generated frame too, most likely).
    """
    free = (~mask.bool()).to(context.dtype)[None]  # (1, N, H, W)
    count = free.sum(1)
    seen = (context * free).sum(1) / count.clamp_min(1)
    return torch.where(count > 0, seen, context.mean(1))


def estimate(
    estimator: SceneEstimator, frames: torch.Tensor, backdrop: torch.Tensor | None
) -> MimicTargets:
    """Mimicking's targets on generated frames ``(3, F, H, W)``: the estimator's joints ``(F, J, 2)`` and depths
    ``(F, J)``, and the character mask ``(F, H, W)`` against ``backdrop (3, H, W)`` (none without it; an estimator
    that reads a window around the character places it on that mask, so it needs ``backdrop``)."""
    images = frames.transpose(0, 1).contiguous()  # (F, 3, H, W)
    mask = character_mask(images, backdrop) if backdrop is not None else None
    joints, depth = estimator.predict(images, mask)
    return MimicTargets(joints, depth, mask)


def solve_sizes(num_gaps: int, batched: bool) -> list[int]:
    """Gaps in each mimicking solve: all in one when ``batched``, else 1, 2, 4, … (the last takes the rest).

    Doubling groups: the first gap settles after a solve of one gap, and the job pays ``log2(K) + 1`` solves,
    not ``K`` (on a CPU a batch still saves per-step overhead: docs/anymole.md has the measurements).
    """
    sizes: list[int] = []
    n = 1
    while sum(sizes) < num_gaps:
        sizes.append(min(n, num_gaps - sum(sizes)))
        n *= 2
    return [num_gaps] if batched else sizes


def mimic_gaps(
    character: Character,
    fill: Motion,
    timeline: VideoTimeline,
    render_frames: torch.Tensor,
    camera: Cameras,
    targets: MimicTargets,
    config: MimicConfig,
    on_step: OnStep = no_step,
    *,
    solves: Sequence[int] | None = None,
    on_settled: Callable[[range, Motion], None] | None = None,
    device: torch.device | str | None = None,
) -> Motion:
    """Mimic the video's frames and bring the motion back to the request's timeline.

    Gaps are solved in consecutive groups of ``solves[i]`` gaps, in order (default: all in one batched solve); after
    each solve
    ``on_settled(frames, motion)`` receives the request frames those gaps settled (from the frame after their
    opening key to their closing key) and the whole timeline so far (settled gaps final, the others still
    ``fill``). A solve sees only its own gaps' frames between their keys, so its result does not depend on how
    the gaps are grouped but for the smoothing across a key (each solve reflects at its outer keys).

    Args:
        character: the rig (its mesh draws the silhouette).
        fill: the request's whole timeline ``T`` frames at ``timeline.fps``, context and keys exact: the first
            guess (the SLERP fill) of every gap frame. ``T`` is the last keyframe + 1.
        timeline: the job's `plan_timeline` (gaps of any length, each one render second).
        render_frames: ``(F,)`` evenly spaced frames of the 30 fps render timeline that ``targets`` describe,
            from the last context frame to the last key (`GeneratedScene.render_frames`).
        camera: the view the frames were generated from (one camera).
        targets: `estimate` of those frames.
        config: mimicking settings.
        on_step: ``("mimic", fraction)`` over all solves; a raising ``on_step`` stops it.
        solves: gaps in each batched solve, in order, summing to the number of gaps (`solve_sizes`).
        on_settled: called after each solve (see above), in the solving thread.
        device: where the solves run (the job's GPU: the soft silhouette dominates mimicking); default the
            device of ``fill``. Inputs are moved there and the result comes back to ``fill``'s device.

    Returns:
        ``T`` frames at ``timeline.fps``: the context and keys of ``fill`` bit for bit, the gaps mimicked.
    """
    fps = timeline.fps
    r = render_frames.long().cpu()
    step = int(r[1] - r[0]) if r.numel() > 1 else 0
    r0 = timeline.render_context_end
    last = r0 + RENDER_FPS * timeline.num_gaps
    if r.numel() < 2 or step < 1 or RENDER_FPS % step or int(r[0]) != r0 or int(r[-1]) != last or bool((r.diff() != step).any()):
        raise InvalidInput("render_frames", f"must run evenly from render frame {r0} to {last}, got {r.tolist()}")
    if fill.num_frames != timeline.key_frames[-1] + 1:
        raise InvalidInput("fill", f"must end at the last keyframe {timeline.key_frames[-1]}, has {fill.num_frames} frames")
    sizes = list(solves) if solves is not None else [timeline.num_gaps]
    if sum(sizes) != timeline.num_gaps or min(sizes) < 1:
        raise InvalidInput("solves", f"must be positive gap counts summing to {timeline.num_gaps}, got {sizes}")
    clip_fps = RENDER_FPS / step  # video frames per render second (each gap is one render second)
    positions = timeline.request_positions(r)  # request frames of the video frames (fractional inside gaps)
    init = fill.sample(positions, clip_fps)
    known = ((r - r0) % RENDER_FPS == 0).to(init.rotations.device)
    # known video frames lie on whole request frames: take them from `fill` exactly, not through a SLERP at 0
    exact = positions[known.cpu()].round().long()
    rot, root = init.rotations.clone(), init.root_translation.clone()
    rot[known], root[known] = fill.rotations[exact], fill.root_translation[exact]
    init = Motion(clip_fps, rot, root, init.translations, fill.name)

    out_rot, out_root = fill.rotations.clone(), fill.root_translation.clone()
    tr = None if fill.translations is None else fill.translations.clone()
    per = RENDER_FPS // step  # video frames a gap
    starts = list(itertools.accumulate(sizes, initial=0))
    groups = [range(a, b) for a, b in itertools.pairwise(starts)]
    bounds = timeline.gap_bounds
    home = fill.rotations.device
    dev = torch.device(device) if device is not None else home
    skeleton, cam = character.skeleton.to(dev), camera.to(dev)
    mesh = None if character.mesh is None else character.mesh.to(dev)
    prior = None
    if config.prior_floor > 0:
        prior = rotation_prior(fill.rotations[: timeline.context_frames], config.prior_floor).to(dev)
    for i, gaps in enumerate(groups):
        lo, hi = per * gaps.start, per * gaps.stop  # the group's video frames, key to key
        part = init.slice(lo, hi + 1)

        def step_of(stage: str, fraction: float, message: str = "", *, i: int = i, **_: object) -> None:
            on_step(stage, (i + fraction) / len(groups), message)

        sub = MimicTargets(
            targets.joints_px[lo : hi + 1].to(dev),
            targets.depth[lo : hi + 1].to(dev),
            None if targets.mask is None else targets.mask[lo : hi + 1].to(dev),
            None if targets.confidence is None else targets.confidence.to(dev),
        )
        solved = mimic(skeleton, cam, part.to(dev), known[lo : hi + 1].to(dev), sub, config, step_of, mesh=mesh, prior=prior).to(home)
        # back to the request's frames inside these gaps (at the clip's own frame rate), keys exact
        a, b = bounds[gaps.start], bounds[gaps.stop]
        frames = torch.arange(a + 1, b, dtype=torch.float64)
        if frames.numel():
            at = (timeline.render_positions(frames) - r0) / step - lo  # frames of `solved`
            back = solved.sample(at, fps)
            out_rot[a + 1 : b] = back.rotations.to(out_rot.dtype)
            out_root[a + 1 : b] = back.root_translation.to(out_root.dtype)
            if tr is not None:  # joints are in topological order: joint 0 is the root
                tr[a + 1 : b, 0] = out_root[a + 1 : b]
        if on_settled is not None:
            snap = None if tr is None else tr.clone()  # a copy: the later solves write on into the timeline
            on_settled(range(a + 1, b + 1), Motion(fps, out_rot.clone(), out_root.clone(), snap, fill.name))
    return Motion(fps, out_rot, out_root, tr, fill.name)
