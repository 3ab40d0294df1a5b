"""`MimicConfig`: loss weights, optimiser and post-processing of motion video mimicking, with presets.

The defaults are the reference's (anymole_reference_code.md §6): joint loss 1, image loss 50, root
regulariser 7000, rotation regulariser 30000; Adam with a triangular2 cyclic rate between 1e-5 and 2e-3
(20 steps up), grad-norm clip 1, 100 iterations a solve, back to the best iterate when the loss exceeds
twice the best or after 40 iterations without improvement; a Gaussian of σ = 1 frame afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from anymole.errors import InvalidInput

__all__ = ["REFERENCE_HEIGHT", "SOLVED", "MimicConfig"]

#: Image height (px) of the reference's renders: the joint loss is measured in pixels of this size, so the
#: weights keep their balance at any render size.
REFERENCE_HEIGHT = 320

#: What the presets change from the reference (measured in docs/quality.md, "Mimicking solved"): each phase solved
#: by Levenberg–Marquardt, the rotation regulariser shaped by the context's motion (`anymole.mimic.prior`) and split
#: between the start (the neighbour's solution, 30) and the fill (300: it keeps a near-static gap at the fill), the
#: root's pull a hundredth of the reference's (it held a walk's root 10 cm off its joints), joints the
#: estimator misreads on renders of the fill weighted down (4 px), and the silhouette at 6× the reference's weight
#: (it sees what the estimator misses: the Fox's tail, a walker's legs; docs/quality.md, "The silhouette").
SOLVED: Mapping[str, Any] = MappingProxyType({
    "solver": "lm",
    "steps": 10,
    "prior_floor": 0.01,
    "w_rot": 30.0,
    "w_fill": 300.0,
    "w_root": 70.0,
    "confidence_px": 4.0,
    "w_silhouette": 300.0,
})  # fmt: skip


@dataclass(frozen=True)
class MimicConfig:
    """Settings of `mimic`.

    Attributes:
        steps: optimiser iterations of each solve (reference 100; Levenberg–Marquardt steps with ``solver="lm"``).
        lr: peak learning rate of the cyclic schedule (2e-3).
        base_lr: its floor (1e-5).
        cycle_up: iterations from floor to peak (20); the peak halves every cycle (``triangular2``).
        grad_clip: max gradient norm, per frame of the batch (1.0).
        w_joints: weight of the joint loss: MSE of projected joints (x, y) and depths against the estimator,
            in pixels of a `REFERENCE_HEIGHT` image (depth converted at the joints' mean depth).
        w_depth: share of the depth in that loss (1: depth counts like x and y; 0: ignore the estimator's depth).
        w_silhouette: weight of the MSE between the soft silhouette and the character mask (the reference's
            image loss, 50).
        w_root: weight of the MSE (m²) between the root and its linear interpolation between the gap's keys.
        w_rot: weight of the MSE between the quaternions and their initialisation. The reference's 30000 suits
            its use, small steps from the neighbouring frame's solution; how strongly it holds a solve near its
            start is measured in docs/quality.md ("Mimicking's weights").
        fill_trust_px: scale (px of a `REFERENCE_HEIGHT` image) of `anymole.pipeline.fromvideo.relative_targets`,
            which corrects the estimator's joints by its own error on a render of the first guess where the video
            agrees with it (0: the plain estimates, as the reference).
        fill_deadband_px: its soft threshold on the estimator's 2D change (px of a `REFERENCE_HEIGHT` image).
        reset_ratio: go back to the best iterate when the loss exceeds this multiple of the best (2).
        patience: ... or after this many iterations without improvement (40).
        silhouette_pixels: size of the soft render: the video's frame resampled to about this many pixels (never
            above its own size), whatever the frame's size; the render costs pixels × triangles.
        sigma_px: edge softness of the soft silhouette, in its own pixels.
        smooth_sigma: Gaussian filter of the solved frames over time (frames; 0 = none). Known frames stay exact.
        prior_floor: shape the rotation regulariser by the context's motion (`anymole.mimic.prior.rotation_prior`
            with this floor; 0: the reference's isotropic MSE).
        solver: ``"adam"`` (the reference's loop: ``steps``, ``lr``, resets) or ``"lm"`` (Levenberg–Marquardt,
            `anymole.mimic.gauss_newton`: ``steps`` steps from damping ``lm_damping``).
        lm_damping: its initial damping (relative to the normal equations' diagonal).
        w_fill: weight of a second rotation regulariser that pulls toward the first guess (the SLERP fill) itself,
            not toward the solved neighbour's step (``lm`` only).
        confidence_px: scale (px of a `REFERENCE_HEIGHT` image) of the joints' confidence: a joint that the
            estimator misses by ``e`` on renders of the fill weighs ``1 / (1 + (e / confidence_px)²)`` in 2D and
            ``exp(−(e / confidence_px)²)`` in depth, its depth miss taken in pixels at the mean depth
            (`anymole.pipeline.fromvideo.relative_targets`; 0: all joints weigh 1; ``lm`` only).
    """

    steps: int = 100
    lr: float = 2e-3
    base_lr: float = 1e-5
    cycle_up: int = 20
    grad_clip: float = 1.0
    w_joints: float = 1.0
    w_depth: float = 1.0
    w_silhouette: float = 50.0
    w_root: float = 7000.0
    w_rot: float = 30000.0
    fill_trust_px: float = 6.0
    fill_deadband_px: float = 2.0
    reset_ratio: float = 2.0
    patience: int = 40
    silhouette_pixels: int = 128 * 80
    sigma_px: float = 1.0
    smooth_sigma: float = 1.0
    prior_floor: float = 0.0
    solver: str = "adam"
    lm_damping: float = 1e-3
    w_fill: float = 0.0
    confidence_px: float = 0.0

    def __post_init__(self) -> None:
        for name in ("steps", "cycle_up", "patience"):
            if getattr(self, name) < 1:
                raise InvalidInput(name, f"must be ≥ 1, got {getattr(self, name)}")
        if not 0 < self.base_lr <= self.lr:
            raise InvalidInput("lr", f"need 0 < base_lr <= lr, got {self.base_lr}, {self.lr}")
        for name in ("w_joints", "w_depth", "w_silhouette", "w_root", "w_rot", "smooth_sigma", "fill_trust_px", "fill_deadband_px", "prior_floor",
                     "w_fill", "confidence_px"):
            if getattr(self, name) < 0:
                raise InvalidInput(name, f"must be ≥ 0, got {getattr(self, name)}")
        if self.reset_ratio <= 1 or self.grad_clip <= 0 or self.sigma_px <= 0:
            raise InvalidInput("reset_ratio", "need reset_ratio > 1, grad_clip > 0 and sigma_px > 0")
        if self.solver not in ("adam", "lm"):
            raise InvalidInput("solver", f"expected 'adam' or 'lm', got {self.solver!r}")
        if self.lm_damping <= 0:
            raise InvalidInput("lm_damping", f"must be > 0, got {self.lm_damping}")
        if self.silhouette_pixels < 64:
            raise InvalidInput("silhouette_pixels", f"must be ≥ 64 (8 × 8), got {self.silhouette_pixels}")

    @classmethod
    def draft(cls, **overrides: Any) -> MimicConfig:
        """`SOLVED`, the silhouette drawn at 128 × 80 pixels (a quarter of a 512 × 320 frame's side)."""
        return replace(cls(**SOLVED), **overrides)

    @classmethod
    def fast(cls, **overrides: Any) -> MimicConfig:
        """`SOLVED`, as `draft` (the presets differ in their estimators)."""
        return replace(cls(**SOLVED), **overrides)

    @classmethod
    def quality(cls, **overrides: Any) -> MimicConfig:
        """`SOLVED` with 15 iterations a solve, the silhouette at 256 × 160 pixels (half a 512 × 320 frame's side)."""
        return replace(cls(**{**SOLVED, "steps": 15}, silhouette_pixels=256 * 160), **overrides)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> MimicConfig:
        """`draft`, `fast` or `quality` by name."""
        presets = {"draft": cls.draft, "fast": cls.fast, "quality": cls.quality}
        if name not in presets:
            raise InvalidInput("preset", f"expected one of {tuple(presets)}, got {name!r}")
        return presets[name](**overrides)
