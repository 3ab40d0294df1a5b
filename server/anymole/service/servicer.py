"""`AnyMoLeServicer`: converts requests, calls the `JobManager` and the `CharacterStore`, converts events back.

It holds no tensors and does no work of its own. Every handler maps `anymole.errors` exceptions to their
status (`anymole.service.errors`); anything else is logged and answered with INTERNAL, and the server keeps
running. Token and protocol-version metadata are checked before any handler runs (`anymole.service.auth`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass

from anymole.errors import InvalidInput, ResourceExhausted
from anymole.pipeline import Pipeline
from anymole.rig import Motion
from anymole.service.budget import UploadGate
from anymole.service.characters import CharacterStore
from anymole.service.errors import OverBudget, ResultFormatMismatch, code_of, to_status
from anymole.service.jobs import JobInfo, JobManager, Submission
from anymole.service.tags import check_key, check_tags
from anymole.wire import convert
from anymole.wire.proto.anymole.v1 import anymole_pb2 as pb
from anymole.wire.proto.anymole.v1 import anymole_pb2_grpc as pb_grpc
from anymole.wire.version import (
    PROTOCOL_VERSION,
    check_client_version,
)

__all__ = ["LIST_PAGE_BYTES", "LIST_PAGE_SIZE", "AnyMoLeServicer", "Undecodable", "add_servicer"]

log = logging.getLogger("anymole.service")

LIST_PAGE_SIZE = 100
"""Jobs in a ListJobs page when the request does not say."""

LIST_PAGE_BYTES = 3 << 20
"""Most bytes of a ListJobs page: under the 4 MiB default receive limit of gRPC C++, grpc-dotnet and Python."""

_FORMATS = {
    pb.CHARACTER_FORMAT_PROTO: "proto",
    pb.CHARACTER_FORMAT_GLB: "glb",
    pb.CHARACTER_FORMAT_FBX: "fbx",
    pb.CHARACTER_FORMAT_BVH: "bvh",
}

_R = TypeVar("_R")


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException, what: str) -> None:
    if code_of(exc) is grpc.StatusCode.INTERNAL:
        log.exception("%s failed", what)
    await context.abort_with_status(to_status(exc))


def _unary(fn: Callable[..., Awaitable[_R]]) -> Callable[..., Awaitable[_R]]:
    """Map exceptions of a unary-response handler to statuses."""

    @functools.wraps(fn)
    async def wrapper(self: AnyMoLeServicer, request: Any, context: grpc.aio.ServicerContext) -> _R:
        try:
            _reject_undecodable(request)
            return await fn(self, request, context)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            await _abort(context, exc, fn.__name__)
            raise  # unreachable: abort raises

    return wrapper


def _streaming(fn: Callable[..., AsyncIterator[_R]]) -> Callable[..., AsyncIterator[_R]]:
    """Map exceptions of a server-streaming handler to statuses."""

    @functools.wraps(fn)
    async def wrapper(self: AnyMoLeServicer, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[_R]:
        try:
            _reject_undecodable(request)
            async for item in fn(self, request, context):
                yield item
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise  # a dropped client only detaches this watcher; the job goes on
        except Exception as exc:
            await _abort(context, exc, fn.__name__)

    return wrapper


class AnyMoLeServicer(pb_grpc.AnyMoLeServiceServicer):
    """The `anymole.v1.AnyMoLeService` implementation.

    Args:
        jobs: the job manager (started by the server).
        characters: the character store.
        pipeline: the pipeline the jobs run (for the method list).
        limits: request limits.
        devices: ``(name, description)`` of each worker's device.
        auth_required: whether the gate demands a token (advertised in the capabilities).
        uploads: bounds the upload bytes held at once (default: `limits.max_upload_bytes_in_flight`, 0 =
            unbounded).
    """

    def __init__(
        self,
        jobs: JobManager,
        characters: CharacterStore,
        pipeline: Pipeline,
        limits: convert.Limits,
        devices: list[tuple[str, str]],
        auth_required: bool,
        uploads: UploadGate | None = None,
    ) -> None:
        self.jobs = jobs
        self.characters = characters
        self.pipeline = pipeline
        self.limits = limits
        self.devices = devices
        self.auth_required = auth_required
        self.uploads = uploads or UploadGate(limits.max_upload_bytes_in_flight or 1 << 62)

    # ------------------------------------------------------------------ handshake
    @_unary
    async def GetServerInfo(self, request: pb.GetServerInfoRequest, context: Any) -> pb.GetServerInfoResponse:
        from anymole import __version__

        if request.HasField("client_protocol"):
            check_client_version((request.client_protocol.major, request.client_protocol.minor))
        if request.client_name:
            log.info("client %r connected from %s", request.client_name[:200], context.peer())
        caps = pb.Capabilities(
            methods=[
                pb.MethodInfo(
                    name=m.name,
                    description=m.description,
                    presets=list(m.presets),
                    available=m.available,
                    unavailable_reason=m.unavailable_reason,
                    sends_previews=m.sends_previews,
                    result_formats=list(
                        convert.VIDEO_RESULT_SUFFIX if m.result == "video" else convert.MOTION_RESULT_SUFFIX
                    ),
                    output=pb.METHOD_OUTPUT_VIDEO if m.result == "video" else pb.METHOD_OUTPUT_MOTION,
                    min_context_seconds=m.min_context_seconds,
                    key_spacing_seconds=m.key_spacing_seconds,
                    max_gap_seconds=m.max_gap_seconds,
                )
                for m in self.pipeline.methods()
            ],
            devices=[pb.DeviceInfo(name=n, description=d) for n, d in self.devices],
            limits=self.limits.to_proto(),
            auth_required=self.auth_required,
            result_formats=self._result_formats(),
        )
        return pb.GetServerInfoResponse(
            server_version=__version__,
            protocol=pb.ProtocolVersion(major=PROTOCOL_VERSION[0], minor=PROTOCOL_VERSION[1]),
            capabilities=caps,
        )

    def _result_formats(self) -> list[pb.ResultFormat.ValueType]:
        """Motion formats, and MP4 when an available method produces video."""
        formats = list(convert.MOTION_RESULT_SUFFIX)
        if any(m.available and m.result == "video" for m in self.pipeline.methods()):
            formats += list(convert.VIDEO_RESULT_SUFFIX)
        return formats

    # ------------------------------------------------------------------ characters
    @_unary
    async def UploadCharacter(
        self, request_iterator: AsyncIterator[pb.UploadCharacterRequest], context: Any
    ) -> pb.UploadCharacterResponse:
        it = request_iterator.__aiter__()
        first = await anext(it, None)
        _reject_undecodable(first, "header")
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidInput("header", "the first message of an upload must be an UploadHeader")
        header = first.header
        fmt = _FORMATS.get(header.format)
        if fmt is None:
            raise InvalidInput("header.format", "set a CharacterFormat (PROTO, GLB, FBX or BVH)")
        total = header.total_bytes
        if total == 0:
            raise InvalidInput("header.total_bytes", "announce the payload length (> 0 bytes)")
        if total > self.limits.max_character_bytes:
            raise InvalidInput(
                "header.total_bytes", f"{total} bytes exceeds this server's limit of {self.limits.max_character_bytes}"
            )
        declared = header.sha256.lower()
        if declared and (len(declared) != 64 or any(c not in "0123456789abcdef" for c in declared)):
            raise InvalidInput("header.sha256", "must be 64 lowercase hex digits (or empty)")
        if declared and self.characters.has(f"sha256:{declared}"):
            cid = f"sha256:{declared}"
            self.characters.touch(cid)
            character = await asyncio.to_thread(self.characters.get, cid)
            # Read the chunks still coming and drop them: answering now would leave a client whose writer waits
            # on flow control (grpc-js, grpc-dotnet) stuck with chunks nobody reads. A client that knows the
            # server holds the hash sends the header alone and half-closes; the answer then comes at once.
            async for _ in it:
                pass
            return self._upload_response(cid, character, cached=True)
        try:
            await self.uploads.acquire(total)  # held until the payload is parsed and stored
        except OverBudget:
            async for _ in it:  # read and drop what is coming, so that the client gets the reason, not a reset
                pass
            raise
        try:
            # One buffer of the announced size, filled in place: the reservation is what the payload takes.
            payload, got = bytearray(total), 0
            async for msg in it:
                _reject_undecodable(msg, "chunk")
                if msg.WhichOneof("part") != "chunk":
                    raise InvalidInput("header", "only the first message of an upload may carry a header")
                if got + len(msg.chunk) > total:
                    raise InvalidInput("chunk", f"received more than the {total} bytes announced in header.total_bytes")
                payload[got : got + len(msg.chunk)] = msg.chunk
                got += len(msg.chunk)
            if got != total:
                raise InvalidInput("header.total_bytes", f"announced {total} bytes but the upload carried {got}")
            stored = await asyncio.to_thread(self.characters.put, fmt, payload, header.name)
        finally:
            await self.uploads.release(total)
        if declared and stored.character_id != f"sha256:{declared}":
            raise InvalidInput("header.sha256", "does not match the SHA-256 of the payload; the upload was corrupted")
        return self._upload_response(stored.character_id, stored.character, stored.cached)

    @_unary
    async def GetCharacter(self, request: pb.GetCharacterRequest, context: Any) -> pb.GetCharacterResponse:
        cid = request.character_id
        if not self.characters.is_valid_id(cid):
            raise InvalidInput("character_id", "must be 'sha256:' followed by 64 lowercase hex digits")
        if not self.characters.has(cid):
            return pb.GetCharacterResponse(found=False)
        character = await asyncio.to_thread(self.characters.get, cid)
        up = self._upload_response(cid, character, cached=True)
        return pb.GetCharacterResponse(found=True, skeleton=up.skeleton, vertex_count=up.vertex_count, name=up.name)

    @staticmethod
    def _upload_response(cid: str, character: Any, cached: bool) -> pb.UploadCharacterResponse:
        return pb.UploadCharacterResponse(
            character_id=cid,
            cached=cached,
            skeleton=convert.skeleton_to_proto(character.skeleton),
            vertex_count=0 if character.mesh is None else character.mesh.num_vertices,
            name=character.name,
        )

    # ------------------------------------------------------------------ jobs
    async def _submit(self, request: pb.InbetweenRequest, key: str = "") -> tuple[JobInfo, bool]:
        """Validate and queue ``request``; with an idempotency ``key`` seen before, that key's job instead (the
        bool says so). Errors name the request's fields without the SubmitJobRequest prefix, as in 1.0."""
        submission = Submission(
            client_tags=check_tags(request.client_tags, "client_tags"),
            idempotency_key=check_key(key),
            request_digest=hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest() if key else "",
        )
        if not request.character_id:
            raise InvalidInput("character_id", "upload the character first (UploadCharacter) and pass its id")
        character = await asyncio.to_thread(self.characters.get, request.character_id)
        spec = await asyncio.to_thread(convert.spec_from_proto, request, character, self.limits)
        return self.jobs.submit(spec, submission)

    @_streaming
    async def Inbetween(self, request: pb.InbetweenRequest, context: Any) -> AsyncIterator[pb.JobEvent]:
        info, _ = await self._submit(request)
        async for st in self.jobs.watch(info.job_id, 0):
            yield convert.event_to_proto(st)

    @_unary
    async def SubmitJob(self, request: pb.SubmitJobRequest, context: Any) -> pb.SubmitJobResponse:
        info, existing = await self._submit(request.request, request.idempotency_key)
        return pb.SubmitJobResponse(job_id=info.job_id, position=info.position, existing=existing)

    @_streaming
    async def WatchJob(self, request: pb.WatchJobRequest, context: Any) -> AsyncIterator[pb.JobEvent]:
        async for st in self.jobs.watch(request.job_id, request.after_seq, request.skip_replayed_previews):
            yield convert.event_to_proto(st)

    @_unary
    async def CancelJob(self, request: pb.CancelJobRequest, context: Any) -> pb.CancelJobResponse:
        return pb.CancelJobResponse(state=convert.state_to_proto(self.jobs.cancel(request.job_id)))

    @_unary
    async def ListJobs(self, request: pb.ListJobsRequest, context: Any) -> pb.ListJobsResponse:
        """One page of jobs, newest first: at most ``page_size`` (default `LIST_PAGE_SIZE`) and never more than
        `LIST_PAGE_BYTES`, so that any client's default receive limit takes it. The token holds the position
        of the page's last job and how many of ``limit`` remain."""
        states = [convert.state_from_proto(s, f"states[{i}]") for i, s in enumerate(request.states)]
        before, remaining = _parse_page_token(request.page_token) if request.page_token else (None, request.limit)
        size = request.page_size or LIST_PAGE_SIZE
        if remaining:
            size = min(size, remaining)
        resp = pb.ListJobsResponse()
        nbytes, last = 0, None
        for info in self.jobs.list(states, size + 1, dict(request.client_tags), before):  # one more tells whether a page follows
            if len(resp.jobs) == size:
                break
            row = convert.job_info_to_proto(info)
            nbytes += row.ByteSize() + 8  # the field's tag and length prefix
            if nbytes > LIST_PAGE_BYTES and resp.jobs:
                break
            resp.jobs.append(row)
            last = info
        else:
            last = None  # no job after this page
        if last is not None and remaining != len(resp.jobs):
            left = remaining - len(resp.jobs) if remaining else 0
            resp.next_page_token = f"{last.created!r}/{last.job_id}/{left}"
        return resp

    @_unary
    async def GetResult(self, request: pb.GetResultRequest, context: Any) -> pb.GetResultResponse:
        if await self._is_video(request.job_id, request.format):
            data, name, _ = await asyncio.to_thread(self._video_file, request.job_id)
            return pb.GetResultResponse(file=data, file_name=name)
        budget = convert.receive_budget(
            request.max_receive_message_bytes, self.limits, "max_receive_message_bytes", self.limits.max_message_bytes
        )
        motion = await asyncio.to_thread(self.jobs.result, request.job_id)  # memory-mapped from disk
        data, name = await self._file_of(request.job_id, request.format, motion)
        floats = sum(t.numel() for t in (motion.rotations, motion.root_translation, motion.translations) if t is not None)
        size = 4 * floats + len(data)  # the packed floats alone: known before the message is built
        if size <= budget:
            clip = await asyncio.to_thread(convert.motion_to_clip, motion)
            response = pb.GetResultResponse(motion=clip, file=data, file_name=name)
            size = response.ByteSize()
        if size > budget:
            raise ResourceExhausted(
                f"the result of job {request.job_id} is {size} bytes or more, more than the {budget} a "
                "message may carry here; fetch it with DownloadResult, which streams it in parts"
            )
        return response

    @_streaming
    async def DownloadResult(
        self, request: pb.DownloadResultRequest, context: Any
    ) -> AsyncIterator[pb.DownloadResultResponse]:
        budget = convert.receive_budget(request.max_receive_message_bytes, self.limits, "max_receive_message_bytes")
        step = min(request.chunk_bytes or self.limits.upload_chunk_bytes, budget // 2)
        if await self._is_video(request.job_id, request.format):
            data, name, meta = await asyncio.to_thread(self._video_file, request.job_id)
            header = pb.ResultHeader(
                fps=float(meta["fps"]), total_frames=int(meta["frames"]), file_bytes=len(data), file_name=name
            )
            yield pb.DownloadResultResponse(header=header)
        else:
            motion = await asyncio.to_thread(self.jobs.result, request.job_id)
            data, name = await self._file_of(request.job_id, request.format, motion)
            header = pb.ResultHeader(
                fps=motion.fps, total_frames=motion.num_frames, file_bytes=len(data), file_name=name
            )
            yield pb.DownloadResultResponse(header=header)
            for chunk in convert.motion_to_chunks(motion, budget):
                yield pb.DownloadResultResponse(motion=chunk)
        for i in range(0, len(data), step):
            yield pb.DownloadResultResponse(file_chunk=data[i : i + step])

    async def _is_video(self, job_id: str, fmt: pb.ResultFormat.ValueType) -> bool:
        """Whether the job's result is a video; a format its result does not come in is FAILED_PRECONDITION
        naming ``format``."""
        kind = await asyncio.to_thread(self.jobs.result_kind, job_id)
        if kind == "video" and fmt not in convert.VIDEO_RESULT_SUFFIX:
            raise ResultFormatMismatch(
                "format",
                f"job {job_id} generated a video, not motion (method 'video': no motion until the joint "
                "estimator and mimicking exist); ask for RESULT_FORMAT_MP4",
            )
        if kind != "video" and fmt in convert.VIDEO_RESULT_SUFFIX:
            raise ResultFormatMismatch(
                "format",
                f"job {job_id} produced motion, not a video; ask for RESULT_FORMAT_GLB, BVH, NPZ or none "
                "(MP4 is the result of jobs of method 'video')",
            )
        return kind == "video"

    def _video_file(self, job_id: str) -> tuple[bytes, str, dict[str, Any]]:
        """The MP4 bytes of a video job, its suggested name and its description (worker thread)."""
        path, meta = self.jobs.video(job_id)
        return path.read_bytes(), f"{job_id}.mp4", meta

    async def _file_of(self, job_id: str, fmt: pb.ResultFormat.ValueType, motion: Motion) -> tuple[bytes, str]:
        """The bytes and suggested name of a job's result file in ``fmt``; empty for no format."""
        if fmt == pb.RESULT_FORMAT_UNSPECIFIED:
            return b"", ""
        suffix = convert.MOTION_RESULT_SUFFIX.get(fmt)
        if suffix is None:
            raise InvalidInput("format", f"unknown result format {fmt}; use GLB, BVH or NPZ")
        path = await asyncio.to_thread(self._result_file, job_id, suffix, motion)
        return await asyncio.to_thread(path.read_bytes), f"{job_id}{suffix}"

    def _result_file(self, job_id: str, suffix: str, motion: Motion) -> Path:
        """The job's result file, written on first request (worker thread). Each writer exports to a file of
        its own and renames it into place, so that concurrent requests need no lock and readers never see
        half a file."""
        path = self.jobs.result_path(job_id, suffix)
        if path.exists():
            return path
        from anymole.io import add_clip_to_gltf, bvh_rotation_orders, write_bvh, write_glb

        cid = self.jobs.character_id(job_id)
        character = self.characters.get(cid)
        # a character uploaded as a GLB gets its own file back with the clip added; a BVH its units and orders
        upload = self.characters.uploaded_file(cid)
        tmp = path.with_name(f"result.{uuid.uuid4().hex}.tmp{suffix}")
        clip = dataclasses.replace(motion, name=job_id)
        try:
            if suffix == ".glb" and upload is not None and upload.suffix == ".glb":
                add_clip_to_gltf(tmp, upload, character, clip, job_id, unit_scale=character.unit_scale)
            elif suffix == ".glb":
                write_glb(tmp, character, [clip])
            elif suffix == ".npz":
                self.jobs.store.write_npz(tmp, motion)
            elif upload is not None and upload.suffix == ".bvh":
                orders = bvh_rotation_orders(upload)
                write_bvh(tmp, character.skeleton, clip, order=orders, unit_scale=1.0 / character.unit_scale)
            else:
                write_bvh(tmp, character.skeleton, clip)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)  # an export that failed leaves nothing behind
        return path


def _parse_page_token(token: str) -> tuple[tuple[float, str], int]:
    """``"<created>/<job_id>/<remaining>"`` (written by ListJobs) → ``((created, job_id), remaining)``."""
    try:
        created, job_id, remaining = token.split("/")
        return (float(created), job_id), int(remaining)
    except ValueError:
        raise InvalidInput("page_token", "is not a token this server wrote; pass next_page_token unchanged") from None


# ---------------------------------------------------------------------------------------------- registration
@dataclass(frozen=True)
class Undecodable:
    """Stands in for a request whose bytes are not a valid message, so that the handler can answer
    INVALID_ARGUMENT instead of grpc's bare UNKNOWN."""

    type_name: str
    error: str

    def __bool__(self) -> bool:
        return False


def _reject_undecodable(request: object, field: str = "request") -> None:
    if isinstance(request, Undecodable):
        raise InvalidInput(field, f"the bytes are not a valid {request.type_name} message ({request.error})")


def _tolerant_parser(cls: type[Message]) -> Callable[[bytes], Message | Undecodable]:
    def parse(data: bytes) -> Message | Undecodable:
        try:
            return cls.FromString(data)
        except DecodeError as exc:
            return Undecodable(cls.DESCRIPTOR.full_name, str(exc))

    return parse


def add_servicer(server: grpc.aio.Server, servicer: AnyMoLeServicer) -> None:
    """Register ``servicer`` like the generated ``add_AnyMoLeServiceServicer_to_server``, but with request
    parsers that turn corrupt bytes into `Undecodable` (answered INVALID_ARGUMENT by the handlers)."""
    service = pb.DESCRIPTOR.services_by_name["AnyMoLeService"]
    factories = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    handlers = {}
    for method in service.methods:
        factory = factories[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = factory(
            getattr(servicer, method.name),
            request_deserializer=_tolerant_parser(GetMessageClass(method.input_type)),
            response_serializer=GetMessageClass(method.output_type).SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
