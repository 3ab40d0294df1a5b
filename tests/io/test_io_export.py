"""Writers: load → write → load round trips (GLB and BVH) and the Khronos glTF Validator on our GLBs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from anymole.io import load_character, write_bvh, write_glb
from anymole.rig import Character, fk_motion
from asset_files import ASSETS, cached_load, validator_cmd
from multi_material import MATERIALS, build


def _qdist(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest distance between unit quaternions up to sign."""
    return float(torch.minimum((a - b).norm(dim=-1), (a + b).norm(dim=-1)).max())


def _same_motion(a: Character, b: Character, clip_a: str, clip_b: str) -> None:
    ma, mb = a.motions[clip_a], b.motions[clip_b]
    assert mb.num_frames == ma.num_frames
    assert mb.fps == pytest.approx(ma.fps, rel=1e-6)
    assert _qdist(ma.rotations, mb.rotations) < 1e-5
    _, pa = fk_motion(a.skeleton, ma)
    _, pb = fk_motion(b.skeleton, mb)
    assert float((pa - pb).abs().max()) < 1e-5


def _same_skeleton(a: Character, b: Character, rest_rotations: bool = True) -> None:
    assert b.skeleton.names == a.skeleton.names and b.skeleton.parents == a.skeleton.parents
    assert float((a.skeleton.offsets - b.skeleton.offsets).abs().max()) < 1e-5
    if rest_rotations:
        assert _qdist(a.skeleton.rest_rotations, b.skeleton.rest_rotations) < 1e-5


# Fox is authored in ~100-unit "metres"; loading with scale=0.01 makes both Foxes metre-sized, so the
# absolute 1e-5 tolerance means the same for every asset.
GLB_CASES = [("CesiumMan.glb", None), ("Fox.glb", 0.01), ("Fox.fbx", 0.0001), ("131_01_30fps.bvh", None), ("131_01.bvh", None)]


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, tuple[Character, Path]]:
    out = tmp_path_factory.mktemp("glb")
    result = {}
    for name, scale in GLB_CASES:
        ch = cached_load(name, scale=scale)
        path = out / f"{name.replace('.', '_')}.glb"
        write_glb(path, ch)
        result[name] = (ch, path)
    return result


@pytest.mark.parametrize(("name", "scale"), GLB_CASES)
def test_glb_round_trip(written, name, scale):
    a, path = written[name]
    b = load_character(path)
    _same_skeleton(a, b)
    assert list(b.motions) == list(a.motions)
    for clip in a.motions:
        _same_motion(a, b, clip, clip)
    if a.mesh is None:
        assert b.mesh is None
        return
    ma, mb = a.mesh, b.mesh
    assert mb.num_vertices == ma.num_vertices and torch.equal(mb.faces, ma.faces)
    for field in ("vertices", "normals", "uvs", "inverse_bind"):
        assert float((getattr(ma, field) - getattr(mb, field)).abs().max()) < 1e-5, field
    assert len(mb.materials) == len(ma.materials)
    for mat_a, mat_b in zip(ma.materials, mb.materials, strict=True):
        assert float((mat_a.base_color - mat_b.base_color).abs().max()) < 1e-6
        assert torch.equal(mat_a.texture, mat_b.texture)  # PNG is lossless
    # influences may come back in another slot order: compare dense (V, J) weight matrices
    J = a.skeleton.num_joints
    dense = lambda m: torch.zeros(m.num_vertices, J).scatter_add_(1, m.joint_indices, m.joint_weights)  # noqa: E731
    assert float((dense(ma) - dense(mb)).abs().max()) < 1e-6


def test_glb_keeps_every_material(tmp_path):
    a = load_character(build(tmp_path / "robot.glb"))
    write_glb(tmp_path / "out.glb", a)
    b = load_character(tmp_path / "out.glb")
    ma, mb = a.mesh, b.mesh
    assert [m.name for m in mb.materials] == [m.name for m in ma.materials] and len(ma.materials) == MATERIALS
    for mat_a, mat_b in zip(ma.materials, mb.materials, strict=True):
        assert torch.equal(mat_a.base_color, mat_b.base_color)
        assert (mat_a.texture is None) == (mat_b.texture is None)
    # faces come back grouped by material (one primitive each): compare each material's set of triangles
    def triangles(m, k):
        return sorted(map(tuple, m.vertices[m.faces[m.material_of_faces() == k]].reshape(-1, 9).tolist()))

    for k in range(MATERIALS):
        assert triangles(ma, k) == triangles(mb, k)
    assert float((ma.colors - mb.colors).abs().max()) < 1e-6


def test_glb_of_several_materials_is_validator_clean(tmp_path):
    a = load_character(build(tmp_path / "robot.glb"))
    write_glb(tmp_path / "out.glb", a)
    out = str(tmp_path / "out.glb")
    report = json.loads(subprocess.run([*validator_cmd(), out], check=True, capture_output=True, text=True, timeout=120).stdout)
    assert report[out]["errors"] == 0 and report[out]["warnings"] == 0, report[out]


def test_glb_from_a_motion_list(tmp_path):
    ch = cached_load("Fox.glb", scale=0.01)
    walk = ch.motions["Walk"]
    path = tmp_path / "walk.glb"
    write_glb(path, ch, [walk.slice(0, 10)])
    back = load_character(path)
    assert list(back.motions) == ["Walk"] and back.motions["Walk"].num_frames == 10


@pytest.mark.parametrize(
    ("name", "scale", "clip"),
    [("131_01_30fps.bvh", None, "131_01_30fps"), ("131_01.bvh", None, "131_01"), ("Fox.glb", 0.01, "Survey"),
     ("Fox.fbx", 0.0001, "Run"), ("CesiumMan.glb", None, "animation_0")],
)  # fmt: skip
def test_bvh_round_trip(tmp_path, name, scale, clip):
    a = cached_load(name, scale=scale)
    path = tmp_path / "out.bvh"
    write_bvh(path, a.skeleton, a.motions[clip])
    b = load_character(path, scale=1.0)  # written in metres
    # BVH has no rest rotations: offsets and every frame survive, the rest pose becomes identity
    _same_skeleton(a, b, rest_rotations=name.endswith(".bvh"))
    _same_motion(a, b, clip, "out")
    if name.endswith(".bvh"):
        assert len(b.skeleton.end_sites) == 7
        for j, tip in a.skeleton.end_sites.items():
            assert float((b.skeleton.end_sites[j] - tip).abs().max()) < 1e-6


def test_bvh_per_joint_orders_and_units(tmp_path):
    a = cached_load("131_01_30fps.bvh")
    J = a.skeleton.num_joints
    orders = ["ZXY" if j % 2 else "XYZ" for j in range(J)]
    path = tmp_path / "orders.bvh"
    write_bvh(path, a.skeleton, a.motions["131_01_30fps"], order=orders, unit_scale=100.0)
    text = path.read_text()
    assert "CHANNELS 6 Xposition Yposition Zposition Xrotation Yrotation Zrotation" in text
    assert "CHANNELS 3 Zrotation Xrotation Yrotation" in text
    b = load_character(path)  # centimetres: the size heuristic picks 0.01
    _same_motion(a, b, "131_01_30fps", "orders")


def test_gltf_validator_reports_no_errors(written):
    cmd = validator_cmd()
    paths = [str(p) for _, p in written.values()]
    # the validator itself works: CesiumMan's own file has non-normalised weights
    paths.append(str(ASSETS / "CesiumMan.glb"))
    report = json.loads(subprocess.run(cmd + paths, check=True, capture_output=True, text=True, timeout=120).stdout)
    assert report[str(ASSETS / "CesiumMan.glb")]["errors"] == 210
    for p in paths[:-1]:
        assert report[p]["errors"] == 0, report[p]
        assert report[p]["warnings"] == 0, report[p]
