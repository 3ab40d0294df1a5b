"""Spaces and scale (issue 15.1) through a real server: the contract has no joint scale, so an upload whose
inverse bind matrices carry a non-uniform scale is refused naming the joint; a uniform scale (a rig in
centimetres baked into the matrices) is accepted as it is."""

from __future__ import annotations

import grpc
import pytest
import torch
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from anymole.wire import convert
from anymole.wire.proto.anymole.v1 import anymole_pb2 as pb


def _with_bind_scale(character, joint: int, scale: tuple[float, float, float]) -> bytes:
    asset = convert.character_to_asset(character)
    ibm = list(asset.mesh.inverse_bind_matrices)
    for axis, s in enumerate(scale):  # column-major: column `axis` holds elements axis*4 .. axis*4+2
        for row in range(3):
            ibm[joint * 16 + axis * 4 + row] *= s
    del asset.mesh.inverse_bind_matrices[:]
    asset.mesh.inverse_bind_matrices.extend(ibm)
    return asset.SerializeToString(deterministic=True)


async def test_a_non_uniform_bind_scale_is_refused_naming_the_joint(make_server, connect, tiny):
    _, port = await make_server()
    client = await connect(port)
    character = tiny(5)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.upload(_with_bind_scale(character, 2, (1.0, 1.5, 1.0)), pb.CHARACTER_FORMAT_PROTO)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(err.value)
    bad = error_details_pb2.BadRequest()
    assert status is not None and status.details[0].Unpack(bad)
    assert bad.field_violations[0].field == "mesh.inverse_bind_matrices[2]"
    assert "'j2'" in bad.field_violations[0].description and "non-uniform" in bad.field_violations[0].description

    up = await client.upload(_with_bind_scale(character, 2, (100.0, 100.0, 100.0)), pb.CHARACTER_FORMAT_PROTO)
    stored = await client.get_character(up.character_id)
    assert stored is not None and stored.vertex_count == 4
    torch.testing.assert_close(up.skeleton.offsets, character.skeleton.offsets)
