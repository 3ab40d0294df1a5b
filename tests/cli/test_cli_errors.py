"""Every `anymole` command refuses bad input with one message naming the option and exit 1, never a traceback
(issue 12, item 4). Each case ran into a traceback, a silent wrong choice or a misleading message before."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from anymole import __version__
from anymole.wire.version import PROTOCOL_VERSION
from asset_files import ASSETS
from cli_run import run_cli


def _run(argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``anymole ARGV`` through the console-script entry point: ``(exit code, stdout, stderr)``."""
    return run_cli(argv, monkeypatch, capsys)


def _refused(argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    code, _, err = _run(argv, monkeypatch, capsys)
    assert code == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    return err


def test_version(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["--version"], monkeypatch, capsys)
    assert code == 0
    assert out.strip() == f"anymole {__version__} (protocol {PROTOCOL_VERSION[0]}.{PROTOCOL_VERSION[1]})"


def test_fill_refuses_to_overwrite_its_input_unless_forced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    asset = tmp_path / "Fox.glb"
    shutil.copyfile(ASSETS / "Fox.glb", asset)
    before = asset.read_bytes()
    monkeypatch.chdir(tmp_path)
    args = ["fill", "Fox.glb", "--clip", "Survey", "--context", "0:40", "--keys", "60,82"]
    err = _refused([*args, "--out", str(asset)], monkeypatch, capsys)  # the same file by another spelling
    assert "--out" in err and "--force" in err
    assert asset.read_bytes() == before  # its other clips (Walk, Run) are still there
    code, _, err = _run([*args, "--out", "Fox.glb", "--force"], monkeypatch, capsys)
    assert code == 0, err
    assert asset.read_bytes() != before


@pytest.mark.parametrize(("extra", "option"), [(["--out", "o.txt"], "--out"), (["--video", "v.avi"], "--video")])
def test_render_refuses_an_output_it_cannot_write(
    extra: list[str], option: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    err = _refused(["render", str(ASSETS / "Fox.glb"), *extra], monkeypatch, capsys)
    assert option in err and extra[1] in err
    assert list(tmp_path.iterdir()) == []  # refused before rendering anything


def test_bench_video_without_cuda_names_the_device_and_the_cpu_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    err = _refused(["bench", "video", "--markdown", "", "--json", "unused.json"], monkeypatch, capsys)
    assert "--device" in err and "cuda" in err and "--device cpu" in err


@pytest.mark.parametrize(
    ("args", "option", "says"),
    [
        (["--max-queue", "-1"], "--max-queue", "at least 1"),
        (["--max-queue", "0"], "--max-queue", "at least 1"),
        (["--port", "-1"], "--port", "0..65535"),
        (["--port", "99999"], "--port", "0..65535"),
        (["--device", "bogus"], "--device", "'bogus'"),
        (["--device", "cpu", "--device", "cuda:x"], "--device", "'cuda:x'"),
        (["--host", "no-such-host.invalid", "--port", "0"], "--host", "no-such-host.invalid"),
        (["--host", "192.0.2.1", "--port", "0"], "--host", "not an address of this machine"),  # TEST-NET-1
        (["--ray", "auto", "--ray-worker-cpus", "0"], "--ray-worker-cpus", "more than 0"),
        (["--stage-stop", "-1"], "--stage-stop", "0 or more, got -1.0"),
        (["--stage-stop", "nan"], "--stage-stop", "0 or more, got nan"),
    ],
)
def test_serve_refuses_bad_options_before_listening(
    args: list[str], option: str, says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    err = _refused(["serve", "--data-dir", str(tmp_path / "data"), "--device", "cpu", *args], monkeypatch, capsys)
    assert f"error: {option}:" in err and says in err, err
    assert "listening" not in err
    if option == "--host":
        assert "--port" not in err  # the host is to blame, not the port


def test_serve_stage_stop_reaches_the_servers_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--stage-stop`` becomes `ServerConfig.stage_stop_s`, which the server's stop waits for hung stages
    (tests/service/test_jobs.py); without it, the 30 s of `STAGE_STOP_S`."""
    from anymole.service import server
    from anymole.service.jobs import STAGE_STOP_S

    seen: list[server.ServerConfig] = []

    async def fake_serve(cfg: server.ServerConfig, on_ready: object = None) -> None:
        seen.append(cfg)

    monkeypatch.setattr(server, "serve", fake_serve)
    base = ["serve", "--data-dir", str(tmp_path / "data"), "--device", "cpu", "--port", "0"]
    assert _run([*base, "--stage-stop", "0.25"], monkeypatch, capsys)[0] == 0
    assert _run([*base, "--stage-stop", "0"], monkeypatch, capsys)[0] == 0
    assert _run(base, monkeypatch, capsys)[0] == 0
    assert [c.stage_stop_s for c in seen] == [0.25, 0.0, STAGE_STOP_S]


def test_serve_with_ray_says_what_to_install_where_ray_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else find_spec(name, *a))
    err = _refused(["serve", "--data-dir", str(tmp_path / "data"), "--port", "0", "--ray", "auto"], monkeypatch, capsys)
    assert "error: --ray:" in err and "pip install 'anymole[ray]'" in err, err


def test_serve_refuses_a_file_as_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    err = _refused(["serve", "--data-dir", str(afile), "--port", "0", "--device", "cpu"], monkeypatch, capsys)
    assert "--data-dir" in err and "is a file" in err


def test_usage_errors_exit_1(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # click ends these with 2, the code this CLI keeps for internal errors
    err = _refused(["render", str(ASSETS / "Fox.glb"), "--views", "0"], monkeypatch, capsys)
    assert "--views" in err
    err = _refused(["fill", "--no-such-option"], monkeypatch, capsys)
    assert "--no-such-option" in err


def _every_option() -> set[str]:
    """Every ``--option`` any `anymole` command takes."""
    import click
    import typer

    from anymole.cli import app

    found: set[str] = set()

    def walk(cmd: click.Command) -> None:
        for param in cmd.params:
            found.update(o for o in (*param.opts, *param.secondary_opts) if o.startswith("--"))
        for sub in getattr(cmd, "commands", {}).values():
            walk(sub)

    walk(typer.main.get_command(app))
    return found


def test_option_help_survives_rich_markup() -> None:
    """The CLI renders help as rich markup, which drops a bracketed ``[word: …]`` as an unknown tag: option
    help says its defaults in parentheses, and what ``--help`` prints keeps them."""
    import click
    import typer
    from typer.testing import CliRunner

    from anymole.cli import app

    helps: list[str] = []

    def walk(cmd: click.Command) -> None:
        helps.extend(str(getattr(p, "help", "") or "") for p in cmd.params)
        for sub in getattr(cmd, "commands", {}).values():
            walk(sub)

    walk(typer.main.get_command(app))
    assert [h for h in helps if "[default" in h] == []
    out = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "400"}).output
    assert "(default: 16)" in out and "(default: keep)" in out


def test_models_errors_point_at_options_that_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import re

    from anymole import hub

    def offline(**kwargs: object) -> Path:
        raise OSError("network unreachable")

    monkeypatch.setattr(hub, "_download", offline)
    pulled = _refused(["models", "pull", "--dest", str(tmp_path)], monkeypatch, capsys)
    verified = _refused(["models", "verify", str(tmp_path / "nope.ckpt")], monkeypatch, capsys)
    options = _every_option()
    for err in (pulled, verified):
        named = set(re.findall(r"--[a-z][a-z-]*", err))
        assert named and named <= options, (named - options, err)
        assert "--video-prior" in named


def test_binary_bvh_is_named_binary_and_a_bad_token_comes_back_short_and_escaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import random

    raw = bytes(random.Random(0).randrange(256) for _ in range(2000)) + b"\x00"
    (tmp_path / "raw.bvh").write_bytes(raw)
    err = _refused(["inspect", str(tmp_path / "raw.bvh")], monkeypatch, capsys)
    assert "binary" in err and err.isascii()
    text = bytes(random.Random(1).randrange(1, 256) for _ in range(2000))  # no NUL: the parser reads it
    (tmp_path / "text.bvh").write_bytes(text)
    err = _refused(["inspect", str(tmp_path / "text.bvh")], monkeypatch, capsys)
    assert "expected HIERARCHY" in err
    assert err.isascii() and all(c.isprintable() for c in err.strip()), err
    assert len(err) < 300


def test_a_bvh_frame_time_beyond_the_frame_rate_bound_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from anymole.rig import MAX_FPS

    def bvh(frame_time: str) -> str:
        path = tmp_path / f"t{frame_time}.bvh"
        path.write_text("HIERARCHY\nROOT a\n{\n OFFSET 0 0 0\n CHANNELS 3 Xrotation Yrotation Zrotation\n"
                        " End Site\n {\n  OFFSET 0 1 0\n }\n}\n"
                        f"MOTION\nFrames: 2\nFrame Time: {frame_time}\n0 0 0\n0 0 90\n")  # fmt: skip
        return str(path)

    err = _refused(["inspect", bvh("1e-30")], monkeypatch, capsys)
    assert "Frame Time" in err and f"{MAX_FPS:g} fps" in err
    code, out, err = _run(["inspect", bvh(repr(1 / MAX_FPS)), "--json"], monkeypatch, capsys)  # the bound itself
    assert code == 0, err
    assert '"fps": 1000' in out


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["serve", "--port", "0", "--device", "cpu", "--tls-cert", "nope.pem", "--tls-key", "nope.pem"], "--tls-"),
        (["fill", str(ASSETS / "Fox.glb"), "--keys", "60", "--context", "0:40", "--server", "127.0.0.1:9",
          "--tls-ca", "nope.pem", "--out", "x.glb"], "--tls-ca"),
        (["jobs", "list", "--server", "127.0.0.1:9", "--tls-ca", "nope.pem"], "--tls-ca"),
        (["jobs", "list", "--server", "127.0.0.1:9", "--state", "done"], "--state"),
        (["jobs", "get", "job-1", "--server", "127.0.0.1:9", "--out", "x.txt"], "--out"),
        (["bench", "video", "--model", "tiny", "--device", "cpu", "--phase", "warm", "--markdown", ""], "--phase"),
        (["serve", "--port", "0", "--device", "cpu", "--video-prior", "tiny", "--video-size", "60x64"], "--video-size"),
    ],
    ids=["serve-tls", "fill-tls-ca", "jobs-tls-ca", "jobs-state", "jobs-get-suffix", "bench-phase", "video-size"],
)  # fmt: skip
def test_more_bad_input_is_refused_naming_the_option(
    args: list[str], option: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    if args[0] == "serve":
        args = [*args, "--data-dir", str(tmp_path / "data")]
    err = _refused(args, monkeypatch, capsys)
    assert f"error: {option}" in err, err
    assert list(tmp_path.glob("*.json")) == [] and not (tmp_path / "x.glb").exists()
