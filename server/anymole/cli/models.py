"""``anymole models pull | verify``: the model weights."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    pass


models_app = typer.Typer(help="Model weights: download them where there is internet.")


@models_app.command("pull")
def models_pull(
    name: Annotated[str, typer.Argument(help="model name")] = "dynamicrafter-512-interp",
    dest: Annotated[Path | None, typer.Option(help="folder (default ~/.cache/anymole/models/NAME)")] = None,
) -> None:
    """Download a model's checkpoint and tokenizer files; offline, say which files to place by hand."""
    from anymole.video.hub import pull

    typer.echo(f"{name}: {pull(name, dest)}")


@models_app.command("verify")
def models_verify(
    weights: Annotated[Path, typer.Argument(help="checkpoint file: model.ckpt or .safetensors")],
    model: Annotated[str, typer.Option(help="architecture the file must fit: full (the published model) or tiny")] = "full",
) -> None:
    """Check a local checkpoint against the architecture without loading it onto a device.

    Every entry must map onto the model with the right shape; missing, unexpected and mis-shaped keys are
    listed. Example: anymole models verify ~/.cache/anymole/models/dynamicrafter-512-interp/model.ckpt
    """
    from anymole.errors import InvalidInput
    from anymole.video.dynamicrafter import DynamiCrafterConfig, DynamiCrafterPrior
    from anymole.video.weights import check_checkpoint, read_checkpoint

    configs = {"full": DynamiCrafterConfig.full, "tiny": DynamiCrafterConfig.tiny}
    if model not in configs:
        raise InvalidInput("--model", f"must be one of {sorted(configs)}, got {model!r}")
    state = read_checkpoint(weights)
    check_checkpoint(DynamiCrafterPrior(configs[model](), device="meta"), state, str(weights))
    numel = sum(v.numel() for v in state.values())
    typer.echo(f"{weights}: ok, {len(state)} entries, {numel:,} values fit the {model} DynamiCrafter model")
