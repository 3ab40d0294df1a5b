"""`anymole` command line: serve, fill, jobs, demo, inspect, eval, render, convert, bench, models.

Flags become frozen config dataclasses and library calls; heavy imports live inside the commands so that
``anymole --help`` answers at once. Exit codes: 0 ok, 1 user error (message, no traceback), 2 internal error.

One module per command group, each a set of plain functions registered here in the order ``--help`` lists
them: ``assets`` (inspect, render, convert), ``fill`` (fill, eval), ``server`` (serve, demo), ``bench``, ``models``,
``jobs``; ``_common`` holds what they share. A new command goes into its group's module and gets a line here.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from anymole.cli import assets, bench, fill, jobs, models, server
from anymole.cli._common import _fail

__all__ = ["app", "main"]

app = typer.Typer(
    name="anymole",
    help=(
        "AnyMoLe Bridge: motion in-betweening for any rigged character.\n\n"
        "Typical session:\n\n"
        "  anymole inspect Fox.glb                      # what is in an asset\n\n"
        "  anymole fill Fox.glb --clip Survey --context 0:40 --keys 60,82 --out fox_fill.glb\n\n"
        "  anymole eval fox_fill.glb Fox.glb --clip Survey --frames 40:82\n\n"
        "  anymole serve                                # the gRPC server the Unity/Unreal plugins talk to\n\n"
        "  anymole demo                                 # offline end-to-end run on a bundled character"
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    """``--version``: the package and the wire protocol it speaks (what a plugin must match)."""
    if value:
        from anymole import __version__
        from anymole.wire.version import PROTOCOL_VERSION

        typer.echo(f"anymole {__version__} (protocol {PROTOCOL_VERSION[0]}.{PROTOCOL_VERSION[1]})")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    pass


app.command()(assets.inspect)
app.command()(fill.fill)
app.command("eval")(fill.evaluate)
app.command()(assets.render)
app.command()(assets.convert)
app.command()(server.serve)
app.command()(server.demo)
app.add_typer(bench.bench_app, name="bench")
app.add_typer(models.models_app, name="models")
app.add_typer(jobs.jobs_app, name="jobs")


def main() -> None:
    """Console-script entry point: maps our exceptions to exit codes without tracebacks."""
    from anymole.errors import AnymoleError

    try:
        app()
    except SystemExit as exc:
        # click ends a usage error (unknown option, value out of range) with 2, which is our internal-error code
        raise SystemExit(1 if exc.code == 2 else exc.code) from None
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
