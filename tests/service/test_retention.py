"""Retention (issue 12.3, ``anymole serve --keep-days D --max-disk SIZE``): the right job directories and
characters go, queued and running jobs and the characters they use never do, and what went is gone from the
gRPC API too."""

from __future__ import annotations

import time

import grpc
import pytest
from service_fakes import FakePipeline, collect, wait_for
from typer.testing import CliRunner

from anymole.cli import app
from anymole.service.jobs import JobState
from anymole.service.retention import RetentionPolicy
from anymole.wire.proto.anymole.v1 import anymole_pb2 as pb

DAY = 86_400.0


async def _run(client, req) -> str:
    events = await collect(client.stub.Inbetween(req, metadata=client.metadata))
    assert events[-1].WhichOneof("kind") == "completed"
    return events[0].job_id


def _chars(tmp_path) -> set[str]:
    return {p.stem for p in (tmp_path / "data" / "characters").glob("*.json")}


async def test_keep_days_collects_old_finished_jobs_and_unused_characters_only(
    make_server, connect, tiny, make_req, tmp_path
):
    fake = FakePipeline()
    server, port = await make_server(fake, retention=RetentionPolicy(keep_days=1.0))
    client = await connect(port)
    old_char, busy_char, stray_char = [await client.upload_character(tiny(5, name=n)) for n in ("old", "busy", "stray")]
    done = [await _run(client, make_req(old_char, method="fake", label=f"done{i}")) for i in range(2)]
    running, _ = await client.submit(make_req(busy_char, method="gate", label="running"))
    await wait_for(lambda: fake.started[-1:] == ["running"])
    queued, _ = await client.submit(make_req(busy_char, method="fake", label="queued"))
    jobs_dir = tmp_path / "data" / "jobs"

    nothing = await server.retention.collect()  # everything is recent
    assert nothing.jobs == [] and nothing.characters == []

    later = await server.retention.collect(now=time.time() + 2 * DAY)
    assert sorted(later.jobs) == sorted(done)
    hexes = {c.character_id.split(":")[1]: c.name for c in (old_char, busy_char, stray_char)}
    assert {hexes[c.split(":")[1]] for c in later.characters} == {"old", "stray"}
    assert {p.name for p in jobs_dir.iterdir()} == {running, queued}
    assert {hexes[h] for h in _chars(tmp_path)} == {"busy"}
    assert later.freed_bytes > 0

    listed = {j.job_id: j.state for j in await client.list_jobs()}
    assert listed == {running: JobState.RUNNING, queued: JobState.QUEUED}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await collect(client.stub.WatchJob(pb.WatchJobRequest(job_id=done[0]), metadata=client.metadata))
    assert err.value.code() is grpc.StatusCode.NOT_FOUND
    again = await client.upload_character(tiny(5, name="old"))  # a collected character is simply uploaded again
    assert not again.cached and again.character_id == old_char.character_id

    fake.release.set()
    await wait_for(lambda: all(j.state is JobState.COMPLETED for j in server.jobs.list()))
    assert (await server.retention.collect()).jobs == []  # just finished: kept


async def test_max_disk_collects_the_longest_finished_jobs_first(make_server, connect, tiny, make_req, tmp_path):
    server, port = await make_server()
    client = await connect(port)
    up = await client.upload_character(tiny(24, with_mesh=False))
    jobs = [await _run(client, make_req(up, keys=(2000,), seed=i)) for i in range(4)]  # interp: ~200 kB each
    jobs_dir = tmp_path / "data" / "jobs"
    sizes = {j: sum(p.stat().st_blocks * 512 for p in (jobs_dir / j).iterdir()) for j in jobs}
    char_bytes = sum(p.stat().st_blocks * 512 for p in (tmp_path / "data" / "characters").iterdir())
    assert min(sizes.values()) > 100_000

    server.retention.policy = RetentionPolicy(max_disk=sizes[jobs[2]] + sizes[jobs[3]] + char_bytes + 10_000)
    out = await server.retention.collect()
    assert out.jobs == jobs[:2]  # the two that finished first
    assert out.characters == []  # still used by the jobs that stay
    assert {p.name for p in jobs_dir.iterdir()} == set(jobs[2:])
    assert out.disk_bytes <= server.retention.policy.max_disk
    assert [j.job_id for j in await client.list_jobs()] == jobs[:1:-1]
    motion, _ = await client.result(jobs[3], 24)  # what stays is whole
    assert motion.num_frames == 2001


async def test_max_disk_never_takes_queued_or_running_jobs_nor_their_characters(
    make_server, connect, tiny, make_req, tmp_path
):
    fake = FakePipeline()
    server, port = await make_server(fake)
    client = await connect(port)
    up = await client.upload_character(tiny(5))
    finished = await _run(client, make_req(up, method="fake"))
    running, _ = await client.submit(make_req(up, method="gate"))
    await wait_for(lambda: server.jobs.info(running).state is JobState.RUNNING)
    queued, _ = await client.submit(make_req(up, method="fake"))
    server.retention.policy = RetentionPolicy(max_disk=1)
    out = await server.retention.collect()
    assert out.jobs == [finished] and out.characters == []
    assert out.disk_bytes > 1  # over the bound, and nothing more may go
    assert {p.name for p in (tmp_path / "data" / "jobs").iterdir()} == {running, queued}
    fake.release.set()
    await wait_for(lambda: server.jobs.info(queued).state is JobState.COMPLETED)
    # Once they finish, they may go too, and then their character.
    out = await server.retention.collect()
    assert sorted(out.jobs) == sorted([running, queued]) and out.characters == [up.character_id]


async def test_a_server_started_with_a_policy_collects_at_start(make_server, connect, tiny, make_req, tmp_path):
    server, port = await make_server(FakePipeline())
    client = await connect(port)
    up = await client.upload_character(tiny())
    job_id = await _run(client, make_req(up, method="fake"))
    await server.stop(0.0)
    restarted, _ = await make_server(FakePipeline(), retention=RetentionPolicy(keep_days=0.0))
    await wait_for(lambda: not (tmp_path / "data" / "jobs" / job_id).exists())
    assert restarted.jobs.list() == [] and _chars(tmp_path) == set()


@pytest.mark.parametrize(("flag", "value"), [("--max-disk", "lots"), ("--memory-budget", "-2G")])
def test_serve_names_a_bad_size_flag(flag, value, tmp_path):
    res = CliRunner().invoke(app, ["serve", "--port", "0", "--data-dir", str(tmp_path), flag, value])
    assert res.exit_code != 0  # refused before a server starts; `main` prints it as one line, exit 1
    assert str(res.exception).startswith(f"{flag}: cannot read size {value!r}")
