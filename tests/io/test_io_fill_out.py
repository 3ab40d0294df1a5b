"""A filled file is the input file with one clip changed: the GLB of a glTF input keeps every other byte of
data (read back from both files), a BVH of a BVH keeps its units, channel orders and frame time."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pygltflib as gl
import pytest
import torch

from anymole.errors import InvalidInput
from anymole.io import describe, load_character, write_fill
from anymole.io._export import splice
from anymole.rig import Motion, fk_motion
from asset_files import ASSETS, cached_load, validator_cmd
from multi_material import build

# reading a .gltf with a .bin into memory, pygltflib warns that the file "will be left orphaned"
pytestmark = pytest.mark.filterwarnings("ignore:Conversion will leave")


def _gltf(path: Path) -> gl.GLTF2:
    g = gl.GLTF2().load(str(path))
    if path.suffix == ".gltf":
        g.convert_buffers(gl.BufferFormat.BINARYBLOB)
    return g


def _image_bytes(g: gl.GLTF2, path: Path) -> list[bytes]:
    out = []
    for image in g.images:
        if image.uri:
            out.append((path.parent / image.uri).read_bytes())
        else:
            view = g.bufferViews[image.bufferView]
            out.append(g.binary_blob()[view.byteOffset : view.byteOffset + view.byteLength])
    return out


def _accessor_bytes(g: gl.GLTF2, index: int) -> bytes:
    acc = g.accessors[index]
    view = g.bufferViews[acc.bufferView]
    start = (view.byteOffset or 0) + (acc.byteOffset or 0)
    return g.binary_blob()[start : start + view.byteLength - (acc.byteOffset or 0)]


def _animation_data(g: gl.GLTF2, a: gl.Animation) -> list[tuple]:
    """Each channel's target and the bytes of its sampler's key times and values."""
    return [
        (c.target.node, c.target.path, a.samplers[c.sampler].interpolation,
         _accessor_bytes(g, a.samplers[c.sampler].input), _accessor_bytes(g, a.samplers[c.sampler].output))
        for c in a.channels
    ]  # fmt: skip


def _counts(g: gl.GLTF2) -> dict[str, object]:
    return {
        "nodes": len(g.nodes), "meshes": len(g.meshes), "materials": len(g.materials), "textures": len(g.textures),
        "images": len(g.images), "skins": len(g.skins),
        "morph_targets": [len(p.targets or []) for m in g.meshes for p in m.primitives],
        "mesh_weights": [m.weights for m in g.meshes],
        "extensions_used": g.extensionsUsed,
        "material_extensions": [m.extensions for m in g.materials],
    }  # fmt: skip


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("sources")
    (folder / "files").mkdir()
    return {
        "Fox.glb": ASSETS / "Fox.glb",
        "CesiumMan.glb": ASSETS / "CesiumMan.glb",
        "robot.glb": build(folder / "robot.glb"),
        "robot.gltf": build(folder / "robot.gltf"),
        "robot_files.gltf": build(folder / "files" / "robot.gltf", external=True),
    }


def _fill(character, clip):
    """A stand-in for a fill from frame F // 4 to the end: those frames backwards, unlike any clip."""
    m = character.motions[clip]
    part = m.slice(m.num_frames // 4, m.num_frames)
    back = None if part.translations is None else part.translations.flip(0)
    return m.num_frames // 4, Motion(m.fps, part.rotations.flip(0), part.root_translation.flip(0), back)


@pytest.mark.parametrize("replace", [False, True], ids=["added", "replaced"])
@pytest.mark.parametrize("name", ["Fox.glb", "CesiumMan.glb", "robot.glb", "robot.gltf", "robot_files.gltf"])
def test_glb_from_gltf_keeps_everything_else(sources, tmp_path, name, replace):
    src = sources[name]
    character = load_character(src)
    clip = "Wave" if "Wave" in character.motions else list(character.motions)[-1]  # the robot's morphs
    start, motion = _fill(character, clip)
    out = tmp_path / "out.glb"
    filled, summary = write_fill(out, character, clip, motion, replace_clip=replace, start=start)
    assert ("kept as they were" in summary) and filled == (clip if replace else f"{clip}_filled")
    a, b = _gltf(src), _gltf(out)
    assert _counts(b) == _counts(a)
    assert [m.to_dict() for m in b.materials] == [m.to_dict() for m in a.materials]
    assert _image_bytes(b, out) == _image_bytes(a, src)  # external image files are embedded
    assert [n.to_dict() for n in b.nodes] == [n.to_dict() for n in a.nodes]  # no joint here uses `matrix`
    changed = list(character.motions).index(clip)
    assert len(b.animations) == len(a.animations) + (0 if replace else 1)
    for i, anim in enumerate(a.animations):
        if replace and i == changed:
            assert b.animations[i].name == anim.name
            # channels that do not pose the skeleton (the robot's morph weights) stay as they were
            others = [c for c in _animation_data(a, anim) if c[1] == "weights"]
            assert [c for c in _animation_data(b, b.animations[i]) if c[1] == "weights"] == others
            assert others or name != "robot.glb"
            continue
        assert b.animations[i].name == anim.name
        assert _animation_data(b, b.animations[i]) == _animation_data(a, anim), anim.name
    # the mesh data is untouched too: every accessor of the input reads the same bytes in the output
    assert all(_accessor_bytes(b, k) == _accessor_bytes(a, k) for k in range(len(a.accessors)))
    # and the new clip is the motion we wrote
    back = load_character(out)
    assert list(back.motions)[changed if replace else -1] == filled
    if replace:  # the whole clip, the gap filled
        motion = splice(character.motions[clip], motion, start, character.skeleton.offsets)
        assert motion.num_frames == character.motions[clip].num_frames
    _, want = fk_motion(character.skeleton, motion)
    _, got = fk_motion(back.skeleton, back.motions[filled])
    size = float((want.amax((0, 1)) - want.amin((0, 1))).max())
    assert float((want - got).abs().max()) < 1e-5 * size


def test_filled_glbs_add_no_validator_issue(sources, tmp_path):
    cmd = validator_cmd()
    paths = []
    for name, src in sources.items():
        character = load_character(src)
        clip = next(iter(character.motions))
        out = tmp_path / f"{name}.glb"
        write_fill(out, character, clip, _fill(character, clip)[1])
        # the validator reads bytes alone: the .gltf with external files is checked as its .glb twin
        paths += [str(sources["robot.glb"] if name == "robot_files.gltf" else src), str(out)]
    report = json.loads(
        subprocess.run(cmd + paths, check=True, capture_output=True, text=True, timeout=300).stdout
    )
    for src, out in zip(paths[::2], paths[1::2], strict=True):
        # CesiumMan's own weights are not normalised (210 errors): the copy has those and no more
        assert report[out]["errors"] == report[src]["errors"], (out, report[out])
        assert sorted(report[out]["codes"]) == sorted(report[src]["codes"]), out
    assert report[str(sources["robot.glb"])]["errors"] == 0 and report[str(ASSETS / "Fox.glb")]["errors"] == 0


def test_glb_from_fbx_says_what_it_keeps(tmp_path):
    fox = cached_load("Fox.fbx")
    out = tmp_path / "fox.glb"
    name, summary = write_fill(out, fox, "Run", _fill(fox, "Run")[1])
    assert name == "Run_filled" and "not kept" in summary and "morph targets" in summary and "FBX" in summary
    back = load_character(out)
    assert list(back.motions) == [*fox.motions, "Run_filled"]
    assert len(back.mesh.materials) == len(fox.mesh.materials) and len(back.mesh.textures) == 1


def _channel_lines(text: str) -> list[str]:
    return re.findall(r"CHANNELS[^\r\n]*", text)


def _offsets(text: str) -> np.ndarray:
    return np.array([[float(v) for v in m.split()] for m in re.findall(r"OFFSET([^\r\n]*)", text)])


@pytest.mark.parametrize("name", ["131_01.bvh", "131_01_30fps.bvh"])
def test_bvh_from_bvh_keeps_units_orders_and_frame_time(tmp_path, name):
    src = ASSETS / name
    character = cached_load(name)
    motion = character.motions[src.stem].slice(0, 40)
    out = tmp_path / "out.bvh"
    write_fill(out, character, src.stem, motion)
    a, b = src.read_text(), out.read_text()
    assert [line.split() for line in _channel_lines(b)] == [line.split() for line in _channel_lines(a)]
    np.testing.assert_allclose(_offsets(b), _offsets(a), atol=1e-4)  # CMU units, not metres
    frame_time = lambda t: float(re.search(r"Frame Time:\s*(\S+)", t).group(1))  # noqa: E731
    assert frame_time(b) == pytest.approx(frame_time(a), rel=1e-7)
    back = load_character(out)
    torch.testing.assert_close(back.skeleton.offsets, character.skeleton.offsets, atol=1e-5, rtol=0)
    _, want = fk_motion(character.skeleton, motion)
    _, got = fk_motion(back.skeleton, back.motions["out"])
    assert float((want - got).abs().max()) < 1e-4
    # --units picks others: centimetres
    write_fill(tmp_path / "cm.bvh", character, src.stem, motion, units="cm")
    np.testing.assert_allclose(_offsets((tmp_path / "cm.bvh").read_text()), _offsets(a) * 5.6444, atol=1e-3)
    with pytest.raises(InvalidInput, match="unknown unit"):
        write_fill(tmp_path / "x.bvh", character, src.stem, motion, units="furlong")


def test_describe_states_units():
    bvh = describe(cached_load("131_01.bvh"))
    assert bvh["units"] == {"metres_per_unit": 0.056444, "name": "cmu"}
    extent_file, extent_m = bvh["skeleton"]["rest_extent_file"], bvh["skeleton"]["rest_extent_m"]
    assert extent_m == pytest.approx([x * 0.056444 for x in extent_file], rel=1e-5)
    fbx = describe(cached_load("Fox.fbx"))
    assert fbx["units"]["name"] == "cm"
    gltf = describe(cached_load("Fox.glb"))
    assert gltf["units"]["name"].startswith("glTF units")
    assert gltf["skeleton"]["rest_extent_file"] == gltf["skeleton"]["rest_extent_m"]


@pytest.mark.parametrize("start", [0, 7, 20])
def test_splice_puts_the_part_in_place(start):
    fox = cached_load("Fox.glb")
    clip = fox.motions["Survey"]
    same = splice(clip, clip.slice(start, start + 30), start, fox.skeleton.offsets)
    assert torch.equal(same.rotations, clip.rotations) and torch.equal(same.translations, clip.translations)
    _, other = _fill(fox, "Walk")
    part = other.slice(0, 10)
    got = splice(clip, part, start, fox.skeleton.offsets)
    assert got.num_frames == clip.num_frames and got.fps == clip.fps
    assert torch.equal(got.rotations[start : start + 10], part.rotations)
    assert torch.equal(got.rotations[start + 10 :], clip.rotations[start + 10 :])
    with pytest.raises(InvalidInput, match="does not fit"):
        splice(clip, clip, start + 1, fox.skeleton.offsets)
