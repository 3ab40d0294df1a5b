"""The `anymole` command line: inspect, fill --method interp, eval, and its error handling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from anymole.cli import app, main

ASSETS = Path(__file__).resolve().parents[2] / "assets"
runner = CliRunner()


def _sidecar_clips(path: Path) -> dict[str, tuple[int, float]]:
    rows = (line.split("\t") for line in path.with_name(path.name + ".clips").read_text().splitlines() if line)
    return {name: (int(frames), float(seconds)) for name, frames, seconds in rows}


@pytest.mark.parametrize("name", ["Fox.glb", "CesiumMan.glb", "131_01_30fps.bvh"])
def test_inspect_json_matches_sidecars(name: str) -> None:
    path = ASSETS / name
    res = runner.invoke(app, ["inspect", str(path), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["joint_count"] == int(path.with_name(name + ".joints").read_text())
    clips = {c["name"]: c for c in info["clips"]}
    for clip, (frames, _) in _sidecar_clips(path).items():
        key = clip if clip in clips else next(iter(clips))  # BVH clips are named after the file stem
        assert clips[key]["frames"] == frames


def test_inspect_tree_lists_every_joint() -> None:
    res = runner.invoke(app, ["inspect", str(ASSETS / "Fox.glb")])
    assert res.exit_code == 0, res.output
    assert "joint_count: 24" in res.stdout
    for joint in ("_rootJoint", "b_Hip_01", "b_RightFoot02_022", "Survey", "Walk", "Run"):
        assert joint in res.stdout


def test_fill_then_eval(tmp_path: Path) -> None:
    out = tmp_path / "fill.glb"
    res = runner.invoke(
        app, ["fill", str(ASSETS / "Fox.glb"), "--clip", "Survey", "--context", "10:40", "--keys", "60,82", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert out.exists()

    def score(frames: str) -> dict[str, float]:
        r = runner.invoke(
            app,
            ["eval", str(out), str(ASSETS / "Fox.glb"), "--clip", "Survey", "--offset", "10", "--frames", frames, "--json"],
        )
        assert r.exit_code == 0, r.output
        return json.loads(r.stdout)

    kept = score("10:40")  # the context survives the fill and the GLB round trip
    assert kept["l2q"] == pytest.approx(0.0, abs=1e-4)
    assert kept["l2p"] == pytest.approx(0.0, abs=1e-3)
    gap = score("40:82")
    assert gap["frames"] == [40, 82]
    assert 0 < gap["l2q"] < 1.0  # Survey is slow: SLERP is close but not exact
    assert gap["hl2q_full"] == pytest.approx(gap["l2q_per_joint_mse"], rel=1e-6)


def test_fill_bvh_output(tmp_path: Path) -> None:
    out = tmp_path / "fill.bvh"
    res = runner.invoke(app, ["fill", str(ASSETS / "131_01_30fps.bvh"), "--context", "0:30", "--keys", "45,60", "--out", str(out)])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert "Frames: 61" in text
    assert text.count("JOINT") + text.count("ROOT") == 31


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--keys", "20,10"], "--keys"),
        (["--keys", "5"], "--keys"),  # inside the context
        (["--keys", "999"], "--keys"),
        (["--keys", "a,b"], "--keys"),
        (["--keys", "60", "--context", "40:10"], "--context"),
        (["--keys", "60", "--clip", "Dance"], "--clip"),
        (["--keys", "60", "--out", "x.fbx"], "--out"),
        (["--keys", "60", "--method", "anymole"], "--method"),
    ],
)
def test_fill_bad_input_exits_1_naming_the_option(
    args: list[str], field: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["anymole", "fill", str(ASSETS / "Fox.glb"), "--context", "0:20", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert field in err
    assert "Traceback" not in err


def test_missing_asset_is_a_user_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.argv", ["anymole", "inspect", "/nonexistent/char.glb"])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 1
    assert "/nonexistent/char.glb" in capsys.readouterr().err


def test_help_teaches_with_examples() -> None:
    res = runner.invoke(app, ["fill", "--help"])
    assert res.exit_code == 0
    assert "--context" in res.stdout and "anymole fill assets/Fox.glb" in res.stdout
