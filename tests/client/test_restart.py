"""A client survives a server restart (issue 12, item 5): `anymole fill --server` says its job id at submit and
watches through a server killed and started again on the same data dir and port, and `anymole jobs` reaches
the jobs by id afterwards. Real processes throughout: the server, the CLI, kill -9."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from pathlib import Path

from serve_processes import start_serve
from typer.testing import CliRunner

from anymole.cli import app
from anymole.client import AnyMoLeClient
from anymole.io import load_character
from anymole.pipeline import Progress
from anymole.rig import Keyframes, Motion

ROOT = Path(__file__).resolve().parents[2]
FOX = ROOT / "assets" / "Fox.glb"
# The tiny random-weight video prior with more ICAdapt steps than a test lasts: a job that holds the only
# worker (--device cpu) until the server is killed, so that the fill behind it is queued at the kill.
SLOW_VIDEO = ("--video-prior", "tiny", "--video-icadapt-steps", "1000000", "--video-ddim-steps", "1", "--video-size", "64x64")


async def _anymole(*args: str) -> tuple[int, str, str]:
    """``anymole ARGS`` in this process (a thread: the commands run their own event loop): exit code, stdout,
    stderr with the message an error exits with."""
    res = await asyncio.to_thread(CliRunner().invoke, app, list(args))
    error = "" if res.exception is None or isinstance(res.exception, SystemExit) else f"error: {res.exception}"
    return res.exit_code, res.stdout, res.stderr + error


async def _start_blocking_job(port: int) -> str:
    """Submit a video job that runs until the server dies; return its id once it runs."""
    async with await AnyMoLeClient.connect(f"127.0.0.1:{port}") as client:
        fox = load_character(FOX)
        survey = fox.motions["Survey"]
        up = await client.upload_file(FOX)
        # Survey is 24 fps: the video method wants 2 s of context (frames 0..48) and a key 1 s later (72)
        req = client.request(up, survey.slice(0, 49), Keyframes((72,), Motion(survey.fps, survey.rotations[[72]],
                             survey.root_translation[[72]])), method="video", preset="fast")  # fmt: skip
        job_id, _ = await client.submit(req)
        async for st in client.watch(job_id):
            if isinstance(st.event, Progress):
                return job_id
    raise AssertionError("the blocking job ended before it ran")


async def test_fill_survives_a_server_restart_and_jobs_reach_the_job_by_id(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server, port = await start_serve(data, *SLOW_VIDEO)
    out = tmp_path / "fox.glb"
    fill = None
    try:
        blocker = await _start_blocking_job(port)
        fill = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "anymole.cli", "fill", str(FOX), "--clip", "Survey", "--context", "0:40",
            "--keys", "60,82", "--out", str(out), "--server", f"127.0.0.1:{port}", "--reconnect-wait", "120",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert fill.stderr is not None
        async with asyncio.timeout(120):  # the id comes at submit, while the job waits behind the blocker
            while not (m := re.match(r"job (\S+) queued on 127\.0\.0\.1:(\d+)", first := (await fill.stderr.readline()).decode())):
                assert first, "anymole fill ended without saying its job id"
        job_id = m.group(1)
        assert f"anymole jobs watch {job_id} --server 127.0.0.1:{port}" in first

        server.send_signal(signal.SIGKILL)  # mid-job: the fill's job is queued, the blocker runs
        await server.wait()
        assert fill.returncode is None  # the client waits for the server instead of giving up
        server, again = await start_serve(data, *SLOW_VIDEO, port=port)
        assert again == port

        rest, err = await asyncio.wait_for(fill.communicate(), 120)
        assert fill.returncode == 0, (first, rest.decode(), err.decode())
        assert f"wrote {out} (job {job_id})" in err.decode()
        clip = load_character(out).motions["Survey_filled"]  # beside the Fox's own clips
        assert clip.num_frames == 83 and clip.num_joints == 24

        code, listed, err = await _anymole("jobs", "list", "--server", f"127.0.0.1:{port}", "--json")
        assert code == 0, err
        states = {j["job_id"]: j["state"] for j in json.loads(listed)}
        assert states == {job_id: "completed", blocker: "interrupted"}  # it ran when the server was killed

        bvh = tmp_path / "again.bvh"
        code, _, err = await _anymole("jobs", "get", job_id, "--server", f"127.0.0.1:{port}", "--out", str(bvh))
        assert code == 0, err
        assert load_character(bvh).motions[bvh.stem].num_frames == 83

        code, _, err = await _anymole("jobs", "watch", job_id, "--server", f"127.0.0.1:{port}")
        assert code == 0 and f"job {job_id} completed" in err, err
        code, _, err = await _anymole("jobs", "watch", blocker, "--server", f"127.0.0.1:{port}")
        assert code == 1 and "interrupted" in err and "Traceback" not in err, err
        code, _, err = await _anymole("jobs", "cancel", blocker, "--server", f"127.0.0.1:{port}")
        assert code == 0 and f"job {blocker}: interrupted" in err, err  # a finished job keeps its state
    finally:
        if fill is not None and fill.returncode is None:
            fill.kill()
            await fill.wait()
        if server.returncode is None:
            server.send_signal(signal.SIGKILL)
            await server.wait()


async def test_jobs_watch_streams_a_running_job_and_cancel_stops_it(tmp_path: Path) -> None:
    server, port = await start_serve(tmp_path / "data", *SLOW_VIDEO)
    try:
        blocker = await _start_blocking_job(port)
        watch = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "anymole.cli", "jobs", "watch", blocker, "--server", f"127.0.0.1:{port}",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        code, _, err = await _anymole("jobs", "cancel", blocker, "--server", f"127.0.0.1:{port}")
        assert code == 0 and re.search(rf"job {blocker}: (cancelled|running)", err), err
        _, werr = await asyncio.wait_for(watch.communicate(), 120)
        assert watch.returncode == 1 and f"job {blocker} was cancelled" in werr.decode(), werr.decode()
    finally:
        server.send_signal(signal.SIGKILL)
        await server.wait()
