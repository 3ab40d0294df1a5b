"""Oracle evaluation of the motion stages: the true gap rendered as if it were the generated video.

`oracle_eval` renders a clip's context and keys as a job does (`render_scene`), renders the ground-truth
motion over the gap at the frames the sampler would generate (15 fps, the last context frame to the last key,
same camera and floor), trains the estimator on the context renders (keys at weight 3), estimates on the gap
renders, mimics, and scores the result beside the ``interp`` fill of the same gap. It needs no diffusion
weights: what it measures is the estimator and mimicking alone, an upper bound of the whole pipeline.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from anymole.baseline import inbetween
from anymole.errors import InvalidInput
from anymole.estimator import EstimatorConfig, SceneEstimator
from anymole.metrics import evaluate
from anymole.mimic import MimicConfig, MimicTargets
from anymole.pipeline.fromvideo import (
    background,
    estimate,
    estimator_config,
    gap_poses,
    mimic_gaps,
    relative_targets,
    train_estimator,
)
from anymole.progress import OnStep, no_step
from anymole.render.views import pose_motion, render_motion, scene_style
from anymole.rig import Character, Keyframes, Motion
from anymole.video.config import VideoJobConfig
from anymole.video.sampler import RENDER_FPS
from anymole.video.scene import SceneRenders, render_scene
from anymole.video.timeline import VideoTimeline, plan_timeline

__all__ = ["ORACLE_RENDER", "OracleResult", "OracleScene", "oracle_eval", "oracle_scene"]

#: render ``(width, height, views)`` per preset: draft is CPU-sized (the estimator's tests use 128×80)
ORACLE_RENDER: dict[str, tuple[int, int, int]] = {"draft": (128, 80, 4), "fast": (256, 160, 4), "quality": (512, 320, 4)}
#: the sampler's frame step on the 30 fps render timeline (it generates 15 fps frames)
_VIDEO_STEP = 2


@dataclass(frozen=True)
class OracleResult:
    """What `oracle_eval` measured.

    Attributes:
        anymole, interp: per method, ``{"global": metrics, "local": metrics}`` (`anymole.metrics.evaluate`)
            on the scored frames.
        backbone: the estimator's backbones, joined by ``+``.
        estimator_px: mean 2D joint error (px) of the estimator on the generated (unknown) gap frames.
        frames: ``(a, b)`` clip frames scored (the gap: after the context, up to the last key, excluded).
        image_size: ``(width, height)`` of the renders (the unit of ``estimator_px``).
        motion: the ``anymole`` result, clip frames ``context[0] .. last key``.
        timings: seconds per stage.
    """

    anymole: dict[str, dict[str, float]]
    interp: dict[str, dict[str, float]]
    backbone: str
    estimator_px: float
    frames: tuple[int, int]
    image_size: tuple[int, int]
    motion: Motion
    timings: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {
            "anymole": self.anymole,
            "interp": self.interp,
            "backbone": self.backbone,
            "estimator_px": self.estimator_px,
            "frames": list(self.frames),
            "image_size": list(self.image_size),
            "timings": self.timings,
        }


@dataclass(frozen=True, eq=False)
class OracleScene:
    """A clip's context and keys rendered as a job renders them, and its true gap as the "generated video".

    Attributes:
        renders: `render_scene`'s output (the estimator's training set).
        timeline: the request's `plan_timeline`.
        truth: the ground truth on the request's timeline (context frame 0 .. last key), ``T`` frames.
        fill: the ``interp`` fill of the same request (SLERP, cubic root): mimicking's start and the baseline.
        render_frames: ``(F,)`` 30 fps render frames of the generated video (15 fps, last context frame to last key).
        frames: ``(3, F, H, W)`` the true gap rendered from view 0 at ``render_frames``.
        joints_px: ``(F, J, 2)`` the true 2D joints of ``frames`` (px).
        joints_depth: ``(F, J)`` their true depths (m).
        unknown: ``(F,)`` bool, the frames the estimator and mimicking must recover (not context or key).
    """

    renders: SceneRenders
    timeline: VideoTimeline
    truth: Motion
    fill: Motion
    render_frames: torch.Tensor
    frames: torch.Tensor
    joints_px: torch.Tensor
    joints_depth: torch.Tensor
    unknown: torch.Tensor

    @property
    def image_size(self) -> tuple[int, int]:
        """``(width, height)`` of the renders."""
        return int(self.frames.shape[-1]), int(self.frames.shape[-2])

    def estimate(self, estimator: SceneEstimator) -> MimicTargets:
        """The estimator's joints on ``frames`` and the character's masks against the context's background."""
        n = self.renders.context.shape[2]
        return estimate(estimator, self.frames, background(self.renders.context[0], self.renders.mask[0, :n]))

    def relative(
        self, estimator: SceneEstimator, targets: MimicTargets, character: Character, config: MimicConfig
    ) -> MimicTargets:
        """`relative_targets` of the video's ``targets`` against ``fill`` (view 0), with ``config``'s scales."""
        cam = self.renders.cameras.select(0)
        return relative_targets(estimator, targets, character, self.fill, self.timeline, self.render_frames, cam,
                                config.fill_trust_px, config.fill_deadband_px, config.confidence_px)  # fmt: skip

    def estimator_px(self, targets: MimicTargets) -> float:
        """Mean 2D error (px) of ``targets``' joints on the unknown frames."""
        return float((targets.joints_px.cpu() - self.joints_px).norm(dim=-1)[self.unknown].mean())

    def score(self, character: Character, motion: Motion) -> dict[str, dict[str, float]]:
        """`evaluate` of ``motion`` (the request's timeline) against ``truth`` on the gap frames after the
        context up to the last key (excluded), global and local rotations."""
        scored = slice(self.timeline.context_frames, self.truth.num_frames - 1)
        return {s: evaluate(character.skeleton, motion, self.truth, scored, space=s) for s in ("global", "local")}

    def exact_targets(self, targets: MimicTargets) -> MimicTargets:
        """``targets`` with the true joints and depths: a perfect estimator (mimicking's own limit)."""
        return MimicTargets(self.joints_px.clone(), self.joints_depth.clone(), targets.mask)

    def mimic(
        self,
        character: Character,
        targets: MimicTargets,
        config: MimicConfig,
        on_step: OnStep = no_step,
        device: torch.device | str | None = None,
    ) -> Motion:
        """`mimic_gaps` of ``targets`` from ``fill`` (solved on ``device``, the fill's by default): the request's
        timeline, context and keys exact."""
        cam = self.renders.cameras.select(0)
        return mimic_gaps(character, self.fill, self.timeline, self.render_frames, cam, targets, config, on_step,
                          device=device)  # fmt: skip


def oracle_scene(
    character: Character,
    clip: str,
    context: tuple[int, int],
    keys: Sequence[int],
    render: tuple[int, int, int],
    on_step: OnStep = no_step,
) -> OracleScene:
    """Render ``character.motions[clip]``'s context and keys as a job does and its true gap as the video.

    Args:
        render: ``(width, height, views)``.

    Raises:
        InvalidInput: naming ``clip``, ``context`` or ``keyframes``.
    """
    if clip not in character.motions:
        raise InvalidInput("clip", f"{clip!r} is not a clip of {character.name}; it has {sorted(character.motions)}")
    gt = character.motions[clip]
    a, b = context
    if not 0 <= a < b <= gt.num_frames:
        raise InvalidInput("context", f"{a}:{b} must be a non-empty range of the clip's {gt.num_frames} frames")
    if not keys or max(keys) >= gt.num_frames:
        raise InvalidInput("keyframes", f"{list(keys)} must be frames of the clip's {gt.num_frames} frames")
    width, height, views = render
    req_keys = [k - a for k in keys]
    timeline = plan_timeline(b - a, gt.fps, req_keys)
    total = req_keys[-1] + 1
    truth = gt.slice(a, a + total)  # the request's timeline, ground truth
    ctx = truth.slice(0, b - a)
    cfg = VideoJobConfig(width=width, height=height, views=views, caption_model=None)
    keyed = Keyframes.of_clip(truth, req_keys)
    renders = render_scene(character, ctx, keyed, timeline, cfg, on_step=on_step)
    # the "generated video": the true motion at the sampler's 15 fps frames, same camera, same floor
    r0 = timeline.render_context_end
    render_frames = torch.arange(r0, r0 + RENDER_FPS * timeline.num_gaps + 1, _VIDEO_STEP)
    shown = timeline.render_times()  # context frames as render_scene posed them, then the keys
    posed = truth.sample(torch.cat((shown, torch.tensor(req_keys, dtype=torch.float64))), float(RENDER_FPS))
    _, verts, _ = pose_motion(character, posed)
    gap_pos = timeline.request_positions(render_frames)
    gap = render_motion(character, truth.sample(gap_pos, RENDER_FPS / _VIDEO_STEP),
                        cameras=renders.cameras.select(0), style=scene_style(verts))  # fmt: skip
    assert gap.joints_px is not None and gap.joints_depth is not None
    return OracleScene(
        renders=renders,
        timeline=timeline,
        truth=truth,
        fill=inbetween(ctx, keyed, total, root="cubic"),
        render_frames=render_frames,
        frames=gap.images()[0].transpose(0, 1),  # (3, F, H, W)
        joints_px=gap.joints_px[0].float(),
        joints_depth=gap.joints_depth[0].float(),
        unknown=(render_frames - r0) % RENDER_FPS != 0,
    )


def oracle_eval(
    character: Character,
    clip: str,
    context: tuple[int, int],
    keys: Sequence[int],
    preset: str = "draft",
    *,
    estimator: EstimatorConfig | None = None,
    mimicking: MimicConfig | None = None,
    render: tuple[int, int, int] | None = None,
    on_step: OnStep = no_step,
    device: torch.device | str = "cpu",
) -> OracleResult:
    """Evaluate estimator + mimicking on the true gap of ``character.motions[clip]``.

    Args:
        character: the asset.
        clip: the ground-truth clip's name.
        context: clip frames ``[a, b)`` given as context (the video stage's 2 s at least).
        keys: clip frames of the keyframes after the context, at most `MAX_GAP_SECONDS` apart (any spacing).
        preset: ``draft``, ``fast`` or ``quality``: estimator, mimicking and render size together.
        estimator, mimicking, render: overrides of the preset's settings (``estimator``: default `estimator_config`
            without weights, the conv backbone in place of ViTs; ``render``: width, height, views).
        on_step: progress of the stages (``render``, ``estimator``, ``mimic``).
        device: where the estimator trains and predicts and mimicking solves.

    Raises:
        InvalidInput: naming ``clip``, ``context`` or ``keyframes``.
    """
    if preset not in ORACLE_RENDER:
        raise InvalidInput("preset", f"expected one of {tuple(ORACLE_RENDER)}, got {preset!r}")
    est_cfg = estimator or estimator_config(preset, None)  # no weights given: the conv backbone
    mim_cfg = mimicking or MimicConfig.preset(preset)
    times: dict[str, float] = {}
    t = time.perf_counter()
    scene = oracle_scene(character, clip, context, keys, render or ORACLE_RENDER[preset], on_step)
    times["render"] = time.perf_counter() - t

    t = time.perf_counter()
    extra = None
    if est_cfg.pose_copies:
        extra = gap_poses(character, scene.fill, scene.timeline, scene.renders.cameras, est_cfg.pose_copies,
                          est_cfg.pose_noise_deg, est_cfg.seed)  # fmt: skip
    est = train_estimator(scene.renders, est_cfg, on_step, device=device, extra=extra)
    times["estimator"] = time.perf_counter() - t

    t = time.perf_counter()
    targets = scene.estimate(est)
    est_px = scene.estimator_px(targets)
    targets = scene.relative(est, targets, character, mim_cfg)
    result = scene.mimic(character, targets, mim_cfg, on_step, device=device)
    times["mimic"] = time.perf_counter() - t
    a, b = context
    return OracleResult(
        anymole=scene.score(character, result),
        interp=scene.score(character, scene.fill),
        backbone="+".join(est_cfg.backbones),
        estimator_px=est_px,
        frames=(b, a + scene.truth.num_frames - 1),
        image_size=scene.image_size,
        motion=result,
        timings=times,
    )
