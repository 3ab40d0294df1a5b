"""The ``anymole`` method end to end over a real loopback server (issue 14.4), with the tiny random-weight
DynamiCrafter, the draft estimator and mimicking (fewer steps) on the CPU and the bundled Fox: provisional
SLERP motion at once, previews per sampler window, final motion with exact context and keys; the second job on
the same scene loads both caches; a cancel inside each stage stops the job."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
import torch

from anymole.client import AnyMoLeClient
from anymole.errors import InvalidInput, ResourceExhausted
from anymole.estimator import EstimatorConfig
from anymole.mimic import MimicConfig
from anymole.pipeline import (
    AnyMoLePipeline,
    Cancelled,
    CancelToken,
    Completed,
    Failed,
    MotionChunk,
    Preview,
    Progress,
    ProgressReporter,
    VideoSettings,
)
from anymole.pipeline.methods import anymole as anymole_method
from anymole.pipeline.methods.anymole import AnyMoLeMethod
from anymole.rig import Keyframes, Motion
from anymole.video import generate
from anymole.video.cache import AdaptationCache
from anymole.video.sampler import plan_stage1, plan_stage2
from anymole.wire.proto.anymole.v1 import anymole_pb2 as pb
from asset_files import ASSETS, cached_load

# Fox "Survey" at 24 fps: 49 context frames are 2 s, the keyframe 1 s later is frame 72 (the clip's pose there).
CONTEXT, KEY = 49, 72
WIDTH, HEIGHT = 96, 64


def _settings(**kw: object) -> VideoSettings:
    """The tiny prior; the draft presets with fewer steps (CPU time), as `anymole serve --estimator-steps 30
    --mimic-steps 8` sets them."""
    return VideoSettings(prior="tiny", icadapt_steps=1, ddim_steps=2, width=WIDTH, height=HEIGHT, views=2,
                         estimator_steps=30, mimic_steps=8, **kw)  # type: ignore[arg-type]  # fmt: skip


def test_server_step_counts_override_every_preset() -> None:
    method = AnyMoLePipeline(_settings()).method("anymole")
    assert isinstance(method, AnyMoLeMethod)
    for preset in ("draft", "fast", "quality"):
        est, mim = method.configs(preset)
        assert (est.steps, mim.steps) == (30, 8)
        assert est == EstimatorConfig.preset(preset, backbones=est.backbones, steps=30)
        assert mim == MimicConfig.preset(preset, steps=8)
    plain = AnyMoLePipeline(VideoSettings(prior="tiny")).method("anymole")
    assert isinstance(plain, AnyMoLeMethod)
    assert plain.configs("quality") == (EstimatorConfig.quality(backbones=("conv",)), MimicConfig.quality())
    with pytest.raises(InvalidInput, match="mimic_steps"):
        VideoSettings(mimic_steps=0)


async def _fox(connect, port: int) -> tuple[AnyMoLeClient, object]:
    client = await connect(port)
    return client, await client.upload_file(ASSETS / "Fox.glb")


def _request(client: AnyMoLeClient, up: object) -> pb.InbetweenRequest:
    motion = cached_load("Fox.glb").motions["Survey"]
    return client.request(up, motion.slice(0, CONTEXT), _key(motion), method="anymole", preset="draft")


def _key(motion: Motion) -> Keyframes:
    """Survey's frame ``KEY`` as the one keyframe (its rotations and root; the other joints' translations held)."""
    return Keyframes((KEY,), Motion(motion.fps, motion.rotations[[KEY]], motion.root_translation[[KEY]]))


async def test_anymole_job_streams_provisional_previews_final_and_hits_both_caches(make_server, connect, tmp_path,
                                                                                   monkeypatch):
    _, port = await make_server(pipeline=AnyMoLePipeline(_settings(cache_dir=tmp_path / "cache")))
    client, up = await _fox(connect, port)
    info = {m.name: m for m in (await client.server_info()).capabilities.methods}["anymole"]
    assert info.available and list(info.presets) == ["draft", "fast", "quality"]
    assert (info.min_context_seconds, info.key_spacing_seconds, info.max_gap_seconds) == (2.0, 0.0, 2.0)

    events = [st.event async for st in client.inbetween(_request(client, up))]
    assert isinstance(events[-1], Completed), events[-1]
    # Provisional SLERP motion first, before any stage ran; then previews; then the final motion.
    chunks = [i for i, e in enumerate(events) if isinstance(e, MotionChunk)]
    staged = [i for i, e in enumerate(events) if isinstance(e, Progress)]
    first = events[chunks[0]]
    assert isinstance(first, MotionChunk) and not first.is_final and first.frame_start == CONTEXT
    assert chunks[0] < staged[0]
    previews = [i for i, e in enumerate(events) if isinstance(e, Preview)]
    finals = [i for i, e in enumerate(events) if isinstance(e, MotionChunk) and e.is_final]
    assert len(previews) == len(plan_stage1(60, 1)) + len(plan_stage2(60, 1))
    assert finals and min(finals) > max(previews)
    assert sum(events[i].frame_count for i in finals) == KEY + 1 - CONTEXT  # type: ignore[union-attr]
    stages = {e.stage for e in events if isinstance(e, Progress)}
    assert {"render", "icadapt", "estimator", "sample", "mimic"} <= stages

    done = events[-1]
    assert done.metrics["icadapt_cached"] == 0 and done.metrics["estimator_cached"] == 0
    assert done.metrics["key_error_deg"] == 0
    job_id = next(iter(await client.list_jobs())).job_id
    motion, _ = await client.result(job_id, 24)
    truth = cached_load("Fox.glb").motions["Survey"]
    assert motion.num_frames == KEY + 1
    torch.testing.assert_close(motion.rotations[:CONTEXT], truth.rotations[:CONTEXT].float(), rtol=0, atol=1e-6)
    torch.testing.assert_close(motion.rotations[KEY], truth.rotations[KEY].float(), rtol=0, atol=1e-6)
    torch.testing.assert_close(motion.root_translation[KEY], truth.root_translation[KEY].float(), rtol=0, atol=1e-5)
    assert torch.isfinite(motion.rotations).all()
    provisional = torch.cat([e.rotations for e in events if isinstance(e, MotionChunk) and not e.is_final])
    assert not torch.equal(motion.rotations[CONTEXT:KEY], provisional[: KEY - CONTEXT])  # mimicking moved the gap

    plans: list[dict[str, float]] = []  # the ETA's stage weights as the second job sets them
    set_plan = ProgressReporter.set_plan
    monkeypatch.setattr(ProgressReporter, "set_plan",
                        lambda self, plan, **kw: (plans.append(dict(plan)), set_plan(self, plan, **kw)))  # fmt: skip
    again = [st.event async for st in client.inbetween(_request(client, up))]
    second = again[-1]
    assert isinstance(second, Completed), second
    assert second.metrics["icadapt_cached"] == 1 and second.metrics["estimator_cached"] == 1
    assert "from the cache: icadapt, estimator" in second.summary
    est = [e for e in again if isinstance(e, Progress) and e.stage == "estimator"]
    assert [e.stage_fraction for e in est] == [1.0]  # loaded, not trained
    # both loaded stages weigh nothing in the ETA: the second skip (from another thread) keeps the first's
    assert plans[-1]["icadapt"] == 0 and plans[-1]["estimator"] == 0 and plans[-1]["mimic"] > 0


# Uneven gaps after Survey's 2 s context at 24 fps: 0.5 s, 1 s and 1.71 s (keys on no 30 fps frame), posed as
# Survey's frames 60, 72 and 82.
UNEVEN_KEYS, UNEVEN_POSES = (60, 84, 125), (60, 72, 82)


def _uneven(client: AnyMoLeClient, up: object, keys=UNEVEN_KEYS, context=CONTEXT) -> pb.InbetweenRequest:
    motion = cached_load("Fox.glb").motions["Survey"]
    poses = [UNEVEN_POSES[min(i, 2)] for i in range(len(keys))]
    key = Keyframes(tuple(keys), Motion(motion.fps, motion.rotations[poses], motion.root_translation[poses]))
    return client.request(up, motion.slice(0, context), key, method="anymole", preset="draft")


async def test_uneven_gaps_settle_solve_by_solve_with_exact_context_and_keys(make_server, connect):
    _, port = await make_server(pipeline=AnyMoLePipeline(_settings()))
    client, up = await _fox(connect, port)
    events = [st.event async for st in client.inbetween(_uneven(client, up))]
    done = events[-1]
    assert isinstance(done, Completed), done
    assert len([e for e in events if isinstance(e, Preview)]) == 2 * len(UNEVEN_KEYS)  # a coarse and a fine window a gap
    # Each solve's final motion streams as soon as it ends, in order. On the CPU the first gap is solved alone,
    # then the other two together (solve_sizes): frames 49..60, then 61..125, with mimicking between them.
    finals = [(i, e) for i, e in enumerate(events) if isinstance(e, MotionChunk) and e.is_final]
    ends = [e.frame_start + e.frame_count for _, e in finals]
    assert [e.frame_start for _, e in finals] == [CONTEXT, *ends[:-1]] and ends[-1] == UNEVEN_KEYS[-1] + 1
    assert UNEVEN_KEYS[0] + 1 in ends  # no chunk straddles the two solves
    for n in range(len(finals) - 1):
        between = events[finals[n][0] + 1 : finals[n + 1][0]]
        assert (ends[n] == UNEVEN_KEYS[0] + 1) == any(isinstance(e, Progress) and e.stage == "mimic" for e in between)
    assert finals[-1][0] == len(events) - 2  # the last gap's motion, then Completed

    motion, _ = await client.result((await client.list_jobs())[0].job_id, 24)
    truth = cached_load("Fox.glb").motions["Survey"]
    assert motion.num_frames == UNEVEN_KEYS[-1] + 1 and done.metrics["key_error_deg"] == 0
    assert torch.equal(motion.rotations[:CONTEXT], truth.rotations[:CONTEXT].float())
    assert torch.equal(motion.root_translation[:CONTEXT], truth.root_translation[:CONTEXT].float())
    assert torch.equal(motion.rotations[list(UNEVEN_KEYS)], truth.rotations[list(UNEVEN_POSES)].float())
    assert torch.equal(motion.root_translation[list(UNEVEN_KEYS)], truth.root_translation[list(UNEVEN_POSES)].float())
    streamed = torch.cat([e.rotations for _, e in finals])
    assert torch.equal(streamed, motion.rotations[CONTEXT:])  # the streamed finals are the result
    assert torch.isfinite(motion.rotations).all()


async def test_published_limits_are_what_submission_enforces(make_server, connect):
    """At the limits GetServerInfo publishes the job is accepted; one frame beyond either it is refused at
    submission with INVALID_ARGUMENT naming the field."""
    server, port = await make_server(pipeline=AnyMoLePipeline(_settings()))
    client, up = await _fox(connect, port)
    info = {m.name: m for m in (await client.server_info()).capabilities.methods}["anymole"]
    fps = cached_load("Fox.glb").motions["Survey"].fps
    context = round(info.min_context_seconds * fps) + 1
    longest = round(info.max_gap_seconds * fps)
    assert info.key_spacing_seconds == 0  # keys on any frames: a gap of one frame, then the longest gap
    at = (context, context + longest)
    job_id, _ = await client.submit(_uneven(client, up, keys=at, context=context))
    await client.cancel(job_id)
    for keys, ctx, field in ((at, context - 1, "context"), ((context, context + longest + 1), context, "keyframes")):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.submit(_uneven(client, up, keys=keys, context=ctx))
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith(field)
    assert len(server.jobs.list()) == 1


@pytest.mark.parametrize("stage", ["render", "icadapt", "estimator", "sample", "mimic"])
async def test_cancel_inside_each_stage_ends_the_job_cancelled(make_server, connect, stage):
    _, port = await make_server(pipeline=AnyMoLePipeline(_settings()))
    client, up = await _fox(connect, port)
    job_id, _ = await client.submit(_request(client, up))
    events = []
    sent = False
    async for st in client.watch(job_id):
        events.append(st.event)
        if not sent and isinstance(st.event, Progress) and st.event.stage == stage:
            await client.cancel(job_id)
            sent = True
    assert sent and isinstance(events[-1], Cancelled), events[-1]
    assert not any(isinstance(e, (Completed, MotionChunk)) and getattr(e, "is_final", False) for e in events)


async def test_a_failing_estimator_stops_sampling_fails_the_job_and_keeps_the_adapted_prior(make_server, connect,
                                                                                          tmp_path, monkeypatch):
    """The estimator's training fails (raises, not cancelled) while the prior samples: sampling stops at its next
    step, the job fails with the estimator's error, and the adapted prior cached before stays for the next fill."""
    adapted = threading.Event()
    put = AdaptationCache.put

    def put_and_tell(self: AdaptationCache, *args: object) -> None:
        put(self, *args)
        adapted.set()

    train = anymole_method.train_estimator
    oom = "estimator: out of device memory at step 1"

    def train_then_fail(renders, config, on_step, *args, **kw):  # real training, failing at its first step
        assert adapted.wait(120), "the prior was never adapted"

        def step(stage: str, fraction: float, *a: object, **k: object) -> None:
            on_step(stage, fraction, *a, **k)
            if fraction > 0:
                raise ResourceExhausted(oom)

        return train(renders, config, step, *args, **kw)

    sample = generate.sample_video

    def sample_once_the_estimator_failed(*args, on_step, **kw):
        """Sampling starts once the job's progress callback raises (the estimator's failure reached the video
        stage), or after 30 s without it, as before the fix: then it samples to its end."""
        for _ in range(600):
            on_step("sample", 0.0)
            time.sleep(0.05)
        return sample(*args, on_step=on_step, **kw)

    monkeypatch.setattr(AdaptationCache, "put", put_and_tell)
    monkeypatch.setattr(anymole_method, "train_estimator", train_then_fail)
    monkeypatch.setattr(generate, "sample_video", sample_once_the_estimator_failed)
    _, port = await make_server(pipeline=AnyMoLePipeline(_settings(cache_dir=tmp_path / "cache")))
    client, up = await _fox(connect, port)
    events = [st.event async for st in client.inbetween(_request(client, up))]
    failed = events[-1]
    assert isinstance(failed, Failed), failed
    assert (failed.code, failed.message) == (grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], oom)
    assert not any(isinstance(e, Preview) for e in events)  # no sampler window ran
    assert not any(isinstance(e, Progress) and e.stage in ("sample", "mimic") and e.stage_fraction > 0 for e in events)
    assert not any(isinstance(e, MotionChunk) and e.is_final for e in events)

    monkeypatch.undo()
    done = [st.event async for st in client.inbetween(_request(client, up))][-1]
    assert isinstance(done, Completed), done
    assert done.metrics["icadapt_cached"] == 1 and done.metrics["estimator_cached"] == 0


async def test_the_estimator_cache_counts_key_timing_only_where_training_renders_the_gaps(make_server, connect,
                                                                                          tmp_path, monkeypatch):
    """The same key pose a few frames later: the context and key renders are the same, so the estimator trained
    on them alone is reused; one that also trained on renders of the gap's fill (``pose_copies``) is not."""
    pipeline = AnyMoLePipeline(_settings(cache_dir=tmp_path / "cache"))
    method = pipeline.method("anymole")
    assert isinstance(method, AnyMoLeMethod)
    _, port = await make_server(pipeline=pipeline)
    client, up = await _fox(connect, port)
    survey = cached_load("Fox.glb").motions["Survey"]

    async def estimator_cached(frame: int) -> float:
        key = Keyframes((frame,), Motion(survey.fps, survey.rotations[[KEY]], survey.root_translation[[KEY]]))
        request = client.request(up, survey.slice(0, CONTEXT), key, method="anymole", preset="draft")
        done = [st.event async for st in client.inbetween(request)][-1]
        assert isinstance(done, Completed), done
        return done.metrics["estimator_cached"]

    assert [await estimator_cached(KEY), await estimator_cached(KEY + 8)] == [0, 1]
    configs = method.configs
    monkeypatch.setattr(method, "configs", lambda p: (replace(configs(p)[0], pose_copies=2), configs(p)[1]))
    assert [await estimator_cached(KEY), await estimator_cached(KEY + 8), await estimator_cached(KEY)] == [0, 0, 1]


async def test_a_job_cancelled_twice_ends_only_once_its_stage_has_stopped(make_server, connect, monkeypatch):
    """A client's retried CancelJob: the job is Cancelled when its stage thread has stopped and the device's prior
    is free again, never while the stage still runs (the next job would start beside it)."""
    entered, release = threading.Event(), threading.Event()
    render = anymole_method.render_scene

    def slow_render(*args, **kw):  # a long step: the cancel reaches the stage at its next report
        entered.set()
        release.wait(60)
        return render(*args, **kw)

    monkeypatch.setattr(anymole_method, "render_scene", slow_render)
    pipeline = AnyMoLePipeline(_settings())
    server, port = await make_server(pipeline=pipeline)
    client, up = await _fox(connect, port)
    job_id, _ = await client.submit(_request(client, up))
    try:
        assert await asyncio.to_thread(entered.wait, 60)
        for _ in range(2):
            await client.cancel(job_id)
            for _ in range(20):  # let the job's task take the cancel
                await asyncio.sleep(0)
        assert server.jobs.info(job_id).state.value == "running"
        assert pipeline.pool.priors["cpu"].busy.locked()  # held by the stage that still runs
    finally:
        release.set()
    events = [st.event async for st in client.watch(job_id)]
    assert isinstance(events[-1], Cancelled), events[-1]
    assert not pipeline.pool.priors["cpu"].busy.locked()


@pytest.mark.parametrize(("stage", "where"), [("generate_video", "the video and estimator stages"),
                                              ("mimic_gaps", "estimation and mimicking")])  # fmt: skip
async def test_out_of_memory_fails_with_what_to_change(make_server, connect, monkeypatch, stage, where):
    """As the video method: a stage that runs out of device memory fails the job with RESOURCE_EXHAUSTED saying
    how much torch tried to allocate and what to change, not an INTERNAL error."""

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore details")

    monkeypatch.setattr(anymole_method, stage, out_of_memory)
    _, port = await make_server(pipeline=AnyMoLePipeline(_settings()))
    client, up = await _fox(connect, port)
    failed = [st.event async for st in client.inbetween(_request(client, up))][-1]
    assert isinstance(failed, Failed) and failed.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], failed
    assert f"cpu ran out of memory in {where} (CUDA out of memory. Tried to allocate 2.00 GiB)" in failed.message
    assert "--video-size" in failed.message and "more details" not in failed.message


async def test_a_job_waiting_for_the_devices_prior_says_so_and_cancels_at_once(make_server, connect):
    """Two workers on one device share its prior: an anymole job that finds it held says it waits (as a video
    job does), instead of standing at ``load`` 0, and stops when cancelled meanwhile."""
    pipeline = AnyMoLePipeline(_settings())
    server, port = await make_server(pipeline=pipeline, devices=("cpu", "cpu"))
    client, up = await _fox(connect, port)
    loaded = await asyncio.to_thread(pipeline.pool.load, "cpu")
    with loaded.exclusive(CancelToken()):  # another job holds the prior
        job_id, _ = await client.submit(_request(client, up))
        for _ in range(600):  # until the job has reached the prior (30 s at most)
            events = [st.event for st in await server.jobs.events_after(job_id, 0)]
            if any(isinstance(e, Progress) and e.stage == "render" for e in events):
                break
            await asyncio.sleep(0.05)
        progress = [e for e in events if isinstance(e, Progress)]
        assert progress[-1].stage == "render" and progress[-1].stage_fraction == 0
        assert "waiting for this device's video prior" in progress[-1].message
        await client.cancel(job_id)
        assert isinstance([st.event async for st in client.watch(job_id)][-1], Cancelled)


async def test_the_jobs_fraction_only_grows_while_the_estimator_trains_beside_the_prior(make_server, connect,
                                                                                      monkeypatch):
    """The estimator reports from its own thread while ICAdapt and sampling report from theirs: the job's fraction
    (and so its ETA) only grows, whichever thread reports. Sampling starts once the estimator has trained a step,
    so the two threads' reports interleave."""
    trained = threading.Event()
    train = anymole_method.train_estimator

    def train_and_tell(renders, config, on_step, *args, **kw):
        def step(stage: str, fraction: float, *a: object, **k: object) -> None:
            on_step(stage, fraction, *a, **k)
            if fraction > 0:
                trained.set()

        return train(renders, config, step, *args, **kw)

    sample = generate.sample_video

    def sample_once_trained(*args, **kw):
        assert trained.wait(120), "the estimator never trained a step"
        return sample(*args, **kw)

    monkeypatch.setattr(anymole_method, "train_estimator", train_and_tell)
    monkeypatch.setattr(generate, "sample_video", sample_once_trained)
    _, port = await make_server(pipeline=AnyMoLePipeline(_settings()))
    client, up = await _fox(connect, port)
    events = [st.event async for st in client.inbetween(_request(client, up))]
    assert isinstance(events[-1], Completed), events[-1]
    progress = [e for e in events if isinstance(e, Progress)]
    stages = [p.stage for p in progress]
    assert stages.index("estimator") < len(stages) - 1 - stages[::-1].index("sample")  # interleaved
    overall = [p.fraction for p in progress]
    assert overall == sorted(overall), [(p.stage, round(p.stage_fraction, 2), round(p.fraction, 3)) for p in progress]
    assert overall[-1] == pytest.approx(1.0)


# A child process: an anymole job whose estimator never returns (nor reports), the server stopped with a short
# stage_stop, then the interpreter's exit. Prints what the stop left as JSON.
_HUNG_ESTIMATOR_CHILD = """
import asyncio, json, sys, tempfile, threading
from pathlib import Path
from anymole.client import AnyMoLeClient
from anymole.pipeline import AnyMoLePipeline
from anymole.pipeline.methods import anymole as anymole_method
from anymole.service.server import ServerConfig, build_server
from test_anymole_job import ASSETS, _request, _settings

entered, threads = threading.Event(), []

def hung_train(*args, **kw):
    threads.append(threading.current_thread())
    entered.set()
    threading.Event().wait()  # for ever

anymole_method.train_estimator = hung_train

async def main():
    pipeline = AnyMoLePipeline(_settings())
    server, port = build_server(ServerConfig(port=0, data_dir=Path(tempfile.mkdtemp()), devices=("cpu",)), pipeline)
    await server.start()
    client = await AnyMoLeClient.connect(f"127.0.0.1:{port}")
    job_id, _ = await client.submit(_request(client, await client.upload_file(ASSETS / "Fox.glb")))
    assert await asyncio.to_thread(entered.wait, 60)
    await client.close()
    await server.stop(0.0, stage_stop=0.2)
    last = (await server.jobs.events_after(job_id, 0))[-1].event
    print(json.dumps({"state": server.jobs.info(job_id).state.value, "last": type(last).__name__,
                      "reason": last.reason, "estimator": [threads[0].is_alive(), threads[0].daemon],
                      "prior_held": pipeline.pool.priors["cpu"].busy.locked()}), flush=True)

asyncio.run(main())
"""


def test_a_hung_estimator_does_not_hold_the_servers_stop_or_the_process_exit(tmp_path):
    """The estimator stuck in one call beside the video stage (it never reports, so never sees the interrupt):
    the stop waits ``stage_stop`` seconds for the job's stage, which waits for its estimator, then ends the job
    Interrupted; the prior stays held by that stage (no second job beside it), and the process exits with the
    estimator's thread still running (before: a `ThreadPoolExecutor` worker, which the interpreter joins at its
    exit, so the process never ended)."""
    here = Path(__file__).resolve().parent
    path = os.pathsep.join([str(here.parents[1] / "server"), str(here.parent), str(here)])
    child = subprocess.run([sys.executable, "-c", _HUNG_ESTIMATOR_CHILD], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONPATH": path}, cwd=tmp_path)  # fmt: skip
    assert child.returncode == 0, child.stderr[-3000:]
    left = json.loads(child.stdout.strip().splitlines()[-1])
    assert (left["state"], left["last"]) == ("interrupted", "Interrupted") and "did not stop" in left["reason"]
    assert left["estimator"] == [True, True] and left["prior_held"]
