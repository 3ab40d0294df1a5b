"""Inputs and expected outputs of the Unity package's C# tests, written by the Python side of this repository.

    python scripts/unity_fixtures.py OUT_DIR

For every bundled character (assets/): ``characters/NAME.asset.bin``, the `CharacterAsset` the server imports
from the file (what a glTF import into Unity must send back), and ``characters/NAME.clip.bin``, its first
clip as a `Clip`. ``fox_interp_python.clip.bin``: the result the Python client gets from a live server for
Fox.glb's "Survey" clip, context 0:40 and keys 60 and 82, method interp; the C# core must receive the same
floats bit for bit. ``fox_interp_python.id`` holds the character id of that upload. ``fox_survey.clip.json``: the
Survey clip as motion JSON (`anymole.wire.motion_json`), what the command-line example reads;
``fox_fill_python.json``: what ``anymole fill --server ... --out result.json`` writes for the same fill.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSET_FILES = ("CesiumMan.glb", "Fox.glb", "Fox.fbx", "131_01.bvh", "131_01_30fps.bvh")
FOX_CONTEXT, FOX_KEYS = (0, 40), (60, 82)


async def _python_client_fill(out: Path) -> None:
    from anymole.client import AnyMoLeClient, fill_remote_async
    from anymole.io import load_character
    from anymole.rig import Keyframes, Motion
    from anymole.service.server import ServerConfig, build_server
    from anymole.wire import convert
    from anymole.wire.motion_json import write_motion_json

    fox = load_character(ROOT / "assets" / "Fox.glb")
    motion = fox.motions["Survey"]
    write_motion_json(out / "fox_survey.clip.json", motion, fox.skeleton.names)
    with tempfile.TemporaryDirectory(prefix="anymole-unity-fixtures-") as tmp:
        server, port = build_server(ServerConfig(port=0, data_dir=Path(tmp), devices=("cpu",), grace_s=0.5))
        await server.start()
        try:
            async with await AnyMoLeClient.connect(f"127.0.0.1:{port}") as client:
                up = await client.upload_file(ROOT / "assets" / "Fox.glb")
                start, stop = FOX_CONTEXT
                keys = list(FOX_KEYS)
                poses = Motion(motion.fps, motion.rotations[keys], motion.root_translation[keys])
                request = client.request(
                    up, motion.slice(start, stop), Keyframes(tuple(k - start for k in keys), poses), method="interp"
                )
                job_id, _ = await client.submit(request)
                async for _ in client.watch(job_id, up.skeleton.num_joints):
                    pass
                result, _ = await client.result(job_id, up.skeleton.num_joints)
            await fill_remote_async(
                f"127.0.0.1:{port}", ROOT / "assets" / "Fox.glb", clip="Survey", context=FOX_CONTEXT, keys=FOX_KEYS,
                out=out / "fox_fill_python.json", method="interp", progress=False,
            )
        finally:
            await server.stop(0.0)
    (out / "fox_interp_python.clip.bin").write_bytes(convert.motion_to_clip(result).SerializeToString())
    (out / "fox_interp_python.id").write_text(up.character_id)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 1
    from anymole.io import load_character
    from anymole.wire import convert

    out = Path(argv[0])
    (out / "characters").mkdir(parents=True, exist_ok=True)
    for name in ASSET_FILES:
        character = load_character(ROOT / "assets" / name)
        asset = convert.character_to_asset(character).SerializeToString(deterministic=True)
        (out / "characters" / f"{name}.asset.bin").write_bytes(asset)
        clip = convert.motion_to_clip(next(iter(character.motions.values())))
        (out / "characters" / f"{name}.clip.bin").write_bytes(clip.SerializeToString())
    asyncio.run(_python_client_fill(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
