"""Long quiet jobs survive (issue 15.6), over a real loopback server: a client that pings often waits through a
job that reports nothing for a while, queued behind it or running it, and its streams get heartbeat events.
The policy is the server's real mechanism (`KeepalivePolicy`), its numbers scaled down so the quiet job takes
seconds instead of minutes. (A control with gRPC's default ping policy was not cut off by grpcio 1.85 at the
once-a-second pings its client actually sends during an open call, so these tests show that the streams
survive and beat, not that the ping options are what saves them.)"""

from __future__ import annotations

import grpc
from service_fakes import FakePipeline, make_request, tiny_character

from anymole.pipeline import Completed, Progress, Queued
from anymole.service.keepalive import HEARTBEAT_S, MIN_CLIENT_PING_INTERVAL_S, KeepalivePolicy
from anymole.wire import convert
from anymole.wire.proto.anymole.v1 import anymole_pb2 as pb
from anymole.wire.proto.anymole.v1 import anymole_pb2_grpc as pb_grpc

QUIET_S = 2.0  # the fake stage's silence; the real policy's 10 s heartbeat scaled by 1/20
SCALED = KeepalivePolicy(
    heartbeat_s=HEARTBEAT_S / 20, min_client_ping_interval_s=MIN_CLIENT_PING_INTERVAL_S / 20
)
# The client pings every 10 s against the server's 5 s minimum in the real policy: here every 0.5 s vs 0.25 s.
PINGING = [
    ("grpc.keepalive_time_ms", 500),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.min_time_between_pings_ms", 100),
    ("grpc.http2.min_sent_ping_interval_without_data_ms", 100),
]


def test_the_default_policy_accepts_a_client_pinging_every_10_s_and_beats_every_10_s():
    options = dict(KeepalivePolicy().server_options())
    assert options["grpc.http2.min_ping_interval_without_data_ms"] <= 10_000
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert KeepalivePolicy().heartbeat_s <= 10.0


async def _run_quiet_jobs(make_server, policy: KeepalivePolicy):
    """A quiet job and one queued behind it, watched by a pinging client; returns both jobs' events."""
    _, port = await make_server(FakePipeline(steps=1, step_s=QUIET_S), keepalive=policy)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=PINGING) as channel:
        stub = pb_grpc.AnyMoLeServiceStub(channel)
        payload = convert.character_to_asset(tiny_character()).SerializeToString(deterministic=True)
        header = pb.UploadHeader(format=pb.CHARACTER_FORMAT_PROTO, total_bytes=len(payload))
        up = await stub.UploadCharacter(
            iter([pb.UploadCharacterRequest(header=header), pb.UploadCharacterRequest(chunk=payload)])
        )
        running = await stub.SubmitJob(
            pb.SubmitJobRequest(request=make_request(up.character_id, 5, method="fake"))
        )
        queued = await stub.SubmitJob(
            pb.SubmitJobRequest(request=make_request(up.character_id, 5, method="fake"))
        )
        first = [e async for e in stub.WatchJob(pb.WatchJobRequest(job_id=running.job_id))]
        second = [e async for e in stub.WatchJob(pb.WatchJobRequest(job_id=queued.job_id))]
    return [convert.event_from_proto(e).event for e in first], [
        convert.event_from_proto(e).event for e in second
    ]


async def test_a_pinging_client_waits_through_a_quiet_job_and_gets_heartbeats(make_server):
    running, queued = await _run_quiet_jobs(make_server, SCALED)
    assert isinstance(running[-1], Completed) and isinstance(queued[-1], Completed)
    beats = [e for e in running if isinstance(e, Progress) and "no progress report" in e.message]
    assert len(beats) >= 2  # 2 s of silence at one beat per 0.1 s: several, whatever the machine's pace
    assert all(b.stage == "start" and b.fraction == 0.0 and b.eta_seconds is None for b in beats)
    waiting = [e for e in queued if isinstance(e, Queued)]
    assert len(waiting) >= 3 and {q.position for q in waiting} == {0}  # Queued(0) at submit, then beats
