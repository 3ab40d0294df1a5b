"""``anymole ARGV`` run in-process through the console-script entry point, for the command-line tests."""

from __future__ import annotations

import pytest

from anymole.cli import main


def run_cli(argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``(exit code, stdout, stderr)`` of ``anymole ARGV``."""
    monkeypatch.setattr("sys.argv", ["anymole", *argv])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err
