"""ListJobs stays usable for every client (issue 12.3): labels are capped, pages stay under the 4 MiB default
receive limit, and labels stored before the cap no longer break the listing after a restart."""

from __future__ import annotations

import json

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from service_fakes import FakePipeline, collect

from anymole.service.servicer import LIST_PAGE_SIZE
from anymole.wire import convert
from anymole.wire.proto.anymole.v1 import anymole_pb2 as pb
from anymole.wire.proto.anymole.v1 import anymole_pb2_grpc as pb_grpc

DEFAULT_RECEIVE = 4 << 20  # gRPC's default receive limit, which editor clients keep


def _field_of(err: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(err)
    bad = error_details_pb2.BadRequest()
    assert status is not None and status.details[0].Unpack(bad)
    return bad.field_violations[0].field


async def _run(client, req) -> str:
    events = await collect(client.stub.Inbetween(req, metadata=client.metadata))
    assert events[-1].WhichOneof("kind") == "completed"
    return events[0].job_id


async def _pages(port: int, **req) -> list[pb.ListJobsResponse]:
    """Every page of a listing, fetched on a channel with gRPC's default 4 MiB receive limit."""
    pages = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.AnyMoLeServiceStub(channel)
        request = pb.ListJobsRequest(**req)
        while True:
            page = await stub.ListJobs(request)
            assert page.ByteSize() < DEFAULT_RECEIVE
            pages.append(page)
            if not page.next_page_token:
                return pages
            request.page_token = page.next_page_token


async def test_a_label_over_the_limit_is_refused_naming_the_field(make_server, connect, tiny, make_req):
    _, port = await make_server(FakePipeline(), limits=convert.Limits(max_label_bytes=8))
    client = await connect(port)
    limits = (await client.stub.GetServerInfo(pb.GetServerInfoRequest())).capabilities.limits
    assert limits.max_label_bytes == 8
    up = await client.upload_character(tiny())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.submit(make_req(up, method="fake", label="ééééé"))  # 5 characters, 10 UTF-8 bytes
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert _field_of(err.value) == "label" and "10 bytes exceeds this server's limit of 8" in err.value.details()
    await client.submit(make_req(up, method="fake", label="éééé"))  # 8 bytes: fits


async def test_pages_cover_every_job_once_newest_first(make_server, connect, tiny, make_req):
    _, port = await make_server(FakePipeline())
    client = await connect(port)
    up = await client.upload_character(tiny())
    ids = [await _run(client, make_req(up, method="fake", label=f"j{i}")) for i in range(7)]
    newest_first = ids[::-1]

    pages = await _pages(port, page_size=3)
    assert [len(p.jobs) for p in pages] == [3, 3, 1]
    assert [j.job_id for p in pages for j in p.jobs] == newest_first
    limited = await _pages(port, page_size=2, limit=5)
    assert [len(p.jobs) for p in limited] == [2, 2, 1]
    assert [j.job_id for p in limited for j in p.jobs] == newest_first[:5]
    assert [j.job_id for p in await _pages(port, limit=4) for j in p.jobs] == newest_first[:4]
    assert len((await _pages(port))[0].jobs) == min(7, LIST_PAGE_SIZE)
    # A job submitted between pages does not shift the later pages.
    first = (await _pages(port, page_size=3, limit=3))[0]
    assert not first.next_page_token  # the limit is reached: nothing more to fetch
    await _run(client, make_req(up, method="fake", label="late"))
    assert [j.job_id for j in (await client.list_jobs())][1:] == newest_first

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.stub.ListJobs(pb.ListJobsRequest(page_token="garbage"), metadata=client.metadata)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT and _field_of(err.value) == "page_token"


async def test_pages_stay_under_the_default_receive_limit_whatever_the_page_size(make_server, connect, tiny, make_req):
    label_bytes = 1 << 20
    _, port = await make_server(FakePipeline(), limits=convert.Limits(max_label_bytes=label_bytes))
    client = await connect(port)
    up = await client.upload_character(tiny())
    ids = [await _run(client, make_req(up, method="fake", label=str(i) * label_bytes)) for i in range(6)]
    pages = await _pages(port, page_size=50)  # 6 MiB of labels: more than one page, each under 4 MiB
    assert len(pages) >= 2
    assert [j.job_id for p in pages for j in p.jobs] == ids[::-1]
    assert all(len(j.label) == label_bytes for p in pages for j in p.jobs)


async def test_oversized_labels_stored_before_the_limit_are_cut_on_start(make_server, connect, tiny, make_req, tmp_path):
    fake = FakePipeline()
    server, port = await make_server(fake)
    client = await connect(port)
    up = await client.upload_character(tiny())
    ids = [await _run(client, make_req(up, method="fake", label=f"j{i}")) for i in range(3)]
    await server.stop(0.0)
    # Labels as an older server stored them: 30 MB each, in job.json (and request.json).
    for i, job_id in enumerate(ids):
        meta_path = tmp_path / "data" / "jobs" / job_id / "job.json"
        meta = json.loads(meta_path.read_text())
        meta["label"] = "é" + str(i) * (30_000_000 - 2)
        meta_path.write_text(json.dumps(meta))

    _, port2 = await make_server(FakePipeline())
    pages = await _pages(port2)
    labels = [j.label for p in pages for j in p.jobs]
    assert [j.job_id for p in pages for j in p.jobs] == ids[::-1]
    assert all(len(label.encode()) <= 1024 and label.startswith("é" + str(2 - i)) for i, label in enumerate(labels))
    # The cut was written back: the next start reads small job.json files.
    assert all((tmp_path / "data" / "jobs" / j / "job.json").stat().st_size < 4096 for j in ids)
