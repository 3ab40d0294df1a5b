"""`AnyMoLeClient`: the asyncio Python client of `anymole.v1.AnyMoLeService`.

It is the reference the editor plugins are checked against, and the client the CLI and the tests use:
same stubs, same metadata (``anymole-protocol-version``, ``authorization: Bearer``), same chunked upload.
Events come back as domain `Stamped` events (motion chunks as ``(n, J, 4)`` tensors; `Preview` events of a
``video`` job with their encoded image, which `preview_image` decodes). `AnyMoLeClient.video` fetches the MP4
a ``video`` job produced, `AnyMoLeClient.result` the motion of the others.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from anymole.errors import AnymoleError, InvalidInput
from anymole.pipeline import JobInfo, JobState, Preview, Stamped
from anymole.rig import Character, Keyframes, Motion, Skeleton
from anymole.wire import convert
from anymole.wire.proto.anymole.v1 import anymole_pb2 as pb
from anymole.wire.proto.anymole.v1 import anymole_pb2_grpc as pb_grpc
from anymole.wire.version import METADATA_KEY, PROTOCOL_VERSION

__all__ = ["DEFAULT_CHUNK_BYTES", "AnyMoLeClient", "Uploaded", "VideoResult", "preview_image"]

# The server's defaults, so that both sides raise the message limit alike and chunk the same way.
DEFAULT_CHUNK_BYTES = convert.Limits.upload_chunk_bytes
MAX_MESSAGE_BYTES = convert.Limits.max_message_bytes
_SUFFIX_FORMAT = {
    ".glb": pb.CHARACTER_FORMAT_GLB,
    ".fbx": pb.CHARACTER_FORMAT_FBX,
    ".bvh": pb.CHARACTER_FORMAT_BVH,
}
_RESULT_FORMAT = {
    "": pb.RESULT_FORMAT_UNSPECIFIED,
    **{suffix: fmt for fmt, suffix in convert.MOTION_RESULT_SUFFIX.items()},
}
RECONNECT_BACKOFF_MAX_MS = 4000


def preview_image(preview: Preview) -> np.ndarray:
    """The decoded image of a `Preview` event: ``(height, width, 3)`` uint8 RGB."""
    from PIL import Image

    with Image.open(io.BytesIO(preview.data)) as img:
        rgb = np.asarray(img.convert("RGB"))
    if rgb.shape[:2] != (preview.height, preview.width):
        raise AnymoleError(
            f"preview of frame {preview.frame} decodes to {rgb.shape[1]}×{rgb.shape[0]} px but says "
            f"{preview.width}×{preview.height}; update the client or the server"
        )
    return rgb


@dataclass(frozen=True)
class VideoResult:
    """The result of a ``video`` job: the MP4 bytes and what the server says they hold."""

    job_id: str
    data: bytes
    file_name: str
    fps: float
    frame_count: int


@dataclass(frozen=True)
class Uploaded:
    """Result of an upload: the id to put in requests and the skeleton (joint order) the server uses."""

    character_id: str
    cached: bool
    skeleton: Skeleton
    vertex_count: int
    name: str


class AnyMoLeClient:
    """An open connection to an AnyMoLe server. Use `connect` (an async context manager as well).

    Args:
        channel: an open `grpc.aio.Channel`.
        token: bearer token, when the server demands one.
        client_name: reported in the handshake, for the server log.
    """

    def __init__(self, channel: grpc.aio.Channel, token: str | None = None, client_name: str = "anymole-python") -> None:
        self.channel = channel
        self.stub = pb_grpc.AnyMoLeServiceStub(channel)
        self.client_name = client_name
        md = [(METADATA_KEY, f"{PROTOCOL_VERSION[0]}.{PROTOCOL_VERSION[1]}")]
        if token:
            md.append(("authorization", f"Bearer {token}"))
        self.metadata: tuple[tuple[str, str], ...] = tuple(md)
        self._joints: dict[str, int] = {}
        self.info: pb.GetServerInfoResponse | None = None

    @classmethod
    async def connect(
        cls,
        target: str,
        *,
        token: str | None = None,
        tls_ca: bytes | None = None,
        tls_server_name: str | None = None,
        handshake: bool = True,
        timeout: float = 10.0,
    ) -> AnyMoLeClient:
        """Open a channel to ``HOST:PORT`` and (by default) run the version handshake.

        Args:
            target: ``"host:port"``.
            token: bearer token.
            tls_ca: PEM root certificate(s) to trust; TLS is used when given.
            tls_server_name: expected certificate host name, when it differs from ``target``'s host.
            handshake: call GetServerInfo now (raises `grpc.aio.AioRpcError` FAILED_PRECONDITION on a
                protocol major mismatch, UNAVAILABLE when nothing listens).
            timeout: seconds for the handshake.
        """
        options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            # gRPC's own reconnect backoff grows to 120 s: a client waiting out a server restart would then
            # see it back up to two minutes late, whatever its own retry pauses
            ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MAX_MS),
        ]
        if tls_ca is not None:
            if tls_server_name:
                options.append(("grpc.ssl_target_name_override", tls_server_name))
            channel = grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=tls_ca), options)
        else:
            channel = grpc.aio.insecure_channel(target, options)
        client = cls(channel, token=token)
        if handshake:
            try:
                await client.server_info(timeout=timeout)
            except BaseException:
                await channel.close()
                raise
        return client

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AnyMoLeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def limits(self) -> convert.Limits:
        """The server's advertised limits once the handshake ran, else the defaults; replies are checked
        against them, so that a server configured beyond the defaults is not refused by its own client."""
        if self.info is not None and self.info.capabilities.HasField("limits"):
            return convert.Limits.from_proto(self.info.capabilities.limits)
        return convert.Limits()

    # ------------------------------------------------------------------ calls
    async def server_info(self, timeout: float | None = None) -> pb.GetServerInfoResponse:
        """The handshake: our protocol version goes out, the server's capabilities come back."""
        req = pb.GetServerInfoRequest(
            client_protocol=pb.ProtocolVersion(major=PROTOCOL_VERSION[0], minor=PROTOCOL_VERSION[1]),
            client_name=self.client_name,
        )
        self.info = await self.stub.GetServerInfo(req, metadata=self.metadata, timeout=timeout)
        return self.info

    async def upload(
        self,
        payload: bytes,
        fmt: pb.CharacterFormat.ValueType,
        name: str = "",
        chunk_bytes: int | None = None,
        send_hash: bool = True,
    ) -> Uploaded:
        """Upload raw bytes in chunks (default: the server's advertised size); with ``send_hash`` a payload
        the server already holds is not sent again."""
        digest = hashlib.sha256(payload).hexdigest() if send_hash else ""
        step = chunk_bytes or self.limits.upload_chunk_bytes or DEFAULT_CHUNK_BYTES

        async def parts() -> AsyncIterator[pb.UploadCharacterRequest]:
            header = pb.UploadHeader(format=fmt, total_bytes=len(payload), sha256=digest, name=name)
            yield pb.UploadCharacterRequest(header=header)
            for i in range(0, len(payload), step):
                yield pb.UploadCharacterRequest(chunk=payload[i : i + step])

        resp = await self.stub.UploadCharacter(parts(), metadata=self.metadata)
        skeleton = convert.skeleton_from_proto(resp.skeleton, self.limits)
        self._joints[resp.character_id] = skeleton.num_joints
        return Uploaded(resp.character_id, resp.cached, skeleton, resp.vertex_count, resp.name)

    async def get_character(self, character_id: str) -> Uploaded | None:
        """The character the server holds under ``character_id`` (as an upload would answer, ``cached``), or
        ``None`` when it has none: upload it then."""
        resp = await self.stub.GetCharacter(pb.GetCharacterRequest(character_id=character_id), metadata=self.metadata)
        if not resp.found:
            return None
        skeleton = convert.skeleton_from_proto(resp.skeleton, self.limits)
        self._joints[character_id] = skeleton.num_joints
        return Uploaded(character_id, True, skeleton, resp.vertex_count, resp.name)

    async def upload_character(self, character: Character, chunk_bytes: int | None = None) -> Uploaded:
        """Upload a domain character as a `CharacterAsset` (what the editor plugins send)."""
        payload = convert.character_to_asset(character).SerializeToString(deterministic=True)
        return await self.upload(payload, pb.CHARACTER_FORMAT_PROTO, character.name, chunk_bytes)

    async def upload_file(self, path: str | Path, data: bytes | None = None, name: str = "") -> Uploaded:
        """Upload an asset file (.glb, .fbx, .bvh) for the server to import."""
        path = Path(path)
        fmt = _SUFFIX_FORMAT.get(path.suffix.lower())
        if fmt is None:
            raise InvalidInput("path", f"cannot upload {path.suffix!r} files; use .glb, .fbx or .bvh")
        return await self.upload(path.read_bytes() if data is None else data, fmt, name or path.stem)

    def request(
        self,
        uploaded: Uploaded | str,
        context: Motion,
        keys: Keyframes,
        **options: Any,
    ) -> pb.InbetweenRequest:
        """An `InbetweenRequest` (see `convert.inbetween_request` for the options)."""
        cid = uploaded.character_id if isinstance(uploaded, Uploaded) else uploaded
        return convert.inbetween_request(cid, context, keys, **options)

    async def submit(self, request: pb.InbetweenRequest, idempotency_key: str = "") -> tuple[str, int]:
        """Queue a job; returns ``(job_id, queue position)``. A retry with the same ``idempotency_key`` (after a
        lost reply, say) returns the job the first call queued instead of a second one."""
        msg = pb.SubmitJobRequest(request=request, idempotency_key=idempotency_key)
        resp = await self.stub.SubmitJob(msg, metadata=self.metadata)
        return resp.job_id, resp.position

    async def inbetween(self, request: pb.InbetweenRequest) -> AsyncIterator[Stamped]:
        """Submit and stream the job's events until its terminal one. Motion chunks take ``J`` from the
        skeleton this client uploaded, else from their own size (the server has checked the request)."""
        j = self._joints.get(request.character_id, 0)
        async for msg in self.stub.Inbetween(request, metadata=self.metadata):
            if (st := convert.event_from_proto(msg, j)) is not None:  # unknown kinds (a newer server) are skipped
                yield st

    async def watch(
        self, job_id: str, num_joints: int = 0, after_seq: int = 0, skip_replayed_previews: bool = False
    ) -> AsyncIterator[Stamped]:
        """Events of a job after ``after_seq`` (replayed, then live) until its terminal one; with
        ``skip_replayed_previews`` without the `Preview` events stored before the call.

        ``num_joints`` shapes motion chunks ``(n, J, 4)``; 0 infers it from each chunk."""
        req = pb.WatchJobRequest(job_id=job_id, after_seq=after_seq, skip_replayed_previews=skip_replayed_previews)
        call = self.stub.WatchJob(req, metadata=self.metadata)
        async for msg in call:
            if (st := convert.event_from_proto(msg, num_joints)) is not None:  # unknown kinds are skipped
                yield st

    async def cancel(self, job_id: str, timeout: float | None = None) -> JobState:
        resp = await self.stub.CancelJob(pb.CancelJobRequest(job_id=job_id), metadata=self.metadata, timeout=timeout)
        return convert.state_from_proto(resp.state, unknown=JobState.UNKNOWN)

    async def list_jobs(
        self, states: Sequence[JobState] = (), limit: int = 0, client_tags: dict[str, str] | None = None
    ) -> list[JobInfo]:
        """Jobs newest first (at most ``limit``; 0: all); only those in ``states`` and whose tags hold every
        ``client_tags`` entry. Fetched page by page."""
        req = pb.ListJobsRequest(
            states=[convert.state_to_proto(s) for s in states], limit=limit, client_tags=client_tags or {}
        )
        jobs: list[JobInfo] = []
        while True:
            resp = await self.stub.ListJobs(req, metadata=self.metadata)
            jobs += [convert.job_info_from_proto(j) for j in resp.jobs]
            if not resp.next_page_token:
                return jobs
            req.page_token = resp.next_page_token

    async def result(self, job_id: str, num_joints: int, file_suffix: str = "") -> tuple[Motion, bytes]:
        """The result timeline of a completed job and, for ``file_suffix`` ".glb"/".bvh"/".npz", that file.

        Streamed in parts (DownloadResult), so that results beyond the message limit arrive too."""
        fmt = _RESULT_FORMAT.get(file_suffix.lower())
        if fmt is None:
            hint = "; a video job's MP4 comes from video(job_id)" if file_suffix.lower() == ".mp4" else ""
            raise InvalidInput("file_suffix", f"no motion result format {file_suffix!r}; use .glb, .bvh or .npz{hint}")
        header, clip, data = await self._download(job_id, fmt, "result")
        if clip.frame_count != header.total_frames:
            raise AnymoleError(f"the result of job {job_id} arrived incomplete; call result() again")
        return convert.clip_to_motion(clip, num_joints, self.limits, "motion"), data

    async def video(self, job_id: str) -> VideoResult:
        """The MP4 a completed ``video`` job generated, streamed in parts (DownloadResult). A job that produced
        motion fails with FAILED_PRECONDITION naming ``format`` (use `result`)."""
        header, clip, data = await self._download(job_id, pb.RESULT_FORMAT_MP4, "video")
        if clip.frame_count:
            raise AnymoleError(f"the video of job {job_id} came with motion parts; update the client or the server")
        if not data:
            raise AnymoleError(f"the video of job {job_id} arrived empty; call video() again")
        return VideoResult(job_id, data, header.file_name, header.fps, header.total_frames)

    async def result_file(self, job_id: str, file_suffix: str) -> bytes:
        """The result file of a completed job in the format ``file_suffix`` names (.glb, .bvh, .npz; .mp4 for a
        ``video`` job), whatever its skeleton: for a client that did not upload the character."""
        fmt = {suffix: fmt for fmt, suffix in convert.RESULT_SUFFIX.items()}.get(file_suffix.lower())
        if fmt is None:
            suffixes = ", ".join(sorted(convert.RESULT_SUFFIX.values()))
            raise InvalidInput("file_suffix", f"no result format {file_suffix!r}; use one of {suffixes}")
        return (await self._download(job_id, fmt, "result_file"))[2]

    async def _download(
        self, job_id: str, fmt: pb.ResultFormat.ValueType, call: str
    ) -> tuple[pb.ResultHeader, pb.Clip, bytes]:
        """DownloadResult's parts put together: the header, the motion chunks as one clip (each following on
        from the last) and the file, checked against the header's length; ``call`` names the caller to retry."""
        request = pb.DownloadResultRequest(job_id=job_id, format=fmt)
        header: pb.ResultHeader | None = None
        clip, data = pb.Clip(), bytearray()
        async for part in self.stub.DownloadResult(request, metadata=self.metadata):
            kind = part.WhichOneof("part")
            if kind == "header":
                header = part.header
                clip.fps = header.fps
            elif kind == "motion":
                if part.motion.frame_start != clip.frame_count:
                    raise AnymoleError(
                        f"the result of job {job_id} skipped from frame {clip.frame_count} to "
                        f"{part.motion.frame_start}; update the client or the server"
                    )
                clip.frame_count += part.motion.frame_count
                clip.rotations.extend(part.motion.rotations)
                clip.root_translations.extend(part.motion.root_translations)
                clip.translations.extend(part.motion.translations)
            elif kind == "file_chunk":
                data += part.file_chunk
        if header is None or len(data) != header.file_bytes:
            raise AnymoleError(f"the result of job {job_id} arrived incomplete; call {call}() again")
        return header, clip, bytes(data)
