"""One table from `anymole.errors` (and the service's own errors) to gRPC status codes.

``InvalidInput`` becomes INVALID_ARGUMENT with a ``google.rpc.BadRequest`` detail whose field violation names
the offending request field, so that a plugin can highlight it. Anything not in the table is a bug: the
servicer logs it with the job id and answers INTERNAL, and the server keeps running. A job that fails after
it was accepted ends with `failed_event`, which answers INTERNAL for an `InvalidInput` about anything but the
request (see there).
"""

from __future__ import annotations

import re

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from anymole.errors import (
    AnymoleError,
    AssetError,
    InvalidInput,
    JobCancelled,
    ModelUnavailable,
    NotFound,
    OverBudget,
    ResourceExhausted,
)
from anymole.pipeline import Failed
from anymole.wire.proto.anymole.v1 import anymole_pb2 as pb
from anymole.wire.version import VersionMismatch

__all__ = [
    "STATUS_TABLE",
    "KeyReused",
    "NotReady",
    "OverBudget",
    "ResultFormatMismatch",
    "ShuttingDown",
    "WorkerLost",
    "code_of",
    "failed_event",
    "names_request_field",
    "to_status",
]


class ShuttingDown(AnymoleError):
    """The server is stopping and takes no new jobs (UNAVAILABLE: retry against a running server)."""


class WorkerLost(AnymoleError):
    """A job lost the Ray workers it ran on (`anymole serve --ray`) more often than it is retried (UNAVAILABLE:
    the cluster is losing workers; resubmit once it is healthy)."""


class KeyReused(InvalidInput):
    """An idempotency key sent again with a different request (ALREADY_EXISTS, with the BadRequest detail of
    every `InvalidInput` naming the field)."""


class NotReady(AnymoleError):
    """The job exists but is not in a state that allows the call (FAILED_PRECONDITION)."""


class ResultFormatMismatch(NotReady):
    """A result asked for in a format its job does not produce (a video job for motion, a motion job for
    MP4): FAILED_PRECONDITION with a ``google.rpc.PreconditionFailure`` whose subject is the request field."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


STATUS_TABLE: dict[type[BaseException], grpc.StatusCode] = {
    KeyReused: grpc.StatusCode.ALREADY_EXISTS,  # before InvalidInput, its base
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    AssetError: grpc.StatusCode.INVALID_ARGUMENT,  # on a server, a bad asset always came from a client
    NotFound: grpc.StatusCode.NOT_FOUND,
    ModelUnavailable: grpc.StatusCode.FAILED_PRECONDITION,
    VersionMismatch: grpc.StatusCode.FAILED_PRECONDITION,
    NotReady: grpc.StatusCode.FAILED_PRECONDITION,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    JobCancelled: grpc.StatusCode.CANCELLED,
    ShuttingDown: grpc.StatusCode.UNAVAILABLE,
    WorkerLost: grpc.StatusCode.UNAVAILABLE,
}


def code_of(exc: BaseException) -> grpc.StatusCode:
    """The status code for ``exc``: the first table entry in its method resolution order, else INTERNAL."""
    for cls in type(exc).__mro__:
        if cls in STATUS_TABLE:
            return STATUS_TABLE[cls]
    return grpc.StatusCode.INTERNAL


def _message(exc: BaseException) -> str:
    if code_of(exc) is grpc.StatusCode.INTERNAL:
        return f"internal error ({type(exc).__name__}); the server log has the details"
    return str(exc)


def to_status(exc: BaseException) -> grpc.Status:
    """A `grpc.Status` (code, message, rich details) for ``context.abort_with_status``."""
    code = code_of(exc)
    details = []
    if isinstance(exc, InvalidInput):
        bad = error_details_pb2.BadRequest(
            field_violations=[error_details_pb2.BadRequest.FieldViolation(field=exc.field, description=exc.reason)]
        )
        detail = any_pb2.Any()
        detail.Pack(bad)
        details.append(detail)
    if isinstance(exc, ResultFormatMismatch):
        failure = error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(
                    type="RESULT_FORMAT", subject=exc.field, description=exc.reason
                )
            ]
        )
        detail = any_pb2.Any()
        detail.Pack(failure)
        details.append(detail)
    if isinstance(exc, OverBudget):
        quota = error_details_pb2.QuotaFailure(
            violations=[error_details_pb2.QuotaFailure.Violation(subject=exc.field, description=exc.reason)]
        )
        detail = any_pb2.Any()
        detail.Pack(quota)
        details.append(detail)
    status = status_pb2.Status(code=code.value[0], message=_message(exc), details=details)
    return rpc_status.to_status(status)


# The top-level fields of a job's request: the first name of a field path such as "keyframes[2].rotations".
_REQUEST_FIELDS = frozenset(pb.InbetweenRequest.DESCRIPTOR.fields_by_name)


def names_request_field(field: str) -> bool:
    """Whether ``field`` (an `InvalidInput.field`) is a path into the job request (`InbetweenRequest`)."""
    root = re.match(r"[A-Za-z_]*", field)
    return root is not None and root.group() in _REQUEST_FIELDS


def failed_event(exc: BaseException) -> Failed:
    """The terminal `Failed` event of a job that raised ``exc`` after it was accepted.

    The request passed its checks at submit, so an `InvalidInput` raised while the job runs blames the request
    only when it names a request field (a stage's own check of the request's data, as `video.timeline`'s of
    ``context`` and ``keyframes``): INVALID_ARGUMENT naming that field. Any other (a stage calling a library
    with an argument it built wrongly; a render refusing the character's ``uvs``, which passed its checks at
    upload) is a bug: INTERNAL, whose message keeps the argument and reason (they are ours, not a client's).
    """
    if isinstance(exc, InvalidInput) and not names_request_field(exc.field):
        why = f"a stage rejected an argument the server built ({exc}); the server log has the details"
        return Failed(grpc.StatusCode.INTERNAL.value[0], f"internal error: {why}")
    code = code_of(exc)
    field = exc.field if isinstance(exc, InvalidInput) else ""
    return Failed(code=code.value[0], message=_message(exc), field=field)
