"""The recorded streams the plugins' tests replay (tests/data/streams, issue 15.8) are what the server and the
Python client exchange today: recorded again, byte for byte the committed copies; and they parse."""

from __future__ import annotations

import importlib.util
import json
import logging
import struct
import sys
from pathlib import Path

from google.protobuf.message_factory import GetMessageClass

from anymole.wire.proto.anymole.v1 import anymole_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "tests" / "data" / "streams"


def _recorder():
    spec = importlib.util.spec_from_file_location("record_streams", ROOT / "scripts" / "record_streams.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _messages(data: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        flag, size = data[i], struct.unpack(">I", data[i + 1 : i + 5])[0]
        assert flag == 0
        out.append(data[i + 5 : i + 5 + size])
        i += 5 + size
    assert i == len(data)
    return out


def test_committed_recordings_match_a_fresh_recording(tmp_path):
    level = logging.getLogger("anymole").level
    written = _recorder().write(tmp_path / "streams")
    assert logging.getLogger("anymole").level == level  # recording quiets its logs, then gives them back
    fresh = sorted(p.relative_to(tmp_path / "streams") for p in written)
    committed = sorted(
        p.relative_to(COMMITTED) for p in COMMITTED.rglob("*") if p.is_file() and p.name != "README.md"
    )
    assert fresh == committed, (
        "recorded files differ: run `.venv/bin/python scripts/record_streams.py` and commit"
    )
    stale = [str(r) for r in fresh if (tmp_path / "streams" / r).read_bytes() != (COMMITTED / r).read_bytes()]
    assert not stale, f"stale recordings {stale}: run `.venv/bin/python scripts/record_streams.py` and commit"


def test_recordings_parse_and_cover_the_scenarios():
    index = json.loads((COMMITTED / "index.json").read_text())
    names = [s["name"] for s in index["scenarios"]]
    assert names == [
        "handshake",
        "upload_new",
        "upload_cached",
        "interp_fill",
        "invalid_request",
        "cancel",
        "failure_mid_stream",
        "rewatch_after_reconnect",
        "result_over_4mib",
    ]
    by_name = {s["name"]: s for s in index["scenarios"]}
    for scenario in index["scenarios"]:
        for call in scenario["calls"]:
            for key, type_key in (("requests", "request_type"), ("responses", "response_type")):
                cls = GetMessageClass(pb.DESCRIPTOR.pool.FindMessageTypeByName(call[type_key]))
                msgs = [cls.FromString(m) for m in _messages((COMMITTED / call[key]).read_bytes())]
                assert len(msgs) == call[key[:-1] + "_count"]
    invalid = by_name["invalid_request"]["calls"][0]["status"]
    assert invalid["code"] == "INVALID_ARGUMENT" and "sort keyframes" in invalid["message"]
    big = by_name["result_over_4mib"]["calls"][1]
    parts = _messages((COMMITTED / big["responses"]).read_bytes())
    assert sum(map(len, parts)) > 4 << 20 and max(map(len, parts)) < 4 << 20
    events = [
        pb.JobEvent.FromString(m)
        for m in _messages((COMMITTED / by_name["cancel"]["calls"][2]["responses"]).read_bytes())
    ]
    assert [e.WhichOneof("kind") for e in events] == ["queued", "cancelled"]
    rewatch = by_name["rewatch_after_reconnect"]["calls"]
    assert rewatch[0]["status"]["code"] == "CANCELLED" and rewatch[0]["response_count"] == 3
    replay = [
        pb.JobEvent.FromString(m) for m in _messages((COMMITTED / rewatch[1]["responses"]).read_bytes())
    ]
    assert replay[0].seq == 4 and replay[-1].WhichOneof("kind") == "completed"
