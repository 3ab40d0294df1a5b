"""Loopback benchmark of the gRPC service (a script, not a test).

    .venv/bin/python scripts/bench_service.py                 # measure, print, write docs/benchmarks/service.json
    .venv/bin/python scripts/bench_service.py --update-docs   # also rewrite the "Service" section of docs/benchmarks.md

The server runs in its own process (`anymole serve` code path, CPU worker), the client in this one, over
127.0.0.1, so the two do not share a GIL. Measured:
  * GetServerInfo round trip (unary latency), sequential calls on one channel;
  * time to first event of Inbetween (submit → `queued`), and to the first motion chunk;
  * motion streaming throughput for a synthetic 65-joint character with the ``interp`` method: frames/s from
    the first to the last motion chunk (transport + conversion on both sides), and end to end
    (submit → completed, including the SLERP itself), for two chunk sizes.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JOINTS = 65


def _serve(port_file: Path, data_dir: Path) -> None:
    """Child process: run the server until SIGTERM, writing the bound port to ``port_file``."""
    from anymole.service.server import ServerConfig, serve
    from anymole.wire.convert import Limits

    cfg = ServerConfig(port=0, data_dir=data_dir, devices=("cpu",), grace_s=1.0, limits=Limits(max_frames=200_000))
    asyncio.run(serve(cfg, on_ready=lambda p: port_file.write_text(str(p))))


def _character():
    """A 65-joint tree (a spine with limbs), 0.1 m bones, random rest rotations; no mesh."""
    import torch

    from anymole.rig import Character, Skeleton
    from anymole.rig.quat import quat_normalize

    g = torch.Generator().manual_seed(65)
    parents = [-1] + [max(0, (j - 1) // 2 * 2 - 1) if j % 5 else j - 1 for j in range(1, JOINTS)]
    parents = [-1] + [min(p, j - 1) for j, p in enumerate(parents[1:], start=1)]
    offsets = torch.zeros(JOINTS, 3)
    offsets[1:, 1] = 0.1
    skeleton = Skeleton(
        names=tuple(f"joint_{j:02d}" for j in range(JOINTS)),
        parents=tuple(parents),
        offsets=offsets,
        rest_rotations=quat_normalize(torch.randn(JOINTS, 4, generator=g)),
    )
    return Character(name="bench65", skeleton=skeleton)


def _request(client, up, gap: int, chunk: int, seed: int):
    import torch

    from anymole.rig import Keyframes, Motion
    from anymole.rig.quat import quat_normalize

    g = torch.Generator().manual_seed(seed)
    ctx = Motion(30.0, quat_normalize(torch.randn(10, JOINTS, 4, generator=g)), torch.randn(10, 3, generator=g))
    keys = quat_normalize(torch.randn(1, JOINTS, 4, generator=g))
    poses = Motion(30.0, keys, torch.randn(1, 3, generator=g))
    return client.request(up, ctx, Keyframes((10 + gap - 1,), poses), chunk_frames=chunk)


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


async def _measure(port: int, n_info: int, n_first: int, gap: int) -> dict:
    from anymole.client import AnyMoLeClient
    from anymole.pipeline import Completed, MotionChunk, Queued

    async with await AnyMoLeClient.connect(f"127.0.0.1:{port}") as client:
        for _ in range(50):  # warm-up: channel, code paths
            await client.server_info()
        lat = []
        for _ in range(n_info):
            t = time.perf_counter()
            await client.server_info()
            lat.append((time.perf_counter() - t) * 1e3)

        up = await client.upload_character(_character())
        first_event, first_motion = [], []
        for i in range(n_first):
            req = _request(client, up, gap=30, chunk=30, seed=i)
            t = time.perf_counter()
            t_first = t_motion = None
            async for st in client.inbetween(req):
                now = time.perf_counter()
                if t_first is None:
                    assert isinstance(st.event, Queued)
                    t_first = now
                if t_motion is None and isinstance(st.event, MotionChunk):
                    t_motion = now
            first_event.append((t_first - t) * 1e3)
            first_motion.append((t_motion - t) * 1e3)

        streams = []
        for chunk in (30, 240):
            for rep in range(3):
                req = _request(client, up, gap=gap, chunk=chunk, seed=100 + rep)
                t0 = time.perf_counter()
                t_first = t_last = None
                frames = 0
                async for st in client.inbetween(req):
                    now = time.perf_counter()
                    if isinstance(st.event, MotionChunk):
                        t_first = t_first or now
                        t_last = now
                        frames += st.event.frame_count
                    elif isinstance(st.event, Completed):
                        t_done = now
                assert frames == gap
                streams.append(
                    {
                        "chunk_frames": chunk,
                        "frames": frames,
                        "stream_fps": frames / (t_last - t_first),
                        "end_to_end_fps": frames / (t_done - t0),
                    }
                )
    by_chunk = {}
    for chunk in (30, 240):
        runs = [s for s in streams if s["chunk_frames"] == chunk]
        by_chunk[str(chunk)] = {
            "stream_fps_median": statistics.median(r["stream_fps"] for r in runs),
            "end_to_end_fps_median": statistics.median(r["end_to_end_fps"] for r in runs),
            "runs": runs,
        }
    return {
        "get_server_info_ms": {
            "n": n_info,
            "p50": _pct(lat, 0.5),
            "p95": _pct(lat, 0.95),
            "mean": statistics.fmean(lat),
        },
        "time_to_first_event_ms": {"n": n_first, "p50": _pct(first_event, 0.5), "p95": _pct(first_event, 0.95)},
        "time_to_first_motion_ms": {"n": n_first, "p50": _pct(first_motion, 0.5), "p95": _pct(first_motion, 0.95)},
        "motion_streaming": {"joints": JOINTS, "gap_frames": gap, "by_chunk_frames": by_chunk},
    }


def _machine() -> dict:
    import grpc
    import torch

    cpu = platform.processor()
    with open("/proc/cpuinfo") as fh:
        m = re.search(r"model name\s*:\s*(.+)", fh.read())
        cpu = m.group(1).strip() if m else cpu
    return {
        "device": f"{cpu}, {os.cpu_count()} logical cores (shared dev VM), loopback 127.0.0.1",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "grpcio": grpc.__version__,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _section(r: dict) -> str:
    m, info, fe, fm = r["machine"], r["get_server_info_ms"], r["time_to_first_event_ms"], r["time_to_first_motion_ms"]
    ms = r["motion_streaming"]
    rows = "\n".join(
        f"| motion streaming, {ms['joints']} joints, {c}-frame chunks | {v['stream_fps_median']:,.0f} frames/s "
        f"(end to end incl. SLERP: {v['end_to_end_fps_median']:,.0f} frames/s) | median of 3 × {ms['gap_frames']} frames |"
        for c, v in ms["by_chunk_frames"].items()
    )
    return (
        "## Service (loopback gRPC)\n\n"
        f"`scripts/bench_service.py` — server in its own process (CPU worker, method `interp`), client in another, "
        f"over 127.0.0.1. {m['device']}; Python {m['python']}, torch {m['torch']}, grpcio {m['grpcio']}; "
        f"{m['date']}. Raw numbers: `docs/benchmarks/service.json`.\n\n"
        "| measure | result | notes |\n|---|---|---|\n"
        f"| GetServerInfo round trip | p50 {info['p50']:.2f} ms, p95 {info['p95']:.2f} ms | {info['n']} sequential calls, one channel |\n"
        f"| Inbetween: time to first event (`queued`) | p50 {fe['p50']:.2f} ms, p95 {fe['p95']:.2f} ms | "
        f"{fe['n']} jobs, 65 joints, 10 context frames, 30-frame gap; includes validation and queueing |\n"
        f"| Inbetween: time to first motion chunk | p50 {fm['p50']:.2f} ms, p95 {fm['p95']:.2f} ms | same jobs |\n"
        f"{rows}\n\n"
        "Streaming frames/s counts frames between the first and the last motion event received and decoded to "
        "tensors by the client (float32 packed xyzw, 65 × 4 floats per frame). The machine is shared by other "
        "work, so expect ±20 % between runs.\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-info", type=int, default=1000)
    parser.add_argument("--n-first", type=int, default=50)
    parser.add_argument("--gap", type=int, default=20_000, help="frames streamed per throughput run")
    parser.add_argument("--update-docs", action="store_true", help="rewrite the Service section of docs/benchmarks.md")
    parser.add_argument("--serve", nargs=2, metavar=("PORT_FILE", "DATA_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(Path(args.serve[0]), Path(args.serve[1]))
        return 0
    with tempfile.TemporaryDirectory(prefix="anymole-bench-") as tmp:
        port_file = Path(tmp) / "port"
        proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port_file), str(Path(tmp) / "data")])
        try:
            deadline = time.monotonic() + 120
            while not port_file.exists() or not port_file.read_text():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the benchmark server did not start")
                time.sleep(0.1)
            result = asyncio.run(_measure(int(port_file.read_text()), args.n_info, args.n_first, args.gap))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    result = {"machine": _machine(), **result}
    out = ROOT / "docs" / "benchmarks" / "service.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    section = _section(result)
    print(section)
    if args.update_docs:
        doc = ROOT / "docs" / "benchmarks.md"
        text = doc.read_text()
        new, n = re.subn(r"## Service \(loopback gRPC\)\n.*?(?=\n## )", section, text, count=1, flags=re.S)
        if n != 1:
            raise SystemExit("docs/benchmarks.md has no '## Service (loopback gRPC)' section followed by another")
        doc.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
