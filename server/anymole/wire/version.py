"""Protocol version of the `anymole.v1` wire contract and the handshake rule.

History (bump ``minor`` for compatible additions, ``major`` for anything a deployed plugin would misread):
    1.0  first release: GetServerInfo, UploadCharacter, Inbetween, SubmitJob, WatchJob, CancelJob, ListJobs,
         GetResult, DownloadResult; JobEvent with queued/progress/preview/motion/completed/failed/cancelled/
         interrupted.
    1.1  ResultFormat RESULT_FORMAT_MP4: GetResult and DownloadResult serve the generated video of a job of
         method ``video`` (which streams Preview events); a video result has no motion.
         MethodInfo.result_formats: the formats each method's results come in.
    1.2  engine clients (issue 15): InbetweenRequest.client_tags echoed in JobSummary and filtered by ListJobs;
         SubmitJobRequest.idempotency_key (SubmitJobResponse.existing); WatchJobRequest.skip_replayed_previews;
         max_receive_message_bytes on InbetweenRequest, GetResultRequest and DownloadResultRequest, with
         motion chunks and DownloadResult parts fitting 4 MiB by default. Forward compatibility stated in the
         proto (clients skip unknown event kinds and enum values); GetServerInfo answers without a token;
         proto/google/rpc vendors the error-detail protos; UploadCharacter drains the stream after a cache hit.
         MethodInfo.output, min_context_seconds, key_spacing_seconds, max_gap_seconds; rpc GetCharacter.
         Keepalive: client pings every 5 s accepted; a job quiet for 10 s publishes a heartbeat event.
         key_error_deg exactly 0 for keys that come back as sent. MotionChunk.joint_count.
         Character space and scale stated; inverse bind matrices with a non-uniform scale refused naming the joint.
         Materials (issue 18): SkinnedMesh.materials (base colour factor, texture index, name),
         triangle_materials (each triangle's material), textures (more than one image) and per-vertex colors;
         a mesh without materials is read as 1.1's one material (base_color, texture).
         Resource bounds: Limits.max_frame_joints, memory_budget_bytes, max_queued_frame_joints,
         max_upload_bytes_in_flight, max_label_bytes; ListJobs pages (ListJobsRequest.page_size, page_token,
         ListJobsResponse.next_page_token), each page under 4 MiB.

A client sends its version as ``anymole-protocol-version: MAJOR.MINOR`` metadata on every call and in
``GetServerInfoRequest.client_protocol``. Equal majors are compatible; the minor only informs.
"""

from __future__ import annotations

from anymole.errors import AnymoleError

__all__ = ["METADATA_KEY", "PROTOCOL_VERSION", "VersionMismatch", "check_client_version", "parse_version"]

PROTOCOL_VERSION: tuple[int, int] = (1, 2)
METADATA_KEY = "anymole-protocol-version"


class VersionMismatch(AnymoleError):
    """The client speaks another major protocol version (mapped to FAILED_PRECONDITION)."""


def parse_version(text: str) -> tuple[int, int]:
    """``"1.2"`` → ``(1, 2)``; ``"1"`` → ``(1, 0)``. Raises `VersionMismatch` for anything else."""
    parts = text.strip().split(".")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        nums = []
    if not 1 <= len(nums) <= 2 or any(n < 0 for n in nums):
        raise VersionMismatch(
            f"cannot read protocol version {text!r} from {METADATA_KEY!r}; send MAJOR.MINOR, e.g. "
            f"'{PROTOCOL_VERSION[0]}.{PROTOCOL_VERSION[1]}'"
        )
    return nums[0], nums[1] if len(nums) == 2 else 0


def check_client_version(client: tuple[int, int]) -> None:
    """Raise `VersionMismatch` unless ``client`` has the server's major version."""
    major, minor = client
    if major != PROTOCOL_VERSION[0]:
        server = PROTOCOL_VERSION[0]
        raise VersionMismatch(
            f"server {server}.x, plugin {major}.{minor}: update the plugin to a {server}.x release"
            f" (or run an anymole server that speaks {major}.x)"
        )
