"""Fetching model weights: `pull` downloads from the Hugging Face Hub where there is internet; everywhere
else `ModelUnavailable` says which files to put where by hand (or which server option takes a copy kept
elsewhere).

The models folder (`default_root`: ``$ANYMOLE_MODELS``, else ``~/.cache/anymole/models``) holds one folder per
model, named as in `MODELS`: the video prior's checkpoint and tokenizer files, and the joint estimator's two
frozen ViTs (`ESTIMATOR_MODELS`: ``anymole models pull estimator`` fetches both).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from anymole.errors import ModelUnavailable

__all__ = [
    "ESTIMATOR_MODELS",
    "GROUPS",
    "MODELS",
    "ModelSpec",
    "default_dir",
    "default_root",
    "estimator_weights",
    "locate",
    "manual_steps",
    "pull",
]


@dataclass(frozen=True)
class ModelSpec:
    """Where a model's files live on the Hub, and how a server takes a copy kept elsewhere.

    Attributes:
        files: ``(repo, filename)`` of every file, all stored in the model's folder; the first is the
            checkpoint `pull` and `locate` return.
        elsewhere: what to do with a local copy instead (the server option that takes it).
    """

    files: tuple[tuple[str, str], ...]
    elsewhere: str


_ESTIMATOR_OPTION = "or point `anymole serve --estimator-weights PATH` at a models folder holding it"

MODELS = {
    "dynamicrafter-512-interp": ModelSpec(
        files=(
            ("Doubiiu/DynamiCrafter_512_Interp", "model.ckpt"),
            ("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "vocab.json"),
            ("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "merges.txt"),
        ),
        elsewhere="or give a local checkpoint (tokenizer files beside it) to `anymole serve --video-prior PATH`",
    ),
    # the joint estimator's 2D backbone, DINOv2 ViT-B/14 with registers, in transformers' layout
    "dinov2-with-registers-base": ModelSpec(
        files=(
            ("facebook/dinov2-with-registers-base", "model.safetensors"),
            ("facebook/dinov2-with-registers-base", "config.json"),
        ),
        elsewhere=f"or put torch.hub's dinov2_vitb14_reg4_pretrain.pth there instead, {_ESTIMATOR_OPTION}",
    ),
    # the joint estimator's 3D-aware backbone, FiT3D's finetuned ViT-S/14 with registers (timm layout)
    "fit3d-vits14-reg": ModelSpec(
        files=(("yuanwenyue/FiT3D", "dinov2_reg_small_finetuned.pth"),),
        elsewhere=_ESTIMATOR_OPTION,
    ),
}

#: the estimator backbone (`anymole.estimator.config.BACKBONES`) → its model's name in `MODELS`
ESTIMATOR_MODELS = {"dinov2_vitb14_reg": "dinov2-with-registers-base", "fit3d_vits14_reg": "fit3d-vits14-reg"}

#: names `pull` takes for several models at once
GROUPS = {"estimator": tuple(ESTIMATOR_MODELS.values())}


def _spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ModelUnavailable(name, f"unknown model; known: {', '.join(sorted(MODELS))} (and {', '.join(GROUPS)}: "
                                     f"{'; '.join(', '.join(v) for v in GROUPS.values())})")  # fmt: skip
    return MODELS[name]


def default_root() -> Path:
    """The models folder: ``$ANYMOLE_MODELS``, else ``~/.cache/anymole/models``."""
    root = os.environ.get("ANYMOLE_MODELS")
    return Path(root) if root else Path.home() / ".cache" / "anymole" / "models"


def default_dir(name: str) -> Path:
    """``name``'s folder in the models folder (`default_root`)."""
    return default_root() / name


def _manual_hint(spec: ModelSpec, dest: Path) -> str:
    by_repo: dict[str, list[str]] = {}
    for repo, filename in spec.files:
        by_repo.setdefault(repo, []).append(filename)
    files = " and ".join(f"{' and '.join(names)} of the Hugging Face repo {repo}" for repo, names in by_repo.items())
    return f"download {files} into {dest}, {spec.elsewhere}"


def manual_steps(name: str, dest: str | Path | None = None) -> str:
    """How to put model ``name``'s files into ``dest`` (default `default_dir`) by hand."""
    return _manual_hint(_spec(name), Path(dest) if dest is not None else default_dir(name))


def _download(repo_id: str, filename: str, local_dir: Path) -> Path:
    from huggingface_hub import hf_hub_download  # network client, imported only when pulling

    return Path(hf_hub_download(repo_id=repo_id, filename=filename, local_dir=str(local_dir)))


def pull(name: str = "dynamicrafter-512-interp", dest: str | Path | None = None) -> Path:
    """Download a model's files (`ModelSpec.files`) into ``dest`` (default `default_dir`).

    Returns:
        Path of the checkpoint (``dest/<first file>``).

    Raises:
        ModelUnavailable: unknown name, or the download failed (no internet); the hint lists the manual steps.
    """
    spec = _spec(name)
    dest = Path(dest) if dest is not None else default_dir(name)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        paths = [_download(repo_id=repo, filename=f, local_dir=dest) for repo, f in spec.files]
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
    path = dest / spec.files[0][1]
    if not path.is_file():
        raise ModelUnavailable(name, f"{path} not found: run `anymole models pull {name}`, or {_manual_hint(spec, dest)}")
    return path


def _weights_in(folder: Path) -> Path | None:
    """What a backbone's folder holds: the folder itself when it is a transformers model (``config.json`` and
    its weights), else its one ``.pth``/``.safetensors`` file (torch.hub or timm layout); ``None`` if neither."""
    if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
        return folder
    files = sorted(p for p in folder.glob("*") if p.suffix in (".pth", ".pt", ".safetensors") and p.is_file())
    return files[0] if len(files) == 1 else None


def estimator_weights(root: str | Path | None = None) -> dict[str, Path]:
    """The estimator's ViT weights in a models folder (default `default_root`), as `pull` leaves them.

    Returns:
        Backbone name (`ESTIMATOR_MODELS`) → a transformers model folder or a checkpoint file.

    Raises:
        ModelUnavailable: a backbone's folder is missing or holds no weights; the hint says, for each, what
            to download and where to put it.
    """
    base = Path(root).expanduser() if root is not None else default_root()
    found: dict[str, Path] = {}
    missing: list[str] = []
    for backbone, name in ESTIMATOR_MODELS.items():
        folder = base / name
        path = _weights_in(folder) if folder.is_dir() else None
        if path is None:
            missing.append(_manual_hint(MODELS[name], folder))
        else:
            found[backbone] = path
    if missing:
        raise ModelUnavailable(
            "estimator weights",
            f"{base} lacks the joint estimator's ViT weights: run `anymole models pull estimator` where there is "
            f"internet, or {'; and '.join(missing)}",
        )
    return found
