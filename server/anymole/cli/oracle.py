"""``anymole eval --oracle``: parse the options, run `anymole.pipeline.oracle.oracle_eval`, print its metrics."""

from __future__ import annotations

from pathlib import Path

import typer

from anymole.cli._common import _estimator_weights, _pick_clip, _span

__all__ = ["run_oracle"]


def run_oracle(
    asset: Path,
    clip: str | None,
    context: str | None,
    keys: str | None,
    preset: str,
    json_out: bool,
    estimator_weights: str | None = None,
) -> None:
    """`anymole eval --oracle`: parse, run `anymole.pipeline.oracle.oracle_eval` with the preset's estimator on
    the backbones ``--estimator-weights`` provides (`anymole.pipeline.fromvideo.estimator_config`), print."""
    import json

    from rich.console import Console
    from rich.table import Table

    from anymole.errors import InvalidInput
    from anymole.io import load_character
    from anymole.pipeline.fromvideo import estimator_config
    from anymole.pipeline.oracle import oracle_eval

    start, stop = _span(context, "--context")
    if start is None or stop is None:
        raise InvalidInput("--context", f"give the context as clip frames A:B, got {context!r}")
    try:
        key_list = [int(k) for k in (keys or "").split(",") if k.strip()]
    except ValueError:
        raise InvalidInput("--keys", f"expected comma-separated frame numbers, got {keys!r}") from None
    if not key_list:
        raise InvalidInput("--keys", "give the keyframes as comma-separated clip frames, e.g. --keys 72")
    weights = _estimator_weights(estimator_weights)
    character = load_character(asset)
    name = _pick_clip(character, clip)
    options = {"context": "--context", "keyframes": "--keys", "clip": "--clip", "preset": "--preset"}
    try:
        estimator = estimator_config(preset, weights)
        with Console(stderr=True).status(f"oracle evaluation of {asset.name}:{name} ({preset})"):
            result = oracle_eval(character, name, (start, stop), key_list, preset, estimator=estimator)
    except InvalidInput as exc:  # the library names its arguments; say which option to change
        raise InvalidInput(options.get(exc.field, exc.field), exc.reason) from None
    if json_out:
        typer.echo(json.dumps(result.to_json(), indent=2))
        return
    a, b = result.frames
    w, h = result.image_size
    title = (f"oracle: {asset.name}:{name} frames {a}:{b}, {preset} preset, backbone {result.backbone}, "
             f"estimator {result.estimator_px:.2f} px at {w}x{h}")  # fmt: skip
    table = Table("metric", "anymole (global)", "interp (global)", "anymole (local)", "interp (local)", title=title)
    for k in result.anymole["global"]:
        cells = [result.anymole["global"][k], result.interp["global"][k], result.anymole["local"][k], result.interp["local"][k]]
        table.add_row(k, *(f"{v:.6g}" for v in cells))
    Console().print(table)
