"""The one scene caption ICAdapt and sampling use (AnyMoLe supplementary A.1: one prompt for the whole scene).

The paper captions the front-view context video with a video-language model (EILEV, BLIP-2 + OPT-2.7B, about
15 GB). We use an image-captioning model through ``transformers`` when its weights are already on disk
(never downloaded here: ``local_files_only``; loaded once per model and device in a process), captioning the
middle context frame, and otherwise a template built from the character's name. Either way the text is fixed
for the scene, so the cache key stays stable.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import torch

__all__ = ["DEFAULT_CAPTION_MODEL", "scene_caption", "template_caption"]

#: a small image-captioning model (BLIP base); used only if already in the local Hugging Face cache.
DEFAULT_CAPTION_MODEL = "Salesforce/blip-image-captioning-base"

_log = logging.getLogger(__name__)


def template_caption(character_name: str) -> str:
    """The fallback prompt: ``"<name>, a 3D animated character, moving in a rendering scene."``."""
    name = " ".join(character_name.replace("_", " ").split()) or "A character"
    return f"{name}, a 3D animated character, moving in a rendering scene."


def _load_captioner(model_id: str, device: torch.device) -> tuple[Any, Any]:
    """``(processor, model)`` of ``model_id`` from the local Hugging Face cache only, the model on ``device``.

    Raises:
        OSError, ValueError, ImportError: not installed locally (or no ``transformers``).
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(model_id, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(model_id, local_files_only=True).eval().to(device)
    return processor, model


#: loaded captioners by (model id, device), and one lock per key so that a load blocks only its own key
_captioners: dict[tuple[str, torch.device], tuple[Any, Any]] = {}
_load_locks: dict[tuple[str, torch.device], threading.Lock] = {}
_locks_lock = threading.Lock()


def _captioner(model_id: str, device: torch.device) -> tuple[Any, Any]:
    """The process's one loaded `_load_captioner` of (``model_id``, ``device``), loaded on first use. A failed
    load is not remembered: a model installed later is picked up by the next job."""
    key = (model_id, device)
    if (loaded := _captioners.get(key)) is not None:
        return loaded
    with _locks_lock:
        lock = _load_locks.setdefault(key, threading.Lock())
    with lock:
        if (loaded := _captioners.get(key)) is None:
            loaded = _captioners[key] = _load_captioner(model_id, device)
        return loaded


def scene_caption(
    character_name: str,
    frames: torch.Tensor | None = None,
    model_id: str | None = DEFAULT_CAPTION_MODEL,
    device: torch.device | str = "cpu",
) -> str:
    """Caption a scene once.

    Args:
        character_name: the character's name, for the template.
        frames: ``(3, T, H, W)`` front-view context frames in [0, 1]; ``None`` skips the model.
        model_id: a Hugging Face image-to-text model id or local path; ``None`` skips the model.
        device: where the captioning model runs; it is loaded once per (``model_id``, ``device``) and process.

    Returns:
        The model's caption of the middle frame, when the model is installed locally and answers with some
        text; else `template_caption`.
    """
    if frames is None or model_id is None:
        return template_caption(character_name)
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:  # "cuda" and "cuda:0" share one model
        device = torch.device("cuda", torch.cuda.current_device())
    try:
        processor, model = _captioner(model_id, device)
    except (OSError, ValueError, ImportError) as exc:  # not installed locally: no download, use the template
        _log.info("caption model %s unavailable (%s); using the template caption", model_id, exc)
        return template_caption(character_name)
    middle = (frames[:, frames.shape[1] // 2].clamp(0, 1) * 255).round().to(torch.uint8)
    with torch.no_grad():
        inputs = processor(images=middle.permute(1, 2, 0).cpu().numpy(), return_tensors="pt").to(device)
        ids = model.generate(**inputs, max_new_tokens=32, num_beams=5)
    text = processor.batch_decode(ids, skip_special_tokens=True)[0].strip()
    return text or template_caption(character_name)
