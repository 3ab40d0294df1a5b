"""Forward compatibility in practice (issue 15.7): the Python client against a "newer server" on a real loopback
gRPC server that sends an event kind, enum values and fields this build does not know. The client skips the
unknown event, reads unknown job states as `JobState.UNKNOWN` and keeps everything it knows."""

from __future__ import annotations

import grpc
import pytest

from anymole.client import AnyMoLeClient
from anymole.pipeline import Completed, Progress
from anymole.service.jobs import JobState
from anymole.wire.proto.anymole.v1 import anymole_pb2 as pb


def _field(number: int, payload: bytes) -> bytes:
    """An unknown length-delimited field ``number`` (what a newer server's new message field looks like)."""
    tag, out = (number << 3) | 2, b""
    for value in (tag, len(payload)):
        while value > 0x7F:
            out += bytes([(value & 0x7F) | 0x80])
            value >>= 7
        out += bytes([value])
    return out + payload


def _events() -> list[bytes]:
    known = pb.JobEvent(job_id="job-1", seq=1, time_unix=1.0)
    known.progress.CopyFrom(pb.Progress(stage="warm-up", fraction=0.5))
    # seq 2: a kind added after 1.2 (oneof field 30), with nothing this build knows in the oneof.
    future = pb.JobEvent(job_id="job-1", seq=2, time_unix=2.0).SerializeToString() + _field(30, b"\x08\x01")
    done = pb.JobEvent(job_id="job-1", seq=3, time_unix=3.0)
    done.completed.CopyFrom(pb.Completed(summary="done", total_frames=10))
    return [known.SerializeToString(), future, done.SerializeToString() + _field(99, b"extra")]


@pytest.fixture
async def newer_server():
    """A server speaking a later 1.x: WatchJob, ListJobs, CancelJob and GetServerInfo answer raw bytes."""

    async def watch(request: bytes, context: grpc.aio.ServicerContext):
        for e in _events():
            yield e

    async def list_jobs(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        known = pb.JobSummary(job_id="job-1", state=pb.JOB_STATE_COMPLETED)
        future = pb.JobSummary(job_id="job-2", state=42)  # e.g. a PAUSED state added later
        return pb.ListJobsResponse(jobs=[known, future]).SerializeToString()

    async def cancel(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return pb.CancelJobResponse(state=43).SerializeToString()  # type: ignore[arg-type]

    async def info(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        caps = pb.Capabilities(methods=[pb.MethodInfo(name="interp", available=True, result_formats=[1, 77])])
        resp = pb.GetServerInfoResponse(
            server_version="9.9", protocol=pb.ProtocolVersion(major=1, minor=9), capabilities=caps
        )
        return resp.SerializeToString() + _field(40, b"future capability")

    raw = {"request_deserializer": None, "response_serializer": None}
    handlers = {
        "WatchJob": grpc.unary_stream_rpc_method_handler(watch, **raw),
        "ListJobs": grpc.unary_unary_rpc_method_handler(list_jobs, **raw),
        "CancelJob": grpc.unary_unary_rpc_method_handler(cancel, **raw),
        "GetServerInfo": grpc.unary_unary_rpc_method_handler(info, **raw),
    }
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("anymole.v1.AnyMoLeService", handlers),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield port
    await server.stop(0)


async def test_the_client_ignores_what_a_newer_server_adds(newer_server):
    async with await AnyMoLeClient.connect(f"127.0.0.1:{newer_server}") as client:
        assert client.info.protocol.minor == 9 and list(
            client.info.capabilities.methods[0].result_formats
        ) == [1, 77]
        events = [st async for st in client.watch("job-1")]
        assert [st.seq for st in events] == [1, 3]  # the unknown kind is skipped, the stream goes on
        assert isinstance(events[0].event, Progress) and isinstance(events[1].event, Completed)
        jobs = await client.list_jobs()
        assert [(j.job_id, j.state) for j in jobs] == [
            ("job-1", JobState.COMPLETED),
            ("job-2", JobState.UNKNOWN),
        ]
        assert not JobState.UNKNOWN.terminal
        assert await client.cancel("job-2") is JobState.UNKNOWN
