"""The headless client's user flows: remote fill (same numbers as a local fill), Ctrl-C cancels the job,
re-attach after a dropped stream, the demo, and clear errors."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import torch

from anymole.cli.server import run_demo_async
from anymole.client._fill import fill_remote_async
from anymole.client._watch import events_with_reattach
from anymole.errors import AnymoleError, InvalidInput
from anymole.pipeline import CancelToken, Completed, MethodSpec, MotionChunk, ProgressReporter, Queued
from anymole.rig import Keyframes
from anymole.service.jobs import JobState, Stamped
from anymole.service.server import AnyMoLeServer, ServerConfig, build_server

ROOT = Path(__file__).resolve().parents[2]
FOX = ROOT / "assets" / "Fox.glb"


class SlowPipeline:
    """An ``interp`` that never finishes on its own: 0.05 s steps until cancelled."""

    def methods(self):
        return [MethodSpec("interp", "slow", ("cubic",))]

    async def run(self, spec, token: CancelToken, report: ProgressReporter, device: str) -> AsyncIterator:
        report.set_plan([("slow", 1.0)])
        for i in range(10_000):
            await token.sleep(0.05)
            report("slow", i / 10_000)
        yield Completed("never")  # pragma: no cover


async def _server(tmp_path: Path, pipeline=None) -> tuple[AnyMoLeServer, int]:
    cfg = ServerConfig(port=0, data_dir=tmp_path / "data", devices=("cpu",), grace_s=0.0)
    server, port = build_server(cfg, pipeline)
    await server.start()
    return server, port


@pytest.mark.parametrize("suffix", [".glb", ".bvh"])
async def test_remote_fill_equals_the_local_baseline(tmp_path, suffix):
    from anymole.baseline import inbetween
    from anymole.io import load_character

    server, port = await _server(tmp_path)
    try:
        out = tmp_path / f"fill{suffix}"
        res = await fill_remote_async(
            f"127.0.0.1:{port}", FOX, clip="Survey", context=(0, 40), keys=[60, 82], out=out, progress=False
        )
    finally:
        await server.stop(0.0)
    fox = load_character(FOX)
    survey = fox.motions["Survey"]
    assert survey.translations is not None  # Fox animates b_Hip_01's translation under a static root
    local = inbetween(survey.slice(0, 40), Keyframes.of_clip(survey, [60, 82]), 83)
    assert res.motion.num_frames == 83
    torch.testing.assert_close(res.motion.rotations, local.rotations.float(), rtol=0, atol=0)
    torch.testing.assert_close(res.motion.root_translation, local.root_translation.float(), rtol=0, atol=0)
    torch.testing.assert_close(res.motion.translations, local.translations.float(), rtol=0, atol=0)
    assert res.metrics["key_error_deg"] < 0.05
    assert res.path == out
    data = out.read_bytes()
    assert data[:4] == b"glTF" if suffix == ".glb" else data.startswith(b"HIERARCHY")
    back = load_character(out)
    if suffix == ".glb":  # written from the input: Fox.glb with the fill added
        assert list(back.motions) == [*fox.motions, "Survey_filled"]
        assert back.motions["Survey_filled"].num_frames == 83


async def test_remote_fill_replace_clip_writes_the_whole_clip(tmp_path):
    from anymole.io import load_character

    server, port = await _server(tmp_path)
    out = tmp_path / "fox.glb"
    try:
        await fill_remote_async(f"127.0.0.1:{port}", FOX, clip="Survey", context=(10, 40), keys=[60, 70], out=out,
                                progress=False, replace_clip=True)  # fmt: skip
    finally:
        await server.stop(0.0)
    fox, back = load_character(FOX), load_character(out)
    assert list(back.motions) == list(fox.motions)
    assert back.motions["Survey"].num_frames == fox.motions["Survey"].num_frames
    tail = (back.motions["Survey"].rotations[71:] - fox.motions["Survey"].rotations[71:]).abs().max()
    assert float(tail) < 1e-5  # after the last key: the clip as it was


async def test_cancelling_the_client_cancels_the_job(tmp_path):
    server, port = await _server(tmp_path, SlowPipeline())
    try:
        task = asyncio.create_task(
            fill_remote_async(f"127.0.0.1:{port}", FOX, clip="Survey", context=(0, 40), keys=[60], out=tmp_path / "x.glb",
                              progress=False)
        )  # fmt: skip
        async with asyncio.timeout(60):
            while not any(j.state is JobState.RUNNING for j in server.jobs.list()):
                await asyncio.sleep(0.02)
        task.cancel()  # what asyncio.run does to the main task on Ctrl-C
        with pytest.raises(asyncio.CancelledError):
            await task
        (job,) = server.jobs.list()
        async with asyncio.timeout(10):  # CancelJob went out; the stage stops at its next step
            while server.jobs.info(job.job_id).state is JobState.RUNNING:
                await asyncio.sleep(0.02)
        assert server.jobs.info(job.job_id).state is JobState.CANCELLED
        assert not (tmp_path / "x.glb").exists()
    finally:
        await server.stop(0.0)


class _FlakyWatcher:
    """A client whose first WatchJob stream drops after two events."""

    def __init__(self) -> None:
        self.after: list[int] = []
        self.events = [Stamped("j", i, 0.0, Queued(0)) for i in range(1, 4)] + [
            Stamped("j", 4, 0.0, MotionChunk(0, torch.zeros(1, 2, 4), torch.zeros(1, 3))),
            Stamped("j", 5, 0.0, Completed("ok")),
        ]

    async def watch(self, job_id: str, joints: int, after_seq: int = 0):
        self.after.append(after_seq)
        for st in self.events[after_seq:]:
            if len(self.after) == 1 and st.seq == 3:
                raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "gone")
            yield st


async def test_reattach_resumes_after_the_last_seen_event():
    client = _FlakyWatcher()
    seqs = [st.seq async for st in events_with_reattach(client, "j", 2)]
    assert seqs == [1, 2, 3, 4, 5]
    assert client.after == [0, 2]


async def test_demo_writes_the_fox_fill(tmp_path):
    res = await run_demo_async(tmp_path, progress=False)
    assert res.path == tmp_path / "fox_fill.glb" and res.path.read_bytes()[:4] == b"glTF"
    assert res.motion.num_frames == 83 and res.motion.num_joints == 24


async def test_no_server_is_a_clear_error(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(AnymoleError, match="no AnyMoLe server answers"):
        await fill_remote_async(f"127.0.0.1:{port}", FOX, clip="Survey", context=(0, 40), keys=[60],
                                out=tmp_path / "x.glb", progress=False)  # fmt: skip


async def test_a_request_the_server_rejects_names_its_field(tmp_path):
    server, port = await _server(tmp_path)
    try:
        with pytest.raises(InvalidInput) as err:
            await fill_remote_async(f"127.0.0.1:{port}", FOX, clip="Survey", context=(0, 40), keys=[60],
                                    preset="bogus", out=tmp_path / "x.glb", progress=False)  # fmt: skip
    finally:
        await server.stop(0.0)
    assert err.value.field == "preset"
    assert err.value.reason.startswith("method 'interp' has no preset 'bogus'; choose one of")
