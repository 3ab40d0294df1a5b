"""What the Python side says, for the C++ core's tests to compare with (run by the GoogleTest fixtures).

    python_reference.py export OUT_DIR ASSET...    the server's own import of each ASSET, into OUT_DIR/<file name>/:
                                                   character.pb (CharacterAsset, canonical space) and one
                                                   <clip>.clip.pb (Clip) per clip
    python_reference.py fill SERVER ASSET CLIP A:B KEYS OUT
                                                   `anymole fill --server`'s path (fill_remote_async) on that clip;
                                                   writes the result timeline the Python client received (Clip)
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from anymole.client._fill import fill_remote_async
from anymole.io import load_character
from anymole.wire import convert


def export(out_dir: str, *assets: str) -> None:
    for asset in assets:
        _export(Path(asset), Path(out_dir) / Path(asset).name)


def _export(asset: Path, out: Path) -> None:
    character = load_character(asset)
    out.mkdir(parents=True, exist_ok=True)
    (out / "character.pb").write_bytes(convert.character_to_asset(character).SerializeToString(deterministic=True))
    for name, motion in character.motions.items():
        safe = "".join(c if c.isalnum() else "_" for c in name)
        (out / f"{safe}.clip.pb").write_bytes(convert.motion_to_clip(motion).SerializeToString())


def fill(server: str, asset: str, clip: str, context: str, keys: str, out: str) -> None:
    start, stop = (int(x) for x in context.split(":"))
    with tempfile.TemporaryDirectory() as tmp:
        res = asyncio.run(
            fill_remote_async(
                server, asset, clip=clip, context=(start, stop), keys=[int(k) for k in keys.split(",")],
                out=Path(tmp) / "result.npz", progress=False,
            )
        )  # fmt: skip
    assert res.motion is not None
    Path(out).write_bytes(convert.motion_to_clip(res.motion).SerializeToString())


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"export": export, "fill": fill}[command](*args)
