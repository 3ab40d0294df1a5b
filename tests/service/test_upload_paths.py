"""An upload the server cannot import is reported under the client's own file name: the importer's message
quoted the server's temporary file (issue 12, item 4)."""

from __future__ import annotations

import random
import tempfile

import grpc
import pytest


@pytest.mark.parametrize("suffix", [".glb", ".fbx", ".bvh"])
async def test_an_unreadable_upload_names_the_clients_file_not_the_servers(make_server, connect, tmp_path, suffix):
    _, port = await make_server()
    client = await connect(port)
    garbage = bytes(random.Random(7).randrange(1, 256) for _ in range(4096))  # no NUL: the BVH parser reads it
    asset = tmp_path / f"Monster{suffix}"
    asset.write_bytes(garbage)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.upload_file(asset)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details()
    assert details.startswith(f"Monster{suffix}: "), details
    assert "anymole-upload-" not in details and tempfile.gettempdir() not in details, details
    assert details.isascii() and details.isprintable(), details  # the bytes come back escaped, not raw
    assert len(details) < 400
