"""`anymole serve` as a real process for tests: start it on a data dir (and port), read the port it listens on."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

_DRAINS: set[asyncio.Task[None]] = set()


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():  # a full stderr pipe would block the server's logging
        pass


async def start_serve(data_dir: Path, *args: str, port: int = 0) -> tuple[asyncio.subprocess.Process, int]:
    """``anymole serve --port PORT --data-dir DATA_DIR --device cpu ARGS``, once it listens: ``(process, port)``."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "anymole.cli", "serve", "--port", str(port), "--data-dir", str(data_dir),
        "--device", "cpu", *args, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    async with asyncio.timeout(120):
        while True:
            line = (await proc.stderr.readline()).decode()
            assert line, "anymole serve exited before listening"
            m = re.search(r"anymole listening on 127\.0\.0\.1:(\d+)", line)
            if m:
                task = asyncio.create_task(_drain(proc.stderr))
                _DRAINS.add(task)
                task.add_done_callback(_DRAINS.discard)
                return proc, int(m.group(1))
