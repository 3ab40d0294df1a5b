"""What every command group shares: the one error line (`fail`), clip and span arguments, reconnect
options, output-name checks."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from anymole.client import Reconnect
    from anymole.rig import Character

def _fail(message: str, code: int = 1) -> typer.Exit:
    from rich.console import Console
    from rich.markup import escape

    # soft_wrap: paths and commands in messages must stay copy-pasteable, never broken mid-word;
    # escape: messages quote user input and shapes such as "[1, 2]", which are not markup
    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code)


_RECONNECT_HELP = (
    "seconds to keep trying when the server goes away mid-job (a restart): the job runs on there, and the "
    "watch resumes after the last event seen; 0 gives up at once (default: 120)"
)


def _reconnect(total_s: float | None) -> Reconnect:
    from anymole.client import Reconnect

    return Reconnect() if total_s is None else Reconnect(total_s=total_s)


def _span(text: str | None, option: str) -> tuple[int | None, int | None]:
    """Parse ``A:B`` (Python slice: A included, B excluded; either may be empty)."""
    from anymole.errors import InvalidInput

    a, sep, b = (text or ":").partition(":")
    try:
        if not sep:
            raise ValueError
        return (int(a) if a else None, int(b) if b else None)
    except ValueError:
        raise InvalidInput(option, f"expected A:B with integers (A included, B excluded), got {text!r}") from None


def _pick_clip(character: Character, clip: str | None, option: str = "--clip") -> str:
    """The name of ``clip`` (default: the first clip) in ``character``; a user error naming ``option``."""
    from anymole.errors import AssetError, InvalidInput

    motions = character.motions
    if not motions:
        raise AssetError(character.source or character.name, "has no animation clip; pick an animated asset")
    name = clip if clip is not None else next(iter(motions))
    if name not in motions:
        raise InvalidInput(option, f"no clip {name!r}; the clips are {list(motions)}: pass one of them to {option}")
    return name


def _check_suffix(path: Path, option: str, suffixes: tuple[str, ...]) -> None:
    """Refuse an output name whose suffix picks no writer we use, before any work is done."""
    from anymole.errors import InvalidInput

    if path.suffix.lower() not in suffixes:
        raise InvalidInput(option, f"end the file name with {' or '.join(suffixes)}, got {path.name!r}")


def _estimator_weights(value: str | None) -> Path | None:
    """``--estimator-weights`` of ``anymole serve`` and ``anymole eval --oracle``: ``none`` → ``None`` (the conv backbone); a models folder → itself,
    once it is seen to hold both ViTs (`ModelUnavailable` saying what to put where otherwise); not given → the
    default models folder if it holds them, else ``None``."""
    from anymole.errors import ModelUnavailable
    from anymole.hub import default_root, estimator_weights

    if value is not None and value.lower() == "none":
        return None
    root = Path(value).expanduser() if value is not None else default_root()
    try:
        estimator_weights(root)
    except ModelUnavailable:
        if value is not None:
            raise
        return None
    return root
