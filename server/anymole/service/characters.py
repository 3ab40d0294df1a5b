"""Content-addressed store of uploaded characters.

A character's id is ``"sha256:" + hex(sha256(payload))``, the payload being the exact uploaded bytes (a
serialised `CharacterAsset`, or a GLB/FBX/BVH file). Payloads are kept under ``data_dir/characters`` and
parsed characters in a small in-memory LRU, so a mesh crosses the wire once and survives restarts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from anymole.errors import AssetError, InvalidInput, NotFound
from anymole.rig import Character
from anymole.service.store import disk_bytes, write_atomic
from anymole.wire.convert import Limits, character_from_asset_bytes

__all__ = ["FORMATS", "CharacterStore", "StoredCharacter", "character_id_of"]

FORMATS = {"proto": ".pb", "glb": ".glb", "fbx": ".fbx", "bvh": ".bvh"}
"""Upload formats and the file suffix each is stored (and imported) with."""


def character_id_of(payload: bytes | bytearray) -> str:
    return "sha256:" + hashlib.sha256(payload).hexdigest()


@dataclass(frozen=True)
class StoredCharacter:
    """A parsed character with its id and whether it came from the cache."""

    character_id: str
    character: Character
    cached: bool


def _as_uploaded(exc: AssetError, path: Path, shown: str) -> AssetError:
    """``exc`` about the client's file ``shown`` instead of the server's temporary ``path``: importers quote the
    path they read, and a client has no business seeing the server's file system."""
    reason = exc.reason.replace(str(path), shown).replace(str(path.parent), "<upload>")
    return AssetError(shown, reason)


class CharacterStore:
    """Characters by content id, on disk under ``root / "characters"`` with an LRU of parsed ones.

    Args:
        root: the server's data directory.
        limits: validation limits for proto payloads.
        capacity: parsed characters kept in memory.
    """

    def __init__(self, root: Path, limits: Limits, capacity: int = 16) -> None:
        self.dir = Path(root) / "characters"
        self.limits = limits
        self.capacity = capacity
        self._lru: OrderedDict[str, Character] = OrderedDict()
        self._lock = threading.Lock()  # parsing runs in worker threads

    @staticmethod
    def _hex(character_id: str) -> str:
        prefix, _, hexid = character_id.partition(":")
        if prefix != "sha256" or len(hexid) != 64 or any(c not in "0123456789abcdef" for c in hexid):
            raise NotFound("character", character_id)
        return hexid

    @classmethod
    def is_valid_id(cls, character_id: str) -> bool:
        """Whether ``character_id`` has the form of an id ("sha256:" and 64 lowercase hex digits)."""
        try:
            cls._hex(character_id)
        except NotFound:
            return False
        return True

    def has(self, character_id: str) -> bool:
        try:
            hexid = self._hex(character_id)
        except NotFound:
            return False
        return character_id in self._lru or (self.dir / f"{hexid}.json").exists()

    def put(self, fmt: str, payload: bytes | bytearray, name: str = "") -> StoredCharacter:
        """Parse, validate and store an upload; an already stored payload is a cache hit (not re-parsed)."""
        if fmt not in FORMATS:
            raise InvalidInput("header.format", f"unsupported character format {fmt!r}; use one of {sorted(FORMATS)}")
        cid = character_id_of(payload)
        if self.has(cid):
            self.touch(cid)
            return StoredCharacter(cid, self.get(cid), cached=True)
        character = self._parse(fmt, payload, name)
        hexid = self._hex(cid)
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.dir / f"{hexid}{FORMATS[fmt]}", payload)
        write_atomic(self.dir / f"{hexid}.json", json.dumps({"format": fmt, "name": character.name}).encode())
        self._remember(cid, character)
        return StoredCharacter(cid, character, cached=False)

    def get(self, character_id: str) -> Character:
        """The character with this id; `NotFound` if it was never uploaded."""
        with self._lock:
            if character_id in self._lru:
                self._lru.move_to_end(character_id)
                return self._lru[character_id]
        hexid = self._hex(character_id)
        meta_path = self.dir / f"{hexid}.json"
        if not meta_path.exists():
            raise NotFound("character", character_id)
        meta = json.loads(meta_path.read_text())
        payload = (self.dir / f"{hexid}{FORMATS[meta['format']]}").read_bytes()
        character = self._parse(meta["format"], payload, meta["name"])
        self._remember(character_id, character)
        return character

    def touch(self, character_id: str) -> None:
        """Mark a stored character as uploaded now (its age for retention is the time since its last upload)."""
        with contextlib.suppress(OSError, NotFound):
            os.utime(self.dir / f"{self._hex(character_id)}.json")

    def stored(self) -> list[tuple[str, float, int]]:
        """``(character_id, last upload time, bytes on disk)`` of every stored character."""
        if not self.dir.is_dir():
            return []
        out = []
        for meta in self.dir.glob("*.json"):
            hexid = meta.stem
            with contextlib.suppress(OSError):  # deleted meanwhile
                size = sum(disk_bytes(p) for p in self.dir.glob(f"{hexid}.*"))
                out.append((f"sha256:{hexid}", meta.stat().st_mtime, size))
        return out

    def delete(self, character_id: str) -> None:
        """Remove a stored character (its description first, so that a half-deleted one reads as absent)."""
        hexid = self._hex(character_id)
        with self._lock:
            self._lru.pop(character_id, None)
        (self.dir / f"{hexid}.json").unlink(missing_ok=True)
        for path in self.dir.glob(f"{hexid}.*"):
            path.unlink(missing_ok=True)

    def uploaded_file(self, character_id: str) -> Path | None:
        """The stored upload of a character sent as a file (GLB, FBX, BVH), named with its format's suffix;
        ``None`` for a `CharacterAsset` upload or an unknown id. Result writers edit a copy of it."""
        try:
            hexid = self._hex(character_id)
            meta = json.loads((self.dir / f"{hexid}.json").read_text())
        except (NotFound, OSError, ValueError):
            return None
        if meta.get("format") not in FORMATS or meta["format"] == "proto":
            return None
        path = self.dir / f"{hexid}{FORMATS[meta['format']]}"
        return path if path.is_file() else None

    def _remember(self, cid: str, character: Character) -> None:
        with self._lock:
            self._lru[cid] = character
            self._lru.move_to_end(cid)
            while len(self._lru) > self.capacity:
                self._lru.popitem(last=False)

    def _parse(self, fmt: str, payload: bytes | bytearray, name: str) -> Character:
        if fmt == "proto":
            return character_from_asset_bytes(payload, name, self.limits)
        from dataclasses import replace

        from anymole.io import load_character

        with tempfile.TemporaryDirectory(prefix="anymole-upload-") as tmp:
            path = Path(tmp) / f"upload{FORMATS[fmt]}"  # never a client-chosen name on disk
            path.write_bytes(payload)
            try:
                character = load_character(path, refuse_non_uniform_scale=True)  # the wire has no joint scale
            except AssetError as exc:
                raise _as_uploaded(exc, path, f"{name or 'upload'}{FORMATS[fmt]}") from None
        if character.skeleton.num_joints > self.limits.max_joints:
            raise InvalidInput(
                "chunk", f"{character.skeleton.num_joints} joints exceeds this server's limit of {self.limits.max_joints}"
            )
        return replace(character, name=name or character.name, source=None)
