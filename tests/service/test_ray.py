"""`anymole serve --ray` (issue 19) over a real loopback server and a local Ray cluster of the machine's 2 CPUs:
two CPU workers of half a CPU each, the tiny random-weight prior and the ``anymole`` method's draft preset with
fewer steps (as tests/service/test_anymole_job.py), the bundled Fox. Placement with cache affinity, two jobs at once on two workers, a
cancel, a worker killed mid-job (retried, then finished; a second loss fails the job), a restarted front end,
and results (``video``, ``interp``, ``anymole``) bit-identical to the embedded server's. One cluster serves the whole module."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import torch

from anymole.client import AnyMoLeClient
from anymole.pipeline import (
    AnyMoLePipeline,
    Cancelled,
    Completed,
    Failed,
    Interrupted,
    Progress,
    VideoSettings,
)
from anymole.rig import Keyframes, Motion
from anymole.wire.proto.anymole.v1 import anymole_pb2 as pb
from asset_files import ASSETS, cached_load

ray = pytest.importorskip("ray", reason="ray is not installed: `pip install -e '.[ray]'` (scripts/setup.sh --dev does)")

SERVER = Path(__file__).resolve().parents[2] / "server"
# Fox "Survey" at 24 fps: 49 context frames are 2 s, the keyframe 1 s later is frame 72 (as test_anymole_job).
CONTEXT, KEY = 49, 72


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster on the 2 cores whose workers import this checkout."""
    path = os.pathsep.join([str(SERVER), os.environ.get("PYTHONPATH", "")])
    # "local": a new cluster of its own, even where `ray start` runs one on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING",
             runtime_env={"env_vars": {"PYTHONPATH": path}})  # fmt: skip
    yield
    ray.shutdown()


def _settings(cache: Path) -> VideoSettings:
    return VideoSettings(prior="tiny", icadapt_steps=1, ddim_steps=2, width=96, height=64, views=2, cache_dir=cache,
                         estimator_steps=30, mimic_steps=8)  # fmt: skip


async def _ray_server(make_server, tmp_path: Path, data: str = "data"):
    return await make_server(pipeline=AnyMoLePipeline(_settings(tmp_path / "shared-cache")), data_dir=tmp_path / data,
                             ray="auto", devices=("cpu", "cpu"), ray_worker_cpus=0.5)  # fmt: skip


def _request(client: AnyMoLeClient, up: object, shift: int = 0) -> pb.InbetweenRequest:
    """The anymole/draft request of test_anymole_job; ``shift`` frames later in the clip makes another scene."""
    motion = cached_load("Fox.glb").motions["Survey"]
    key = Keyframes((KEY,), Motion(motion.fps, motion.rotations[[KEY + shift]], motion.root_translation[[KEY + shift]]))
    return client.request(up, motion.slice(shift, CONTEXT + shift), key, method="anymole", preset="draft")


def _worker(events: list) -> tuple[str, int]:
    """``(worker name, pid)`` of the latest placement event."""
    placed = [e.message for e in events if isinstance(e, Progress) and e.stage == "worker"]
    m = re.search(r"on (ray-\d+:cpu) \(.*pid (\d+)\)", placed[-1])
    assert m, placed
    return m.group(1), int(m.group(2))


async def _run(client: AnyMoLeClient, req: pb.InbetweenRequest) -> tuple[str, list]:
    job_id, _ = await client.submit(req)
    return job_id, [st.event async for st in client.watch(job_id)]


def test_an_embedded_server_never_imports_ray(tmp_path):
    code = ("import asyncio, sys; from pathlib import Path; from anymole.cli.server import run_demo_async; "
            "asyncio.run(run_demo_async(Path(sys.argv[1]), 'interp', progress=False)); print('ray' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=240,
                         env={**os.environ, "PYTHONPATH": str(SERVER)}, check=True)  # fmt: skip
    assert out.stdout.strip().splitlines()[-1] == "False", out.stdout + out.stderr


async def _results(client: AnyMoLeClient) -> tuple[bytes, Motion, Motion]:
    """The MP4 of a ``video`` job and the motions of an ``interp`` and an ``anymole`` job on `_request`'s scene."""
    up = await client.upload_file(ASSETS / "Fox.glb")
    out: list = []
    for method, preset in [("video", "turbo"), ("interp", ""), ("anymole", "draft")]:
        req = _request(client, up)
        req.method, req.preset = method, preset
        job_id, events = await _run(client, req)
        assert isinstance(events[-1], Completed), events[-1]
        out.append((await client.video(job_id)).data if method == "video" else (await client.result(job_id, 24))[0])
    return out[0], out[1], out[2]


async def test_results_are_bit_identical_to_the_embedded_servers(cluster, make_server, connect, tmp_path):
    # The embedded server computes as a Ray worker of half a CPU does: with one torch thread (Ray sets
    # OMP_NUM_THREADS to an actor's CPUs, at least 1); results change with the thread count, not with Ray.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _, port = await make_server(pipeline=AnyMoLePipeline(_settings(tmp_path / "embedded-cache")),
                                    data_dir=tmp_path / "embedded-data")  # fmt: skip
        embedded = await _results(await connect(port))
    finally:
        torch.set_num_threads(threads)
    _, port = await _ray_server(make_server, tmp_path)
    via_ray = await _results(await connect(port))
    assert via_ray[0] == embedded[0] and via_ray[0][4:8] == b"ftyp"  # the MP4, byte for byte
    for ours, theirs in zip(via_ray[1:], embedded[1:], strict=True):
        assert torch.equal(ours.rotations, theirs.rotations) and ours.num_frames == KEY + 1
        assert torch.equal(ours.root_translation, theirs.root_translation)
    assert not torch.equal(via_ray[1].rotations, via_ray[2].rotations)  # anymole's mimicking moved the gap


async def test_jobs_follow_their_scenes_and_two_run_at_once_on_two_workers(cluster, make_server, connect, tmp_path):
    _, port = await _ray_server(make_server, tmp_path)
    client = await connect(port)
    devices = (await client.server_info()).capabilities.devices
    assert [d.name for d in devices] == ["ray-0:cpu", "ray-1:cpu"]
    assert all("CPU on" in d.description and "Ray worker" in d.description for d in devices)
    up = await client.upload_file(ASSETS / "Fox.glb")

    _, first = await _run(client, _request(client, up))
    assert isinstance(first[-1], Completed) and first[-1].metrics["icadapt_cached"] == 0, first[-1]
    assert first[-1].metrics["key_error_deg"] == 0
    holder, _ = _worker(first)
    assert holder == "ray-0:cpu"  # both free, neither used: the first listed

    # The same scene again, then another scene, both at once: the first goes to the worker holding its caches
    # (the other has run fewer jobs, and would take it without affinity), the second to the other worker.
    (a_id, again), (b_id, other) = await asyncio.gather(
        _run(client, _request(client, up)), _run(client, _request(client, up, shift=2))
    )
    assert _worker(again)[0] == holder and _worker(other)[0] == "ray-1:cpu"
    assert isinstance(again[-1], Completed) and isinstance(other[-1], Completed)
    assert again[-1].metrics["icadapt_cached"] == 1 and again[-1].metrics["estimator_cached"] == 1
    assert other[-1].metrics["icadapt_cached"] == 0
    # Both ran at once: each started before the other ended.
    times = {}
    for job_id in (a_id, b_id):
        stamped = [st async for st in client.watch(job_id)]
        placed = next(st.time for st in stamped if isinstance(st.event, Progress) and st.event.stage == "worker")
        times[job_id] = (placed, stamped[-1].time)
    assert times[a_id][0] < times[b_id][1] and times[b_id][0] < times[a_id][1]


async def test_a_cancel_reaches_the_worker_and_frees_it(cluster, make_server, connect, tmp_path):
    server, port = await _ray_server(make_server, tmp_path)
    client = await connect(port)
    up = await client.upload_file(ASSETS / "Fox.glb")
    job_id, _ = await client.submit(_request(client, up))
    events, sent = [], False
    async for st in client.watch(job_id):
        events.append(st.event)
        if not sent and isinstance(st.event, Progress) and st.event.stage == "icadapt":
            await client.cancel(job_id)
            await client.cancel(job_id)  # a client's retry, while the first cancel waits for the actor
            sent = True
    assert sent and isinstance(events[-1], Cancelled), events[-1]
    pipeline = server.jobs.pipeline
    # Cancelled is heard once the actor's job has stopped, not before: its worker is free and runs nothing
    calls = [w.handle.__ray_call__.remote(lambda actor: len(actor._tokens)) for w in pipeline.workers]
    assert await asyncio.gather(*calls) == [0, 0] and not any(w.busy for w in pipeline.loads())


async def test_a_job_failing_on_its_worker_frees_it_before_the_client_hears_it(cluster, make_server, connect, tmp_path):
    (tmp_path / "shared-cache").write_text("not a directory")  # the job fails on its worker, caching its prior
    server, port = await _ray_server(make_server, tmp_path)
    client = await connect(port)
    _, events = await _run(client, _request(client, await client.upload_file(ASSETS / "Fox.glb")))
    assert isinstance(events[-1], Failed), events[-1]
    # a fill resubmitted on Failed finds the worker that holds its scene free, as on Completed
    assert not any(w.busy for w in server.jobs.pipeline.loads())


async def test_a_worker_killed_mid_job_is_retried_on_another_then_a_second_loss_fails(cluster, make_server, connect, tmp_path):
    _, port = await _ray_server(make_server, tmp_path)
    client = await connect(port)
    up = await client.upload_file(ASSETS / "Fox.glb")

    async def kill_during(stage: str, kills: int) -> list:
        job_id, _ = await client.submit(_request(client, up))
        events, killed = [], set()
        async for st in client.watch(job_id):
            events.append(st.event)
            pid = _worker(events)[1] if isinstance(st.event, Progress) and st.event.stage == stage else 0
            if pid and len(killed) < kills and pid not in killed:  # once per attempt: late events of a killed one
                os.kill(pid, signal.SIGKILL)  # the worker's process dies mid-job
                killed.add(pid)
        return events

    events = await kill_during("sample", 1)  # ICAdapt finished and cached its prior: the retry loads it
    placed = [e.message for e in events if isinstance(e, Progress) and e.stage == "worker"]
    assert len(placed) == 2 and placed[1].startswith("worker ray-0:cpu lost: retrying on ray-1:cpu"), placed
    done = events[-1]
    assert isinstance(done, Completed), done
    assert done.metrics["icadapt_cached"] == 1 and done.metrics["key_error_deg"] == 0

    events = await kill_during("render", 2)
    assert isinstance(events[-1], Failed), events[-1]
    assert events[-1].code == grpc.StatusCode.UNAVAILABLE.value[0] and "lost its worker twice" in events[-1].message


async def test_a_restarted_front_end_marks_the_running_job_interrupted_and_reuses_the_shared_cache(
    cluster, make_server, connect, tmp_path
):
    server, port = await _ray_server(make_server, tmp_path)
    client = await connect(port)
    up = await client.upload_file(ASSETS / "Fox.glb")
    job_id, _ = await client.submit(_request(client, up))
    async for st in client.watch(job_id):
        if isinstance(st.event, Progress) and st.event.stage == "sample":
            break
    await server.stop(0.0)  # the front end goes away mid-job; its workers with it

    _, port = await _ray_server(make_server, tmp_path)  # a new front end on the same data and cache directories
    client = await connect(port)
    (info,) = await client.list_jobs()
    assert info.job_id == job_id and info.state.value == "interrupted"
    events = [st.event async for st in client.watch(job_id)]
    assert isinstance(events[-1], Interrupted)
    _, events = await _run(client, _request(client, await client.upload_file(ASSETS / "Fox.glb")))
    assert isinstance(events[-1], Completed) and events[-1].metrics["icadapt_cached"] == 1, events[-1]


def test_more_gpu_workers_than_the_cluster_has_are_refused_naming_the_flag(cluster, tmp_path):
    from anymole.errors import InvalidInput
    from anymole.service.server import ServerConfig, build_server

    with pytest.raises(InvalidInput, match="1 GPU workers asked for and the Ray cluster has 0 GPUs") as err:
        build_server(ServerConfig(port=0, data_dir=tmp_path, ray="auto", devices=("cuda",)))
    assert err.value.field == "--device"



@pytest.mark.parametrize("unreachable", [True, False])
async def test_an_unreachable_worker_gets_its_attempt_cancelled_a_dead_one_does_not(unreachable: bool) -> None:
    """A worker that is only unreachable may answer again: its attempt is cancelled before the retry elsewhere
    (the cancel is delivered when it answers), so the job never runs twice; a dead worker has nothing to cancel.
    No cluster: the actor handle is a stand-in whose event stream fails the way Ray's does."""
    from types import SimpleNamespace

    from ray.exceptions import ActorDiedError, ActorUnavailableError

    from anymole.pipeline.control import CancelToken
    from anymole.service import ray_pool

    class _Events:  # a streaming generator whose actor is gone (or out of reach) before its first event
        def __aiter__(self):
            return self

        async def __anext__(self):
            raise ActorUnavailableError("unreachable", None) if unreachable else ActorDiedError()

    cancels: list[tuple[str, str]] = []
    handle = SimpleNamespace(
        run=SimpleNamespace(remote=lambda call, spec: _Events()),
        cancel=SimpleNamespace(remote=lambda call, reason: cancels.append((call, reason))),
    )
    worker = ray_pool._Worker("ray-0:cpu", "cpu", handle)
    with pytest.raises(ray_pool._WorkerGone):
        async for _ in ray_pool.RayPipeline._stream(None, worker, None, CancelToken()):  # type: ignore[arg-type]
            pass
    assert len(cancels) == (1 if unreachable else 0)
    if unreachable:
        assert "another worker" in cancels[0][1]


def _stand_in_pipeline(handle, monkeypatch: pytest.MonkeyPatch):
    """A `RayPipeline` of one worker whose actor handle is ``handle`` (no cluster), waiting 0.5 s for workers."""
    from anymole.service import ray_pool
    from anymole.service.ray_placement import SceneMemory

    monkeypatch.setattr(ray_pool, "WORKER_WAIT_S", 0.5)
    monkeypatch.setattr(ray_pool, "_RESTART_POLL_S", 0.01)
    pipe = ray_pool.RayPipeline.__new__(ray_pool.RayPipeline)
    pipe.workers = [ray_pool._Worker("ray-0:cpu", "cpu", handle, description="CPU on n1 (Ray worker, pid 1)")]
    pipe.devices = [(w.name, w.description) for w in pipe.workers]
    pipe.scenes, pipe._changed, pipe._watchers = SceneMemory(), asyncio.Event(), set()
    return pipe


class _Stream:
    """A streaming generator of one attempt: ``events`` then, if given, ``error`` (how Ray reports a lost actor)."""

    def __init__(self, events: list, error: BaseException | None = None) -> None:
        self._events, self._error = list(events), error

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self._events:
            event = self._events.pop(0)

            async def ready():
                return event

            return ready()
        if self._error is not None:
            raise self._error
        raise StopAsyncIteration


def _job():
    from service_fakes import random_motion, tiny_character

    from anymole.pipeline import JobSpec
    from anymole.pipeline.control import CancelToken

    spec = JobSpec("sha256:a", tiny_character(), random_motion(10, 5), Keyframes((12,), random_motion(1, 5)), 13,
                   method="interp")  # fmt: skip
    return spec, CancelToken()


async def test_a_lost_worker_that_never_answers_is_given_up_and_the_job_fails_saying_why(monkeypatch, caplog):
    """The only worker is lost mid-job and Ray never brings it back (a call to it never answers, as where the
    cluster has no room for it): the job says what it waits for, the worker is given up after WORKER_WAIT_S with a
    warning in the log and in GetServerInfo's description, and the job, with no worker left, fails with WorkerLost
    saying what to do (before: the job waited for ever, and the log said nothing after 'lost mid-job')."""
    from types import SimpleNamespace

    from ray.exceptions import ActorDiedError

    from anymole.service.errors import WorkerLost

    never = asyncio.get_running_loop().create_future()  # a describe() that never answers
    handle = SimpleNamespace(run=SimpleNamespace(remote=lambda call, spec: _Stream([], ActorDiedError())),
                             describe=SimpleNamespace(remote=lambda: never))  # fmt: skip
    pipe = _stand_in_pipeline(handle, monkeypatch)
    spec, token = _job()
    events: list = []

    async def run() -> None:
        async for event in pipe.run(spec, token, None, "ray-0:cpu"):  # type: ignore[arg-type]
            events.append(event)

    with caplog.at_level("WARNING", logger="anymole.service.ray"), pytest.raises(WorkerLost) as err:
        await asyncio.wait_for(run(), 30)
    assert "every Ray worker of this server was lost and given up (ray-0:cpu" in str(err.value)
    assert "resubmit the job once the cluster is healthy (`ray status`" in str(err.value)
    messages = [e.message for e in events]
    assert messages[0].startswith("running on ray-0:cpu")
    assert messages[1] == "worker ray-0:cpu lost: no Ray worker free; waiting for Ray to restart ray-0:cpu (up to 0 s)"
    assert "worker ray-0:cpu lost: no jobs go to it until Ray has restarted it" in caplog.text
    assert "worker ray-0:cpu given up (it did not answer within 0 s): the server runs on with 0 of its 1" in caplog.text
    assert pipe.devices == [("ray-0:cpu", "given up: it did not answer within 0 s")]


async def test_a_lost_worker_that_ray_restarts_takes_the_retry_and_the_job_says_it_waited(monkeypatch, caplog):
    """Ray restarts the lost worker (calls fail while it restarts, then it answers): the job, which said it
    waits, is retried on it and completes; the log says the worker is back, and that the retry goes to the first
    worker free (before: 'retrying on another worker', of a server with one worker)."""
    from types import SimpleNamespace

    from ray.exceptions import ActorDiedError, RayActorError

    answers = iter([RayActorError(), RayActorError(), ("n2", 7, "CPU")])

    async def describe():
        answer = next(answers)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    attempts = iter([_Stream([], ActorDiedError()), _Stream([Completed(summary="filled")])])
    handle = SimpleNamespace(run=SimpleNamespace(remote=lambda call, spec: next(attempts)),
                             describe=SimpleNamespace(remote=describe))  # fmt: skip
    pipe = _stand_in_pipeline(handle, monkeypatch)
    spec, token = _job()
    with caplog.at_level("INFO", logger="anymole.service.ray"):
        events = [e async for e in pipe.run(spec, token, None, "ray-0:cpu")]  # type: ignore[arg-type]
    assert isinstance(events[-1], Completed)
    messages = [e.message for e in events[:-1]]
    assert messages[1].startswith("worker ray-0:cpu lost: no Ray worker free; waiting for Ray to restart ray-0:cpu")
    assert messages[2] == ("worker ray-0:cpu lost: retrying on ray-0:cpu (CPU on n2 (Ray worker, pid 7)); the stages "
                           "that finished there load from the shared cache")  # fmt: skip
    assert "worker ray-0:cpu is back (pid 7)" in caplog.text
    # its only worker: the retry is not 'on another worker'
    assert "worker ray-0:cpu lost mid-job; retrying it once, on the first worker free (another, or this one once " \
        "Ray has restarted it)" in caplog.text


async def test_a_job_arriving_once_every_worker_is_given_up_fails_without_saying_it_waits(monkeypatch, caplog):
    """Every worker is given up already: a new job fails at once with WorkerLost, and neither its events nor
    the log say it waits for a worker (before: a progress event and a warning 'no Ray worker free; waiting for '
    with nothing after it, for there is nothing left to wait for)."""
    from types import SimpleNamespace

    from anymole.service.errors import WorkerLost

    pipe = _stand_in_pipeline(SimpleNamespace(), monkeypatch)
    pipe.workers[0].alive, pipe.workers[0].gone = False, True
    spec, token = _job()
    events: list = []
    with caplog.at_level("WARNING", logger="anymole.service.ray"), pytest.raises(WorkerLost) as err:
        async for event in pipe.run(spec, token, None, "ray-0:cpu"):  # type: ignore[arg-type]
            events.append(event)
    assert "every Ray worker of this server was lost and given up (ray-0:cpu" in str(err.value)
    assert events == []
    assert "waits for a Ray worker" not in caplog.text
