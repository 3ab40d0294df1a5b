"""How long-quiet calls stay alive: the server's HTTP/2 keepalive policy and the job heartbeat.

An editor waits on a job for minutes while it sits in the queue or in a warm-up that reports nothing. Two
things must hold for its stream to survive proxies, NATs and its own gRPC stack:

* Clients may ping. gRPC servers answer a client that pings more often than
  ``grpc.http2.min_ping_interval_without_data_ms`` (default 5 minutes) with GOAWAY "too_many_pings" after
  two strikes, cutting every call on the connection. We accept pings every `MIN_CLIENT_PING_INTERVAL_S` (5 s)
  even without calls, so clients configured to ping every 10 s (a common editor-side setting) are never cut
  off; the server itself pings idle connections every `SERVER_PING_INTERVAL_S` to find dead ones.
* Streams carry data. A job that has published nothing for `HEARTBEAT_S` (10 s) gets a heartbeat event in
  its log (`heartbeat_event`): its queue position again while queued, its last progress again while running.
  Watchers see at least one event every 10 s, which keeps intermediaries from closing the stream as idle
  and tells the user the job is alive.

`KeepalivePolicy` holds the numbers; the server's defaults are the ones above, and tests shrink them to run a
quiet job in seconds through the same mechanism.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from anymole.pipeline import Event, Progress, Queued

__all__ = [
    "HEARTBEAT_S",
    "MIN_CLIENT_PING_INTERVAL_S",
    "SERVER_PING_INTERVAL_S",
    "KeepalivePolicy",
    "heartbeat_event",
]

HEARTBEAT_S = 10.0
MIN_CLIENT_PING_INTERVAL_S = 5.0
SERVER_PING_INTERVAL_S = 60.0


@dataclass(frozen=True)
class KeepalivePolicy:
    """The keepalive numbers of a server (seconds).

    Attributes:
        heartbeat_s: longest silence of a queued or running job's event stream.
        min_client_ping_interval_s: the most often a client may ping, with or without calls in flight.
        server_ping_interval_s: how often the server pings a connection to check it is alive.
        server_ping_timeout_s: how long the server waits for that ping's answer before closing.
    """

    heartbeat_s: float = HEARTBEAT_S
    min_client_ping_interval_s: float = MIN_CLIENT_PING_INTERVAL_S
    server_ping_interval_s: float = SERVER_PING_INTERVAL_S
    server_ping_timeout_s: float = 20.0

    def server_options(self) -> list[tuple[str, Any]]:
        """The grpc server channel arguments of this policy."""
        return [
            ("grpc.keepalive_time_ms", int(self.server_ping_interval_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(self.server_ping_timeout_s * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", int(self.min_client_ping_interval_s * 1000)),
            ("grpc.http2.max_pings_without_data", 0),  # the server's own pings: not capped by data
        ]


def heartbeat_event(position: int | None, last_progress: Progress | None, quiet_s: float) -> Event:
    """The event a job that has been quiet for ``quiet_s`` seconds publishes: ``Queued(position)`` again while it
    waits (``position`` not None), else its last progress again, saying how long the stage has been quiet."""
    if position is not None:
        return Queued(position)
    note = f"working; no progress report for {quiet_s:.0f} s"
    if last_progress is None:
        return Progress("start", 0.0, 0.0, None, note)
    return Progress(last_progress.stage, last_progress.stage_fraction, last_progress.fraction, None, note)
