"""The materials of an assimp scene as `Material` objects: base colour factor, base-colour texture (embedded,
referenced by ``*<i>``, or a file next to the asset) and the UV channel that texture reads."""

from __future__ import annotations

import io as _stdio
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anymole.io._assimp import RawMesh, RawScene
from anymole.rig.character import Material

__all__ = ["SceneMaterials"]

log = logging.getLogger(__name__)


class SceneMaterials:
    """The file's materials as `Material` objects, numbered in the order sub-meshes first use them (a file's
    unused materials are left out); images shared by several materials are decoded once and shared."""

    def __init__(self, raw: RawScene, path: str) -> None:
        self.raw, self.path = raw, path
        self._index: dict[int, int] = {}
        self._materials: list[Material] = []
        self._images: dict[str, torch.Tensor | None] = {}

    def index_of(self, material: int) -> int:
        """Our index of the file's material ``material`` (out of range: a light grey one)."""
        key = material if 0 <= material < len(self.raw.materials) else -1
        if key not in self._index:
            self._index[key] = len(self._materials)
            self._materials.append(self._build(key))
        return self._index[key]

    def used(self) -> tuple[Material, ...]:
        return tuple(self._materials) or (Material(),)

    def uvs_of(self, mesh: RawMesh) -> np.ndarray:
        """``(V, 2)`` the UV channel the mesh's base-colour texture reads (zeros for a mesh without UVs)."""
        if not mesh.uvs:
            return np.zeros((len(mesh.vertices), 2))
        mat = self.raw.materials[mesh.material] if 0 <= mesh.material < len(self.raw.materials) else {}
        channel = int(mat.get("uv_channel", 0))
        return mesh.uvs[channel] if 0 <= channel < len(mesh.uvs) else mesh.uvs[0]

    def _build(self, key: int) -> Material:
        if key < 0:
            return Material()
        mat = self.raw.materials[key]
        color = torch.tensor(np.clip(mat["base_color"], 0.0, 1.0), dtype=torch.float32)
        ref = mat.get("texture")
        if ref and ref not in self._images:
            self._images[ref] = self._image(ref)
        return Material(
            base_color=color, texture=self._images[ref] if ref else None, name=mat.get("name", "")
        )

    def _image(self, ref: str) -> torch.Tensor | None:
        raw, path = self.raw, self.path
        tex: dict[str, Any] | None
        if ref.startswith("*") and ref[1:].isdigit() and int(ref[1:]) < len(raw.textures):
            tex = raw.textures[int(ref[1:])]
        else:
            tex = next(
                (t for t in raw.textures if t["filename"] and Path(t["filename"]).name == Path(ref).name),
                None,
            )
        if tex is not None and "rgba" in tex:
            return torch.from_numpy(tex["rgba"])
        data = tex["data"] if tex is not None else None
        if data is None:
            candidate = Path(path).parent / ref
            if candidate.is_file():
                data = candidate.read_bytes()
        return _decode_image(data, path, ref) if data is not None else None


def _decode_image(data: bytes, path: str, ref: str) -> torch.Tensor | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(_stdio.BytesIO(data)) as im:
            rgb = im.convert("RGBA" if im.mode in ("RGBA", "LA", "P") else "RGB")
            return torch.from_numpy(np.asarray(rgb).copy())
    except (UnidentifiedImageError, OSError):
        log.warning("%s: texture %r could not be decoded; using the base colour only", path, ref)
        return None
