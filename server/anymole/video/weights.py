"""Official DynamiCrafter checkpoint ↔ `DynamiCrafterPrior` state dict.

Checkpoint layout (``reference/dynamicrafter_notes.md``, schema in ``anymole/data/
dynamicrafter_512_interp_state_dict.tsv``: 2520 entries):

==================================  =========================  ===========================================
checkpoint prefix                   our module                 key change
==================================  =========================  ===========================================
``model.diffusion_model.``          ``unet.``                  none (same names)
``first_stage_model.``              ``vae.``                   LDM → diffusers names, 1×1-conv attention
``cond_stage_model.model.``         ``text_encoder.``          none; last block + projection unused
``embedder.model.``                 ``image_encoder.``         none; text leftovers, ln_post, proj unused
``image_proj_model.``               ``image_proj.``            none
(root) ``betas`` … ``scale_arr``    —                          schedule buffers: recomputed from config
==================================  =========================  ===========================================

Every checkpoint entry is consumed: mapped onto a parameter, or known-unused (shape checked, dropped).
Any missing, unexpected or mis-shaped entry raises `CheckpointMismatch`, which lists them all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch

from anymole.errors import AssetError, ModelUnavailable
from anymole.video.dynamicrafter import DynamiCrafterConfig, DynamiCrafterPrior, base_name
from anymole.video.openclip import CLIPBPETokenizer, Tokenizer, unused_text_entries, unused_vision_entries
from anymole.video.vae import from_ldm_tensor, to_ldm_key, to_ldm_tensor

__all__ = [
    "SCHEMA_FILE",
    "CheckpointMismatch",
    "SchemaDiff",
    "check_checkpoint",
    "checkpoint_key_map",
    "checkpoint_schema",
    "diff_schema",
    "export_checkpoint",
    "load_checkpoint",
    "load_pretrained",
    "read_checkpoint",
    "read_schema",
]

log = logging.getLogger(__name__)

SCHEMA_FILE = "dynamicrafter_512_interp_state_dict.tsv"

PREFIXES = {
    "unet.": "model.diffusion_model.",
    "vae.": "first_stage_model.",
    "text_encoder.": "cond_stage_model.model.",
    "image_encoder.": "embedder.model.",
    "image_proj.": "image_proj_model.",
}

# Root buffers of the LatentDiffusion module, each of length num_train_timesteps, plus ``scale_arr``.
SCHEDULE_BUFFERS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)

# Older (256) checkpoints name the fps MLP ``framestride_embed``.
ALIASES = {"model.diffusion_model.framestride_embed.": "model.diffusion_model.fps_embedding."}

Shape = tuple[int, ...]


@dataclass
class SchemaDiff:
    """Differences of a checkpoint's keys and shapes from the expected ones."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, Shape, Shape]] = field(default_factory=list)  # key, got, expected

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 20) -> str:
        """Human-readable listing, at most ``limit`` entries per kind."""

        def cut(items: list[str]) -> str:
            more = f" … and {len(items) - limit} more" if len(items) > limit else ""
            return ", ".join(items[:limit]) + more

        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing: {cut(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected: {cut(self.unexpected)}")
        if self.mismatched:
            shapes = [f"{k} {list(got)} (expected {list(want)})" for k, got, want in self.mismatched]
            parts.append(f"{len(self.mismatched)} mis-shaped: {cut(shapes)}")
        return "; ".join(parts)


class CheckpointMismatch(ModelUnavailable):
    """The checkpoint's entries do not match the model: ``diff`` lists every missing, unexpected and
    mis-shaped key."""

    def __init__(self, name: str, diff: SchemaDiff) -> None:
        self.diff = diff
        super().__init__(
            name,
            f"{diff.describe()}. Use the dynamicrafter_512_interp_v1 model.ckpt "
            "(`anymole models pull dynamicrafter-512-interp`) with the full config",
        )


def diff_schema(got: dict[str, Shape], expected: dict[str, Shape]) -> SchemaDiff:
    """Compare two ``{key: shape}`` maps (order-free)."""
    return SchemaDiff(
        missing=sorted(set(expected) - set(got)),
        unexpected=sorted(set(got) - set(expected)),
        mismatched=[(k, got[k], expected[k]) for k in sorted(set(got) & set(expected)) if got[k] != expected[k]],
    )


def read_schema(path: str | Path | None = None) -> dict[str, Shape]:
    """The reference ``{key: shape}`` of the official 512 / 512_interp checkpoint (TSV: key, shape, kind,
    numel; an empty shape is a 0-dim scalar; ``#`` lines are comments)."""
    text = (
        Path(path).read_text()
        if path is not None
        else resources.files("anymole").joinpath("data", SCHEMA_FILE).read_text()
    )
    schema: dict[str, Shape] = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or line.startswith("key\t"):
            continue
        key, shape, _kind, _numel = line.split("\t")
        schema[key] = tuple(int(s) for s in shape.split(",")) if shape else ()
    return schema


def _checkpoint_key(key: str, levels: int) -> str:
    for ours, theirs in PREFIXES.items():
        if key.startswith(ours):
            rest = key[len(ours) :]
            return theirs + (to_ldm_key(rest, levels) if ours == "vae." else rest)
    raise KeyError(f"{key!r} belongs to no checkpoint group")


def _model_keys(prior: DynamiCrafterPrior) -> dict[str, torch.Tensor]:
    """Our state dict without LoRA adapters (peft's ``base_layer`` holds the original weight)."""
    return {base_name(k): v for k, v in prior.state_dict().items() if "lora_" not in k}


def checkpoint_key_map(prior: DynamiCrafterPrior) -> dict[str, str]:
    """``{checkpoint key: our state-dict key}`` for every parameter we build."""
    levels = len(prior.config.vae.block_out_channels)
    return {_checkpoint_key(k, levels): k for k in _model_keys(prior)}


def _unused_entries(cfg: DynamiCrafterConfig) -> dict[str, Shape]:
    text = {f"cond_stage_model.model.{k}": s for k, s in unused_text_entries(cfg.text).items()}
    vision = {f"embedder.model.{k}": s for k, s in unused_vision_entries(cfg.vision).items()}
    buffers: dict[str, Shape] = {name: (cfg.num_train_timesteps,) for name in SCHEDULE_BUFFERS}
    buffers["scale_arr"] = (cfg.num_train_timesteps + cfg.dynamic_rescale_turn,)
    return text | vision | buffers


def checkpoint_schema(prior: DynamiCrafterPrior) -> dict[str, Shape]:
    """``{checkpoint key: shape}`` that a checkpoint for ``prior``'s config must have exactly.

    For `DynamiCrafterConfig.full` this equals `read_schema` (tested); works on a ``meta`` prior.
    """
    levels = len(prior.config.vae.block_out_channels)
    mapped = {
        _checkpoint_key(k, levels): tuple(to_ldm_tensor(k, v).shape) for k, v in _model_keys(prior).items()
    }
    return mapped | _unused_entries(prior.config)


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint's tensors: ``.safetensors``, or a torch file (``.ckpt``/``.pt``/``.pth``) loaded with
    ``weights_only=True`` and memory-mapped where possible, whose ``state_dict`` entry is used if present.

    Raises:
        ModelUnavailable: the file does not exist.
        AssetError: it cannot be parsed as either format.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelUnavailable(
            "dynamicrafter-512-interp",
            f"{path} does not exist: run `anymole models pull dynamicrafter-512-interp`, or give the path of a "
            "downloaded model.ckpt of Doubiiu/DynamiCrafter_512_Interp (`anymole serve --video-prior PATH`)",
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any parse failure of a user-supplied file
        raise AssetError(path, f"not a readable checkpoint ({exc}); expected .ckpt or .safetensors") from exc
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AssetError(path, "no tensor state dict inside (expected a dict with a 'state_dict' entry)")
    return state


def check_checkpoint(
    prior: DynamiCrafterPrior, state: dict[str, torch.Tensor], name: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """``state`` with the `ALIASES` renamed, after checking that it fits ``prior``'s config exactly (works on a
    ``meta`` prior: only keys and shapes are read).

    Raises:
        CheckpointMismatch: any key missing, unexpected or mis-shaped (all listed).
    """
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for old, new in ALIASES.items():
            if key.startswith(old):
                key = new + key[len(old) :]
        renamed[key] = value
    diff = diff_schema({k: tuple(v.shape) for k, v in renamed.items()}, checkpoint_schema(prior))
    if diff:
        raise CheckpointMismatch(name, diff)
    return renamed


def load_checkpoint(prior: DynamiCrafterPrior, state: dict[str, torch.Tensor], name: str = "checkpoint") -> None:
    """Assign an official-layout ``state`` to ``prior`` (which may live on ``meta``: tensors are assigned,
    not copied).

    Raises:
        CheckpointMismatch: any key missing, unexpected or mis-shaped (all listed, see `check_checkpoint`).
    """
    if any("lora_" in k for k in prior.state_dict()):
        raise ModelUnavailable(name, "load the checkpoint before injecting LoRA adapters")
    renamed = check_checkpoint(prior, state, name)
    cfg = prior.config
    cumprod = renamed["alphas_cumprod"]
    if cfg.rescale_zero_terminal_snr and cumprod.device.type != "meta" and float(cumprod[-1]) > 1e-6:
        log.warning(
            "%s stores a schedule without zero terminal SNR (alphas_cumprod[-1]=%.3g); the schedule comes from "
            "the config (zero-SNR) as in the reference trainer",
            name,
            float(cumprod[-1]),
        )
    ours = {k: from_ldm_tensor(k, renamed[ck]) for ck, k in checkpoint_key_map(prior).items()}
    prior.load_state_dict(ours, strict=True, assign=True)
    # assign=True replaces Parameters: restore the frozen encoders' flags.
    for frozen in (prior.vae, prior.text_encoder, prior.image_encoder):
        frozen.requires_grad_(False)


def export_checkpoint(prior: DynamiCrafterPrior) -> dict[str, torch.Tensor]:
    """``prior``'s weights in the official layout, complete: the unused entries are zeros (``logit_scale``
    ln(1/0.07) as CLIP), the schedule buffers zeros except ``alphas_cumprod`` (ends at 0 for zero-SNR)."""
    levels = len(prior.config.vae.block_out_channels)
    out = {_checkpoint_key(k, levels): to_ldm_tensor(k, v.detach()) for k, v in _model_keys(prior).items()}
    device = prior.unet.device
    for key, shape in _unused_entries(prior.config).items():
        out[key] = torch.zeros(shape, device=device)
        if key.endswith("logit_scale"):
            out[key].fill_(4.6052)
    out["alphas_cumprod"] = torch.linspace(0.99915, 0.0, prior.config.num_train_timesteps, device=device)
    return out


def load_pretrained(
    path: str | Path,
    config: DynamiCrafterConfig | None = None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    tokenizer_dir: str | Path | None = None,
) -> DynamiCrafterPrior:
    """Load the official checkpoint (``model.ckpt`` or ``.safetensors``) into a new prior.

    Args:
        path: checkpoint file.
        config: architecture (default full); every checkpoint key must map onto it.
        device / dtype: where and how to keep the weights.
        tokenizer_dir: folder with the CLIP ``vocab.json`` and ``merges.txt`` (default: beside ``path``);
            only for ``config.tokenizer == "clip"``.

    Raises:
        ModelUnavailable: the file or the tokenizer files are missing.
        CheckpointMismatch: keys missing, unexpected or mis-shaped (all listed).
    """
    cfg = config or DynamiCrafterConfig.full()
    path = Path(path)
    tokenizer: Tokenizer | None = None
    if cfg.tokenizer == "clip":
        tokenizer = CLIPBPETokenizer(Path(tokenizer_dir) if tokenizer_dir else path.parent, cfg.text.context_length)
    state = read_checkpoint(path)
    prior = DynamiCrafterPrior(cfg, device="meta", tokenizer=tokenizer)
    load_checkpoint(prior, state, name=str(path))
    return prior.to(device=device, dtype=dtype)
