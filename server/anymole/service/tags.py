"""Checks of what a client attaches to a job to find it again: `client_tags` and the `idempotency_key`.

Both are stored in the job's directory and compared byte for byte, so the bounds keep job.json small and a
`ListJobs` filter cheap.
"""

from __future__ import annotations

from collections.abc import Mapping

from anymole.errors import InvalidInput

__all__ = ["MAX_KEY_BYTES", "MAX_TAGS", "MAX_TAG_KEY_BYTES", "MAX_TAG_VALUE_BYTES", "check_key", "check_tags"]

MAX_TAGS = 32
MAX_TAG_KEY_BYTES = 128
MAX_TAG_VALUE_BYTES = 1024
MAX_KEY_BYTES = 128


def check_tags(tags: Mapping[str, str], field: str) -> dict[str, str]:
    """``tags`` as a plain dict; `InvalidInput` naming ``field`` (or the offending entry) beyond the bounds."""
    if len(tags) > MAX_TAGS:
        raise InvalidInput(field, f"has {len(tags)} entries; at most {MAX_TAGS}")
    for k, v in tags.items():
        if not k or len(k.encode()) > MAX_TAG_KEY_BYTES:
            raise InvalidInput(
                f"{field}[{k[:40]!r}]", f"tag keys are 1 to {MAX_TAG_KEY_BYTES} bytes of UTF-8"
            )
        if len(v.encode()) > MAX_TAG_VALUE_BYTES:
            raise InvalidInput(
                f"{field}[{k!r}]", f"the value is {len(v.encode())} bytes; at most {MAX_TAG_VALUE_BYTES}"
            )
    return dict(tags)


def check_key(key: str) -> str:
    """An idempotency key as given; `InvalidInput` naming ``idempotency_key`` when it is too long."""
    if len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidInput("idempotency_key", f"is {len(key.encode())} bytes; at most {MAX_KEY_BYTES}")
    return key
