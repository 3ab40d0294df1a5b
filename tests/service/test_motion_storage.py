"""Motion is stored once, on disk, as it streams (issue 12.2): events.jsonl holds references to the result
timeline, replays (live, later, after a restart) are byte-identical to the live stream, provisional chunks
replay too, and job directories from before the timeline files still replay and serve their results."""

from __future__ import annotations

import threading
import time

import numpy as np
import torch
from service_fakes import FakePipeline, collect, random_motion, wait_for

from anymole.pipeline import Completed, MethodSpec, MotionChunk, Progress
from anymole.rig import Motion
from anymole.service.store import JobStore
from anymole.wire.proto.anymole.v1 import anymole_pb2 as pb


def _watch(client, job_id, after_seq=0):
    return collect(client.stub.WatchJob(pb.WatchJobRequest(job_id=job_id, after_seq=after_seq), metadata=client.metadata))


def _motion_of(events) -> tuple[int, np.ndarray]:
    """First frame and the stacked rotations of a stream's final motion chunks, in order."""
    chunks = [e.motion for e in events if e.WhichOneof("kind") == "motion" and e.motion.is_final]
    return chunks[0].frame_start, np.concatenate([np.asarray(c.rotations, dtype=np.float32) for c in chunks])


async def test_a_long_job_logs_references_and_replays_byte_identically_after_a_restart(
    make_server, connect, tiny, make_req, tmp_path
):
    server, port = await make_server()
    client = await connect(port)
    joints, frames = 24, 20_000
    up = await client.upload_character(tiny(joints, with_mesh=False))
    live = await collect(client.stub.Inbetween(make_req(up, keys=(frames - 1,)), metadata=client.metadata))
    job_id = live[0].job_id
    assert live[-1].WhichOneof("kind") == "completed"
    assert sum(e.WhichOneof("kind") == "motion" for e in live) > 100

    job_dir = tmp_path / "data" / "jobs" / job_id
    result_bytes = (job_dir / "result.rotations.npy").stat().st_size
    assert result_bytes >= frames * joints * 16
    # The numbers live in the result only: the log is a small fraction of it (it held more than the result).
    assert (job_dir / "events.jsonl").stat().st_size < result_bytes / 20
    assert b"__f32__" not in (job_dir / "events.jsonl").read_bytes()

    assert await _watch(client, job_id) == live
    assert await _watch(client, job_id, after_seq=7) == live[7:]
    motion, _ = await client.result(job_id, joints)
    start, streamed = _motion_of(live)
    np.testing.assert_array_equal(motion.rotations[start:].numpy(), streamed.reshape(-1, joints, 4))

    await server.stop(0.0)
    _, port2 = await make_server()
    client2 = await connect(port2)
    assert await _watch(client2, job_id) == live
    again, _ = await client2.result(job_id, joints, ".npz")
    assert torch.equal(again.rotations, motion.rotations)


class DraftsPipeline(FakePipeline):
    """A provisional fill of the whole gap first, then the final frames in two chunks (as the video pipeline
    will stream: SLERP at once, mimicked motion as it settles)."""

    def methods(self):
        return [*super().methods(), MethodSpec("drafts", "provisional then final", ("default",))]

    async def run(self, spec, token, report, device):
        c, t = spec.context_frames, spec.total_frames
        draft = random_motion(t - c, spec.num_joints, seed=7)
        final = random_motion(t - c, spec.num_joints, seed=8)
        yield MotionChunk(c, draft.rotations, draft.root_translation, is_final=False)
        half = (t - c) // 2
        yield MotionChunk(c, final.rotations[:half], final.root_translation[:half])
        yield MotionChunk(c + half, final.rotations[half:], final.root_translation[half:])
        full = Motion(
            fps=spec.context.fps,
            rotations=torch.cat([spec.context.rotations, final.rotations]),
            root_translation=torch.cat([spec.context.root_translation, final.root_translation]),
        )
        yield Completed("drafts done", total_frames=t, motion=full)


async def test_provisional_chunks_replay_from_their_own_file_and_the_result_holds_the_final_frames(
    make_server, connect, tiny, make_req, tmp_path
):
    server, port = await make_server(DraftsPipeline())
    client = await connect(port)
    up = await client.upload_character(tiny(5))
    live = await collect(client.stub.Inbetween(make_req(up, method="drafts", keys=(40,)), metadata=client.metadata))
    job_id = live[0].job_id
    motion_events = [e.motion for e in live if e.WhichOneof("kind") == "motion"]
    assert [(m.frame_start, m.frame_count, m.is_final) for m in motion_events] == [(4, 37, False), (4, 18, True), (22, 19, True)]
    draft = random_motion(37, 5, seed=7)
    np.testing.assert_array_equal(np.asarray(motion_events[0].rotations, np.float32), draft.rotations.numpy().ravel())
    job_dir = tmp_path / "data" / "jobs" / job_id
    assert (job_dir / "drafts.f32").stat().st_size == 37 * (5 * 4 + 3) * 4
    await server.stop(0.0)
    _, port2 = await make_server(DraftsPipeline())
    client2 = await connect(port2)
    assert await _watch(client2, job_id) == live
    motion, _ = await client2.result(job_id, 5)
    torch.testing.assert_close(motion.rotations[4:], random_motion(37, 5, seed=8).rotations, rtol=0, atol=0)


async def test_a_job_directory_with_motion_in_its_log_still_replays_and_serves_its_result(
    make_server, connect, tiny, make_req, tmp_path
):
    # A job as servers before the timeline files stored it: tensors inline in events.jsonl, a result.npz.
    server, port = await make_server(FakePipeline())
    client = await connect(port)
    up = await client.upload_character(tiny(5))
    spec_source = await collect(client.stub.Inbetween(make_req(up, method="fake"), metadata=client.metadata))
    await server.stop(0.0)
    store = JobStore(tmp_path / "data")
    job_id = "job-legacy000000001"
    spec = store.load_spec(spec_source[0].job_id, server.characters.get(up.character_id))
    meta = {
        "job_id": job_id,
        "state": "completed",
        "created": time.time(),
        "character_id": up.character_id,
        "method": "fake",
        "preset": "",
        "label": "legacy",
        "total_frames": 13,
        "last_seq": 3,
    }
    store.create(job_id, meta, spec)
    result = random_motion(13, 5, seed=3)
    chunk = MotionChunk(4, result.rotations[4:], result.root_translation[4:])
    store.append_event(job_id, 1, 1.0, chunk)  # the old form: the numbers inline, in base64
    store.append_event(job_id, 2, 2.0, Progress("fake", 1.0, 1.0))
    store.append_event(job_id, 3, 3.0, Completed("old", total_frames=13))
    store.write_npz(store.result_path(job_id, ".npz"), result)

    _, port2 = await make_server(FakePipeline())
    client2 = await connect(port2)
    events = await _watch(client2, job_id)
    assert [e.WhichOneof("kind") for e in events] == ["motion", "progress", "completed"]
    np.testing.assert_array_equal(np.asarray(events[0].motion.rotations, np.float32), result.rotations[4:].numpy().ravel())
    motion, _ = await client2.result(job_id, 5)
    assert torch.equal(motion.rotations, result.rotations)


async def test_a_result_is_stored_off_the_event_loop_and_a_cancel_meanwhile_does_not_lose_it(
    make_server, connect, tiny, make_req, monkeypatch
):
    from anymole.service.timeline import Timeline

    writing, release = threading.Event(), threading.Event()
    original = Timeline.write_motion

    def slow_write(self, motion):
        writing.set()
        assert release.wait(10)
        original(self, motion)

    monkeypatch.setattr(Timeline, "write_motion", slow_write)
    _, port = await make_server(FakePipeline())
    client = await connect(port)
    up = await client.upload_character(tiny())
    job_id, _ = await client.submit(make_req(up, method="fake"))
    await wait_for(writing.is_set)
    # The loop serves while the result is written, and a cancel now leaves the finished job to complete.
    assert (await client.stub.GetServerInfo(pb.GetServerInfoRequest())).protocol.major == 1
    assert (await client.stub.CancelJob(pb.CancelJobRequest(job_id=job_id), metadata=client.metadata)).state == pb.JOB_STATE_RUNNING
    release.set()
    events = await _watch(client, job_id)
    assert events[-1].WhichOneof("kind") == "completed"
    motion, _ = await client.result(job_id, 5)
    assert motion.num_frames == 13
