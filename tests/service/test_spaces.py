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


def _glb_with_node_scale(path, node_name: str, scale: list[float]) -> bytes:
    """``path``'s GLB bytes with ``scale`` set on the node called ``node_name`` (JSON chunk rewritten, padded)."""
    import json
    import struct

    data = path.read_bytes()
    n = struct.unpack("<I", data[12:16])[0]
    doc = json.loads(data[20 : 20 + n])
    next(node for node in doc["nodes"] if node.get("name") == node_name)["scale"] = scale
    text = json.dumps(doc).encode()
    text += b" " * (-len(text) % 4)
    rest = data[20 + n :]
    body = struct.pack("<I", len(text)) + b"JSON" + text + rest
    return data[:8] + struct.pack("<I", 12 + len(body)) + body


async def test_a_file_upload_with_a_non_uniform_joint_scale_is_refused_naming_the_joint(make_server, connect):
    from pathlib import Path

    fox = Path(__file__).resolve().parents[2] / "assets" / "Fox.glb"
    _, port = await make_server()
    client = await connect(port)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.upload(_glb_with_node_scale(fox, "b_Spine01_02", [1.0, 2.0, 1.0]), pb.CHARACTER_FORMAT_GLB, "fox")
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "'b_Spine01_02'" in err.value.details() and "non-uniform scale" in err.value.details()
    up = await client.upload(_glb_with_node_scale(fox, "b_Spine01_02", [2.0, 2.0, 2.0]), pb.CHARACTER_FORMAT_GLB, "fox")
    assert up.skeleton.num_joints == 24  # a uniform scale is folded into the offsets, as before
