"""What jobs and uploads cost the server: peak memory per timeline frame-joint and the disk a job's motion takes,
and the memory of concurrent uploads with and without `Limits.max_upload_bytes_in_flight` (a script, not a
test). The figures behind `anymole.service.budget`.

    .venv/bin/python scripts/bench_job_memory.py                 # measure, print, write docs/benchmarks/job_memory.json
    .venv/bin/python scripts/bench_job_memory.py --update-docs   # also rewrite its section of docs/benchmarks.md

Each case runs in a fresh process: a server (CPU worker) and a client on loopback, one ``interp`` job of F frames
× J joints (4 context frames, one keyframe at the end), watched to its end. Peak memory is the growth of the
process's peak resident set (``ru_maxrss``) over the job, server and client together (the client holds one
event at a time); the job directory's files are listed with their sizes. Uploads: a server in a child process
takes 8 concurrent uploads of 100 MB (random bytes announced as GLB: received whole, then refused by the
importer) with no cap, and with a 200 MB cap refusing at once or letting uploads wait; the growth of the
server's peak resident set (``VmHWM``) is recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import platform
import re
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = ((100_000, 4), (100_000, 24), (20_000, 256))
UPLOADS, UPLOAD_MB, CAP_MB = 8, 100, 200
UPLOAD_MODES = (("no cap", 0, 0.0), ("200 MB cap, refused at once (default)", CAP_MB, 0.0), ("200 MB cap, waiting", CAP_MB, 60.0))
SECTION = "## Server memory per job"


async def _one(frames: int, joints: int) -> dict:
    sys.path.insert(0, str(ROOT / "tests" / "service"))
    from service_fakes import make_request, tiny_character

    from anymole.client import AnyMoLeClient
    from anymole.service.server import ServerConfig, build_server
    from anymole.wire.proto.anymole.v1 import anymole_pb2 as pb

    def peak() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    with tempfile.TemporaryDirectory(prefix="anymole-bench-") as tmp:
        server, port = build_server(ServerConfig(port=0, data_dir=Path(tmp), devices=("cpu",), memory_budget=1 << 40))
        await server.start()
        client = await AnyMoLeClient.connect(f"127.0.0.1:{port}")
        try:
            up = await client.upload_character(tiny_character(joints, with_mesh=False))
            req = make_request(up.character_id, joints, context_frames=4, keys=(frames - 1,))
            before = peak()
            job_id, _ = await client.submit(req)
            async for _ in client.stub.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=client.metadata):
                pass
            grown = peak() - before
            files = {p.name: p.stat().st_size for p in sorted((Path(tmp) / "jobs" / job_id).iterdir())}
        finally:
            await client.close()
            await server.stop(0)
    return {"frames": frames, "joints": joints, "peak_growth_bytes": grown, "bytes_per_frame_joint": grown / (frames * joints), "files": files}


def _upload_server(port_file: str, cap_mb: int, wait_s: float, data_dir: str) -> None:
    """Child process: a server whose in-flight cap is ``cap_mb`` (0: none), until killed."""
    from anymole.service.server import ServerConfig, build_server
    from anymole.wire.convert import Limits

    async def run() -> None:
        budget = 4 * cap_mb << 20 if cap_mb else 1 << 40  # budget_limits gives uploads a quarter of the budget
        cfg = ServerConfig(
            port=0, data_dir=Path(data_dir), devices=("cpu",), limits=Limits(max_character_bytes=UPLOAD_MB << 20),
            memory_budget=budget, upload_wait_s=wait_s,
        )
        server, port = build_server(cfg)
        await server.start()
        Path(port_file).write_text(str(port))
        await asyncio.Event().wait()

    asyncio.run(run())


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


async def _uploads(cap_mb: int, wait_s: float) -> dict:
    import os
    import time

    import grpc

    from anymole.client import AnyMoLeClient
    from anymole.wire.proto.anymole.v1 import anymole_pb2 as pb

    with tempfile.TemporaryDirectory(prefix="anymole-bench-") as tmp:
        port_file = Path(tmp) / "port"
        cmd = [sys.executable, __file__, "--upload-server", str(port_file), str(cap_mb), str(wait_s), str(Path(tmp) / "data")]
        proc = subprocess.Popen(cmd)
        try:
            while not port_file.exists() or not port_file.read_text():
                time.sleep(0.1)
            client = await AnyMoLeClient.connect(f"127.0.0.1:{port_file.read_text()}")
            payloads = [os.urandom(UPLOAD_MB << 20) for _ in range(UPLOADS)]
            before = _peak_rss(proc.pid)

            async def one(data: bytes) -> str:
                try:
                    await client.upload(data, pb.CHARACTER_FORMAT_GLB, chunk_bytes=1 << 20, send_hash=False)
                    return "OK"
                except grpc.aio.AioRpcError as exc:
                    return exc.code().name

            codes = await asyncio.gather(*[one(p) for p in payloads])
            grown = _peak_rss(proc.pid) - before
            await client.close()
        finally:
            proc.kill()
            proc.wait()
    return {"cap_mb": cap_mb, "wait_s": wait_s, "peak_growth_bytes": grown, "codes": {c: codes.count(c) for c in set(codes)}}


def _section(r: dict) -> str:
    m = r["machine"]
    rows = "\n".join(
        f"| {c['frames']:,} × {c['joints']} | {c['peak_growth_bytes'] / 1e6:,.0f} MB | {c['bytes_per_frame_joint']:.0f} B | "
        f"{sum(v for k, v in c['files'].items() if k.startswith('result.')) / 1e6:,.1f} MB | {c['files']['events.jsonl'] / 1e6:,.2f} MB |"
        for c in r["cases"]
    )
    return (
        f"{SECTION}\n\n"
        "`scripts/bench_job_memory.py` — one `interp` job per fresh process (server and client on loopback), watched to "
        f"its end. {m['cpu']}; Python {m['python']}; {m['date']}. Raw numbers: `docs/benchmarks/job_memory.json`.\n\n"
        "| frames × joints | peak memory growth | per frame-joint | result files | events.jsonl |\n|---|---|---|---|---|\n"
        f"{rows}\n\n"
        "The SLERP fill itself takes most of the peak (its working copies of the timeline); the job manager holds no "
        "motion (chunks go to the result files as they stream; the log holds references). "
        "`anymole.service.budget.BYTES_PER_FRAME_JOINT` rounds the largest figure up.\n\n"
        f"{UPLOADS} concurrent uploads of {UPLOAD_MB} MB (server in its own process):\n\n"
        "| in-flight cap | server peak memory growth | answers |\n|---|---|---|\n"
        + "\n".join(
            f"| {name} | {u['peak_growth_bytes'] / 1e6:,.0f} MB | "
            + ", ".join(f"{n} {c}" for c, n in sorted(u["codes"].items()))
            + " |"
            for (name, _, _), u in zip(UPLOAD_MODES, r["uploads"], strict=True)
        )
        + "\n\nINVALID_ARGUMENT is the importer refusing the random bytes after the whole upload arrived. An upload "
        "left waiting for room still has its chunks buffered by the HTTP/2 transport, which is why the server "
        "refuses at once by default.\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--update-docs", action="store_true", help=f"rewrite the '{SECTION}' section of docs/benchmarks.md")
    parser.add_argument("--one", nargs=2, type=int, metavar=("FRAMES", "JOINTS"), help=argparse.SUPPRESS)
    parser.add_argument("--upload-server", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(asyncio.run(_one(*args.one))))
        return 0
    if args.upload_server:
        port_file, cap, wait, data = args.upload_server
        _upload_server(port_file, int(cap), float(wait), data)
        return 0
    cases = []
    for frames, joints in CASES:
        out = subprocess.run([sys.executable, __file__, "--one", str(frames), str(joints)], capture_output=True, text=True, check=True)
        cases.append(json.loads(out.stdout.strip().splitlines()[-1]))
    machine = {
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    uploads = [asyncio.run(_uploads(cap, wait)) for _, cap, wait in UPLOAD_MODES]
    result = {"machine": machine, "cases": cases, "uploads": uploads}
    (ROOT / "docs" / "benchmarks" / "job_memory.json").write_text(json.dumps(result, indent=2) + "\n")
    section = _section(result)
    print(section)
    if args.update_docs:
        doc = ROOT / "docs" / "benchmarks.md"
        text = doc.read_text()
        new, n = re.subn(rf"{re.escape(SECTION)}\n.*?(?=\n## |\Z)", section, text, count=1, flags=re.S)
        doc.write_text(new if n else text.rstrip("\n") + "\n\n" + section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
