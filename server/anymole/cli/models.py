"""``anymole models pull | verify``: the model weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

models_app = typer.Typer(help="Model weights: download them where there is internet.")


@models_app.command("pull")
def models_pull(
    name: Annotated[str, typer.Argument(help="dynamicrafter-512-interp (the video prior), estimator (both of the joint estimator's ViTs), dinov2-with-registers-base or fit3d-vits14-reg")] = "dynamicrafter-512-interp",
    dest: Annotated[Path | None, typer.Option(help="the model's folder; for estimator, the models folder holding both (default: ~/.cache/anymole/models/NAME, or $ANYMOLE_MODELS/NAME)")] = None,
) -> None:
    """Download a model's files from the Hugging Face Hub; offline, say which files to place where by hand.

      anymole models pull                 # the video prior: anymole serve --video-prior ~/.cache/anymole/models/dynamicrafter-512-interp

      anymole models pull estimator       # DINOv2-reg ViT-B/14 + FiT3D ViT-S/14: anymole serve finds them there
    """
    from anymole.errors import ModelUnavailable
    from anymole.hub import GROUPS, manual_steps, pull

    failed: list[str] = []
    for model in GROUPS.get(name, (name,)):
        folder = dest / model if dest is not None and name in GROUPS else dest
        if failed:  # the Hub did not answer for the last one: say what to fetch instead of waiting on it again
            failed.append(f"{model}: not tried; {manual_steps(model, folder)}")
            continue
        try:
            typer.echo(f"{model}: {pull(model, folder)}")
        except ModelUnavailable as exc:
            if name not in GROUPS:
                raise
            failed.append(f"{model}: {exc.hint}")
    if failed:  # every model of the group that failed, so that one message lists all the manual steps
        raise ModelUnavailable(name, " | ".join(failed))


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
