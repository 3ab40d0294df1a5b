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
from anymole.estimator import EstimatorConfig
from anymole.metrics import evaluate
from anymole.mimic import MimicConfig
from anymole.pipeline.fromvideo import background, estimate, estimator_config, mimic_gaps, train_estimator
from anymole.progress import OnStep, no_step
from anymole.render.views import pose_motion, render_motion, scene_style
from anymole.rig import Character, Keyframes, Motion
from anymole.video.config import VideoJobConfig
from anymole.video.sampler import RENDER_FPS
from anymole.video.scene import render_scene
from anymole.video.timeline import plan_timeline

__all__ = ["ORACLE_RENDER", "OracleResult", "oracle_eval"]

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

    Raises:
        InvalidInput: naming ``clip``, ``context`` or ``keyframes``.
    """
    if clip not in character.motions:
        raise InvalidInput("clip", f"{clip!r} is not a clip of {character.name}; it has {sorted(character.motions)}")
    if preset not in ORACLE_RENDER:
        raise InvalidInput("preset", f"expected one of {tuple(ORACLE_RENDER)}, got {preset!r}")
    gt = character.motions[clip]
    a, b = context
    if not 0 <= a < b <= gt.num_frames:
        raise InvalidInput("context", f"{a}:{b} must be a non-empty range of the clip's {gt.num_frames} frames")
    if not keys or max(keys) >= gt.num_frames:
        raise InvalidInput("keyframes", f"{list(keys)} must be frames of the clip's {gt.num_frames} frames")
    est_cfg = estimator or estimator_config(preset, None)  # no weights given: the conv backbone
    mim_cfg = mimicking or MimicConfig.preset(preset)
    width, height, views = render or ORACLE_RENDER[preset]
    req_keys = [k - a for k in keys]
    timeline = plan_timeline(b - a, gt.fps, req_keys)
    total = req_keys[-1] + 1
    truth = gt.slice(a, a + total)  # the request's timeline, ground truth
    ctx = truth.slice(0, b - a)
    cfg = VideoJobConfig(width=width, height=height, views=views, caption_model=None)
    times: dict[str, float] = {}

    t = time.perf_counter()
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
    frames = gap.images()[0].transpose(0, 1)  # (3, F, H, W)
    assert gap.joints_px is not None
    times["render"] = time.perf_counter() - t

    t = time.perf_counter()
    est = train_estimator(renders, est_cfg, on_step)
    times["estimator"] = time.perf_counter() - t

    t = time.perf_counter()
    n = renders.context.shape[2]
    targets = estimate(est, frames, background(renders.context[0], renders.mask[0, :n]))
    unknown = (render_frames - r0) % RENDER_FPS != 0
    est_px = float((targets.joints_px - gap.joints_px[0]).norm(dim=-1)[unknown].mean())
    fill = inbetween(ctx, keyed, total, root="cubic")
    result = mimic_gaps(character, fill, timeline, render_frames, renders.cameras.select(0), targets, mim_cfg, on_step)
    times["mimic"] = time.perf_counter() - t

    scored = slice(b - a, total - 1)  # the gap after the context, up to the last key (excluded)

    def score(pred: Motion) -> dict[str, dict[str, float]]:
        sk = character.skeleton
        return {s: evaluate(sk, pred, truth, scored, space=s) for s in ("global", "local")}

    return OracleResult(
        anymole=score(result),
        interp=score(fill),
        backbone="+".join(est_cfg.backbones),
        estimator_px=est_px,
        frames=(b, a + total - 1),
        image_size=(width, height),
        motion=result,
        timings=times,
    )
