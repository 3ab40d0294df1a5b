"""The `anymole` command line: inspect, fill --method interp, eval, and its error handling."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from anymole.baseline import inbetween
from anymole.cli import app, main
from anymole.io import load_character
from anymole.metrics import evaluate
from anymole.rig import Keyframes
from asset_files import ASSET_FILES, ASSETS, cached_load, sidecar_clips, sidecar_joints

runner = CliRunner()


@pytest.mark.parametrize("name", ASSET_FILES)
def test_inspect_json_matches_sidecars(name: str) -> None:
    res = runner.invoke(app, ["inspect", str(ASSETS / name), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["joint_count"] == sidecar_joints(name)
    expected = sidecar_clips(name)
    # BVH clips are named after the file stem; every other name is the file's own (sidecar order = file order)
    names = [Path(name).stem] if name.endswith(".bvh") else [c for c, _, _ in expected]
    assert [c["name"] for c in info["clips"]] == names
    for clip, (_, frames, seconds) in zip(info["clips"], expected, strict=True):
        assert clip["frames"] == frames
        assert clip["duration_s"] == pytest.approx(seconds, abs=1e-5)
        assert clip["seconds"] == pytest.approx((frames - 1) / clip["fps"], abs=1e-9)


def test_inspect_states_bvh_duration_convention() -> None:
    res = runner.invoke(app, ["inspect", str(ASSETS / "131_01.bvh")])
    assert res.exit_code == 0, res.output
    # 994 frames at Frame Time .0083333: last frame at 8.2750 s, Frames × Frame Time = 8.2833 s
    assert "8.2750" in res.stdout and "8.2833" in res.stdout
    assert "Frames × Frame Time" in res.stdout


def test_inspect_states_units() -> None:
    res = runner.invoke(app, ["inspect", str(ASSETS / "131_01.bvh")])
    assert res.exit_code == 0, res.output
    # CMU units (0.056444 m); the hips-to-head rest extent in both units
    text = " ".join(res.stdout.split())  # rich wraps at the terminal's width
    assert "units: cmu (0.056444 m per unit)" in text and "file units =" in text


def test_inspect_tree_lists_every_joint() -> None:
    res = runner.invoke(app, ["inspect", str(ASSETS / "Fox.glb")])
    assert res.exit_code == 0, res.output
    assert "joint_count: 24" in res.stdout
    for joint in ("_rootJoint", "b_Hip_01", "b_RightFoot02_022", "Survey", "Walk", "Run"):
        assert joint in res.stdout


@pytest.mark.parametrize("suffix", [".glb", ".bvh"])
def test_fill_then_eval(tmp_path: Path, suffix: str) -> None:
    # BVH states no unit: eval reads it in the ground truth's (the Fox is ~100 units long, far from the
    # human-sized guess load_character would make)
    out = tmp_path / f"fill{suffix}"
    res = runner.invoke(
        app,
        ["fill", "--method", "interp", str(ASSETS / "Fox.glb"), "--clip", "Survey", "--context", "10:40", "--keys",
         "60,82", "--out", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert out.exists()

    # the GLB is Fox.glb with the fill added as Survey_filled; the CLI prints the eval command that picks it
    pred_clip = "Survey_filled" if suffix == ".glb" else "fill"
    assert f"--pred-clip {pred_clip}" in res.output.replace("\n", " ")

    def score(frames: str) -> dict[str, float]:
        r = runner.invoke(
            app,
            ["eval", str(out), str(ASSETS / "Fox.glb"), "--clip", "Survey", "--pred-clip", pred_clip, "--offset", "10",
             "--frames", frames, "--json"],
        )  # fmt: skip
        assert r.exit_code == 0, r.output
        return json.loads(r.stdout)

    kept = score("10:40")  # the context survives the fill and the file round trip
    assert kept["l2q"] == pytest.approx(0.0, abs=1e-4)
    assert kept["l2p"] == pytest.approx(0.0, abs=1e-3)
    gap = score("40:82")
    assert gap["frames"] == [40, 82]
    assert 0 < gap["l2q"] < 1.0  # Survey is slow: SLERP is close but not exact
    assert gap["hl2q_full"] == pytest.approx(gap["l2q_per_joint_mse"], rel=1e-6)
    # the CLI's numbers are the library's: the same fill and metrics in-process, without the GLB file
    fox = cached_load("Fox.glb")
    survey = fox.motions["Survey"]
    keys = [60, 82]
    filled = inbetween(survey.slice(10, 40), Keyframes.of_clip(survey, keys, offset=10), 82 - 10 + 1)
    want = evaluate(fox.skeleton, filled.slice(30, 72), survey.slice(40, 82), slice(None))
    for k, v in want.items():
        assert gap[k] == pytest.approx(v, rel=1e-3, abs=1e-6), k


def test_fill_replace_clip_keeps_the_clips_names_and_lengths(tmp_path: Path) -> None:
    out = tmp_path / "fox.glb"
    res = runner.invoke(app, ["fill", str(ASSETS / "Fox.glb"), "--clip", "Survey", "--context", "10:40", "--keys", "60,70",
                              "--out", str(out), "--replace-clip"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "--pred-clip Survey --offset 0" in " ".join(res.output.split())
    back = load_character(out)
    fox = cached_load("Fox.glb")
    assert list(back.motions) == list(fox.motions)
    survey, filled = fox.motions["Survey"], back.motions["Survey"]
    assert filled.num_frames == survey.num_frames
    # before the context and after the last key: the clip as it was; in the gap: the fill
    for frames, same in ((slice(0, 40), True), (slice(71, None), True), (slice(45, 55), False)):
        err = float((filled.rotations[frames] - survey.rotations[frames]).abs().max())
        assert (err < 1e-5) == same, (frames, err)


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


def test_readme_usage_commands_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's inspect/fill/convert/eval examples work as written (run from the repo root, outputs in
    tmp)."""
    readme = (ASSETS.parent / "README.md").read_text()
    commands = [
        shlex.split(line.split("#")[0])[1:]
        for line in readme.splitlines()
        if re.match(r"anymole (inspect|fill|convert|eval) ", line) and "--server" not in line
    ]
    assert [c[0] for c in commands] == ["inspect", "inspect", "inspect", "fill", "fill", "convert", "eval", "eval"]
    monkeypatch.chdir(ASSETS.parent)
    for args in commands:
        # outputs go to tmp_path: the fills and convert write there and the evals read from there
        args = [str(tmp_path / a) if a.endswith(("fox_fill.glb", "fox_fill.json", "survey.json")) else a for a in args]
        res = runner.invoke(app, args)
        assert res.exit_code == 0, (args, res.output)
    assert json.loads(res.stdout)["frames"] == [40, 82]
