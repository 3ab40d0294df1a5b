"""The CLI glue of the client: `anymole fill --server` and `anymole demo` (blocking, asyncio.run inside)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from typer.testing import CliRunner

from anymole.cli import app
from anymole.service.server import ServerConfig, build_server

FOX = Path(__file__).resolve().parents[2] / "assets" / "Fox.glb"


def test_fill_with_server_flag_writes_the_result(tmp_path):
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start():
        server, port = build_server(ServerConfig(port=0, data_dir=tmp_path / "data", devices=("cpu",), token="tok"))
        await server.start()
        return server, port

    server, port = asyncio.run_coroutine_threadsafe(start(), loop).result(60)
    try:
        out = tmp_path / "fox.bvh"
        args = ["fill", str(FOX), "--clip", "Survey", "--context", "0:40", "--keys", "60,82", "--out", str(out),
                "--server", f"127.0.0.1:{port}", "--root", "linear"]  # fmt: skip
        res = CliRunner().invoke(app, args, env={"ANYMOLE_TOKEN": "tok"})
        assert res.exit_code == 0, res.output
        assert f"wrote {out}" in res.output
        assert out.read_bytes().startswith(b"HIERARCHY")
        (job,) = server.jobs.list()
        assert job.preset == "linear"  # --root reaches the server as the interp preset
        denied = CliRunner().invoke(app, args, env={"ANYMOLE_TOKEN": "wrong"})
        assert denied.exit_code != 0 and "UNAUTHENTICATED" in repr(denied.exception)
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(0.0), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_demo_command(tmp_path):
    res = CliRunner().invoke(app, ["demo", "--out-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "fox_fill.glb").read_bytes()[:4] == b"glTF"
    assert "83 frames" in res.output
