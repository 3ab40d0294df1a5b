"""Message sizes that engine clients receive (issue 15.2), over a real loopback server: a client with gRPC's
default 4 MiB receive limit (what gRPC C++ and grpc-dotnet use) gets a 3000-frame, 65-joint result through the
event stream, DownloadResult and (with its limit stated) a clear GetResult refusal; a stated smaller limit sizes
every part."""

from __future__ import annotations

import dataclasses

import grpc
import numpy as np
import pytest
import torch
from service_fakes import make_request, random_motion

from anymole.rig import Keyframes
from anymole.wire import convert
from anymole.wire.proto.anymole.v1 import anymole_pb2 as pb
from anymole.wire.proto.anymole.v1 import anymole_pb2_grpc as pb_grpc

FOUR_MIB = 4 << 20


@pytest.fixture
async def default_limit_stub(make_server):
    """A server with its 256 MiB limits and a raw stub on a channel with gRPC's default options."""
    _, port = await make_server()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield pb_grpc.AnyMoLeServiceStub(channel)


async def _upload(stub, character) -> str:
    payload = convert.character_to_asset(character).SerializeToString(deterministic=True)
    parts = [
        pb.UploadCharacterRequest(
            header=pb.UploadHeader(format=pb.CHARACTER_FORMAT_PROTO, total_bytes=len(payload))
        ),
        pb.UploadCharacterRequest(chunk=payload),
    ]
    return (await stub.UploadCharacter(iter(parts))).character_id


async def test_a_default_limit_client_gets_a_3000_frame_65_joint_result(default_limit_stub, tiny):
    stub = default_limit_stub
    cid = await _upload(stub, tiny(65))
    # With every joint's translations the result is 3000 × 65 × 7 floats = 5.5 MB, and chunk_frames asks for the
    # whole gap in one event: the server splits it to fit 4 MiB.
    ctx = random_motion(4, 65, seed=1)
    ctx = dataclasses.replace(ctx, translations=torch.randn(4, 65, 3))
    key = random_motion(1, 65, seed=2)
    req = convert.inbetween_request(
        cid,
        ctx,
        Keyframes((2999,), dataclasses.replace(key, translations=torch.randn(1, 65, 3))),
        chunk_frames=3000,
    )
    events = [e async for e in stub.Inbetween(req)]
    assert events[-1].WhichOneof("kind") == "completed"
    chunks = [e.motion for e in events if e.WhichOneof("kind") == "motion"]
    assert sum(c.frame_count for c in chunks) == 3000 - 4 and len(chunks) > 1
    assert chunks[0].frame_start == 4 and {c.joint_count for c in chunks} == {65}  # events start after the context
    assert max(e.ByteSize() for e in events) < FOUR_MIB

    job_id = events[0].job_id
    parts = [
        p
        async for p in stub.DownloadResult(
            pb.DownloadResultRequest(job_id=job_id, format=pb.RESULT_FORMAT_GLB)
        )
    ]
    assert max(p.ByteSize() for p in parts) < FOUR_MIB
    motion = [p.motion for p in parts if p.WhichOneof("part") == "motion"]
    assert [m.frame_start for m in motion] == list(np.cumsum([0] + [m.frame_count for m in motion[:-1]]))
    assert sum(m.frame_count for m in motion) == 3000 and motion[0].frame_start == 0  # the whole timeline
    assert {m.joint_count for m in motion} == {65}
    assert sum(len(m.translations) for m in motion) == 3000 * 65 * 3
    streamed = torch.tensor([x for m in motion for x in m.rotations]).reshape(3000, 65, 4)
    from_events = torch.tensor([x for c in chunks for x in c.rotations]).reshape(2996, 65, 4)
    torch.testing.assert_close(streamed[4:], from_events, rtol=0, atol=0)
    glb = b"".join(p.file_chunk for p in parts if p.WhichOneof("part") == "file_chunk")
    assert glb[:4] == b"glTF" and len(glb) == parts[0].header.file_bytes

    # GetResult with the file does not fit 4 MiB: a client that states its limit is told so by the server.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetResult(
            pb.GetResultRequest(
                job_id=job_id, format=pb.RESULT_FORMAT_GLB, max_receive_message_bytes=FOUR_MIB
            )
        )
    assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED and "DownloadResult" in err.value.details()


async def test_a_stated_receive_limit_sizes_events_and_download_parts(default_limit_stub, tiny):
    stub = default_limit_stub
    limit = 100_000
    cid = await _upload(stub, tiny(65))
    req = make_request(cid, 65, keys=(599,), chunk_frames=600, max_receive_message_bytes=limit)
    events = [e async for e in stub.Inbetween(req)]
    per_chunk = convert.frames_per_message(limit, 65, False)
    assert next(e.motion.frame_count for e in events if e.WhichOneof("kind") == "motion") == per_chunk
    assert max(e.ByteSize() for e in events) <= limit
    request = pb.DownloadResultRequest(
        job_id=events[0].job_id, format=pb.RESULT_FORMAT_NPZ, max_receive_message_bytes=limit
    )
    parts = [p async for p in stub.DownloadResult(request)]
    assert max(p.ByteSize() for p in parts) <= limit
    assert sum(p.motion.frame_count for p in parts if p.WhichOneof("part") == "motion") == 600
    assert sum(1 for p in parts if p.WhichOneof("part") == "file_chunk") > 1  # chunked at half the limit

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.DownloadResult(
            pb.DownloadResultRequest(job_id=events[0].job_id, max_receive_message_bytes=1000)
        ).read()
    assert (
        err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        and "max_receive_message_bytes" in err.value.details()
    )
