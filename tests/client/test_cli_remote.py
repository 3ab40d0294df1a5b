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


def test_fill_passes_a_method_preset_and_the_server_names_the_choices(tmp_path):
    from anymole.pipeline import VideoSettings

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start():
        cfg = ServerConfig(port=0, data_dir=tmp_path / "data", devices=("cpu",), video=VideoSettings(prior="tiny"))
        server, port = build_server(cfg)
        await server.start()
        return server, port

    server, port = asyncio.run_coroutine_threadsafe(start(), loop).result(60)
    try:
        args = ["fill", str(FOX), "--clip", "Survey", "--context", "0:49", "--keys", "72", "--out",
                str(tmp_path / "fox.mp4"), "--server", f"127.0.0.1:{port}", "--method", "video", "--preset", "warp"]  # fmt: skip
        res = CliRunner().invoke(app, args)
        assert res.exit_code != 0
        message = str(res.exception)
        assert "preset" in message and "'warp'" in message and "turbo" in message, message
        assert server.jobs.list() == []  # refused at submit
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(0.0), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
    local = CliRunner().invoke(app, ["fill", str(FOX), "--keys", "60", "--context", "0:40", "--preset", "fast"])
    assert local.exit_code != 0 and "--preset" in str(local.exception)


def test_fill_refuses_a_preset_for_interp_on_a_server_too():
    # interp's server preset is --root: a --preset beside it was dropped without a word (no server runs here:
    # the CLI refuses before it connects)
    args = ["fill", str(FOX), "--keys", "60", "--context", "0:40", "--preset", "linear", "--server", "127.0.0.1:9"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code != 0 and "--preset" in str(res.exception) and "--root" in str(res.exception)
