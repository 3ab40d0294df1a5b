"""Reattaching after an editor reload (issue 15.3), over a real loopback server: client tags echoed and
filtered in ListJobs, idempotent SubmitJob (also across a restart), WatchJob without the replayed previews."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from service_fakes import FakePipeline, collect, wait_for

from anymole.pipeline import CancelToken, Completed, Event, JobSpec, MethodSpec, Preview, ProgressReporter
from anymole.service.jobs import JobState
from anymole.wire.proto.anymole.v1 import anymole_pb2 as pb


class PreviewPipeline(FakePipeline):
    """`FakePipeline` plus method ``previews``: one preview, then (after `release`) another, then the result."""

    def methods(self) -> list[MethodSpec]:
        return [*super().methods(), MethodSpec("previews", "two previews", ("default",), sends_previews=True)]

    async def run(
        self, spec: JobSpec, token: CancelToken, report: ProgressReporter, device: str
    ) -> AsyncIterator[Event]:
        if spec.method != "previews":
            async for e in super().run(spec, token, report, device):
                yield e
            return
        yield Preview("sample", spec.context_frames, 0, "image/jpeg", b"first", 2, 2)
        await self.release.wait()
        yield Preview("sample", spec.context_frames + 1, 0, "image/jpeg", b"second", 2, 2)
        async for e in super().run(dataclasses.replace(spec, method="fake"), token, report, device):
            yield e


async def test_client_tags_are_echoed_and_filter_list_jobs_across_a_restart(
    make_server, connect, tiny, make_req
):
    server, port = await make_server(FakePipeline())
    client = await connect(port)
    up = await client.upload_character(tiny())
    hero = {"asset": "Assets/Hero.anim", "session": "s1"}
    ids = {}
    for name, tags in [
        ("hero", hero),
        ("other", {"asset": "Assets/Other.anim", "session": "s1"}),
        ("none", {}),
    ]:
        ids[name], _ = await client.submit(make_req(up, method="fake", label=name, client_tags=tags))
    for job_id in ids.values():
        await collect(client.watch(job_id, 5))

    listed = await client.list_jobs(client_tags={"asset": "Assets/Hero.anim"})
    assert [j.job_id for j in listed] == [ids["hero"]] and listed[0].client_tags == hero
    session = await client.list_jobs(client_tags={"session": "s1"})
    assert {j.job_id for j in session} == {ids["hero"], ids["other"]}
    assert await client.list_jobs(client_tags={"asset": "Assets/Hero.anim", "session": "s2"}) == []
    assert len(await client.list_jobs()) == 3  # no filter: all

    await server.stop(0)
    _, port2 = await make_server(FakePipeline())
    client2 = await connect(port2)
    again = await client2.list_jobs(states=[JobState.COMPLETED], client_tags={"asset": "Assets/Hero.anim"})
    assert [(j.job_id, j.client_tags) for j in again] == [(ids["hero"], hero)]


@pytest.mark.parametrize(
    ("tags", "field"),
    [
        ({f"k{i}": "v" for i in range(33)}, "client_tags"),
        ({"k": "v" * 1025}, "client_tags['k']"),
        ({"": "v"}, "client_tags['']"),
    ],
)
async def test_oversized_client_tags_are_refused_naming_the_field(
    make_server, connect, tiny, make_req, tags, field
):
    _, port = await make_server(FakePipeline())
    client = await connect(port)
    up = await client.upload_character(tiny())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.submit(make_req(up, method="fake", client_tags=tags))
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert _violation(err.value).field == field


def _violation(exc: grpc.aio.AioRpcError) -> error_details_pb2.BadRequest.FieldViolation:
    status = rpc_status.from_call(exc)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    return bad.field_violations[0]


async def test_a_retried_submit_with_its_key_returns_the_first_job(make_server, connect, tiny, make_req):
    fake = FakePipeline()
    server, port = await make_server(fake)
    client = await connect(port)
    up = await client.upload_character(tiny())
    req = make_req(up, method="gate", label="once")
    first = await client.stub.SubmitJob(
        pb.SubmitJobRequest(request=req, idempotency_key="k-1"), metadata=client.metadata
    )
    retry = await client.stub.SubmitJob(
        pb.SubmitJobRequest(request=req, idempotency_key="k-1"), metadata=client.metadata
    )
    assert not first.existing and retry.existing and retry.job_id == first.job_id
    assert len(await client.list_jobs()) == 1
    # Without a key every submit is a new job; the same key with another request is refused.
    other, _ = await client.submit(req)
    assert other != first.job_id
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.submit(make_req(up, method="gate", label="changed"), idempotency_key="k-1")
    assert err.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert _violation(err.value).field == "idempotency_key" and first.job_id in err.value.details()

    await wait_for(lambda: "once" in fake.started)
    await server.grpc_server.stop(0)  # a crash: the key must survive in the job's directory
    _, port2 = await make_server(FakePipeline())
    client2 = await connect(port2)
    job_id, position = await client2.submit(req, idempotency_key="k-1")
    assert (job_id, position) == (first.job_id, 0)
    assert len(await client2.list_jobs()) == 2
    fake.release.set()


async def test_rewatch_can_skip_the_previews_already_stored(make_server, connect, tiny, make_req):
    pipe = PreviewPipeline()
    _, port = await make_server(pipe)
    client = await connect(port)
    up = await client.upload_character(tiny())
    job_id, _ = await client.submit(make_req(up, method="previews"))
    first_watch = client.watch(job_id, 5)
    async for st in first_watch:  # the stream a domain reload drops after the first preview
        if isinstance(st.event, Preview):
            break
    await first_watch.aclose()

    rewatch = client.watch(job_id, 5, skip_replayed_previews=True)
    events = [await anext(rewatch)]  # the replay began: the server took the stored events' extent
    pipe.release.set()
    events += [st async for st in rewatch]
    previews = [e.event.data for e in events if isinstance(e.event, Preview)]
    assert previews == [b"second"]  # the stored one left out, the live one sent
    assert isinstance(events[-1].event, Completed)

    full = await collect(client.watch(job_id, 5))
    assert [e.event.data for e in full if isinstance(e.event, Preview)] == [b"first", b"second"]
    assert [e.seq for e in full if not isinstance(e.event, Preview) or e.event.data == b"second"] == [
        e.seq for e in events
    ]
    after_done = await collect(client.watch(job_id, 5, skip_replayed_previews=True))
    assert [e.seq for e in after_done] == [e.seq for e in full if not isinstance(e.event, Preview)]
