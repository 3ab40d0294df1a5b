"""`VideoJobConfig`: the settings of the video stages (render, ICAdapt, sampling) and their relative costs.

`VideoJobConfig.stage_costs` gives a job's progress plan from these settings alone: each stage's cost is its
unit of work (a rendered frame per view, an ICAdapt step, a denoiser step of a sampler window) times a weight
in seconds at full size on an H100 (docs/benchmarks.md, "Video prior", has the measurements).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from anymole.errors import InvalidInput
from anymole.video.icadapt import ICAdaptConfig
from anymole.video.sampler import SamplerConfig
from anymole.video.timeline import VideoTimeline, sampler_windows

__all__ = ["VideoJobConfig"]

# Relative stage costs for progress plans and ETAs, by unit of work. A compiled preset's first job in a process
# also compiles: one step's weight cannot carry that, and it is left out.
_ICADAPT_STEP_COST = {"spatial": 2.0, "decoder": 1.4, "lora_top": 0.5}  # by the presets' training modes
_ICADAPT_STEP_COST_OTHER = 2.0
_WINDOW_STEP_COST = 0.25
_RENDER_FRAME_COST = 0.01


@dataclass(frozen=True)
class VideoJobConfig:
    """Settings of the video stages (`anymole.video.scene.render_scene`, `anymole.video.generate.generate_video`).

    Attributes:
        width, height: render size (px), multiples of the prior's VAE factor (8 for DynamiCrafter); the
            reference renders 512 × 320.
        views: orbit views rendered for ICAdapt (4: main, ±5°, back; see `anymole.render.view_layout`).
        sample_views: views the sampler generates (the mimicking stage uses the main view, 0).
        strides: Algorithm-1 frame intervals of the ICAdapt clips (1, 2, 3: 30, 15, 10 fps).
        icadapt: ICAdapt settings (`ICAdaptConfig()` is the reference recipe).
        sampler: sampling settings (its seed is the job's).
        caption_model: image-captioning model used when installed locally; ``None``: the name template.
    """

    width: int = 512
    height: int = 320
    views: int = 4
    sample_views: tuple[int, ...] = (0,)
    strides: tuple[int, ...] = (1, 2, 3)
    icadapt: ICAdaptConfig = field(default_factory=ICAdaptConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    caption_model: str | None = None

    def __post_init__(self) -> None:
        if self.width < 8 or self.height < 8:
            raise InvalidInput("width/height", f"render size {self.width}×{self.height} is too small")
        if self.views < 1:
            raise InvalidInput("views", f"need at least one view, got {self.views}")
        if not self.sample_views or any(not 0 <= v < self.views for v in self.sample_views):
            raise InvalidInput("sample_views", f"{self.sample_views} are not views of 0..{self.views - 1}")

    def stage_costs(self, timeline: VideoTimeline) -> list[tuple[str, float]]:
        """``[("render", c), ("icadapt", c), ("sample", c)]``: the stages' relative costs for ``timeline``."""
        frames = timeline.render_context_frames + timeline.num_gaps
        windows = len(sampler_windows(timeline)) * len(self.sample_views)
        step = _ICADAPT_STEP_COST.get(self.icadapt.mode, _ICADAPT_STEP_COST_OTHER)
        return [
            ("render", _RENDER_FRAME_COST * self.views * frames),
            ("icadapt", step * self.icadapt.steps),
            ("sample", _WINDOW_STEP_COST * windows * self.sampler.num_steps),
        ]
