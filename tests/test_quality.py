"""Repository-wide checks that CI must enforce: lint (ruff) and types (mypy on rig, metrics and the service side)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_clean() -> None:
    res = _run("ruff", "check", "server", "tests", "scripts")
    assert res.returncode == 0, res.stdout + res.stderr


def test_mypy_typed_packages() -> None:
    # every package: rig and metrics first, the rest as issue 13 brought video, io, baseline, pipeline and cli in
    res = _run(
        "mypy",
        "server/anymole/rig",
        "server/anymole/io",
        "server/anymole/baseline",
        "server/anymole/video",
        "server/anymole/bench",
        "server/anymole/cli",
        "server/anymole/errors.py",
        "server/anymole/metrics.py",
        "server/anymole/service",
        "server/anymole/wire",
        "server/anymole/client",
        "server/anymole/pipeline",
        "server/anymole/progress.py",
        "server/anymole/render",
        "server/anymole/estimator",
        "server/anymole/mimic",
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_public_api_exports_match() -> None:
    import anymole

    for name in anymole.__all__:
        assert hasattr(anymole, name), name
