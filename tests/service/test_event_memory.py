"""Finished jobs' event logs in memory are bounded (an LRU of ``finished_in_memory`` jobs); older ones and
those of a restarted server are replayed from events.jsonl, byte-identically to what live watchers saw."""

from __future__ import annotations

import threading

from service_fakes import FakePipeline, collect, wait_for

from anymole.service.jobs import JobState
from anymole.service.store import JobStore
from anymole.wire.proto.anymole.v1 import anymole_pb2 as pb


def _watch(client, job_id, after_seq=0):
    return collect(client.stub.WatchJob(pb.WatchJobRequest(job_id=job_id, after_seq=after_seq), metadata=client.metadata))


def _record_log_reads(monkeypatch):
    """Patch `JobStore.read_events` to record ``(job_id, thread id)`` of every events.jsonl read."""
    reads: list[tuple[str, int]] = []
    original = JobStore.read_events

    def spy(self, job_id):
        reads.append((job_id, threading.get_ident()))
        return original(self, job_id)

    monkeypatch.setattr(JobStore, "read_events", spy)
    return reads


async def test_oldest_finished_logs_leave_memory_and_replay_identically(
    make_server, connect, tiny, make_req, monkeypatch
):
    reads = _record_log_reads(monkeypatch)
    server, port = await make_server(finished_in_memory=2)
    client = await connect(port)
    up = await client.upload_character(tiny(5))
    live = {}
    for seed in range(3):  # the interp baseline: motion chunks carry real, per-seed rotations
        req = make_req(up, context_frames=4, keys=(12, 19), chunk_frames=5, seed=seed)
        stream = await collect(client.stub.Inbetween(req, metadata=client.metadata))
        live[stream[0].job_id] = stream
    first, second, _ = live
    jobs = server.jobs._jobs
    assert [jobs[j].events is None for j in live] == [True, False, False]
    # The logs in memory hold references to the stored motion, never its numbers.
    assert {type(st.event).__name__ for st in jobs[second].events if "Motion" in type(st.event).__name__} == {"MotionRef"}
    assert sum(m.WhichOneof("kind") == "motion" for m in live[first]) == 4  # 16 gap frames in chunks of 5
    assert reads == []  # nothing was read back while every job ran

    replay = await _watch(client, first)
    assert replay == live[first]  # same protos, seq numbers, times and packed tensors
    assert [m.seq for m in replay] == list(range(1, len(replay) + 1))
    [(read_job, thread)] = reads
    assert read_job == first and thread != threading.get_ident()  # read in a worker thread, not on the loop
    # The replayed job is now the most recently used one: the least recently finished job left instead.
    assert [jobs[j].events is None for j in live] == [False, True, False]
    assert await _watch(client, second, after_seq=3) == live[second][3:]
    assert [jobs[j].events is None for j in live] == [False, False, True]  # now the third job is the least recent

    infos = {i.job_id: i for i in await client.list_jobs()}
    assert {j: infos[j].last_seq for j in live} == {j: s[-1].seq for j, s in live.items()}
    motion, _ = await client.result(first, 5)
    assert motion.num_frames == 20


async def test_a_watcher_of_a_job_evicted_as_it_ends_still_gets_its_end(make_server, connect, tiny, make_req):
    fake = FakePipeline(steps=4, step_s=0.02)
    server, port = await make_server(fake, finished_in_memory=0)
    client = await connect(port)
    up = await client.upload_character(tiny())
    live = await collect(client.stub.Inbetween(make_req(up, method="fake"), metadata=client.metadata))
    job_id = live[0].job_id
    assert live[-1].WhichOneof("kind") == "completed"
    assert server.jobs._jobs[job_id].events is None
    assert await _watch(client, job_id) == live
    assert await _watch(client, job_id, after_seq=len(live)) == []
    assert server.jobs._jobs[job_id].events is None  # a zero-sized cache keeps nothing, even after a replay


async def test_restart_reads_no_finished_log_until_it_is_watched(make_server, connect, tiny, make_req, monkeypatch):
    fake = FakePipeline()
    server, port = await make_server(fake)
    client = await connect(port)
    up = await client.upload_character(tiny())
    live = {}
    for seed in range(2):
        stream = await collect(client.stub.Inbetween(make_req(up, method="fake", seed=seed), metadata=client.metadata))
        live[stream[0].job_id] = stream
    running, _ = await client.submit(make_req(up, method="gate", label="running"))
    await wait_for(lambda: "running" in fake.started)
    await server.grpc_server.stop(0)  # a crash while "running" runs

    reads = _record_log_reads(monkeypatch)
    restarted, port2 = await make_server(FakePipeline())
    client2 = await connect(port2)
    jobs = restarted.jobs._jobs
    assert [job for job, _ in reads] == [running]  # only the unfinished job's log was read at start
    assert all(jobs[j].events is None for j in live)
    states = {i.job_id: (i.state, i.last_seq) for i in await client2.list_jobs()}
    assert {j: states[j] for j in live} == {j: (JobState.COMPLETED, s[-1].seq) for j, s in live.items()}
    assert states[running][0] is JobState.INTERRUPTED

    first = next(iter(live))
    assert await _watch(client2, first) == live[first]
    assert jobs[first].events is not None and [job for job, _ in reads] == [running, first]
    fake.release.set()
