"""The render stage: the context and keyframe poses of a job rendered from the orbit views, with their labels.

`render_scene` renders once per job what every later stage reads: the ICAdapt clips and the sampler's known
frames (RGB), and the joint estimator's training labels (2D joints, joint depths, depth and mask images). The
context is resampled to the sampler's 30 fps timeline first; the cameras are fitted to context and keys together,
so that the keys stay in view. It also captions the scene (`anymole.video.caption`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from anymole.progress import OnStep, no_step
from anymole.render.cameras import Cameras
from anymole.render.gl import Style
from anymole.rig import Character, Keyframes, Motion
from anymole.video.caption import scene_caption
from anymole.video.config import VideoJobConfig
from anymole.video.sampler import RENDER_FPS
from anymole.video.timeline import VideoTimeline, resample_context

__all__ = ["SceneRenders", "render_scene"]


@dataclass(frozen=True, eq=False)
class SceneRenders:
    """A job's renders: ``N`` context frames at 30 fps (`VideoTimeline.render_context_frames`), then its ``K``
    keyframes, seen by ``V`` orbit cameras; everything on the CPU.

    Attributes:
        context: ``(V, 3, N, H, W)`` float in [0, 1], the context frames.
        keys: ``(V, 3, K, H, W)`` float in [0, 1], the keyframe poses.
        mask: ``(V, N + K, H, W)`` bool, True where the character covers the pixel.
        depth: ``(V, N + K, H, W)`` float32 metric depth of the character along the view axis (m), 0 elsewhere.
        joints_px: ``(V, N + K, J, 2)`` float32 projected joints (px, y down).
        joints_depth: ``(V, N + K, J)`` float32 metric joint depths (m).
        cameras: the ``V`` cameras.
        caption: the scene caption for ICAdapt and sampling.
        style: the floor and lights fitted to the context and keys (`anymole.render.views.scene_style`), to
            render other motion of the scene (a filled gap) in the same place; ``None``: not recorded.
    """

    context: torch.Tensor
    keys: torch.Tensor
    mask: torch.Tensor
    depth: torch.Tensor
    joints_px: torch.Tensor
    joints_depth: torch.Tensor
    cameras: Cameras
    caption: str
    style: Style | None = None

    @property
    def views(self) -> int:
        return int(self.context.shape[0])


def _poses(context30: Motion, keys: Keyframes) -> Motion:
    """The 30 fps context followed by the keyframe poses, as one clip."""
    key_rotations, key_root, key_translations = keys.poses.rotations, keys.poses.root_translation, keys.poses.translations
    dtype = context30.rotations.dtype
    translations = None
    if context30.translations is not None:
        held = context30.translations[-1:].expand(key_rotations.shape[0], -1, -1)
        keys_tr = held.clone() if key_translations is None else key_translations.to(dtype).clone()
        keys_tr[:, 0] = key_root.to(dtype)
        translations = torch.cat((context30.translations, keys_tr))
    return Motion(
        fps=float(RENDER_FPS),
        rotations=torch.cat((context30.rotations, key_rotations.to(dtype))),
        root_translation=torch.cat((context30.root_translation, key_root.to(context30.root_translation.dtype))),
        translations=translations,
        name=context30.name,
    )


def render_scene(
    character: Character,
    context: Motion,
    keys: Keyframes,
    timeline: VideoTimeline,
    cfg: VideoJobConfig,
    *,
    device: torch.device | str = "cpu",
    on_step: OnStep = no_step,
) -> SceneRenders:
    """Render the context (resampled to 30 fps) and the keyframe poses from ``cfg.views`` orbit views.

    Args:
        character: rig and mesh (a capsule body is rendered when it has no mesh).
        context: ``C`` known frames at ``context.fps``: ``rotations (C, J, 4)`` unit xyzw, root ``(C, 3)`` m.
        keys: the ``K`` keyframes: ``poses.rotations (K, J, 4)`` unit xyzw local rotations, ``poses.root_translation
            (K, 3)`` m, optional ``poses.translations (K, J, 3)`` m (with ``context.translations``).
        timeline: `plan_timeline` of this context and these keys.
        cfg: render size, views and caption model.
        device: the job's device; on a GPU, forward kinematics and skinning run there.
        on_step: ``on_step("render", fraction)`` at the start and end.
    """
    from anymole.render.views import (  # moderngl loads here
        character_mesh,
        pose_motion,
        render_motion,
        scene_style,
    )

    on_step("render", 0.0)
    context30 = resample_context(context, timeline)
    n = context30.num_frames
    poses = _poses(context30, keys)
    fk_device = device if torch.device(device).type == "cuda" else None
    # the style render_motion would fit, kept for renders of other motion in this scene (posing is cheap
    # beside rasterising)
    style = scene_style(pose_motion(character, poses, character_mesh(character), fk_device)[1])
    renders = render_motion(
        character, poses, views=cfg.views, width=cfg.width, height=cfg.height, style=style, with_depth=True,
        device=fk_device,
    )
    images = renders.images().permute(0, 2, 1, 3, 4)  # (V, F, 3, H, W) → (V, 3, F, H, W)
    context_images = images[:, :, :n].contiguous()
    assert renders.depth is not None and renders.joints_px is not None and renders.joints_depth is not None
    scene = SceneRenders(
        context=context_images,
        keys=images[:, :, n:].contiguous(),
        mask=torch.from_numpy(renders.mask),
        depth=torch.from_numpy(renders.depth),
        joints_px=renders.joints_px,
        joints_depth=renders.joints_depth,
        cameras=renders.cameras,
        caption=scene_caption(character.name, context_images[0], cfg.caption_model),
        style=style,
    )
    on_step("render", 1.0)
    return scene
