"""Resource bounds a shared server lives with (issue 12.2): the memory budget and what it derives (frame-joints
per job, per queue), uploads in flight across clients, label sizes; all through the real gRPC path."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from service_fakes import FakePipeline, collect, wait_for

from anymole.service.budget import BYTES_PER_FRAME_JOINT, QUEUED_JOBS_PER_BUDGET, budget_limits, parse_size
from anymole.service.jobs import JobState
from anymole.wire import convert
from anymole.wire.proto.anymole.v1 import anymole_pb2 as pb


def _detail(err: grpc.aio.AioRpcError, cls):
    status = rpc_status.from_call(err)
    assert status is not None
    for d in status.details:
        if d.Is(cls.DESCRIPTOR):
            msg = cls()
            d.Unpack(msg)
            return msg
    raise AssertionError(f"no {cls.DESCRIPTOR.name} in {err}")


async def test_the_budget_is_published_and_a_job_over_it_is_refused_naming_the_numbers(
    make_server, connect, tiny, make_req
):
    joints = 5
    per_job = 100 * joints  # one job may have 100 frames of this skeleton
    _, port = await make_server(memory_budget=per_job * BYTES_PER_FRAME_JOINT)
    client = await connect(port)
    limits = (await client.stub.GetServerInfo(pb.GetServerInfoRequest())).capabilities.limits
    assert limits.memory_budget_bytes == per_job * BYTES_PER_FRAME_JOINT
    assert limits.max_frame_joints == per_job
    assert limits.max_queued_frame_joints == QUEUED_JOBS_PER_BUDGET * per_job
    up = await client.upload_character(tiny(joints))

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.submit(make_req(up, keys=(8, 100)))  # 101 frames
    assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "101 frames × 5 joints = 505 frame-joints exceeds the 500" in err.value.details()
    assert _detail(err.value, error_details_pb2.QuotaFailure).violations[0].subject == "total_frames"
    # The context counts too, even when total_frames is short: it is checked before it is decoded.
    big_context = make_req(up, context_frames=120, keys=(130,))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.submit(big_context)
    assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await client.list_jobs() == []

    job_id, _ = await client.submit(make_req(up, keys=(8, 99)))  # exactly 100 frames fits
    events = await collect(client.stub.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=client.metadata))
    assert events[-1].WhichOneof("kind") == "completed"


async def test_without_a_flag_the_budget_is_half_the_available_memory(make_server, connect, monkeypatch):
    monkeypatch.setattr("anymole.service.budget.available_memory_bytes", lambda: 8 << 30)
    _, port = await make_server()
    limits = (await (await connect(port)).stub.GetServerInfo(pb.GetServerInfoRequest())).capabilities.limits
    assert limits.memory_budget_bytes == 4 << 30
    assert limits.max_frame_joints == (4 << 30) // BYTES_PER_FRAME_JOINT
    assert limits.max_upload_bytes_in_flight == 1 << 30


def test_one_job_never_exceeds_the_frame_and_joint_limits_and_one_upload_always_fits():
    base = convert.Limits(max_frames=1000, max_joints=10, max_character_bytes=5000)
    huge = budget_limits(base, 1 << 40)
    assert huge.max_frame_joints == 10_000
    tiny = budget_limits(base, 1000)
    assert tiny.max_frame_joints == 1000 // BYTES_PER_FRAME_JOINT
    assert tiny.max_upload_bytes_in_flight == 5000


@pytest.mark.parametrize(
    ("text", "size"), [("4096", 4096), ("512M", 512 << 20), ("20G", 20 << 30), ("1.5T", int(1.5 * (1 << 40))), ("2GiB", 2 << 30)]
)
def test_sizes_parse_in_binary_units(text, size):
    assert parse_size(text, "--max-disk") == size


@pytest.mark.parametrize("text", ["", "0", "-1G", "lots", "5X", "inf"])
def test_a_bad_size_names_the_flag(text):
    with pytest.raises(ValueError, match="cannot read size") as err:
        parse_size(text, "--max-disk")
    assert err.value.field == "--max-disk"


async def test_the_queue_holds_at_most_its_budget_of_frame_joints(make_server, connect, tiny, make_req):
    fake = FakePipeline()
    per_job = 100 * 5
    server, port = await make_server(fake, memory_budget=per_job * BYTES_PER_FRAME_JOINT)
    client = await connect(port)
    up = await client.upload_character(tiny(5))
    big = dict(context_frames=4, keys=(8, 99))  # 100 frames: a whole job's budget each
    await client.submit(make_req(up, method="gate", label="running", **big))
    await wait_for(lambda: fake.started == ["running"])
    for i in range(QUEUED_JOBS_PER_BUDGET - 1):
        await client.submit(make_req(up, method="fake", label=f"q{i}", **big))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.submit(make_req(up, method="fake", label="over", **big))
    assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"hold {QUEUED_JOBS_PER_BUDGET * per_job} of this server's {QUEUED_JOBS_PER_BUDGET * per_job}" in (
        err.value.details()
    )
    assert _detail(err.value, error_details_pb2.QuotaFailure).violations[0].subject == "total_frames"
    assert {j.label for j in await client.list_jobs()} == {"running", "q0", "q1", "q2"}
    fake.release.set()
    await wait_for(lambda: all(j.state is JobState.COMPLETED for j in server.jobs.list()))
    assert server.jobs.queued_frame_joints == 0  # finished jobs give their share back
    await client.submit(make_req(up, method="fake", label="later", **big))


async def test_a_worker_waits_until_the_running_jobs_leave_room_in_the_budget(make_server, connect, tiny, make_req):
    fake = FakePipeline()
    server, port = await make_server(fake, devices=("cpu", "cpu"), memory_budget=100 * 5 * BYTES_PER_FRAME_JOINT)
    client = await connect(port)
    up = await client.upload_character(tiny(5))
    await client.submit(make_req(up, method="gate", label="a", keys=(8, 59)))  # 60 of 100 frames
    await wait_for(lambda: fake.started == ["a"])
    second, _ = await client.submit(make_req(up, method="fake", label="b", keys=(8, 59)))
    small, _ = await client.submit(make_req(up, method="fake", label="c", keys=(8,)))
    for _ in range(20):  # both workers get every chance to run: the second device stays idle
        await asyncio.sleep(0)
    assert fake.started == ["a"]
    assert server.jobs.info(second).state is JobState.QUEUED and server.jobs.info(small).state is JobState.QUEUED
    fake.release.set()
    await wait_for(lambda: all(j.state is JobState.COMPLETED for j in server.jobs.list()))
    assert fake.started == ["a", "b", "c"]  # first in, first out: the small job did not overtake


def _held_upload(payload: bytes, go: asyncio.Event):
    """An UploadCharacter stream that sends its header at once and its bytes once ``go`` is set."""

    async def parts():
        yield pb.UploadCharacterRequest(header=pb.UploadHeader(format=pb.CHARACTER_FORMAT_PROTO, total_bytes=len(payload)))
        await go.wait()
        yield pb.UploadCharacterRequest(chunk=payload)

    return parts()


def _payloads(tiny, n: int) -> list[bytes]:
    """``n`` distinct character payloads of equal size (names differ in one character)."""
    return [
        convert.character_to_asset(tiny(5, name=f"c{i}")).SerializeToString(deterministic=True) for i in range(n)
    ]


async def test_uploads_beyond_the_bytes_in_flight_wait_for_room(make_server, connect, tiny):
    payloads = _payloads(tiny, 3)
    size = len(payloads[0])
    limits = convert.Limits(max_character_bytes=2 * size)  # room for two uploads at once
    server, port = await make_server(limits=limits, memory_budget=1000, upload_wait_s=30.0)
    client = await connect(port)
    info = await client.stub.GetServerInfo(pb.GetServerInfoRequest())
    assert info.capabilities.limits.max_upload_bytes_in_flight == 2 * size
    gates = [asyncio.Event() for _ in payloads]
    calls = [client.stub.UploadCharacter(_held_upload(p, g), metadata=client.metadata) for p, g in zip(payloads, gates, strict=True)]
    tasks = [asyncio.ensure_future(c) for c in calls[:2]]
    await wait_for(lambda: server.uploads.held == 2 * size)
    third = asyncio.ensure_future(calls[2])
    gates[2].set()  # the third has its bytes ready but no room: it waits for one of the first two
    await asyncio.sleep(0.2)
    assert not third.done()
    gates[0].set()
    first = await tasks[0]
    resp = await third
    assert not resp.cached and resp.name == "c2"
    gates[1].set()
    assert (await tasks[1]).name == "c1" and first.name == "c0"


async def test_an_upload_that_finds_no_room_in_time_is_refused_with_the_reason(make_server, connect, tiny):
    payloads = _payloads(tiny, 3)
    size = len(payloads[0])
    limits = convert.Limits(max_character_bytes=2 * size)
    server, port = await make_server(limits=limits, memory_budget=1000)  # refused at once by default
    client = await connect(port)
    go, ready = asyncio.Event(), asyncio.Event()
    ready.set()
    held = [asyncio.ensure_future(client.stub.UploadCharacter(_held_upload(p, go), metadata=client.metadata)) for p in payloads[:2]]
    await wait_for(lambda: server.uploads.held == 2 * size)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.stub.UploadCharacter(_held_upload(payloads[2], ready), metadata=client.metadata)
    assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"uploads in flight hold {2 * size} of this server's {2 * size} bytes" in err.value.details()
    assert _detail(err.value, error_details_pb2.QuotaFailure).violations[0].subject == "header.total_bytes"
    go.set()
    assert [r.name for r in await asyncio.gather(*held)] == ["c0", "c1"]
    assert (await client.upload(payloads[2], pb.CHARACTER_FORMAT_PROTO)).name == "c2"  # room again
