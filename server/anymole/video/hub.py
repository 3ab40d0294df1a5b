"""Fetching model weights: `pull` downloads from the Hugging Face Hub where there is internet; everywhere
else `ModelUnavailable` says which files to put where by hand (or to point ``anymole serve --video-prior`` at
a checkpoint elsewhere)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from anymole.errors import ModelUnavailable

__all__ = ["MODELS", "ModelSpec", "default_dir", "locate", "pull"]


@dataclass(frozen=True)
class ModelSpec:
    """Where a model's files live on the Hub.

    Attributes:
        repo / filename: the checkpoint.
        tokenizer_repo / tokenizer_files: the caption tokenizer files, stored beside the checkpoint.
    """

    repo: str
    filename: str
    tokenizer_repo: str
    tokenizer_files: tuple[str, ...]


MODELS = {
    "dynamicrafter-512-interp": ModelSpec(
        repo="Doubiiu/DynamiCrafter_512_Interp",
        filename="model.ckpt",
        tokenizer_repo="laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
        tokenizer_files=("vocab.json", "merges.txt"),
    ),
}


def _spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ModelUnavailable(name, f"unknown model; known: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def default_dir(name: str) -> Path:
    """``$ANYMOLE_MODELS/<name>``, else ``~/.cache/anymole/models/<name>``."""
    root = os.environ.get("ANYMOLE_MODELS")
    return (Path(root) if root else Path.home() / ".cache" / "anymole" / "models") / name


def _manual_hint(spec: ModelSpec, dest: Path) -> str:
    return (
        f"download {spec.filename} of the Hugging Face repo {spec.repo} and "
        f"{' and '.join(spec.tokenizer_files)} of {spec.tokenizer_repo} into {dest}, "
        "or give a local checkpoint (tokenizer files beside it) to `anymole serve --video-prior PATH`"
    )


def _download(repo_id: str, filename: str, local_dir: Path) -> Path:
    from huggingface_hub import hf_hub_download  # network client, imported only when pulling

    return Path(hf_hub_download(repo_id=repo_id, filename=filename, local_dir=str(local_dir)))


def pull(name: str = "dynamicrafter-512-interp", dest: str | Path | None = None) -> Path:
    """Download a model's checkpoint and tokenizer files into ``dest`` (default `default_dir`).

    Returns:
        Path of the checkpoint (``dest/model.ckpt``).

    Raises:
        ModelUnavailable: unknown name, or the download failed (no internet); the hint lists the manual steps.
    """
    spec = _spec(name)
    dest = Path(dest) if dest is not None else default_dir(name)
    dest.mkdir(parents=True, exist_ok=True)
    wanted = [(spec.repo, spec.filename)] + [(spec.tokenizer_repo, f) for f in spec.tokenizer_files]
    try:
        paths = [_download(repo_id=repo, filename=f, local_dir=dest) for repo, f in wanted]
    except Exception as exc:  # offline, proxy, HTTP or hub errors all mean: fetch it by hand
        raise ModelUnavailable(name, f"download failed ({type(exc).__name__}: {exc}); {_manual_hint(spec, dest)}") from exc
    return paths[0]


def locate(name: str = "dynamicrafter-512-interp", dest: str | Path | None = None) -> Path:
    """The checkpoint path of an already pulled model.

    Raises:
        ModelUnavailable: not there; the hint says how to pull it or place it by hand.
    """
    spec = _spec(name)
    dest = Path(dest) if dest is not None else default_dir(name)
    path = dest / spec.filename
    if not path.is_file():
        raise ModelUnavailable(name, f"{path} not found: run `anymole models pull {name}`, or {_manual_hint(spec, dest)}")
    return path
