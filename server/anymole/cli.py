"""`anymole` command line: serve, fill, demo, inspect, eval, render, bench, models.

Flags become frozen config dataclasses and library calls; heavy imports live inside the commands so that
``anymole --help`` answers at once. Exit codes: 0 ok, 1 user error (message, no traceback), 2 internal error.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="anymole",
    help=(
        "AnyMoLe Bridge: motion in-betweening for any rigged character.\n\n"
        "Typical session:\n\n"
        "  anymole inspect Fox.glb                      # what is in an asset\n\n"
        "  anymole fill Fox.glb --clip Survey --context 0:40 --keys 60,82 --out fox_fill.glb\n\n"
        "  anymole eval fox_fill.glb Fox.glb --clip Survey --frames 41:81\n\n"
        "  anymole serve                                # the gRPC server the Unity/Unreal plugins talk to\n\n"
        "  anymole demo                                 # offline end-to-end run on a bundled character"
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)


def _fail(message: str, code: int = 1) -> typer.Exit:
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def main() -> None:
    """Console-script entry point: maps our exceptions to exit codes without tracebacks."""
    from anymole.errors import AnymoleError

    try:
        app()
    except AnymoleError as exc:
        raise SystemExit(_fail(str(exc)).exit_code) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as exc:  # an internal error: say so, point at the log
        import logging

        logging.getLogger("anymole").exception("internal error")
        print(f"internal error: {exc!r} (please report it with the command you ran)", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
