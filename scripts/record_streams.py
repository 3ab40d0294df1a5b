"""Record the wire exchanges the engine plugins' tests replay (issue 15.8).

    .venv/bin/python scripts/record_streams.py                  # rewrite tests/data/streams/
    .venv/bin/python scripts/record_streams.py --out DIR        # write the same tree under DIR (the staleness test)

Starts real servers in this process (loopback, port 0, CPU), drives them with the Python client
(`anymole.client.AnyMoLeClient`) through a fixed list of scenarios and writes every call's messages exactly as
they crossed the wire: ``<scenario>/<NN>-<Method>.req`` holds the request messages and ``.res`` the response
messages, each as gRPC's length-prefixed message (1 byte compressed flag, always 0; 4 bytes big-endian length;
the serialised message). ``index.json`` lists each call with its method, message types, metadata, message counts
and final status (code, message, and ``grpc-status-details-bin`` base64 when the error carries details).

Repeatable by construction: job ids come from a counter and Unix times from a clock that ticks one second per
reading (both injected into the job manager); inputs come from seeded generators; characters are content
addressed. What depends on wall time is normalised in the recorded responses and listed in the index's
``normalised``: `Progress.eta_seconds` (0 where set), `Completed.timings` seconds (0) and the duration in
`Completed.summary` ("in 0.000 s"). `tests/service/test_recorded_streams.py` records again and fails when the
committed copies differ.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import itertools
import json
import logging
import re
import shutil
import struct
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import torch
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from anymole.client import AnyMoLeClient
from anymole.pipeline import (
    AnyMoLePipeline,
    CancelToken,
    Event,
    JobSpec,
    MethodSpec,
    ProgressReporter,
)
from anymole.rig import Character, Keyframes, Motion, Skeleton
from anymole.rig.quat import quat_normalize
from anymole.service.server import AnyMoLeServer, ServerConfig, build_server
from anymole.wire import convert
from anymole.wire.proto.anymole.v1 import anymole_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "tests" / "data" / "streams"
SERVICE = pb.DESCRIPTOR.services_by_name["AnyMoLeService"]
EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z: the injected clock's first reading
NORMALISED = [
    "JobEvent.progress.eta_seconds: 0 where set (it depends on wall time)",
    "JobEvent.completed.timings[].seconds: 0",
    "JobEvent.completed.summary: the duration reads 'in 0.000 s'",
]


# ---------------------------------------------------------------------------------------------- recording
@dataclasses.dataclass
class Call:
    """One recorded call: its method, the metadata sent, the messages both ways and its call object."""

    method: Any  # a MethodDescriptor
    metadata: list[tuple[str, str]]
    requests: list[bytes] = dataclasses.field(default_factory=list)
    responses: list[bytes] = dataclasses.field(default_factory=list)
    call: Any = None
    status: dict[str, Any] = dataclasses.field(default_factory=dict)


def _normalise(msg: Message) -> bytes:
    """``msg`` serialised with its wall-time fields fixed (`NORMALISED`)."""
    if isinstance(msg, pb.JobEvent):
        kind = msg.WhichOneof("kind")
        if kind == "progress" and msg.progress.HasField("eta_seconds"):
            msg.progress.eta_seconds = 0.0
        elif kind == "completed":
            for t in msg.completed.timings:
                t.seconds = 0.0
            msg.completed.summary = re.sub(r"in \d+(\.\d+)? s\b", "in 0.000 s", msg.completed.summary)
    return msg.SerializeToString(deterministic=True)


class Recorder:
    """A stub of `AnyMoLeService` whose serialisers keep every message's bytes, call by call. Calls are
    recorded in the order they start; the scenarios run them one after another."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.calls: list[Call] = []
        for method in SERVICE.methods:
            setattr(self, method.name, self._method(channel, method))

    def _method(self, channel: grpc.aio.Channel, method: Any) -> Callable[..., Any]:
        res_cls = GetMessageClass(method.output_type)
        current: list[Call] = []

        def serialise(msg: Message) -> bytes:
            data: bytes = msg.SerializeToString()
            current[-1].requests.append(data)
            return data

        def deserialise(data: bytes) -> Message:
            msg = res_cls.FromString(data)
            current[-1].responses.append(_normalise(res_cls.FromString(data)))
            return msg

        kind = {
            (False, False): channel.unary_unary,
            (False, True): channel.unary_stream,
            (True, False): channel.stream_unary,
            (True, True): channel.stream_stream,
        }[(method.client_streaming, method.server_streaming)]
        multi = kind(
            f"/{SERVICE.full_name}/{method.name}",
            request_serializer=serialise,
            response_deserializer=deserialise,
        )

        def start(request: Any, **kw: Any) -> Any:
            call = Call(method, [(k, v) for k, v in kw.get("metadata") or ()])
            current.append(call)
            self.calls.append(call)
            call.call = multi(request, **kw)
            return call.call

        return start


async def _status(call: Call) -> dict[str, Any]:
    code = await call.call.code()
    out: dict[str, Any] = {
        "code": code.name,
        "code_number": code.value[0],
        "message": await call.call.details() or "",
    }
    for key, value in await call.call.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            out["status_details_bin"] = base64.b64encode(value).decode()
    return out


def _framed(messages: Sequence[bytes]) -> bytes:
    return b"".join(b"\x00" + struct.pack(">I", len(m)) + m for m in messages)


# ---------------------------------------------------------------------------------------------- inputs
def _character(num_joints: int, name: str) -> Character:
    """A chain of ``num_joints`` joints 0.1 m apart along +Y with seeded rest rotations."""
    g = torch.Generator().manual_seed(7)
    offsets = torch.zeros(num_joints, 3)
    offsets[1:, 1] = 0.1
    return Character(
        name=name,
        skeleton=Skeleton(
            names=tuple(f"Hips/j{i}" if i else "Hips" for i in range(num_joints)),
            parents=(-1, *range(num_joints - 1)),
            offsets=offsets,
            rest_rotations=quat_normalize(torch.randn(num_joints, 4, generator=g)),
        ),
    )


def _motion(frames: int, joints: int, seed: int, translations: bool = False) -> Motion:
    g = torch.Generator().manual_seed(seed)
    return Motion(
        fps=30.0,
        rotations=quat_normalize(torch.randn(frames, joints, 4, generator=g)),
        root_translation=torch.randn(frames, 3, generator=g),
        translations=torch.randn(frames, joints, 3, generator=g) if translations else None,
    )


def _request(
    client: AnyMoLeClient, cid: str, joints: int, keys: Sequence[int], seed: int, **kw: Any
) -> pb.InbetweenRequest:
    translations = kw.pop("translations", False)
    ctx = _motion(4, joints, seed, translations)
    key = _motion(len(keys), joints, seed + 1, translations)
    return client.request(cid, ctx, Keyframes(tuple(keys), key), **kw)


# ---------------------------------------------------------------------------------------------- the scripted server
class ScriptedPipeline:
    """The real pipeline plus two scripted methods for the cancel and failure scenarios: ``hold`` runs until
    `release` is set; ``fail`` reports progress, then raises (the server answers with a Failed event)."""

    def __init__(self) -> None:
        self.inner = AnyMoLePipeline()
        self.release = asyncio.Event()
        self.holding = asyncio.Event()

    def methods(self) -> Sequence[MethodSpec]:
        return (
            *self.inner.methods(),
            MethodSpec("hold", "runs until released (recorder only)", ("default",)),
            MethodSpec("fail", "fails half way (recorder only)", ("default",)),
        )

    def validate(self, spec: JobSpec) -> None:
        if spec.method not in ("hold", "fail"):
            self.inner.validate(spec)

    async def run(
        self, spec: JobSpec, token: CancelToken, report: ProgressReporter, device: str
    ) -> AsyncIterator[Event]:
        if spec.method == "hold":
            self.holding.set()
            await self.release.wait()
            spec = dataclasses.replace(spec, method="interp", preset="")
        elif spec.method == "fail":
            report.set_plan([("fail", 1.0)])
            report("fail", 0.0)
            raise RuntimeError("scripted failure half way through the job")
        async for event in self.inner.run(spec, token, report, device):
            yield event


async def _start(data_dir: Path, pipeline: Any, prefix: str) -> tuple[AnyMoLeServer, int]:
    ticks = itertools.count()
    ids = itertools.count(1)
    # A fixed memory budget: the default, half the memory available at start, would vary between runs.
    cfg = ServerConfig(port=0, data_dir=data_dir, devices=("cpu",), grace_s=0.5, memory_budget=4 << 30)
    server, port = build_server(
        cfg, pipeline, clock=lambda: EPOCH + next(ticks), new_job_id=lambda: f"job-{prefix}{next(ids):04d}"
    )
    await server.start()
    return server, port


# ---------------------------------------------------------------------------------------------- scenarios
SCENARIOS: list[tuple[str, str]] = [
    (
        "handshake",
        "GetServerInfo: the client's version in metadata and request; capabilities, limits, methods.",
    ),
    (
        "upload_new",
        "UploadCharacter of a CharacterAsset in 64-byte chunks with its SHA-256: stored, not cached.",
    ),
    (
        "upload_cached",
        "UploadCharacter of a payload the server holds: the header with its SHA-256 only; cached.",
    ),
    (
        "interp_fill",
        "Inbetween with method interp (context 4 frames, keys 12 and 20), then DownloadResult as BVH.",
    ),
    (
        "invalid_request",
        "SubmitJob with unsorted keyframes: INVALID_ARGUMENT with a BadRequest naming the field.",
    ),
    (
        "cancel",
        "SubmitJob behind a running job, CancelJob while it is queued, WatchJob to its Cancelled event.",
    ),
    (
        "failure_mid_stream",
        "Inbetween of a job that fails after its first progress event: a Failed event ends it.",
    ),
    (
        "rewatch_after_reconnect",
        "Inbetween dropped by the client after 3 events, then WatchJob on a new channel with after_seq = 3.",
    ),
    (
        "result_over_4mib",
        "SubmitJob of a 2400-frame, 65-joint job with translations (4.4 MB), then DownloadResult stating a 4 MiB "
        "receive limit: the motion arrives in parts that each fit it.",
    ),
]


async def _record(data_dir: Path) -> dict[str, list[Call]]:
    out: dict[str, list[Call]] = {}
    server, port = await _start(data_dir / "a", AnyMoLePipeline(), "a")
    scripted = ScriptedPipeline()
    server_b, port_b = await _start(data_dir / "b", scripted, "b")
    clients: list[AnyMoLeClient] = []

    async def connect(p: int) -> tuple[AnyMoLeClient, Recorder]:
        client = await AnyMoLeClient.connect(f"127.0.0.1:{p}")  # the handshake stays out of the recording
        rec = Recorder(client.channel)
        client.stub = rec  # type: ignore[assignment]
        clients.append(client)
        return client, rec

    try:
        client, rec = await connect(port)
        character = _character(5, "chain")
        payload = convert.character_to_asset(character).SerializeToString(deterministic=True)

        rec.calls = []
        await client.server_info()
        out["handshake"] = rec.calls

        rec.calls = []
        up = await client.upload(payload, pb.CHARACTER_FORMAT_PROTO, "chain", chunk_bytes=64)
        out["upload_new"] = rec.calls

        rec.calls = []
        header = pb.UploadHeader(
            format=pb.CHARACTER_FORMAT_PROTO,
            total_bytes=len(payload),
            sha256=up.character_id.split(":")[1],
            name="chain",
        )
        await rec.UploadCharacter(iter([pb.UploadCharacterRequest(header=header)]), metadata=client.metadata)
        out["upload_cached"] = rec.calls

        rec.calls = []
        events = [
            st
            async for st in client.inbetween(
                _request(client, up.character_id, 5, (12, 20), seed=1, label="fill")
            )
        ]
        await client.result(events[0].job_id, 5, ".bvh")
        out["interp_fill"] = rec.calls

        rec.calls = []
        bad = _request(client, up.character_id, 5, (12, 20), seed=2)
        bad.keyframes[0].frame, bad.keyframes[1].frame = 20, 12
        try:
            await client.submit(bad)
        except grpc.aio.AioRpcError:
            pass
        else:
            raise RuntimeError("unsorted keyframes were accepted")
        out["invalid_request"] = rec.calls

        rec.calls = []
        stream = client.inbetween(_request(client, up.character_id, 5, (12, 20), seed=3, label="dropped"))
        first = [await anext(stream) for _ in range(3)]
        await stream.aclose()
        rec.calls[-1].call.cancel()  # the editor reloads: the stream is gone (CANCELLED), the job goes on
        client2, rec2 = await connect(port)
        rec2.calls = rec.calls
        [st async for st in client2.watch(first[0].job_id, 5, after_seq=first[-1].seq)]
        out["rewatch_after_reconnect"] = rec.calls

        rec.calls = []
        big = _character(65, "big")
        up_big = await client.upload_character(big)
        rec.calls = []
        big_req = _request(client, up_big.character_id, 65, (2399,), seed=4, translations=True, label="big")
        job_id, _ = await client.submit(big_req)
        [st async for st in client.watch(job_id, 65)]  # waits for the end; not part of the scenario
        rec.calls = rec.calls[:1]
        request = pb.DownloadResultRequest(job_id=job_id, max_receive_message_bytes=4 << 20)
        [part async for part in rec.DownloadResult(request, metadata=client.metadata)]
        out["result_over_4mib"] = rec.calls

        client_b, rec_b = await connect(port_b)
        up_b = await client_b.upload(payload, pb.CHARACTER_FORMAT_PROTO, "chain")
        holding, _ = await client_b.submit(
            _request(client_b, up_b.character_id, 5, (12,), seed=5, method="hold")
        )
        await scripted.holding.wait()
        rec_b.calls = []
        queued, _ = await client_b.submit(
            _request(client_b, up_b.character_id, 5, (12, 20), seed=6, label="cancelled")
        )
        await client_b.cancel(queued)
        [st async for st in client_b.watch(queued, 5)]
        out["cancel"] = rec_b.calls
        rec_b.calls = []
        scripted.release.set()
        [st async for st in client_b.watch(holding, 5)]

        rec_b.calls = []
        [
            st
            async for st in client_b.inbetween(
                _request(client_b, up_b.character_id, 5, (12,), seed=7, method="fail")
            )
        ]
        out["failure_mid_stream"] = rec_b.calls
        for calls in out.values():
            for call in calls:
                call.status = await _status(call)
    finally:
        for c in clients:
            await c.close()
        await server.stop(0)
        await server_b.stop(0)
    return out


def write(out: Path) -> list[Path]:
    """Record every scenario and write the files and ``index.json`` under ``out``; return the files written."""
    quiet = logging.getLogger("anymole")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # the scripted failure's traceback is expected
    try:
        with tempfile.TemporaryDirectory(prefix="anymole-record-") as tmp:
            recorded = asyncio.run(_record(Path(tmp)))
    finally:  # a caller's process (the staleness test runs in pytest's) keeps its logging
        quiet.setLevel(level)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():  # README.md is written by hand
        if old.is_dir():
            shutil.rmtree(old)
        elif old.name != "README.md":
            old.unlink()
    written: list[Path] = []
    from anymole.wire.version import PROTOCOL_VERSION

    index: dict[str, Any] = {
        "protocol": f"{PROTOCOL_VERSION[0]}.{PROTOCOL_VERSION[1]}",
        "generator": "scripts/record_streams.py",
        "framing": "each .req/.res file is a sequence of gRPC length-prefixed messages: "
        "1 byte compressed flag (0), 4 bytes big-endian length, the serialised message",
        "normalised": NORMALISED,
        "scenarios": [],
    }
    for name, description in SCENARIOS:
        calls = []
        (out / name).mkdir()
        for n, call in enumerate(recorded[name], 1):
            stem = f"{name}/{n:02d}-{call.method.name}"
            for suffix, messages in ((".req", call.requests), (".res", call.responses)):
                path = out / f"{stem}{suffix}"
                path.write_bytes(_framed(messages))
                written.append(path)
            calls.append(
                {
                    "method": f"/{SERVICE.full_name}/{call.method.name}",
                    "request_type": call.method.input_type.full_name,
                    "response_type": call.method.output_type.full_name,
                    "client_streaming": call.method.client_streaming,
                    "server_streaming": call.method.server_streaming,
                    "metadata": dict(call.metadata),
                    "requests": f"{stem}.req",
                    "request_count": len(call.requests),
                    "responses": f"{stem}.res",
                    "response_count": len(call.responses),
                    "status": call.status,
                }
            )
        index["scenarios"].append({"name": name, "description": description, "calls": calls})
    path = out / "index.json"
    path.write_text(json.dumps(index, indent=1) + "\n")
    written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory to (re)write")
    args = parser.parse_args(argv)
    for p in write(args.out):
        print(p.relative_to(args.out))


if __name__ == "__main__":
    main()
