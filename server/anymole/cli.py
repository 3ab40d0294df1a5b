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


@app.command()
def render(
    asset: Annotated[Path, typer.Argument(help="character file (glTF/GLB, FBX, BVH, Collada)")],
    out: Annotated[Path, typer.Option("--out", help="contact sheet PNG: one row per view")] = Path("sheet.png"),
    views: Annotated[int, typer.Option(help="orbit views (4: frame/left/right/back as the reference)")] = 4,
    video: Annotated[Path | None, typer.Option(help="also write an MP4 of every frame, views in a grid")] = None,
    clip: Annotated[str | None, typer.Option(help="clip name (default: the first clip)")] = None,
    frames: Annotated[str | None, typer.Option(help="frame range A:B of the clip (Python slice)")] = None,
    columns: Annotated[int, typer.Option(help="frames per row of the sheet")] = 6,
) -> None:
    """Render a character's clip from orbit views: a contact sheet to look at, optionally a video."""
    import imageio.v3 as iio

    from anymole.errors import InvalidInput
    from anymole.io import load_character
    from anymole.render.sheet import contact_sheet, view_grid
    from anymole.render.views import render_motion

    character = load_character(asset)
    if not character.motions:
        raise InvalidInput("asset", f"{asset} has no animation clip to render")
    name = clip if clip is not None else next(iter(character.motions))
    if name not in character.motions:
        raise InvalidInput("--clip", f"no clip {name!r}; clips are {list(character.motions)}")
    motion = character.motions[name]
    try:
        a, _, b = (frames or ":").partition(":")
        span = slice(int(a) if a else None, int(b) if b else None)
    except ValueError:
        raise InvalidInput("--frames", f"expected A:B with integers, got {frames!r}") from None
    numbers = list(range(motion.num_frames))[span]
    renders = render_motion(character, motion, views=views, frames=numbers, with_depth=False)
    iio.imwrite(out, contact_sheet(renders, columns=columns, frame_numbers=numbers))
    typer.echo(f"wrote {out} ({len(renders.cameras)} views x {len(numbers)} frames of {name!r})")
    if video is not None:
        iio.imwrite(video, view_grid(renders), fps=motion.fps, codec="libx264", macro_block_size=1)
        typer.echo(f"wrote {video}")


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
