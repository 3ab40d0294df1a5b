"""Exceptions raised by the `anymole` library.

Hierarchy::

    AnymoleError                      base: every error we raise on purpose
    ├── InvalidInput(field, reason)   a request or argument is wrong; names the offending field
    ├── AssetError(path, reason)      an asset file cannot be read or written
    ├── ModelUnavailable(name, hint)  weights or an optional backend are missing
    ├── JobCancelled                  a running job saw its cancel token
    ├── ResourceExhausted             a queue, memory or size limit was hit
    │   └── OverBudget(field, reason)  a request this server's capacity cannot take; names the field
    └── NotFound(what, key)           an id (character, job, result) is unknown

Every message says what to do next. The service layer maps each class to one gRPC status
(`anymole.service.errors`); the CLI maps them to exit code 1 without a traceback.
"""

from __future__ import annotations

__all__ = [
    "AnymoleError",
    "AssetError",
    "InvalidInput",
    "JobCancelled",
    "ModelUnavailable",
    "NotFound",
    "OverBudget",
    "ResourceExhausted",
]


class AnymoleError(Exception):
    """Base class of every error `anymole` raises deliberately."""


class InvalidInput(AnymoleError, ValueError):
    """An argument or request field is invalid.

    Args:
        field: dotted path of the offending field, e.g. ``"keyframes[3].rotations"``.
        reason: what is wrong and, where possible, how to fix it.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class AssetError(AnymoleError):
    """An asset file could not be imported or exported.

    Args:
        path: the file concerned.
        reason: what went wrong and what to try.
    """

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ModelUnavailable(AnymoleError):
    """A model's weights or an optional backend cannot be loaded.

    Args:
        name: the model or backend name.
        hint: what the user can do (a command to run, a flag to pass).
    """

    def __init__(self, name: str, hint: str) -> None:
        self.name = name
        self.hint = hint
        super().__init__(f"model {name!r} is unavailable: {hint}")


class JobCancelled(AnymoleError):
    """Raised inside a stage when its job's cancel token is set."""


class ResourceExhausted(AnymoleError):
    """A bounded resource (queue slots, payload size, memory) is full."""


class OverBudget(ResourceExhausted):
    """A request that this server's capacity (memory budget, queue, uploads in flight) cannot take: the service
    answers RESOURCE_EXHAUSTED with a ``google.rpc.QuotaFailure`` whose subject is the request field to blame."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class NotFound(AnymoleError, KeyError):
    """An identifier does not name anything the server knows.

    Args:
        what: the kind of object (``"character"``, ``"job"``).
        key: the identifier that was looked up.
    """

    def __init__(self, what: str, key: str) -> None:
        self.what = what
        self.key = key
        super().__init__(f"unknown {what} {key!r}")

    def __str__(self) -> str:  # KeyError would quote the whole message
        return f"unknown {self.what} {self.key!r}"
