"""Commands over asset files on this machine: ``anymole inspect`` (what is in a file), ``anymole render``
(pictures and videos of a clip) and ``anymole convert`` (a clip in another format, motion JSON included)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    pass

from anymole.cli._common import _check_suffix, _pick_clip, _span


def inspect(
    asset: Annotated[Path, typer.Argument(help="character file: .glb/.gltf, .fbx, .bvh or .dae")],
    json_out: Annotated[bool, typer.Option("--json", help="print machine-readable JSON instead of a tree")] = False,
) -> None:
    """Show what an asset holds: skeleton tree, joint count, mesh statistics, clips (frames, seconds).

    Clip lengths: 'last frame' is (frames - 1) / fps for every format; 'duration' is the length as the file format counts it, which for BVH is Frames × Frame Time (one frame time longer) and otherwise equals the last frame's time. --json gives both (seconds, duration_s).

    Example: anymole inspect assets/Fox.glb --json
    """
    import json

    from rich.console import Console
    from rich.table import Table
    from rich.tree import Tree

    from anymole.io import describe, load_character

    with Console(stderr=True).status(f"loading {asset}"):
        info = describe(load_character(asset))
    if json_out:
        typer.echo(json.dumps(info, indent=2))
        return
    console = Console()
    sk = info["skeleton"]
    console.print(f"[bold]{info['name']}[/]  ({asset})")
    units = info["units"]
    console.print(f"joint_count: [bold]{info['joint_count']}[/]   max depth: {sk['max_depth']}")
    console.print(f"units: {units['name']} ({units['metres_per_unit']:g} m per unit)   rest extent: "
                  f"{', '.join(f'{x:.3f}' for x in sk['rest_extent_file'])} file units = "
                  f"{', '.join(f'{x:.3f}' for x in sk['rest_extent_m'])} m")
    by_name = {j["name"]: j for j in sk["joints"]}
    tree = Tree("[dim]skeleton[/]")

    def add(node: Tree, name: str) -> None:
        j = by_name[name]
        branch = node.add(f"{j['index']:>3} {name}")
        for child in j["children"]:
            add(branch, child)

    for root in sk["roots"]:
        add(tree, root)
    console.print(tree)
    mesh = info["mesh"]
    if mesh is None:
        console.print("mesh: none (skeleton only; renders use a stick body)")
    else:
        console.print(f"mesh: {mesh['vertices']} vertices, {mesh['faces']} triangles, up to "
                      f"{mesh['max_influences']} joints per vertex, {len(mesh['materials'])} materials, "
                      f"{mesh['textures']} textures{', vertex colours' if mesh['has_colors'] else ''}")
    bvh = asset.suffix.lower() == ".bvh"
    table = Table(
        "clip", "frames", "fps", "last frame (s)", "duration (s)", title="animations",
        caption="duration = Frames × Frame Time (BVH)" if bvh else "duration = time of the last key",
    )  # fmt: skip
    for c in info["clips"]:
        table.add_row(c["name"], str(c["frames"]), f"{c['fps']:.3f}", f"{c['seconds']:.4f}", f"{c['duration_s']:.4f}")
    console.print(table)


def render(
    asset: Annotated[Path, typer.Argument(help="character file (glTF/GLB, FBX, BVH, Collada)")],
    out: Annotated[Path, typer.Option("--out", help="contact sheet PNG: one row per view")] = Path("sheet.png"),
    views: Annotated[int, typer.Option(min=1, help="orbit views (4: frame/left/right/back as the reference)")] = 4,
    video: Annotated[Path | None, typer.Option(help="also write an MP4 of every frame, views in a grid")] = None,
    clip: Annotated[str | None, typer.Option(help="clip name (default: the first clip)")] = None,
    frames: Annotated[str | None, typer.Option(help="frame range A:B of the clip (Python slice)")] = None,
    columns: Annotated[int, typer.Option(min=1, help="frames per row of the sheet")] = 6,
) -> None:
    """Render a character's clip from orbit views: a contact sheet to look at, optionally a video."""
    import imageio.v3 as iio

    _check_suffix(out, "--out", (".png", ".jpg", ".jpeg"))
    if video is not None:
        _check_suffix(video, "--video", (".mp4",))

    from anymole.io import load_character
    from anymole.render.sheet import contact_sheet, view_grid
    from anymole.render.views import render_motion

    character = load_character(asset)
    name = _pick_clip(character, clip)
    motion = character.motions[name]
    numbers = list(range(motion.num_frames))[slice(*_span(frames, "--frames"))]
    renders = render_motion(character, motion, views=views, frames=numbers, with_depth=False)
    iio.imwrite(out, contact_sheet(renders, columns=columns, frame_numbers=numbers))
    typer.echo(f"wrote {out} ({len(renders.cameras)} views x {len(numbers)} frames of {name!r})")
    if video is not None:
        iio.imwrite(video, view_grid(renders), fps=motion.fps, codec="libx264", macro_block_size=1)
        typer.echo(f"wrote {video}")


def convert(
    asset: Annotated[Path, typer.Argument(help="character file with a clip (.glb, .gltf, .fbx, .bvh, .dae)")],
    out: Annotated[Path, typer.Option("--out", help="output: .json (the clip as motion JSON, canonical space), .glb (character + clip) or .bvh")],
    clip: Annotated[str | None, typer.Option(help="clip name (default: the first clip)")] = None,
) -> None:
    """Write one clip of a file in another format: motion JSON (what `fill --out X.json` writes and headless
    clients read), a GLB of the character with that clip, or a BVH.

    Example: anymole convert assets/Fox.glb --clip Survey --out survey.json
    """
    from anymole.errors import InvalidInput
    from anymole.io import load_character, write_bvh, write_glb

    _check_suffix(out, "--out", (".json", ".glb", ".bvh"))
    if out.resolve() == asset.resolve():
        raise InvalidInput("--out", f"{out} is the input file; pick another name")
    character = load_character(asset)
    name = _pick_clip(character, clip)
    motion = character.motions[name]
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = out.suffix.lower()
    if suffix == ".json":
        from anymole.wire.motion_json import write_motion_json

        write_motion_json(out, motion, character.skeleton.names)
    elif suffix == ".glb":
        write_glb(out, character, {name: motion})
    else:
        write_bvh(out, character.skeleton, motion)
    typer.echo(
        f"wrote {out}: clip {name!r}, {motion.num_frames} frames at {motion.fps:g} fps, "
        f"{character.skeleton.num_joints} joints"
    )
