"""`VideoSettings`: how a server runs its video prior (``anymole serve --video-prior …``), read by the model
pool (what to load, whether to warm up), by the ``video`` method (render size, step counts, cache) and by the
``anymole`` method (the estimator's and mimicking's step counts)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from anymole.errors import InvalidInput

__all__ = ["TINY_PRIOR", "VideoSettings"]

#: `VideoSettings.prior` value for DynamiCrafter's architecture at tiny size with random weights.
TINY_PRIOR = "tiny"
# The checkpoint's name in a folder of `anymole models pull` (anymole.hub.MODELS["dynamicrafter-512-interp"]).
_CHECKPOINT_NAME = "model.ckpt"


@dataclass(frozen=True)
class VideoSettings:
    """How a server runs the ``video`` method (``anymole serve --video-prior …``).

    Attributes:
        prior: ``None`` (the method is unavailable), ``"tiny"`` (DynamiCrafter's architecture at tiny size
            with random weights, seed 0: the offline demo and tests; its videos are noise), or the path of a
            DynamiCrafter 512 interpolation checkpoint (`anymole.video.weights.load_pretrained`, CLIP tokenizer
            files beside it) or of the folder holding it as ``model.ckpt``.
        icadapt_steps: ICAdapt optimiser steps for every preset (``None``: the presets' 500).
        ddim_steps: DDIM steps per sampler window (``None``: 50).
        width, height: render size in px, multiples of 8 (``None``: the prior's training size, 512 × 320; 64 × 64
            for ``tiny``).
        views: orbit views rendered for ICAdapt (4).
        cache_dir: where ICAdapt results are cached per (model, character, context, settings); ``None``: no
            cache (`anymole serve` puts it in the data directory).
        warmup: when the server starts, load the prior on every device and, on CUDA devices, compile the
            ``turbo`` preset there (`anymole.video.generate.warm_up`), so the first jobs do not pay for either;
            jobs that arrive meanwhile wait for it.
        estimator_steps: joint-estimator training steps of every ``anymole`` preset (``None``: the preset's,
            `anymole.estimator.EstimatorConfig`).
        mimic_steps: mimicking iterations per solve of every ``anymole`` preset (``None``: the preset's,
            `anymole.mimic.MimicConfig`).
        estimator_weights: a models folder holding the joint estimator's ViT weights as ``anymole models pull
            estimator`` leaves them (`anymole.hub.estimator_weights`): the ``fast`` and ``quality`` presets then
            use the paper's frozen DINOv2-reg ViT-B/14 + FiT3D ViT-S/14 pair; ``None``: every preset trains the
            conv backbone from scratch.
    """

    prior: str | None = None
    icadapt_steps: int | None = None
    ddim_steps: int | None = None
    width: int | None = None
    height: int | None = None
    views: int = 4
    cache_dir: Path | None = None
    warmup: bool = False
    estimator_steps: int | None = None
    mimic_steps: int | None = None
    estimator_weights: Path | None = None

    def __post_init__(self) -> None:
        for name in ("icadapt_steps", "ddim_steps", "width", "height", "estimator_steps", "mimic_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InvalidInput(name, f"must be >= 1, got {value}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and value % 8:
                raise InvalidInput(name, f"must be a multiple of 8 (the VAE's factor), got {value}")
        if self.views < 1:
            raise InvalidInput("views", f"must be >= 1, got {self.views}")

    @property
    def tiny(self) -> bool:
        return self.prior == TINY_PRIOR

    def checkpoint(self) -> Path | None:
        """The checkpoint file ``prior`` names: the path itself, or ``model.ckpt`` inside a folder (the one
        ``anymole models pull`` fills); ``None`` for no prior or ``tiny``."""
        if self.prior is None or self.tiny:
            return None
        path = Path(self.prior).expanduser()
        return path / _CHECKPOINT_NAME if path.is_dir() else path

    def unavailable_reason(self) -> str:
        """Why the ``video`` method cannot run with these settings, and how to enable it; empty if it can."""
        enable = (
            "start the server with `anymole serve --video-prior PATH` (a DynamiCrafter 512 interp checkpoint: "
            "`anymole models pull dynamicrafter-512-interp` fetches it) or `--video-prior tiny` (random weights, "
            "a dry run whose videos are noise)"
        )
        if self.prior is None:
            return f"no video prior is configured on this server: {enable}"
        checkpoint = self.checkpoint()
        if checkpoint is not None and not checkpoint.is_file():
            return f"the video prior checkpoint {checkpoint} does not exist on the server: {enable}"
        from anymole.video.generate import ffmpeg_problem

        return ffmpeg_problem()
