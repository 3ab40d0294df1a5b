"""The bad-input table (every rejected request names its field) and a hypothesis fuzz of the server."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable, Iterator

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from service_fakes import FakePipeline, make_request, tiny_character

from anymole.pipeline import MotionChunk
from anymole.service.server import ServerConfig, build_server
from anymole.wire import convert
from anymole.wire.convert import Limits
from anymole.wire.proto.anymole.v1 import anymole_pb2 as pb
from anymole.wire.proto.anymole.v1 import anymole_pb2_grpc as pb_grpc

J = 5


def _field_of(err: grpc.aio.AioRpcError | grpc.RpcError) -> str:
    raw = dict(err.trailing_metadata())["grpc-status-details-bin"]
    bad = error_details_pb2.BadRequest()
    assert status_pb2.Status.FromString(raw).details[0].Unpack(bad)
    return bad.field_violations[0].field


def _set(req: pb.InbetweenRequest, path: str, index: int, value: float) -> None:
    obj = req
    for part in path.split("."):
        obj = getattr(obj, part) if not part.isdigit() else obj[int(part)]
    obj[index] = value


def _scale_quat(req: pb.InbetweenRequest, path: str, quat: int, factor: float) -> None:
    obj = req
    for part in path.split("."):
        obj = getattr(obj, part) if not part.isdigit() else obj[int(part)]
    for i in range(4 * quat, 4 * quat + 4):
        obj[i] *= factor


Mutation = Callable[[pb.InbetweenRequest], None]

BAD_REQUESTS: list[tuple[str, Mutation, grpc.StatusCode, str]] = [
    ("nan", lambda r: _set(r, "context.rotations", 5, math.nan), grpc.StatusCode.INVALID_ARGUMENT, "context.rotations"),
    ("inf", lambda r: _set(r, "keyframes.1.root_translation", 2, math.inf), grpc.StatusCode.INVALID_ARGUMENT,
     "keyframes[1].root_translation"),
    ("non-unit", lambda r: _scale_quat(r, "keyframes.0.rotations", 3, 0.5), grpc.StatusCode.INVALID_ARGUMENT,
     "keyframes[0].rotations"),
    ("zero-quat", lambda r: _scale_quat(r, "context.rotations", 0, 0.0), grpc.StatusCode.INVALID_ARGUMENT,
     "context.rotations"),
    ("context-joints", lambda r: r.context.rotations.__delitem__(slice(-4 * r.context.frame_count, None)),
     grpc.StatusCode.INVALID_ARGUMENT, "context.rotations"),
    ("key-joints", lambda r: r.keyframes[0].rotations.extend([0, 0, 0, 1]), grpc.StatusCode.INVALID_ARGUMENT,
     "keyframes[0].rotations"),
    ("frame-count", lambda r: setattr(r.context, "frame_count", r.context.frame_count + 1),
     grpc.StatusCode.INVALID_ARGUMENT, "context.rotations"),
    ("root-count", lambda r: r.context.root_translations.append(0.0), grpc.StatusCode.INVALID_ARGUMENT,
     "context.root_translations"),
    ("key-in-context", lambda r: setattr(r.keyframes[0], "frame", 2), grpc.StatusCode.INVALID_ARGUMENT,
     "keyframes[0].frame"),
    ("key-after-end", lambda r: setattr(r, "total_frames", 10), grpc.StatusCode.INVALID_ARGUMENT,
     "keyframes[1].frame"),
    ("unsorted", lambda r: (setattr(r, "total_frames", 20), setattr(r.keyframes[1], "frame", 7)),
     grpc.StatusCode.INVALID_ARGUMENT,
     "keyframes[1].frame"),
    ("duplicate-key", lambda r: setattr(r.keyframes[1], "frame", 8), grpc.StatusCode.INVALID_ARGUMENT,
     "keyframes[1].frame"),
    # total_frames 0 ends the timeline at the last key: unsorted keys must still read "sort keyframes" (issue 15.10)
    ("unsorted-open-end", lambda r: (setattr(r.keyframes[0], "frame", 12), setattr(r.keyframes[1], "frame", 8)),
     grpc.StatusCode.INVALID_ARGUMENT, "keyframes[1].frame"),
    ("fps-zero", lambda r: setattr(r.context, "fps", 0.0), grpc.StatusCode.INVALID_ARGUMENT, "context.fps"),
    ("fps-negative", lambda r: setattr(r.context, "fps", -30.0), grpc.StatusCode.INVALID_ARGUMENT, "context.fps"),
    ("fps-nan", lambda r: setattr(r.context, "fps", math.nan), grpc.StatusCode.INVALID_ARGUMENT, "context.fps"),
    ("fps-huge", lambda r: setattr(r.context, "fps", 1e30), grpc.StatusCode.INVALID_ARGUMENT, "context.fps"),
    ("empty-context", lambda r: r.context.CopyFrom(pb.Clip(fps=30)), grpc.StatusCode.INVALID_ARGUMENT,
     "context.frame_count"),
    ("no-context", lambda r: r.ClearField("context"), grpc.StatusCode.INVALID_ARGUMENT, "context"),
    ("no-keys", lambda r: r.ClearField("keyframes"), grpc.StatusCode.INVALID_ARGUMENT, "keyframes"),
    ("no-character", lambda r: setattr(r, "character_id", ""), grpc.StatusCode.INVALID_ARGUMENT, "character_id"),
    ("unknown-character", lambda r: setattr(r, "character_id", "sha256:" + "0" * 64), grpc.StatusCode.NOT_FOUND, ""),
    ("malformed-character", lambda r: setattr(r, "character_id", "../etc/passwd"), grpc.StatusCode.NOT_FOUND, ""),
    ("unknown-method", lambda r: setattr(r, "method", "magic"), grpc.StatusCode.INVALID_ARGUMENT, "method"),
    ("unknown-preset", lambda r: setattr(r, "preset", "ultra"), grpc.StatusCode.INVALID_ARGUMENT, "preset"),
    ("unavailable-method", lambda r: setattr(r, "method", "anymole"), grpc.StatusCode.FAILED_PRECONDITION, ""),
    ("key-translations-without-context", lambda r: r.keyframes[0].translations.extend([0.0] * 3 * J),
     grpc.StatusCode.INVALID_ARGUMENT, "keyframes[0].translations"),
    ("context-translations-count", lambda r: r.context.translations.extend([0.0] * 5), grpc.StatusCode.INVALID_ARGUMENT,
     "context.translations"),
    ("key-translations-partial", lambda r: (r.context.translations.extend([0.0] * 3 * J * r.context.frame_count),
                                            r.keyframes[0].translations.extend([0.0] * 3 * J)),
     grpc.StatusCode.INVALID_ARGUMENT, "keyframes[1].translations"),
    ("key-translations-nan", lambda r: (r.context.translations.extend([0.0] * 3 * J * r.context.frame_count),
                                        r.keyframes[0].translations.extend([math.nan] * 3 * J),
                                        r.keyframes[1].translations.extend([0.0] * 3 * J)),
     grpc.StatusCode.INVALID_ARGUMENT, "keyframes[0].translations"),
    ("too-many-frames", lambda r: setattr(r, "total_frames", 10**6), grpc.StatusCode.INVALID_ARGUMENT,
     "total_frames"),
    ("too-many-keys", lambda r: r.keyframes.extend([r.keyframes[1]] * 2000), grpc.StatusCode.INVALID_ARGUMENT,
     "keyframes"),
]  # fmt: skip


@pytest.mark.parametrize(("mutate", "code", "field"), [c[1:] for c in BAD_REQUESTS], ids=[c[0] for c in BAD_REQUESTS])
async def test_bad_request_table(make_server, connect, mutate, code, field):
    _, port = await make_server()
    client = await connect(port)
    up = await client.upload_character(tiny_character(J))
    req = make_request(up.character_id, J, context_frames=4, keys=(8, 12))
    mutate(req)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.submit(req)
    assert err.value.code() is code, err.value.details()
    if field:
        assert _field_of(err.value) == field
        assert err.value.details().startswith(field)
    assert await client.list_jobs() == []  # nothing was queued


async def test_a_client_that_did_not_upload_the_character_gets_the_server_s_answer(make_server, connect):
    _, port = await make_server()
    up = await (await connect(port)).upload_character(tiny_character(J))
    other = await connect(port)  # knows only the character id, as after a reconnect
    req = make_request(up.character_id, J, keys=(8, 12))
    del req.keyframes[:]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        [st async for st in other.inbetween(req)]
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT and _field_of(err.value) == "keyframes"
    events = [st async for st in other.inbetween(make_request(up.character_id, J, keys=(8, 12)))]
    chunks = [st.event for st in events if isinstance(st.event, MotionChunk)]
    assert [tuple(c.rotations.shape) for c in chunks] == [(9, J, 4)]


async def test_nearly_unit_quaternions_are_normalised(make_server, connect):
    _, port = await make_server()
    client = await connect(port)
    up = await client.upload_character(tiny_character(J))
    req = make_request(up.character_id, J, keys=(8, 12))
    _scale_quat(req, "context.rotations", 2, 1.02)  # within the ±0.05 tolerance
    events = [st async for st in client.inbetween(req)]
    motion, _ = await client.result(events[0].job_id, J)
    norms = motion.rotations.norm(dim=-1)
    assert float((norms - 1).abs().max()) < 1e-6


def _asset(**edits) -> bytes:
    asset = convert.character_to_asset(tiny_character(J))
    for path, value in edits.items():
        obj = asset
        *parents, last = path.split(".")
        for p in parents:
            obj = getattr(obj, p)
        container = getattr(obj, last)
        del container[:]
        container.extend(value)
    return asset.SerializeToString()


BAD_CHARACTERS = [
    ("order", _asset(**{"skeleton.parent_indices": [-1, 2, 0, 1, 3]}), "skeleton.parent_indices[1]", "comes after"),
    ("cycle", _asset(**{"skeleton.parent_indices": [-1, 2, 1, 2, 3]}), "skeleton.parent_indices[1]", "cycle"),
    ("self-parent", _asset(**{"skeleton.parent_indices": [-1, 1, 1, 2, 3]}), "skeleton.parent_indices[1]", "cycle"),
    ("parent-range", _asset(**{"skeleton.parent_indices": [-1, 0, 1, 9, 3]}), "skeleton.parent_indices[3]",
     "out of range"),
    ("parent-count", _asset(**{"skeleton.parent_indices": [-1, 0, 1]}), "skeleton.parent_indices", "entries"),
    ("names-dup", _asset(**{"skeleton.joint_names": ["a", "b", "a", "c", "d"]}), "skeleton.joint_names", "unique"),
    ("no-joints", _asset(**{"skeleton.joint_names": [], "skeleton.parent_indices": []}), "skeleton.joint_names",
     "no joints"),
    ("rest-nan", _asset(**{"skeleton.rest_translations": [math.nan] * 15}), "skeleton.rest_translations", "NaN"),
    ("rest-quat", _asset(**{"skeleton.rest_rotations": [0, 0, 0, 2] * 5}), "skeleton.rest_rotations", "norm"),
    ("tri-range", _asset(**{"mesh.triangle_indices": [0, 1, 7]}), "mesh.triangle_indices", "out of range"),
    ("joint-range", _asset(**{"mesh.joint_indices": [0, 9] * 4}), "mesh.joint_indices", "out of range"),
    ("weights", _asset(**{"mesh.joint_weights": [1.0, -0.5] * 4}), "mesh.joint_weights", "non-negative"),
    ("ibm-count", _asset(**{"mesh.inverse_bind_matrices": [1.0] * 16}), "mesh.inverse_bind_matrices", "expected"),
]  # fmt: skip


@pytest.mark.parametrize(("payload", "field", "words"), [c[1:] for c in BAD_CHARACTERS], ids=[c[0] for c in BAD_CHARACTERS])
async def test_bad_character_table(make_server, connect, payload, field, words):
    _, port = await make_server()
    client = await connect(port)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.upload(payload, pb.CHARACTER_FORMAT_PROTO)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert _field_of(err.value) == field
    assert words in err.value.details()


async def test_too_many_joints(make_server, connect):
    _, port = await make_server(limits=Limits(max_joints=4))
    client = await connect(port)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.upload_character(tiny_character(5))
    assert _field_of(err.value) == "skeleton.joint_names" and "limit of 4" in err.value.details()


# ---------------------------------------------------------------------------------------------- fuzzing
class _ThreadServer:
    """A server on its own event loop in a thread, so hypothesis can drive it with a blocking channel."""

    def __init__(self, data_dir) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._start(data_dir), self.loop)
        self.server, self.port = fut.result(30)

    async def _start(self, data_dir):
        cfg = ServerConfig(port=0, data_dir=data_dir, devices=("cpu",), max_queue=10_000, grace_s=0.0)
        server, port = build_server(cfg, FakePipeline(steps=1))
        await server.start()
        return server, port

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(0.0), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory) -> Iterator[tuple[grpc.Channel, str]]:
    srv = _ThreadServer(tmp_path_factory.mktemp("fuzz"))
    channel = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
    stub = pb_grpc.AnyMoLeServiceStub(channel)
    payload = convert.character_to_asset(tiny_character(J)).SerializeToString()
    header = pb.UploadHeader(format=pb.CHARACTER_FORMAT_PROTO, total_bytes=len(payload))
    up = stub.UploadCharacter(iter([pb.UploadCharacterRequest(header=header), pb.UploadCharacterRequest(chunk=payload)]))
    yield channel, up.character_id
    channel.close()
    srv.close()


# What the server may answer. INTERNAL only for bytes grpc itself cannot deserialise (its own wording).
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
METHODS = {
    "GetServerInfo": "unary_unary",
    "UploadCharacter": "stream_unary",
    "SubmitJob": "unary_unary",
    "WatchJob": "unary_stream",
    "CancelJob": "unary_unary",
    "ListJobs": "unary_unary",
    "GetResult": "unary_unary",
    "DownloadResult": "unary_stream",
}


def _call_raw(channel: grpc.Channel, method: str, payloads: list[bytes]) -> grpc.StatusCode:
    path = f"/anymole.v1.AnyMoLeService/{method}"
    kind = METHODS[method]
    try:
        if kind == "unary_unary":
            channel.unary_unary(path)(payloads[0], timeout=10)
        elif kind == "stream_unary":
            channel.stream_unary(path)(iter(payloads), timeout=10)
        else:
            for _ in channel.unary_stream(path)(payloads[0], timeout=10):
                pass
    except grpc.RpcError as err:
        code = err.code()
        if code is grpc.StatusCode.INTERNAL and "deserializ" in (err.details() or "").lower():
            return grpc.StatusCode.INVALID_ARGUMENT  # grpc's own answer to unparseable bytes
        return code
    return grpc.StatusCode.OK


FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(method=st.sampled_from(sorted(METHODS)), payloads=st.lists(st.binary(max_size=200), min_size=1, max_size=4))
def test_fuzz_random_bytes_always_get_a_status(fuzz_target, method, payloads):
    channel, _ = fuzz_target
    assert _call_raw(channel, method, payloads) in ALLOWED
    assert _call_raw(channel, "ListJobs", [b""]) is grpc.StatusCode.OK  # still serving


_floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from([0.0, 1.0, -1.0, 1e30, math.nan, math.inf]),
)
_REPEATED = ["context.rotations", "context.root_translations", "keyframes.0.rotations", "keyframes.1.root_translation"]


@FUZZ
@given(data=st.data())
def test_fuzz_mutated_requests_always_get_a_status(fuzz_target, data):
    channel, cid = fuzz_target
    req = make_request(cid, J, context_frames=data.draw(st.integers(1, 5)), keys=(8, 12))
    for _ in range(data.draw(st.integers(1, 4))):
        what = data.draw(st.sampled_from(["float", "frame", "count", "total", "fps", "string", "truncate"]))
        if what == "float":
            path = data.draw(st.sampled_from(_REPEATED))
            field = req
            for part in path.split("."):
                field = getattr(field, part) if not part.isdigit() else field[int(part)]
            if len(field):
                field[data.draw(st.integers(0, len(field) - 1))] = data.draw(_floats)
        elif what == "frame":
            req.keyframes[data.draw(st.integers(0, 1))].frame = data.draw(st.integers(0, 2**32 - 1))
        elif what == "count":
            req.context.frame_count = data.draw(st.integers(0, 2**32 - 1))
        elif what == "total":
            req.total_frames = data.draw(st.integers(0, 2**32 - 1))
        elif what == "fps":
            req.context.fps = data.draw(_floats)
        elif what == "string":
            setattr(req, data.draw(st.sampled_from(["character_id", "method", "preset", "label"])), data.draw(st.text(max_size=20)))
        elif what == "truncate":
            del req.context.rotations[data.draw(st.integers(0, len(req.context.rotations))) :]
    drop = data.draw(st.sampled_from(["", "context", "keyframes", "character_id"]))
    if drop:
        req.ClearField(drop)
    raw = pb.SubmitJobRequest(request=req).SerializeToString()
    if data.draw(st.booleans()):  # sometimes also damage the encoding itself
        cut = data.draw(st.integers(0, len(raw)))
        raw = raw[:cut] + data.draw(st.binary(max_size=8)) + raw[cut:]
    assert _call_raw(channel, "SubmitJob", [raw]) in ALLOWED
    assert _call_raw(channel, "GetServerInfo", [b""]) is grpc.StatusCode.OK


@FUZZ
@given(data=st.data())
def test_fuzz_mutated_characters_always_get_a_status(fuzz_target, data):
    channel, _ = fuzz_target
    asset = convert.character_to_asset(tiny_character(J))
    for _ in range(data.draw(st.integers(1, 3))):
        what = data.draw(st.sampled_from(["parent", "name", "float", "index", "k", "drop"]))
        if what == "parent":
            asset.skeleton.parent_indices[data.draw(st.integers(0, J - 1))] = data.draw(st.integers(-3, J + 2))
        elif what == "name":
            asset.skeleton.joint_names[data.draw(st.integers(0, J - 1))] = data.draw(st.text(max_size=3))
        elif what == "float":
            field = data.draw(
                st.sampled_from([
                    asset.skeleton.rest_rotations, asset.skeleton.rest_translations, asset.mesh.positions,
                    asset.mesh.joint_weights, asset.mesh.inverse_bind_matrices,
                ])
            )  # fmt: skip
            field[data.draw(st.integers(0, len(field) - 1))] = data.draw(_floats)
        elif what == "index":
            target = data.draw(st.sampled_from([asset.mesh.triangle_indices, asset.mesh.joint_indices]))
            target[data.draw(st.integers(0, len(target) - 1))] = data.draw(st.integers(0, 2**32 - 1))
        elif what == "k":
            asset.mesh.influences_per_vertex = data.draw(st.integers(0, 5))
        else:
            del asset.skeleton.rest_rotations[data.draw(st.integers(0, len(asset.skeleton.rest_rotations))) :]
    payload = asset.SerializeToString()
    header = pb.UploadHeader(format=pb.CHARACTER_FORMAT_PROTO, total_bytes=len(payload))
    msgs = [pb.UploadCharacterRequest(header=header).SerializeToString(), pb.UploadCharacterRequest(chunk=payload).SerializeToString()]
    assert _call_raw(channel, "UploadCharacter", msgs) in ALLOWED
