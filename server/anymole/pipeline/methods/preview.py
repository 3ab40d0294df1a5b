"""`preview_event`: a sampler window's frame as the `Preview` event the ``video`` and ``anymole`` methods stream."""

from __future__ import annotations

import io

import torch

from anymole.pipeline.events import Preview
from anymole.video.generate import VideoPreview

__all__ = ["preview_event"]


def preview_event(stage: str, preview: VideoPreview) -> Preview:
    """A JPEG `Preview` of a sampler window's frame (``preview.image``: ``(3, H, W)`` in [0, 1]); encoded in the
    stage thread, so the event loop only forwards bytes."""
    from PIL import Image

    rgb = (preview.image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=85)
    height, width = rgb.shape[:2]
    return Preview(stage, preview.frame, preview.view, "image/jpeg", buf.getvalue(), width, height)
