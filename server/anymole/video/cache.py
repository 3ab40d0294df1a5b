"""On-disk cache of ICAdapt results, keyed by everything that determines them.

The key is a SHA-256 over a canonical JSON of: the model id and its config, the character's content hash,
the context renders' content hash, and the `ICAdaptConfig`. (The reference keys its checkpoint folder by the
character's folder name, so a second motion of one character silently reuses the first one's weights.)
Entries are written by ``prior.save_adapted`` into a directory of their own and published by atomically
re-pointing the link ``<root>/<key>/current``, so readers and concurrent writers never meet a half entry (see
`AdaptationCache`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
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
#: the link ``<root>/<key>/current`` to the key's entry directory ``<root>/<key>/.adapted-<random>/``
CURRENT = "current"
ENTRY_PREFIX = ".adapted-"


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
    """A directory of adapted weights, safe for concurrent writers and readers (threads or processes).

    Layout: ``<root>/<key>/`` per key. Each write fills a directory ``<root>/<key>/.adapted-<random>/`` of its
    own (``prior.save_adapted``: weights plus their JSON) and then publishes it by atomically replacing the
    symlink ``<root>/<key>/current`` with one pointing to it. A reader therefore finds the previous complete
    entry or the new complete one, never a half-written one or none; two writers of one key (two GPUs
    finishing the same scene) both succeed, the later link winning: both hold ICAdapt results of the same
    inputs. Entry directories are held under ``flock``: exclusively by their writer until published, shared
    by a reader while it loads; each write then deletes the key's directories no link points to and nobody
    holds (superseded entries, those of killed writers). Weights written directly in ``<root>/<key>/`` (the
    layout before links) are still read, and deleted by the key's next write.

    Args:
        root: the cache directory (created on first write).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        """Where the weights of ``key`` are found through its link (whether or not they exist)."""
        return self.root / key / CURRENT / WEIGHTS_FILE

    def __contains__(self, key: str) -> bool:
        """Whether `load_into` would find an entry of ``key`` now."""
        held = self._hold(key)
        if held is not None:
            os.close(held[1])
        return held is not None

    def put(self, key: str, prior: VideoPrior) -> Path:
        """Save ``prior``'s adapted weights under ``key`` (replacing any entry) and return their path."""
        folder = self.root / key
        entry, fd = self._new_entry(folder)
        try:
            try:
                prior.save_adapted(entry / WEIGHTS_FILE)
                link = folder / f"{entry.name}.link"
                os.symlink(entry.name, link)
                os.replace(link, folder / CURRENT)  # rename(2) replaces the old link in one step
            except BaseException:
                shutil.rmtree(entry, ignore_errors=True)
                (folder / f"{entry.name}.link").unlink(missing_ok=True)
                with contextlib.suppress(OSError):  # fails unless the key has nothing else (no entry, no writer)
                    folder.rmdir()
                raise
        finally:
            os.close(fd)  # releases the writer's lock
        self._collect(folder)
        return self.path(key)

    def load_into(self, key: str, prior: VideoPrior) -> bool:
        """Load the weights of ``key`` into ``prior``; False when there is no entry."""
        held = self._hold(key)
        if held is None:
            return False
        entry, fd = held
        try:
            prior.load_adapted(entry / WEIGHTS_FILE)
        finally:
            os.close(fd)
        return True

    # -- entries: a directory is current while its key's link points to it
    @staticmethod
    def _new_entry(folder: Path) -> tuple[Path, int]:
        """A fresh, empty entry directory in ``folder`` (created if need be) and an fd holding its exclusive
        lock. Another write may remove the directory between its creation and the lock (`_collect`: it is no
        link's target yet), or an empty ``folder`` (a failed `put`): then try again."""
        while True:
            folder.mkdir(parents=True, exist_ok=True)
            try:
                entry = Path(tempfile.mkdtemp(prefix=ENTRY_PREFIX, dir=folder))
            except FileNotFoundError:
                continue
            fd = _lock(entry, fcntl.LOCK_EX)
            if fd is not None:
                return entry, fd

    def _target(self, key: str) -> Path | None:
        """The directory holding the entry of ``key``: its link's target, or the key's own directory in the
        previous layout; None when there is no entry."""
        folder = self.root / key
        try:
            return folder / os.readlink(folder / CURRENT)
        except FileNotFoundError:
            return folder if (folder / WEIGHTS_FILE).is_file() else None

    def _hold(self, key: str) -> tuple[Path, int] | None:
        """The current entry of ``key`` and an fd holding its shared lock, so that no write deletes it while it
        is read; None when there is none. The entry can be superseded and deleted between reading the link
        and taking the lock (or previous-layout files deleted): then the link is read again. An entry that is
        still current yet gone or without weights (deleted by hand, lost in a crash) counts as none: the next
        write replaces it."""
        entry = self._target(key)
        while entry is not None:
            fd = _lock(entry, fcntl.LOCK_SH)
            if fd is not None:
                if (entry / WEIGHTS_FILE).is_file():
                    return entry, fd
                os.close(fd)
            if (again := self._target(key)) == entry:
                return None
            entry = again
        return None

    @staticmethod
    def _collect(folder: Path) -> None:
        """Delete the entry directories of ``folder`` that its link does not point to and nobody holds, and
        previous-layout weights beside the link. A directory that is not current while it is held here never
        becomes current: the link is only ever pointed at a directory its writer holds."""
        for entry in folder.glob(f"{ENTRY_PREFIX}*"):
            if entry.is_symlink() or not entry.is_dir():
                continue
            fd = _lock(entry, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if fd is None:
                continue
            # read under the lock: another writer may have published this directory since the glob
            if os.readlink(folder / CURRENT) != entry.name:
                shutil.rmtree(entry, ignore_errors=True)
            os.close(fd)
        if (folder / WEIGHTS_FILE).exists():
            fd = _lock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if fd is not None:
                for old in (WEIGHTS_FILE, f"{WEIGHTS_FILE}.json"):
                    (folder / old).unlink(missing_ok=True)
                os.close(fd)


def _lock(directory: Path, operation: int) -> int | None:
    """An fd of ``directory`` holding ``flock(operation)``; None when the directory is gone or was replaced
    by the time the lock was taken, or when a non-blocking lock is held elsewhere."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        fcntl.flock(fd, operation)
        held, now = os.fstat(fd), os.stat(directory, follow_symlinks=False)
        if (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino):
            return fd
    except (BlockingIOError, FileNotFoundError):
        pass
    os.close(fd)
    return None
