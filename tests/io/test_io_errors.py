"""Bad input gives a typed `AssetError` naming the file and the reason, never a crash or garbage."""

from __future__ import annotations

import ctypes
import os
import time

import numpy as np
import pygltflib as gl
import pytest

from anymole.errors import AssetError, InvalidInput
from anymole.io import load_character
from anymole.io._assimp import LibraryMismatch, check_library_version
from anymole.io._isolate import run_isolated
from asset_files import ASSETS


def _error(path, **kw) -> AssetError:
    with pytest.raises(AssetError) as info:
        load_character(path, **kw)
    assert info.value.path == str(path)
    assert str(path) in str(info.value)
    return info.value


def test_missing_unsupported_and_empty_files(tmp_path):
    assert "no such file" in _error(tmp_path / "nope.glb").reason
    obj = tmp_path / "cube.obj"
    obj.write_text("v 0 0 0\n")
    err = _error(obj)
    assert "unsupported format '.obj'" in err.reason and ".glb" in err.reason
    empty = tmp_path / "empty.fbx"
    empty.write_bytes(b"")
    assert "empty" in _error(empty).reason


@pytest.mark.parametrize("name", ["Fox.glb", "Fox.fbx", "CesiumMan.glb"])
def test_truncated_binary_files(tmp_path, name):
    data = (ASSETS / name).read_bytes()
    cut = tmp_path / name
    cut.write_bytes(data[: len(data) // 3])
    err = _error(cut)
    assert "assimp could not read it" in err.reason or "crashed" in err.reason


def test_garbage_with_a_known_extension(tmp_path):
    junk = tmp_path / "junk.fbx"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _error(junk)


def test_truncated_and_malformed_bvh(tmp_path):
    text = (ASSETS / "131_01_30fps.bvh").read_bytes()
    cut = tmp_path / "cut.bvh"
    cut.write_bytes(text[: len(text) - 5000])
    err = _error(cut)
    assert "truncated BVH" in err.reason and "249 frames × 96 channels" in err.reason
    bad = tmp_path / "bad.bvh"
    bad.write_bytes(text.replace(b"OFFSET", b"OFSET", 3))
    assert "malformed BVH: expected OFFSET" in _error(bad).reason
    nan = tmp_path / "nan.bvh"
    nan.write_bytes(text.replace(b"MOTION", b"MOTION", 1)[:-200] + b" nan" * 60 + b"\n")
    _error(nan)
    for before, after in [(b"Frames: 249", b"Frames: inf"), (b"CHANNELS 3", b"CHANNELS nan"), (b"OFFSET", b"OFFSET nan")]:
        odd = tmp_path / "odd.bvh"
        odd.write_bytes(text.replace(before, after, 1))
        assert "malformed BVH: expected a finite number" in _error(odd).reason
    chain = "".join(f"JOINT j{i} {{ OFFSET 0 1 0 CHANNELS 3 Zrotation Yrotation Xrotation\n" for i in range(5000))
    deep = tmp_path / "deep.bvh"
    deep.write_text(f"HIERARCHY\nROOT r {{ OFFSET 0 0 0 CHANNELS 3 Zrotation Yrotation Xrotation\n{chain}")
    assert "nested too deeply" in _error(deep).reason


def test_unknown_clip_is_named(tmp_path):
    err = _error(ASSETS / "Fox.glb", clip="Jump")
    assert "Jump" in err.reason and "Survey" in err.reason
    assert list(load_character(ASSETS / "Fox.glb", clip="Walk").motions) == ["Walk"]


def _triangle_glb(path, weights: np.ndarray | None, bone_scale: list[float] | None = None) -> None:
    """A one-triangle glTF; with ``weights`` (3, 4) it is skinned to a single joint."""
    pos = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)
    idx = np.array([0, 1, 2], np.uint16)
    blobs = [pos.tobytes(), idx.tobytes() + b"\0\0"]
    g = gl.GLTF2(asset=gl.Asset(version="2.0"))
    g.accessors.append(gl.Accessor(bufferView=0, componentType=gl.FLOAT, count=3, type=gl.VEC3,
                                   min=[0, 0, 0], max=[1, 1, 0]))
    g.accessors.append(gl.Accessor(bufferView=1, componentType=gl.UNSIGNED_SHORT, count=3, type=gl.SCALAR))
    attrs = gl.Attributes(POSITION=0)
    g.nodes.append(gl.Node(mesh=0))
    if weights is not None:
        blobs += [np.zeros((3, 4), np.uint8).tobytes(), weights.astype(np.float32).tobytes(),
                  np.eye(4, dtype=np.float32).tobytes()]
        g.accessors.append(gl.Accessor(bufferView=2, componentType=gl.UNSIGNED_BYTE, count=3, type=gl.VEC4))
        g.accessors.append(gl.Accessor(bufferView=3, componentType=gl.FLOAT, count=3, type=gl.VEC4))
        g.accessors.append(gl.Accessor(bufferView=4, componentType=gl.FLOAT, count=1, type=gl.MAT4))
        attrs.JOINTS_0, attrs.WEIGHTS_0 = 2, 3
        g.nodes[0].skin = 0
        g.nodes.append(gl.Node(name="bone", scale=bone_scale))
        g.skins.append(gl.Skin(joints=[1], inverseBindMatrices=4))
    offset = 0
    for b in blobs:
        g.bufferViews.append(gl.BufferView(buffer=0, byteOffset=offset, byteLength=len(b)))
        offset += len(b)
    g.meshes.append(gl.Mesh(primitives=[gl.Primitive(attributes=attrs, indices=1)]))
    g.scenes = [gl.Scene(nodes=list(range(len(g.nodes))))]
    g.scene = 0
    g.buffers = [gl.Buffer(byteLength=offset)]
    g.set_binary_blob(b"".join(blobs))
    g.save_binary(str(path))


def test_no_skeleton(tmp_path):
    path = tmp_path / "static.glb"
    _triangle_glb(path, None)
    assert "no skeleton" in _error(path).reason


def test_unbound_vertices_are_counted(tmp_path):
    path = tmp_path / "unbound.glb"
    _triangle_glb(path, np.array([[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]))
    assert "1 of 3 vertices" in _error(path).reason
    ok = tmp_path / "bound.glb"
    _triangle_glb(ok, np.array([[1, 0, 0, 0]] * 3))
    ch = load_character(ok)
    assert ch.skeleton.names == ("bone",) and ch.mesh.num_vertices == 3


def test_mirrored_joint_is_refused(tmp_path):
    path = tmp_path / "mirrored.glb"
    _triangle_glb(path, np.array([[1, 0, 0, 0]] * 3), bone_scale=[-1.0, 1.0, 1.0])
    assert "node 'bone' has a mirrored or degenerate transform" in _error(path).reason


def _assert_reaped(pid: int) -> None:
    """``pid`` is no child of ours any more: waited for, so no zombie is left behind."""
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_a_crashing_importer_does_not_take_the_process_down():
    worker = run_isolated("x", os.getpid)
    with pytest.raises(AssetError, match="crashed") as info:
        run_isolated("model.fbx", ctypes.string_at, 8, 1)  # reads address 8: SIGSEGV in the worker
    assert info.value.path == "model.fbx"
    _assert_reaped(worker)
    # a fresh worker serves the next import
    assert load_character(ASSETS / "Fox.glb", clip="Walk").skeleton.num_joints == 24


def test_a_hung_importer_times_out():
    worker = run_isolated("x", os.getpid)
    with pytest.raises(AssetError, match=r"did not finish within 0\.5 s"):
        run_isolated("slow.glb", time.sleep, 30, timeout=0.5)
    _assert_reaped(worker)
    assert run_isolated("x", os.getpid) != worker
    assert run_isolated("x", abs, -3) == 3


def test_library_version_check():
    check_library_version((5, 2, 4))
    with pytest.raises(LibraryMismatch, match=r"libassimp 5\.4\.3 .*install Debian's libassimp5 5\.2"):
        check_library_version((5, 4, 3))
    with pytest.raises(LibraryMismatch):
        check_library_version((6, 0, 0))


def test_unknown_library_version_becomes_model_unavailable(monkeypatch):
    from anymole.errors import ModelUnavailable
    from anymole.io import _assimp, _isolate

    # the worker side: an unverified libassimp is reported, not read
    monkeypatch.setattr(_assimp, "_LIB", None)
    monkeypatch.setattr(_assimp, "library_version", lambda lib: (5, 4, 3))
    kind, message = _isolate._import_in_child(str(ASSETS / "Fox.glb"))
    assert kind == "library" and "5.4.3" in message
    # the server side turns that report into ModelUnavailable with the install hint
    monkeypatch.setattr(_isolate, "run_isolated", lambda *a, **k: (kind, message))
    with pytest.raises(ModelUnavailable, match="libassimp5"):
        _isolate.read_scene(ASSETS / "Fox.glb")


def test_an_interrupted_exchange_does_not_answer_the_next_request(monkeypatch):
    """A reply left in the pipe (the caller stopped reading it) must not become the next call's answer."""
    from anymole.io import _isolate

    def interrupted(_file):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(_isolate.pickle, "load", interrupted)
        with pytest.raises(KeyboardInterrupt):
            run_isolated("x", abs, -2)  # the worker answers 2; nobody reads it
    assert run_isolated("x", abs, -3) == 3


def test_a_non_positive_fbx_unit_scale_names_the_file():
    from anymole.io._isolate import read_scene
    from anymole.io._scene import scene_to_character

    raw = read_scene(ASSETS / "Fox.fbx")
    raw.metadata["UnitScaleFactor"] = 0.0
    with pytest.raises(AssetError, match="unit scale must be > 0") as info:
        scene_to_character(raw, "Fox.fbx", fmt=".fbx")
    assert info.value.path == "Fox.fbx" and "scale=" in info.value.reason
    assert scene_to_character(raw, "Fox.fbx", fmt=".fbx", scale=0.01).skeleton.num_joints == 24


@pytest.mark.parametrize(("kwargs", "field"), [({"fps": 0}, "fps"), ({"fps": -24.0}, "fps"), ({"scale": 0.0}, "scale")])
def test_bad_arguments_are_invalid_input_naming_the_argument(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        load_character(ASSETS / "Fox.glb", **kwargs)
    assert info.value.field == field
