"""UploadCharacter: chunking, content-addressed ids, the cache, header checks, file formats."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import grpc
import pytest
import torch

from anymole.wire import convert
from anymole.wire.proto.anymole.v1 import anymole_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]


async def test_chunk_size_does_not_change_the_id_and_second_upload_is_cached(make_server, connect, tiny):
    server, port = await make_server()
    client = await connect(port)
    character = tiny(6)
    payload = convert.character_to_asset(character).SerializeToString(deterministic=True)
    first = await client.upload(payload, pb.CHARACTER_FORMAT_PROTO, chunk_bytes=7, send_hash=False)
    assert first.character_id == "sha256:" + hashlib.sha256(payload).hexdigest()
    assert not first.cached
    again = await client.upload(payload, pb.CHARACTER_FORMAT_PROTO, chunk_bytes=len(payload), send_hash=False)
    assert again.character_id == first.character_id and again.cached
    assert first.skeleton.names == character.skeleton.names
    assert first.vertex_count == 4
    stored = server.characters.get(first.character_id)
    torch.testing.assert_close(stored.skeleton.rest_rotations, character.skeleton.rest_rotations)
    torch.testing.assert_close(stored.mesh.inverse_bind, character.mesh.inverse_bind)
    torch.testing.assert_close(stored.mesh.joint_weights, character.mesh.joint_weights)


async def test_known_hash_skips_the_payload(make_server, connect, tiny):
    _, port = await make_server()
    client = await connect(port)
    first = await client.upload_character(tiny())
    digest = first.character_id.split(":")[1]

    async def header_only():  # no chunks at all: the server must answer from its cache
        yield pb.UploadCharacterRequest(
            header=pb.UploadHeader(format=pb.CHARACTER_FORMAT_PROTO, total_bytes=10**6, sha256=digest)
        )

    resp = await client.stub.UploadCharacter(header_only(), metadata=client.metadata)
    assert resp.cached and resp.character_id == first.character_id


async def test_a_cache_hit_reads_the_rest_of_the_stream_before_answering(make_server, connect, tiny):
    # Issue 15.10: a client that keeps writing chunks after a cache hit must not find its stream cut (or its
    # writer stuck): the server drains every chunk and answers after the client half-closes.
    _, port = await make_server()
    client = await connect(port)
    payload = convert.character_to_asset(tiny()).SerializeToString(deterministic=True)
    first = await client.upload(payload, pb.CHARACTER_FORMAT_PROTO)
    step = -(-len(payload) // 17)
    sent = []

    async def all_chunks():
        digest = first.character_id.split(":")[1]
        yield pb.UploadCharacterRequest(
            header=pb.UploadHeader(format=pb.CHARACTER_FORMAT_PROTO, total_bytes=len(payload), sha256=digest)
        )
        for i in range(0, len(payload), step):
            await asyncio.sleep(0.01)  # a slow writer: the answer must wait for it
            sent.append(i)
            yield pb.UploadCharacterRequest(chunk=payload[i : i + step])

    resp = await client.stub.UploadCharacter(all_chunks(), metadata=client.metadata)
    assert resp.cached and resp.character_id == first.character_id
    assert len(sent) == 17


async def test_characters_survive_a_restart(make_server, connect, tiny):
    server, port = await make_server()
    up = await (await connect(port)).upload_character(tiny())
    await server.stop(0.0)
    server2, port2 = await make_server()
    again = await (await connect(port2)).upload_character(tiny())
    assert again.cached and again.character_id == up.character_id
    assert server2.characters.get(up.character_id).skeleton.names == up.skeleton.names


async def _raw_upload(client, messages):
    async def gen():
        for m in messages:
            yield m

    return await client.stub.UploadCharacter(gen(), metadata=client.metadata)


@pytest.mark.parametrize(
    ("messages", "field"),
    [
        ([], "header"),
        ([pb.UploadCharacterRequest(chunk=b"abc")], "header"),
        ([pb.UploadCharacterRequest(header=pb.UploadHeader(total_bytes=3)), pb.UploadCharacterRequest(chunk=b"abc")],
         "header.format"),
        ([pb.UploadCharacterRequest(header=pb.UploadHeader(format=pb.CHARACTER_FORMAT_PROTO, total_bytes=0))],
         "header.total_bytes"),
        ([pb.UploadCharacterRequest(header=pb.UploadHeader(format=pb.CHARACTER_FORMAT_PROTO, total_bytes=2)),
          pb.UploadCharacterRequest(chunk=b"abc")], "chunk"),
        ([pb.UploadCharacterRequest(header=pb.UploadHeader(format=pb.CHARACTER_FORMAT_PROTO, total_bytes=9)),
          pb.UploadCharacterRequest(chunk=b"abc")], "header.total_bytes"),
        ([pb.UploadCharacterRequest(header=pb.UploadHeader(format=pb.CHARACTER_FORMAT_PROTO, total_bytes=3, sha256="xyz"))],
         "header.sha256"),
        ([pb.UploadCharacterRequest(header=pb.UploadHeader(format=pb.CHARACTER_FORMAT_PROTO, total_bytes=3)),
          pb.UploadCharacterRequest(chunk=b"\xff\xff\xff")], "chunk"),
        ([pb.UploadCharacterRequest(header=pb.UploadHeader(format=pb.CHARACTER_FORMAT_PROTO, total_bytes=2**40))],
         "header.total_bytes"),
    ],
    ids=["empty", "no-header", "no-format", "zero-bytes", "too-many", "too-few", "bad-hash", "garbage", "oversized"],
)  # fmt: skip
async def test_bad_uploads_name_the_field(make_server, connect, messages, field):
    from google.rpc import error_details_pb2, status_pb2

    _, port = await make_server()
    client = await connect(port)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _raw_upload(client, messages)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    raw = dict(err.value.trailing_metadata())["grpc-status-details-bin"]
    bad = error_details_pb2.BadRequest()
    assert status_pb2.Status.FromString(raw).details[0].Unpack(bad)
    assert bad.field_violations[0].field == field


async def test_wrong_declared_hash_is_rejected(make_server, connect, tiny):
    _, port = await make_server()
    client = await connect(port)
    payload = convert.character_to_asset(tiny()).SerializeToString()
    header = pb.UploadHeader(format=pb.CHARACTER_FORMAT_PROTO, total_bytes=len(payload), sha256="0" * 64)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _raw_upload(client, [pb.UploadCharacterRequest(header=header), pb.UploadCharacterRequest(chunk=payload)])
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "header.sha256" in err.value.details()


async def test_glb_upload_is_imported_by_the_server(make_server, connect):
    _, port = await make_server()
    client = await connect(port)
    up = await client.upload_file(ROOT / "assets" / "Fox.glb")
    assert up.skeleton.num_joints == int((ROOT / "assets" / "Fox.glb.joints").read_text())
    assert up.vertex_count > 0 and up.name == "Fox"


async def test_messages_beyond_grpc_default_4mb_pass_both_ways(make_server, connect, tiny, make_req):
    from anymole.rig import Character, SkinnedMesh

    _, port = await make_server()
    client = await connect(port)
    base = tiny(25)
    v = 200_000  # 200k vertices: ~8 MB of positions, normals and weights
    g = torch.Generator().manual_seed(0)
    mesh = SkinnedMesh(
        vertices=torch.rand(v, 3, generator=g),
        faces=torch.randint(0, v, (v, 3), generator=g),
        joint_indices=torch.randint(0, 25, (v, 2), generator=g),
        joint_weights=torch.full((v, 2), 0.5),
        inverse_bind=torch.eye(4).repeat(25, 1, 1),
    )
    big = Character(name="big", skeleton=base.skeleton, mesh=mesh)
    payload = convert.character_to_asset(big).SerializeToString()
    assert len(payload) > 4 * 2**20
    up = await client.upload(payload, pb.CHARACTER_FORMAT_PROTO, chunk_bytes=2**20)
    assert up.vertex_count == v
    # A 20000-frame result of 25 joints is one 8 MB motion part of DownloadResult.
    events = [st async for st in client.inbetween(make_req(up, keys=(20_000,), chunk_frames=5000))]
    motion, _ = await client.result(events[0].job_id, 25)
    assert motion.num_frames == 20_001


async def test_a_server_beyond_the_default_limits_is_not_refused_by_its_client(make_server, connect, tiny, make_req):
    from anymole.wire.convert import Limits

    _, port = await make_server(limits=Limits(max_joints=1100))
    client = await connect(port)
    assert client.limits.max_joints == 1100 and client.limits.quat_tolerance == pytest.approx(0.05)
    up = await client.upload_character(tiny(1100, with_mesh=False))  # more joints than Limits() allows
    assert up.skeleton.num_joints == 1100
    events = [st async for st in client.inbetween(make_req(up, keys=(6,)))]
    motion, _ = await client.result(events[0].job_id, 1100)
    assert motion.rotations.shape == (7, 1100, 4)
