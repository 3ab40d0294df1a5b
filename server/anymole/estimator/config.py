"""`EstimatorConfig`: every setting of the scene-specific joint estimator, with three presets.

The reference trainer (anymole_reference_code.md §5) is the `quality` preset: frozen DINOv2-B/14-reg +
FiT3D-S/14-reg features on a grid of 1/8 of the render size, a 512-channel merger, heatmaps at full
resolution, Adam 3e-4 with a one-cycle schedule, batch 32, 3500 steps. Its features were recomputed every
step; ours are encoded once (`anymole.estimator.fit`), which is what lets `fast` and `quality` train in
seconds to a minute on a GPU instead of hours.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from anymole.errors import InvalidInput

__all__ = ["BACKBONES", "EstimatorConfig"]

#: Backbone names `EstimatorConfig.backbones` accepts (see `anymole.estimator.backbones`).
BACKBONES = ("conv", "dinov2_vitb14_reg", "fit3d_vits14_reg")


@dataclass(frozen=True)
class EstimatorConfig:
    """Settings of `fit_estimator`; the defaults are the CPU-sized `draft` preset.

    Attributes:
        backbones: feature extractors whose outputs the merger concatenates: ``("conv",)`` (a small CNN
            trained per scene from scratch, no weights needed) or frozen ViTs ``"dinov2_vitb14_reg"`` (2D)
            and ``"fit3d_vits14_reg"`` (3D-aware), the paper's pair.
        feature_stride: image pixels per feature cell (8: the reference's 40×64 grid of a 320×512 render).
        conv_channels: widths of the conv backbone's three stride-2 stages.
        merge_channels: channels of the merged feature map F (reference 512).
        decoder_channels: channels inside the heatmap decoder.
        heatmap_upsamples: ×2 upsamplings from the feature grid to the heatmaps (reference 3: full size).
        joint_embed: width of the learned joint-index embedding fed to the depth MLP.
        depth_hidden: hidden widths of the depth MLP (reference 512, 128, 32).
        depth_weight: weight of the depth term (depth in units of its training-set std) against the 2D term
            (joint error in feature cells).
        steps: optimiser steps (reference 3600; the paper says 3500).
        batch_size: samples per step (reference 32).
        lr: peak learning rate of the one-cycle schedule (reference 3e-4).
        warmup: fraction of the steps spent warming up (reference 0.2).
        final_div: ratio of the peak to the final learning rate (reference 1e3).
        grad_clip: max global grad norm (reference 4).
        max_shift: largest random shift of the feature grid, in cells, per axis (the reference shifts 512-px-wide
            images by up to ±30 px, about ±4 cells at stride 8: the `fast`/`quality` value; ±1 cell is the same
            share of the draft's 128-px renders, and measured best there: 4.2 px on the gap of tests/estimator
            against 4.8 px at ±2, 5.6 px at ±4 and 4.3 px without shifts). Shifts are whole cells so that cached
            features shift with the image exactly (a ViT's patch grid moves with a patch-aligned shift).
        jitter_copies: colour-jittered copies of every image encoded once beside the original (0: none).
        encode_batch: images per backbone call while encoding.
        pose_copies: poses per gap frame that the pipeline renders beside the context as extra training samples
            (`anymole.pipeline.fromvideo.gap_poses`: the gaps' SLERP fill, then ``pose_copies − 1`` randomly
            perturbed copies of it); 0: the paper's training set, context and keys only.
        pose_noise_deg: std (degrees, per axis) of the perturbation of every local rotation in those copies.
        frame_margin: read a window around the character instead of the whole image
            (`anymole.estimator.framing`): its side is the character's largest extent over the training images
            times this margin; 0: the whole image (as where the window would enlarge the character less than
            `anymole.estimator.framing.MIN_ZOOM` times).
        input_pixels: with a window, the pixels it is resampled to (the estimator's cost): ``h' · w'`` about
            this, each side a multiple of ``feature_stride``.
        autocast_dtype: ``"bf16"`` (CUDA only: the frozen backbones' encoding, cached in bf16, and the heads'
            convolutions and linears; soft-argmax and the losses stay float32) or ``"fp32"``.
        seed: RNG seed for initialisation, batches and augmentation.
        weights: local copies of the frozen backbones' published weights, one per `frozen` entry in that order
            (a transformers model folder or a torch.hub/timm file: `build_backbone`); empty: none given.
    """

    backbones: tuple[str, ...] = ("conv",)
    feature_stride: int = 8
    conv_channels: tuple[int, int, int] = (24, 48, 64)
    merge_channels: int = 64
    decoder_channels: int = 32
    heatmap_upsamples: int = 1
    joint_embed: int = 16
    depth_hidden: tuple[int, ...] = (64, 32)
    depth_weight: float = 1.0
    steps: int = 300
    batch_size: int = 16
    lr: float = 3e-3
    warmup: float = 0.2
    final_div: float = 1e3
    grad_clip: float = 4.0
    max_shift: int = 1
    jitter_copies: int = 0
    encode_batch: int = 16
    pose_copies: int = 0
    pose_noise_deg: float = 10.0
    frame_margin: float = 1.25
    input_pixels: int = 128 * 80
    autocast_dtype: str = "bf16"
    seed: int = 0
    weights: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.backbones:
            raise InvalidInput("backbones", "name at least one backbone")
        for b in self.backbones:
            if b not in BACKBONES:
                raise InvalidInput("backbones", f"unknown backbone {b!r}; expected one of {BACKBONES}")
        if len(set(self.backbones)) != len(self.backbones):
            raise InvalidInput("backbones", f"lists a backbone twice: {self.backbones}")
        for name in ("feature_stride", "merge_channels", "decoder_channels", "steps", "batch_size", "encode_batch"):
            if getattr(self, name) < 1:
                raise InvalidInput(name, f"must be ≥ 1, got {getattr(self, name)}")
        if self.feature_stride != 8 and "conv" in self.backbones:
            raise InvalidInput("feature_stride", "the conv backbone has three stride-2 stages: stride 8 only")
        for name in ("heatmap_upsamples", "max_shift", "jitter_copies", "joint_embed", "pose_copies", "pose_noise_deg"):
            if getattr(self, name) < 0:
                raise InvalidInput(name, f"must be ≥ 0, got {getattr(self, name)}")
        if self.lr <= 0 or self.final_div < 1 or not 0 < self.warmup < 1:
            raise InvalidInput("lr", f"need lr > 0, final_div ≥ 1, 0 < warmup < 1; got {self.lr}, "
                               f"{self.final_div}, {self.warmup}")  # fmt: skip
        if self.frame_margin and (self.frame_margin < 1 or self.input_pixels < self.feature_stride**2):
            raise InvalidInput("frame_margin", f"must be 0 (no window) or ≥ 1 with input_pixels ≥ "
                               f"{self.feature_stride**2}; got {self.frame_margin}, {self.input_pixels}")  # fmt: skip
        if self.weights and len(self.weights) != len(self.frozen):
            raise InvalidInput("weights", f"need one path per frozen backbone {self.frozen}, got {len(self.weights)}")
        if self.autocast_dtype not in ("bf16", "fp32"):
            raise InvalidInput("autocast_dtype", f"expected 'bf16' or 'fp32', got {self.autocast_dtype!r}")

    @property
    def frozen(self) -> tuple[str, ...]:
        """The backbones whose features are encoded once (all but ``"conv"``)."""
        return tuple(b for b in self.backbones if b != "conv")

    @classmethod
    def draft(cls, **overrides: Any) -> EstimatorConfig:
        """CPU-sized: the conv backbone trained from scratch, small heads, 300 steps, a window around the character
        resampled to 128×80 pixels (the defaults)."""
        return cls(**overrides)

    @classmethod
    def fast(cls, **overrides: Any) -> EstimatorConfig:
        """The paper's frozen ViT pair with a half-width head and a third of the steps, on cached features."""
        return replace(
            cls(
                backbones=("dinov2_vitb14_reg", "fit3d_vits14_reg"),
                merge_channels=256,
                decoder_channels=128,
                heatmap_upsamples=2,
                joint_embed=32,
                depth_hidden=(256, 64, 32),
                steps=1200,
                batch_size=32,
                lr=3e-4,
                max_shift=4,
                jitter_copies=1,
                encode_batch=32,
                frame_margin=0.0,
            ),
            **overrides,
        )

    @classmethod
    def quality(cls, **overrides: Any) -> EstimatorConfig:
        """The reference's architecture and schedule (§5): 512-channel merger, full-size heatmaps, 3500 steps."""
        return replace(
            cls(
                backbones=("dinov2_vitb14_reg", "fit3d_vits14_reg"),
                merge_channels=512,
                decoder_channels=256,
                heatmap_upsamples=3,
                joint_embed=64,
                depth_hidden=(512, 128, 32),
                steps=3500,
                batch_size=32,
                lr=3e-4,
                max_shift=4,
                jitter_copies=2,
                encode_batch=32,
                frame_margin=0.0,
            ),
            **overrides,
        )

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> EstimatorConfig:
        """`draft`, `fast` or `quality` by name."""
        presets = {"draft": cls.draft, "fast": cls.fast, "quality": cls.quality}
        if name not in presets:
            raise InvalidInput("preset", f"expected one of {tuple(presets)}, got {name!r}")
        return presets[name](**overrides)
