"""Fixtures of the service suite: a real grpc.aio server on 127.0.0.1 port 0 and connected clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from service_fakes import make_request, tiny_character

from anymole.client import AnyMoLeClient
from anymole.pipeline import AnyMoLePipeline
from anymole.rig import Character
from anymole.service.server import AnyMoLeServer, ServerConfig, build_server
from anymole.wire.proto.anymole.v1 import anymole_pb2 as pb


@pytest.fixture
def tiny() -> Callable[..., Character]:
    """`tiny_character` as a fixture: ``tiny(num_joints=5, with_mesh=True)``."""
    return tiny_character


@pytest.fixture
def make_req() -> Callable[..., pb.InbetweenRequest]:
    """``make_req(uploaded, **make_request options)`` → a valid request for an uploaded character."""

    def build(up: Any, **kw: Any) -> pb.InbetweenRequest:
        return make_request(up.character_id, up.skeleton.num_joints, **kw)

    return build


ServerFactory = Callable[..., Awaitable[tuple[AnyMoLeServer, int]]]


@pytest.fixture
async def make_server(tmp_path: Path) -> AsyncIterator[ServerFactory]:
    """``await make_server(pipeline=None, **ServerConfig fields)`` → a started server on a free port."""
    servers: list[AnyMoLeServer] = []

    async def factory(pipeline: Any = None, **cfg: Any) -> tuple[AnyMoLeServer, int]:
        cfg.setdefault("data_dir", tmp_path / "data")
        cfg.setdefault("devices", ("cpu",))
        cfg.setdefault("grace_s", 0.5)
        server, port = build_server(ServerConfig(port=0, **cfg), pipeline or AnyMoLePipeline())
        await server.start()
        servers.append(server)
        return server, port

    yield factory
    for s in servers:
        await s.stop(0.0)


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., Awaitable[AnyMoLeClient]]]:
    """``await connect(port, **kw)`` → a handshaken client, closed after the test."""
    clients: list[AnyMoLeClient] = []

    async def factory(port: int, **kw: Any) -> AnyMoLeClient:
        client = await AnyMoLeClient.connect(f"127.0.0.1:{port}", **kw)
        clients.append(client)
        return client

    yield factory
    for c in clients:
        await c.close()
