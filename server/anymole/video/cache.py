"""On-disk cache of ICAdapt results, keyed by everything that determines them.

The key is a SHA-256 over a canonical JSON of: the model id and its config, the character's content hash,
the context renders' content hash, and the `ICAdaptConfig`. (The reference keys its checkpoint folder by the
character's folder name, so a second motion of one character silently reuses the first one's weights.)
Entries are written by ``prior.save_adapted`` into ``<root>/<key>/adapted.safetensors`` (plus its JSON) and
committed by an atomic rename, so a crashed run leaves no half entry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from anymole.video.icadapt import ICAdaptConfig
from anymole.video.prior import VideoPrior

__all__ = ["AdaptationCache", "adaptation_key", "tensor_digest"]

WEIGHTS_FILE = "adapted.safetensors"


def tensor_digest(*tensors: torch.Tensor) -> str:
    """SHA-256 hex of tensors' dtypes, shapes and bytes (e.g. the context renders; any rank, 0-dim included)."""
    h = hashlib.sha256()
    for t in tensors:
        c = t.detach().to("cpu").contiguous()
        h.update(f"{c.dtype}{tuple(c.shape)}".encode())
        # flattened first: a 0-dim tensor cannot be viewed as bytes of another element size
        h.update(c.reshape(-1).view(torch.uint8).numpy().tobytes() if c.numel() else b"")
    return h.hexdigest()


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def adaptation_key(
    model_id: str,
    model_config: Any,
    character_digest: str,
    context_digest: str,
    icadapt_config: ICAdaptConfig,
) -> str:
    """Cache key of one ICAdapt result.

    Args:
        model_id: the base model's name and weights identity (e.g. ``"dynamicrafter-512-interp@<sha>"``).
        model_config: the backend's config (dataclass or dict).
        character_digest: content hash of the character (mesh, skeleton, textures).
        context_digest: content hash of the context renders (`tensor_digest` of the views) or of the
            render inputs.
        icadapt_config: the ICAdapt settings.
    """
    payload = {
        "model_id": model_id,
        "model_config": _jsonable(model_config),
        "character": character_digest,
        "context": context_digest,
        "icadapt": _jsonable(icadapt_config),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class AdaptationCache:
    """A directory of adapted weights, one sub-directory per key.

    Args:
        root: the cache directory (created on first write).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        """Where the weights of ``key`` live (whether or not they exist)."""
        return self.root / key / WEIGHTS_FILE

    def __contains__(self, key: str) -> bool:
        return self.path(key).is_file()

    def put(self, key: str, prior: VideoPrior) -> Path:
        """Save ``prior``'s adapted weights under ``key`` (replacing any entry) and return their path."""
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=self.root))
        try:
            prior.save_adapted(staging / WEIGHTS_FILE)
            final = self.root / key
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return self.path(key)

    def load_into(self, key: str, prior: VideoPrior) -> bool:
        """Load the weights of ``key`` into ``prior``; False when there is no entry."""
        if key not in self:
            return False
        prior.load_adapted(self.path(key))
        return True
