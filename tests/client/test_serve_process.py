"""`anymole serve` as a real process: it listens, serves a job, and exits cleanly on SIGTERM with its jobs
persisted for the next start."""

from __future__ import annotations

import asyncio
import json
import signal

import torch
from serve_processes import start_serve

from anymole.client import AnyMoLeClient
from anymole.pipeline import Completed
from anymole.rig import Character, Keyframes, Motion, Skeleton
from anymole.rig.quat import quat_normalize


async def test_serve_process_runs_a_job_and_stops_on_sigterm(tmp_path):
    g = torch.Generator().manual_seed(3)
    skeleton = Skeleton(("a", "b", "c"), (-1, 0, 1), torch.rand(3, 3, generator=g), quat_normalize(torch.randn(3, 4, generator=g)))
    context = Motion(30.0, quat_normalize(torch.randn(5, 3, 4, generator=g)), torch.randn(5, 3, generator=g))
    proc, port = await start_serve(tmp_path / "data")
    try:
        async with await AnyMoLeClient.connect(f"127.0.0.1:{port}") as client:
            up = await client.upload_character(Character("c3", skeleton))
            req = client.request(up, context, Keyframes((9,), context.slice(0, 1)))
            events = [st async for st in client.inbetween(req)]
        assert isinstance(events[-1].event, Completed)
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(proc.wait(), 60)
    assert rc == 0
    (job_dir,) = (tmp_path / "data" / "jobs").iterdir()
    assert json.loads((job_dir / "job.json").read_text())["state"] == "completed"

    proc2, port2 = await start_serve(tmp_path / "data")  # the next start still knows the job and its result
    try:
        async with await AnyMoLeClient.connect(f"127.0.0.1:{port2}") as client:
            (info,) = await client.list_jobs()
            motion, _ = await client.result(info.job_id, 3)
        assert motion.num_frames == 10
        torch.testing.assert_close(motion.rotations[:5], context.rotations, rtol=0, atol=0)
    finally:
        proc2.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc2.wait(), 60) == 0
