"""Relay between the Unity package's C# core and a real AnyMoLe server, for tests where no C# gRPC runtime exists.

The C# `RelayTransport` starts this process and speaks length-prefixed frames on its stdin/stdout; the relay
makes the same calls on a gRPC channel (grpcio), with the serialised messages passed through untouched in both
directions. So the requests the C# core builds reach the live server byte for byte, and the core parses the
server's own response bytes. The channel receives at most ``--receive-limit`` bytes per message (4 MiB by
default, grpc-dotnet's and gRPC C++'s default), so a client that forgets to ask for results in parts fails
here as it would in the editor.

    python scripts/unity_relay.py --target 127.0.0.1:50051     relay to a running server
    python scripts/unity_relay.py --serve                      start a server in this process on a free port
                                                               (CPU, tiny video prior) and relay to it

Frame: u32 big-endian length of the rest, u8 kind, u32 call id, payload.
  C# → relay:  START (kind, method path, metadata) · MESSAGE (a request) · HALF_CLOSE · CANCEL
  relay → C#:  HELLO (call 0: the target, once) · MESSAGE (a response) · END (status code, message, details)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import queue
import struct
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import grpc

START, MESSAGE, HALF_CLOSE, CANCEL = 0x01, 0x02, 0x03, 0x04
R_MESSAGE, R_END, R_HELLO = 0x10, 0x11, 0x20
UNARY, SERVER_STREAM, CLIENT_STREAM = 0, 1, 2
MIB = 1 << 20
_DONE = object()  # ends a client stream's request queue


def _identity(b: bytes) -> bytes:
    return b


class Relay:
    """Reads frames from ``inp``, runs each call on ``channel`` in its own thread, writes frames to ``out``."""

    def __init__(self, channel: grpc.Channel, inp: BinaryIO, out: BinaryIO) -> None:
        self.channel, self.inp, self.out = channel, inp, out
        self.lock = threading.Lock()
        self.calls: dict[int, _Call] = {}

    def send(self, kind: int, call_id: int, payload: bytes = b"") -> None:
        with self.lock:
            self.out.write(struct.pack(">IBI", len(payload) + 5, kind, call_id) + payload)
            self.out.flush()

    def end(self, call_id: int, code: int, message: str, details: bytes) -> None:
        msg = message.encode()
        self.send(R_END, call_id, struct.pack(">iI", code, len(msg)) + msg + struct.pack(">I", len(details)) + details)
        self.calls.pop(call_id, None)

    def run(self) -> None:
        """Until stdin closes: the C# side exited or disposed its transport."""
        while True:
            head = self.inp.read(9)
            if len(head) < 9:
                return
            length, kind, call_id = struct.unpack(">IBI", head)
            payload = self.inp.read(length - 5)
            if kind == START:
                call = _Call(self, call_id, payload)
                self.calls[call_id] = call
            elif (call := self.calls.get(call_id)) is not None:
                call.feed(kind, payload)


class _Call:
    """One call: its requests arrive through `feed`; a thread makes the gRPC call and relays the answers."""

    def __init__(self, relay: Relay, call_id: int, start: bytes) -> None:
        self.relay, self.id = relay, call_id
        self.kind = start[0]
        (n,) = struct.unpack(">H", start[1:3])
        self.method = start[3 : 3 + n].decode()
        pos = 3 + n
        (count,) = struct.unpack(">H", start[pos : pos + 2])
        pos += 2
        md: list[tuple[str, str]] = []
        for _ in range(count):
            (kn,) = struct.unpack(">H", start[pos : pos + 2])
            key = start[pos + 2 : pos + 2 + kn].decode()
            pos += 2 + kn
            (vn,) = struct.unpack(">H", start[pos : pos + 2])
            md.append((key, start[pos + 2 : pos + 2 + vn].decode()))
            pos += 2 + vn
        self.metadata = tuple(md)
        self.requests: queue.Queue[object] = queue.Queue()
        self.future: grpc.Future | None = None
        self.cancelled = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def feed(self, kind: int, payload: bytes) -> None:
        if kind == MESSAGE:
            self.requests.put(payload)
        elif kind == HALF_CLOSE:
            self.requests.put(_DONE)
        elif kind == CANCEL:
            self.cancelled.set()
            self.requests.put(_DONE)
            if self.future is not None:
                self.future.cancel()

    def _stream(self) -> Iterator[bytes]:
        while (item := self.requests.get()) is not _DONE:
            assert isinstance(item, bytes)
            yield item

    def _run(self) -> None:
        ch, relay = self.relay.channel, self.relay
        try:
            if self.kind == CLIENT_STREAM:
                fut = ch.stream_unary(self.method, _identity, _identity).future(self._stream(), metadata=self.metadata)
                self.future = fut
                if self.cancelled.is_set():
                    fut.cancel()
                relay.send(R_MESSAGE, self.id, fut.result())
            else:
                request = self.requests.get()
                if not isinstance(request, bytes):  # cancelled before it started
                    relay.end(self.id, grpc.StatusCode.CANCELLED.value[0], "cancelled by the client", b"")
                    return
                if self.kind == UNARY:
                    fut = ch.unary_unary(self.method, _identity, _identity).future(request, metadata=self.metadata)
                    self.future = fut
                    relay.send(R_MESSAGE, self.id, fut.result())
                else:
                    stream = ch.unary_stream(self.method, _identity, _identity)(request, metadata=self.metadata)
                    self.future = stream
                    if self.cancelled.is_set():
                        stream.cancel()
                    for msg in stream:
                        relay.send(R_MESSAGE, self.id, msg)
            relay.end(self.id, 0, "", b"")
        except grpc.RpcError as exc:
            relay.end(self.id, *_status_of(exc))
        except grpc.FutureCancelledError:
            relay.end(self.id, grpc.StatusCode.CANCELLED.value[0], "cancelled by the client", b"")


def _status_of(exc: grpc.RpcError) -> tuple[int, str, bytes]:
    """Code, message and the `grpc-status-details-bin` trailer (a google.rpc.Status) of a failed call."""
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    trailers = dict(exc.trailing_metadata() or ()) if isinstance(exc, grpc.Call) else {}
    raw = trailers.get("grpc-status-details-bin", b"")
    return code.value[0], details or "", raw if isinstance(raw, bytes) else raw.encode()


def _serve_in_thread(tiny_video_steps: int) -> tuple[str, Callable[[], None]]:
    """A real server on 127.0.0.1 port 0 in a background event loop: ``(target, stop)``.

    CPU worker, every method the server has; ``video`` with the tiny random-weight prior and
    ``tiny_video_steps`` ICAdapt steps, so that a test can cancel a job that is still running."""
    from anymole.pipeline import AnyMoLePipeline, VideoSettings
    from anymole.service.server import ServerConfig, build_server

    tmp = tempfile.TemporaryDirectory(prefix="anymole-relay-")
    video = VideoSettings(prior="tiny", icadapt_steps=tiny_video_steps, ddim_steps=2, width=96, height=64)
    loop = asyncio.new_event_loop()
    ready: queue.Queue[str] = queue.Queue()
    stopped = threading.Event()

    async def main() -> None:
        cfg = ServerConfig(port=0, data_dir=Path(tmp.name) / "data", devices=("cpu",), grace_s=0.5, video=video)
        server, port = build_server(cfg, AnyMoLePipeline(video))
        await server.start()
        ready.put(f"127.0.0.1:{port}")
        while not stopped.is_set():
            await asyncio.sleep(0.1)
        await server.stop(0.0)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()

    def stop() -> None:
        stopped.set()
        thread.join(10.0)
        tmp.cleanup()

    return ready.get(timeout=120), stop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--target", help="HOST:PORT of a running AnyMoLe server")
    where.add_argument("--serve", action="store_true", help="start a server in this process and relay to it")
    parser.add_argument("--receive-limit", type=int, default=4 * MIB, help="largest message received, bytes")
    parser.add_argument("--video-steps", type=int, default=200, help="--serve: ICAdapt steps of the tiny video prior")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    stop: Callable[[], None] = lambda: None  # noqa: E731
    target = args.target
    if args.serve:
        target, stop = _serve_in_thread(args.video_steps)
    options = [("grpc.max_receive_message_length", args.receive_limit), ("grpc.max_send_message_length", -1)]
    try:
        with grpc.insecure_channel(target, options) as channel:
            relay = Relay(channel, sys.stdin.buffer, sys.stdout.buffer)
            relay.send(R_HELLO, 0, target.encode())
            relay.run()
    finally:
        stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
