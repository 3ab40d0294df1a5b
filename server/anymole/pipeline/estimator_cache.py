"""On-disk cache of trained scene estimators, keyed like the adaptation cache (`anymole.video.cache`).

The key is a SHA-256 over the character's content hash, the content hash of the estimator's training renders
(every view's context and keyframe images and their joint labels), the `EstimatorConfig` and, where that config
trains on renders of the gaps' fill too (``pose_copies``), the fill's gap poses: a second fill of the same
character, context and key poses loads the estimator instead of training it again. An entry is written
into a directory of its own and published with one ``rename(2)``, so a reader finds a whole entry or none.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from anymole.estimator import EstimatorConfig, SceneEstimator
from anymole.rig import Motion
from anymole.video.cache import tensor_digest
from anymole.video.scene import SceneRenders

__all__ = ["EstimatorCache", "estimator_key", "weights_id"]

log = logging.getLogger(__name__)


def weights_id(path: str | Path) -> list[list[object]]:
    """Name, size and mtime of the file at ``path``, or of each file in the folder: which weights a frozen
    backbone had, without reading hundreds of MB on every job."""
    p = Path(path)
    files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
    return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def estimator_key(character_digest: str, renders: SceneRenders, config: EstimatorConfig, gap: Motion) -> str:
    """Cache key of the estimator trained on ``renders`` (`anymole.pipeline.fromvideo.training_set`) under
    ``config``; the frozen backbones' weight files count by name, size and mtime (replacing them trains anew).

    ``gap`` holds the fill's poses inside the gaps (`anymole.pipeline.fromvideo.gap_fill`): with
    ``config.pose_copies`` the estimator also trains on renders of them, which depend on where the keys lie in
    time, so they count then, and only then (without them a fill whose keys move keeps the trained estimator).
    """
    payload = {
        "character": character_digest,
        "renders": tensor_digest(renders.context, renders.keys, renders.joints_px, renders.joints_depth),
        "config": dataclasses.asdict(config),
        "weights": [weights_id(w) for w in config.weights],
    }
    if config.pose_copies:
        tr = () if gap.translations is None else (gap.translations,)
        payload["gap"] = tensor_digest(gap.rotations, gap.root_translation, *tr)
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=list).encode()).hexdigest()


class EstimatorCache:
    """A directory of trained estimators, ``<root>/<key>/`` each (`SceneEstimator.save`'s files).

    Args:
        root: the cache directory (created on first write).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def get(self, key: str, backbones: Sequence[nn.Module] | None = None) -> SceneEstimator | None:
        """The estimator stored under ``key``, or ``None`` (also for an entry that cannot be read); frozen
        ``backbones`` as `SceneEstimator.load` takes them (default: built from the stored config)."""
        folder = self.root / key
        if not folder.is_dir():
            return None
        try:
            return SceneEstimator.load(folder, backbones)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:  # a damaged entry: train again
            log.warning("could not load the cached estimator %s (%s); training it again", folder, exc)
            return None

    def put(self, key: str, estimator: SceneEstimator) -> None:
        """Store ``estimator`` under ``key`` (an existing entry stays: it holds the same inputs' result).
        A failed write (a full disk) is logged: the job goes on with the estimator it holds."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{key[:16]}-", dir=self.root))
            try:
                estimator.save(tmp)
                os.rename(tmp, self.root / key)  # fails when another writer published first: keep theirs
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
                if not (self.root / key).is_dir():
                    raise
        except OSError as exc:
            log.warning("could not cache the estimator under %s (%s); the next job trains again", self.root, exc)
