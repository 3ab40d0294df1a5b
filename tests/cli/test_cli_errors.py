"""Every `anymole` command refuses bad input with one message naming the option and exit 1, never a traceback
(issue 12, item 4). Each case ran into a traceback, a silent wrong choice or a misleading message before."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from anymole import __version__
from anymole.cli import main
from anymole.service.version import PROTOCOL_VERSION
from asset_files import ASSETS


def _run(argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``anymole ARGV`` through the console-script entry point: ``(exit code, stdout, stderr)``."""
    monkeypatch.setattr("sys.argv", ["anymole", *argv])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


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
