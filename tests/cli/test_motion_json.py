"""Motion as JSON for headless clients (issue 15.9): `anymole fill --out X.json` (local and through a real
server) and `anymole convert ASSET --out .json|.glb|.bvh`; the JSON round-trips float32 motion bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from anymole.cli import app, main
from anymole.io import load_character
from anymole.rig import Motion
from anymole.rig.quat import quat_normalize
from anymole.wire.motion_json import FORMAT, motion_from_json, motion_to_json, read_motion_json

ROOT = Path(__file__).resolve().parents[2]
FOX = ROOT / "assets" / "Fox.glb"
runner = CliRunner()


@pytest.mark.parametrize("with_translations", [False, True])
def test_json_round_trips_float32_motion_exactly(with_translations):
    g = torch.Generator().manual_seed(3)
    motion = Motion(
        29.97,
        quat_normalize(torch.randn(7, 4, 4, generator=g)),
        torch.randn(7, 3, generator=g),
        torch.randn(7, 4, 3, generator=g) if with_translations else None,
    )
    doc = json.loads(json.dumps(motion_to_json(motion, ["a", "a/b", "a/b/c", "a/d"])))
    names, back = motion_from_json(doc)
    assert names == ["a", "a/b", "a/b/c", "a/d"] and doc["format"] == FORMAT and back.fps == pytest.approx(29.97)
    assert torch.equal(back.rotations, motion.rotations) and torch.equal(back.root_translation, motion.root_translation)
    assert (back.translations is None) == (not with_translations)
    if with_translations:
        assert torch.equal(back.translations, motion.translations)
    doc["rotations"][0].pop()
    with pytest.raises(Exception, match="rotations"):
        motion_from_json(doc)


def test_fill_writes_motion_json_locally(tmp_path):
    out = tmp_path / "fill.json"
    res = runner.invoke(app, ["fill", str(FOX), "--clip", "Survey", "--context", "0:40", "--keys", "60,82", "--out", str(out)])
    assert res.exit_code == 0, res.output
    names, motion = read_motion_json(out)
    fox = load_character(FOX)
    clip = fox.motions["Survey"]
    assert names == list(fox.skeleton.names) and motion.num_frames == 83
    assert torch.equal(motion.rotations[:40], clip.rotations[:40].float())  # the context, exactly
    assert torch.equal(motion.rotations[[60, 82]], clip.rotations[[60, 82]].float())  # the keys, exactly


async def test_fill_through_a_server_writes_the_same_json(tmp_path):
    from anymole.client._fill import fill_remote_async
    from anymole.service.server import ServerConfig, build_server

    server, port = build_server(ServerConfig(port=0, data_dir=tmp_path / "data", devices=("cpu",), grace_s=0.0))
    await server.start()
    try:
        out = tmp_path / "remote.json"
        await fill_remote_async(f"127.0.0.1:{port}", FOX, clip="Survey", context=(0, 40), keys=[60, 82], out=out, progress=False)
    finally:
        await server.stop(0.0)
    local = tmp_path / "local.json"
    assert runner.invoke(app, ["fill", str(FOX), "--clip", "Survey", "--context", "0:40", "--keys", "60,82", "--out", str(local)]).exit_code == 0
    (n1, m1), (n2, m2) = read_motion_json(out), read_motion_json(local)
    assert n1 == n2 and torch.equal(m1.rotations, m2.rotations)
    torch.testing.assert_close(m1.root_translation, m2.root_translation)


@pytest.mark.parametrize("suffix", [".json", ".glb", ".bvh"])
def test_convert_writes_a_clip_in_each_format(tmp_path, suffix):
    out = tmp_path / f"survey{suffix}"
    res = runner.invoke(app, ["convert", str(FOX), "--clip", "Survey", "--out", str(out)])
    assert res.exit_code == 0, res.output
    fox = load_character(FOX)
    clip = fox.motions["Survey"]
    if suffix == ".json":
        names, motion = read_motion_json(out)
        assert names == list(fox.skeleton.names) and torch.equal(motion.rotations, clip.rotations.float())
    else:
        back = load_character(out)
        (only,) = back.motions.values()
        assert only.num_frames == clip.num_frames and back.skeleton.num_joints == fox.skeleton.num_joints
        torch.testing.assert_close(only.rotations.abs(), clip.rotations.abs(), atol=1e-4, rtol=0)


def test_convert_refuses_an_unknown_suffix_or_clip_in_one_line(tmp_path, monkeypatch, capsys):
    for argv, needle in (
        (["convert", str(FOX), "--out", str(tmp_path / "x.fbx")], ".json"),
        (["convert", str(FOX), "--clip", "Nope", "--out", str(tmp_path / "x.json")], "Nope"),
    ):
        monkeypatch.setattr("sys.argv", ["anymole", *argv])
        with pytest.raises(SystemExit) as exit_:
            main()
        err = capsys.readouterr().err
        assert exit_.value.code == 1 and "Traceback" not in err and needle in err
