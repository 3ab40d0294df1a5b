"""The ``video`` method end to end over a real loopback server, with the tiny (random-weight) DynamiCrafter
on the CPU and the bundled Fox: staged progress, one preview per sampler window, the MP4 result, result
formats, timeline validation, cancellation during ICAdapt and replay after a restart."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from google.rpc import error_details_pb2, status_pb2
from PIL import Image
from service_fakes import stop_while_a_stage_hangs

from anymole.client import AnyMoLeClient, preview_image
from anymole.pipeline import (
    AnyMoLePipeline,
    Cancelled,
    CancelToken,
    Completed,
    Failed,
    Preview,
    Progress,
    VideoSettings,
    in_daemon_thread,
)
from anymole.rig import Keyframes, Motion
from anymole.service.jobs import JobState
from anymole.service.server import ServerConfig, build_server
from anymole.video.generate import decode_mp4
from anymole.video.sampler import plan_stage1, plan_stage2
from anymole.wire.proto.anymole.v1 import anymole_pb2 as pb
from asset_files import ASSETS, cached_load

# Fox "Survey" is sampled at 24 fps: 49 context frames are exactly 2 s (61 frames at 30 fps, render frame 60 =
# request frame 48); keyframes 1 s and 2 s later are request frames 72 and 96 (the second one takes the pose
# of clip frame 82, the last one of the clip).
FPS, CONTEXT, KEYS, KEY_POSES = 24, 49, (72, 96), (72, 82)
WIDTH, HEIGHT = 96, 64
TINY = VideoSettings(prior="tiny", icadapt_steps=1, ddim_steps=2, width=WIDTH, height=HEIGHT)


def _request(client: AnyMoLeClient, up, keys=KEYS, context=CONTEXT, preset="fast", **options) -> pb.InbetweenRequest:
    motion = cached_load("Fox.glb").motions["Survey"]
    poses = list(KEY_POSES[: len(keys)])
    return client.request(
        up, motion.slice(0, context), Keyframes(tuple(keys), Motion(motion.fps, motion.rotations[poses], motion.root_translation[poses])),
        method="video", preset=preset, **options,
    )  # fmt: skip


async def _fox(connect, port: int):
    client = await connect(port)
    return client, await client.upload_file(ASSETS / "Fox.glb")


def _expected_preview_frames() -> list[int]:
    """Request frames of the previews: each window's middle written frame, render frame f → 48 + (f − 60)·24/30."""
    windows = plan_stage1(60, len(KEYS)) + plan_stage2(60, len(KEYS))
    return [round(CONTEXT - 1 + (p.frames[p.writes[len(p.writes) // 2]] - 60) * FPS / 30) for p in windows]


def _precondition_subject(err: grpc.aio.AioRpcError) -> str:
    raw = dict(err.trailing_metadata())["grpc-status-details-bin"]
    failure = error_details_pb2.PreconditionFailure()
    assert status_pb2.Status.FromString(raw).details[0].Unpack(failure)
    return failure.violations[0].subject


def _bad_request_field(err: grpc.aio.AioRpcError) -> str:
    raw = dict(err.trailing_metadata())["grpc-status-details-bin"]
    bad = error_details_pb2.BadRequest()
    assert status_pb2.Status.FromString(raw).details[0].Unpack(bad)
    return bad.field_violations[0].field


async def test_video_job_streams_previews_and_serves_its_mp4(make_server, connect, tmp_path):
    server, port = await make_server(pipeline=AnyMoLePipeline(TINY))
    client, up = await _fox(connect, port)
    events = [st async for st in client.inbetween(_request(client, up, seed=7))]
    job_id = events[0].job_id
    kinds = [type(st.event).__name__ for st in events]
    assert kinds[-1] == "Completed", kinds

    # Progress: the stages in order, each stage's fraction non-decreasing, the job's fraction too, with ETAs.
    progress = [st.event for st in events if isinstance(st.event, Progress)]
    stages = list(dict.fromkeys(p.stage for p in progress))
    assert stages == ["load", "render", "icadapt", "sample"]
    for stage in stages:
        fractions = [p.stage_fraction for p in progress if p.stage == stage]
        assert fractions == sorted(fractions) and fractions[-1] == 1.0, (stage, fractions)
    overall = [p.fraction for p in progress]
    assert overall == sorted(overall) and overall[-1] == pytest.approx(1.0)
    assert progress[-1].eta_seconds is not None and progress[-1].eta_seconds < 1e-6

    # One preview per sampler window (2 coarse + 2 fine for 2 gaps), after ICAdapt, on the request timeline.
    previews = [st.event for st in events if isinstance(st.event, Preview)]
    assert len(previews) == len(plan_stage1(60, 2)) + len(plan_stage2(60, 2)) == 4
    assert [p.frame for p in previews] == _expected_preview_frames()
    assert all(CONTEXT - 1 < p.frame <= KEYS[-1] for p in previews)
    first_preview = kinds.index("Preview")
    icadapt_done = max(i for i, st in enumerate(events) if isinstance(st.event, Progress) and st.event.stage == "icadapt")
    assert first_preview > icadapt_done
    for p in previews:
        assert (p.stage, p.view, p.mime_type, p.width, p.height) == ("sample", 0, "image/jpeg", WIDTH, HEIGHT)
        image = preview_image(p)
        assert image.shape == (HEIGHT, WIDTH, 3) and image.dtype == np.uint8 and image.std() > 0
        assert Image.open(io.BytesIO(p.data)).format == "JPEG"

    done = events[-1].event
    assert isinstance(done, Completed)
    assert "random weights: previews are noise" in done.summary
    assert [s for s, _ in done.timings] == ["load", "render", "icadapt", "sample", "encode"]
    assert all(t >= 0 for _, t in done.timings)
    assert done.metrics["video_frames"] == 31 and done.total_frames == KEYS[-1] + 1

    # The result is the video of view 0 at 15 fps: the last context frame, then both gaps (15 each, keys
    # included).
    reply = await client.stub.GetResult(
        pb.GetResultRequest(job_id=job_id, format=pb.RESULT_FORMAT_MP4), metadata=client.metadata
    )
    assert not reply.HasField("motion") and reply.file_name == f"{job_id}.mp4"
    frames = decode_mp4(reply.file, WIDTH, HEIGHT)
    assert frames.shape == (31, HEIGHT, WIDTH, 3)
    # A fine window's preview is the video's frame (render frame key + 16 → video frame 8 + 15·gap), up to
    # the JPEG and H.264 losses; the other gap's frame is much further off.
    for gap, p in enumerate(previews[2:]):
        shown = preview_image(p).astype(np.int16)
        same, other = (np.abs(shown - frames[8 + 15 * g]).mean() for g in (gap, 1 - gap))
        assert same < 20 and same < 0.5 * other  # measured 11 and 45 levels
    video = await client.video(job_id)
    assert (video.fps, video.frame_count, video.data) == (15.0, 31, reply.file)

    # Motion formats of a video job: FAILED_PRECONDITION naming `format`, pointing at MP4.
    for fmt in (pb.RESULT_FORMAT_UNSPECIFIED, pb.RESULT_FORMAT_GLB, pb.RESULT_FORMAT_BVH, pb.RESULT_FORMAT_NPZ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.stub.GetResult(pb.GetResultRequest(job_id=job_id, format=fmt), metadata=client.metadata)
        assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "MP4" in err.value.details() and _precondition_subject(err.value) == "format"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.result(job_id, up.skeleton.num_joints, ".glb")
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION

    # Events and result survive a restart: a new server on the same data replays identical previews.
    data_dir = server.jobs.store.root
    await server.stop(0.0)
    _, port2 = await make_server(pipeline=AnyMoLePipeline(TINY), data_dir=data_dir)
    client2 = await connect(port2)
    replay = [st async for st in client2.watch(job_id)]
    assert [(st.seq, type(st.event).__name__) for st in replay] == [(st.seq, k) for st, k in zip(events, kinds, strict=True)]
    assert [st.event for st in replay if isinstance(st.event, Preview)] == previews
    assert (await client2.video(job_id)).data == reply.file


async def test_turbo_job_adapts_eagerly_on_a_cpu_and_restores_the_prior(make_server, connect, monkeypatch):
    def no_compile(*args, **kwargs):
        raise AssertionError("turbo compiles on CUDA devices only")

    monkeypatch.setattr(torch, "compile", no_compile)
    pipeline = AnyMoLePipeline(TINY)
    _server, port = await make_server(pipeline=pipeline)
    client, up = await _fox(connect, port)
    events = [st async for st in client.inbetween(_request(client, up, seed=7, preset="turbo"))]
    assert type(events[-1].event).__name__ == "Completed", events[-1]
    assert events[-1].event.metrics["icadapt_final_loss"] > 0
    prior = pipeline.pool.priors["cpu"].prior
    lora = {n: p for n, p in prior.named_parameters() if "lora_" in n}
    top = len(prior.unet.output_blocks) - prior.config.unet.num_res_blocks - 1
    assert lora and all(n.startswith("unet.output_blocks.") and int(n.split(".")[2]) >= top for n in lora)
    assert all(float(p.abs().sum()) == 0 for n, p in lora.items() if "lora_B" in n)  # back at the identity
    assert not any(p.requires_grad for p in prior.parameters())


async def test_interp_job_has_no_mp4(make_server, connect, tiny, make_req):
    _, port = await make_server(pipeline=AnyMoLePipeline(TINY))
    client = await connect(port)
    up = await client.upload_character(tiny(5))
    events = [st async for st in client.inbetween(make_req(up))]
    assert isinstance(events[-1].event, Completed)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.video(events[0].job_id)
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert _precondition_subject(err.value) == "format" and "GLB" in err.value.details()


@pytest.mark.parametrize(
    ("keys", "context", "total", "field"),
    [((97,), CONTEXT, 0, "keyframes"), ((72, 121), CONTEXT, 0, "keyframes"), ((60,), 37, 0, "context"),
     ((72,), CONTEXT, 90, "total_frames")],
    ids=["gap-over-2-s", "second-gap-over-2-s", "short-context", "frames-after-the-last-key"],
)  # fmt: skip
async def test_video_request_off_the_sampler_timeline_is_refused(make_server, connect, keys, context, total, field):
    server, port = await make_server(pipeline=AnyMoLePipeline(TINY))
    client, up = await _fox(connect, port)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.submit(_request(client, up, keys=keys, context=context, total_frames=total))
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert _bad_request_field(err.value) == field
    assert server.jobs.list() == []  # refused before it queued


async def test_cancel_during_icadapt_stops_before_any_preview(make_server, connect):
    steps = 200
    settings = VideoSettings(prior="tiny", icadapt_steps=steps, ddim_steps=2, width=WIDTH, height=HEIGHT)
    _, port = await make_server(pipeline=AnyMoLePipeline(settings))
    client, up = await _fox(connect, port)
    job_id, _ = await client.submit(_request(client, up))
    events = []
    async for st in client.watch(job_id):
        events.append(st.event)
        if isinstance(st.event, Progress) and st.event.stage == "icadapt" and st.event.stage_fraction > 0:
            await client.cancel(job_id)
    assert isinstance(events[-1], Cancelled)
    assert not any(isinstance(e, Preview) for e in events)
    assert not any(isinstance(e, Progress) and e.stage == "sample" for e in events)
    # It stopped at the next steps, not after the 200 of the run.
    last = max(e.stage_fraction for e in events if isinstance(e, Progress) and e.stage == "icadapt")
    assert last <= 5 / steps


async def test_server_config_enables_the_video_method(tmp_path: Path):
    async def methods(cfg: ServerConfig) -> tuple[dict[str, pb.MethodInfo], list[int]]:
        server, port = build_server(cfg)
        await server.start()
        try:
            async with await AnyMoLeClient.connect(f"127.0.0.1:{port}") as client:
                info = await client.server_info()
        finally:
            await server.stop(0.0)
        caps = info.capabilities
        return {m.name: m for m in caps.methods}, list(caps.result_formats)

    base = ServerConfig(port=0, data_dir=tmp_path, devices=("cpu",))
    off, formats = await methods(base)
    assert not off["video"].available and "--video-prior" in off["video"].unavailable_reason
    assert pb.RESULT_FORMAT_MP4 not in formats
    missing, _ = await methods(dataclasses.replace(base, video=VideoSettings(prior=str(tmp_path / "no.ckpt"))))
    assert not missing["video"].available and "no.ckpt" in missing["video"].unavailable_reason
    on, formats = await methods(dataclasses.replace(base, video=VideoSettings(prior="tiny")))
    video = on["video"]
    assert video.available and video.sends_previews and list(video.presets) == ["quality", "fast", "turbo"]
    assert "random weights: previews are noise" in video.description
    assert pb.RESULT_FORMAT_MP4 in formats
    assert on["anymole"].available  # the whole method runs on the same prior (draft estimator and mimicking)
    # Each method says what its results come in: the video alone, or the motion formats.
    assert list(video.result_formats) == [pb.RESULT_FORMAT_MP4]
    for name in ("interp", "anymole"):
        assert list(on[name].result_formats) == [pb.RESULT_FORMAT_GLB, pb.RESULT_FORMAT_BVH, pb.RESULT_FORMAT_NPZ]


def test_video_method_without_ffmpeg_is_unavailable_and_says_what_to_do(monkeypatch) -> None:
    import imageio_ffmpeg

    from anymole.video.generate import ffmpeg_problem

    def missing() -> str:
        raise RuntimeError("No ffmpeg exe could be found.")

    ffmpeg_problem.cache_clear()
    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", missing)
    try:
        reason = VideoSettings(prior="tiny").unavailable_reason()
    finally:
        monkeypatch.undo()
        ffmpeg_problem.cache_clear()
    assert "ffmpeg" in reason and "IMAGEIO_FFMPEG_EXE" in reason and "No ffmpeg exe" in reason
    assert VideoSettings(prior="tiny").unavailable_reason() == ""  # the real ffmpeg is found


async def test_second_job_on_the_same_scene_uses_the_icadapt_cache(make_server, connect, tmp_path):
    """The adapted weights are cached per (model, character, context, settings): the same request again skips
    ICAdapt and, with the same seed, streams byte-identical previews to every watcher."""
    settings = VideoSettings(prior="tiny", icadapt_steps=1, ddim_steps=2, width=WIDTH, height=HEIGHT, cache_dir=tmp_path / "icadapt")
    _, port = await make_server(pipeline=AnyMoLePipeline(settings))
    client, up = await _fox(connect, port)
    other = await connect(port)
    request = _request(client, up, keys=KEYS[:1])
    first = [st.event async for st in client.inbetween(request)]
    job_id, _ = await client.submit(request)
    a, b = await asyncio.gather(_events(client, job_id), _events(other, job_id))
    # One event log, any number of watchers (Completed compares by identity: compare its fields).
    assert a[:-1] == b[:-1] and (a[-1].summary, a[-1].timings) == (b[-1].summary, b[-1].timings)
    for events, cached in ((first, False), (a, True)):
        done = events[-1]
        assert isinstance(done, Completed)
        assert ("adapted weights from the cache" in done.summary) is cached
        assert ("icadapt_final_loss" in done.metrics) is not cached
    previews = [[e for e in events if isinstance(e, Preview)] for events in (first, a)]
    assert len(previews[0]) == 2 and previews[0] == previews[1]
    # The cached job says so as ICAdapt ends, and weighs ICAdapt 0: sampling takes a larger share of the job,
    # so that its fraction and ETA follow the work that runs (the job's fraction still only grows).
    shares = []
    for events in (first, a):
        progress = [e for e in events if isinstance(e, Progress)]
        assert [p.fraction for p in progress] == sorted(p.fraction for p in progress)
        adapted = [p for p in progress if p.stage == "icadapt" and p.stage_fraction == 1.0]
        assert len(adapted) == 1 and (adapted[0].message == "adapted weights from the cache") is (events is a)
        shares.append(1.0 - next(p.fraction for p in progress if p.stage == "sample"))
    assert shares[1] > 1.5 * shares[0]
    assert len(list((tmp_path / "icadapt").iterdir())) == 1


async def _events(client: AnyMoLeClient, job_id: str) -> list:
    return [st.event async for st in client.watch(job_id)]


@pytest.mark.parametrize("tokenizer", [False, True], ids=["no-tokenizer-files", "junk-checkpoint"])
async def test_unreadable_checkpoint_fails_the_job_not_the_server(make_server, connect, tmp_path, tiny, make_req, tokenizer):
    """The prior loads with the first video job: a checkpoint without its CLIP tokenizer files beside it, or
    one that is not a checkpoint, fails that job with FAILED_PRECONDITION saying what is wrong where, and the
    server goes on serving."""
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"not a checkpoint")
    if tokenizer:
        (tmp_path / "vocab.json").write_text('{"a</w>": 0}')
        (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    _, port = await make_server(pipeline=AnyMoLePipeline(VideoSettings(prior=str(ckpt), width=WIDTH, height=HEIGHT)))
    client, up = await _fox(connect, port)
    (video,) = [m for m in (await client.server_info()).capabilities.methods if m.name == "video"]
    assert video.available and "random weights" not in video.description
    events = [st.event async for st in client.inbetween(_request(client, up))]
    failed = events[-1]
    assert isinstance(failed, Failed) and failed.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    if tokenizer:
        assert f"{ckpt}: not a readable checkpoint" in failed.message and "--video-prior" in failed.message
    else:
        assert str(tmp_path) in failed.message and "vocab.json" in failed.message
    assert not any(isinstance(e, Preview) for e in events)
    small = await client.upload_character(tiny(5))
    after = [st.event async for st in client.inbetween(make_req(small))]
    assert isinstance(after[-1], Completed)


async def test_warm_up_loads_the_prior_when_the_server_starts(make_server, connect, tmp_path):
    pipeline = AnyMoLePipeline(dataclasses.replace(TINY, warmup=True))
    server, port = await make_server(pipeline=pipeline)
    assert server.warm_up is not None
    await asyncio.wait_for(server.warm_up, 60)
    assert "cpu" in pipeline.pool.priors  # before any job (on a CPU there is nothing to compile)
    client, up = await _fox(connect, port)
    events = [st.event async for st in client.inbetween(_request(client, up, keys=KEYS[:1]))]
    assert isinstance(events[-1], Completed)
    assert "load" not in {e.stage for e in events if isinstance(e, Progress)}  # the job found it loaded
    cold, _ = await make_server(pipeline=AnyMoLePipeline(TINY), data_dir=tmp_path / "cold")
    await asyncio.wait_for(cold.warm_up, 60)
    assert cold.jobs.pipeline.pool.priors == {}  # without warmup nothing loads before a job


async def test_a_device_whose_warm_up_fails_leaves_the_next_one_warming_up(caplog):
    pipeline = AnyMoLePipeline(dataclasses.replace(TINY, warmup=True))
    with caplog.at_level("ERROR", logger="anymole.pipeline"):
        await pipeline.warm_up(("nodevice", "cpu"))  # a device torch does not know fails its load
    assert list(pipeline.pool.priors) == ["cpu"]
    (record,) = [r for r in caplog.records if r.name == "anymole.pipeline.pool"]
    assert "nodevice" in record.getMessage() and record.exc_info is not None


async def test_warm_up_without_a_usable_prior_says_why(tmp_path, caplog):
    missing = tmp_path / "model.ckpt"
    pipeline = AnyMoLePipeline(VideoSettings(prior=str(missing), warmup=True))
    with caplog.at_level("WARNING", logger="anymole.pipeline"):
        await pipeline.warm_up(("cpu",))
    assert pipeline.pool.priors == {}
    (record,) = [r for r in caplog.records if r.name == "anymole.pipeline.pool"]
    assert "warm-up" in record.getMessage() and f"{missing} does not exist" in record.getMessage()


async def test_daemon_thread_work_settles_its_future_and_outlives_a_cancel_or_a_closed_loop():
    """`in_daemon_thread` (the warm-up's compile): the result or error reaches the awaiting task; after a cancel,
    or once the loop has closed, the thread still runs to its end and settles nothing, without an error."""
    assert await in_daemon_thread(lambda: 3) == 3
    with pytest.raises(ZeroDivisionError):
        await in_daemon_thread(lambda: 1 // 0)
    loop_errors: list[dict] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, ctx: loop_errors.append(ctx))
    thread_errors: list[threading.ExceptHookArgs] = []
    hook, threading.excepthook = threading.excepthook, thread_errors.append
    try:
        release, done = threading.Event(), threading.Event()

        def slow() -> int:
            assert release.wait(30)
            done.set()
            return 1

        cancelled = in_daemon_thread(slow)
        cancelled.cancel()
        release.set()
        assert await asyncio.to_thread(done.wait, 30)
        await asyncio.sleep(0.1)  # the thread's settle callback has run on this loop
        assert cancelled.cancelled() and loop_errors == []
        release.clear(), done.clear()
        await asyncio.to_thread(asyncio.run, _start(slow))  # returns, its loop closed, with the thread running
        release.set()
        assert await asyncio.to_thread(done.wait, 30)
        await asyncio.sleep(0.1)  # the thread has tried the closed loop
        assert thread_errors == []
    finally:
        threading.excepthook = hook
        asyncio.get_running_loop().set_exception_handler(None)


async def _start(fn: Callable[[], int]) -> None:
    in_daemon_thread(fn)


async def _cancel_while_loading(make_server, connect, pipeline, started: threading.Event):
    """Serve ``pipeline``, submit a one-key video job and cancel it once ``started`` says its prior's load
    began: ``(client, request, the cancelled job's events)``."""
    _server, port = await make_server(pipeline=pipeline)
    client, up = await _fox(connect, port)
    request = _request(client, up, keys=KEYS[:1])
    job_id, _ = await client.submit(request)
    assert await asyncio.to_thread(started.wait, 30)
    await client.cancel(job_id)
    return client, request, await _events(client, job_id)


async def test_cancel_while_the_prior_loads_stops_at_once_and_the_load_serves_the_next_job(make_server, connect):
    pipeline = AnyMoLePipeline(TINY)
    release, started, loads = threading.Event(), threading.Event(), []
    load = pipeline.pool.load

    def slow_load(device: str):  # a checkpoint that takes long to read
        loads.append(device)
        started.set()
        assert release.wait(30)
        return load(device)

    pipeline.pool.load = slow_load
    client, request, events = await _cancel_while_loading(make_server, connect, pipeline, started)
    assert isinstance(events[-1], Cancelled)  # while the load still runs
    assert not release.is_set() and "cpu" not in pipeline.pool.priors
    second, _ = await client.submit(request)
    await asyncio.sleep(0.2)
    release.set()
    ran = await _events(client, second)
    assert isinstance(ran[-1], Completed)
    assert loads == ["cpu"]  # the second job waited for the first one's load, not a load of its own


async def test_a_load_that_fails_after_its_job_was_cancelled_is_tried_again_by_the_next_job(make_server, connect):
    pipeline = AnyMoLePipeline(TINY)
    release, started, loads = threading.Event(), threading.Event(), []
    load = pipeline.pool.load

    def load_failing_first(device: str):  # the first read fails late (a disk error, say)
        loads.append(device)
        if len(loads) == 1:
            started.set()
            assert release.wait(30)
            raise OSError("read error")
        return load(device)

    pipeline.pool.load = load_failing_first
    client, request, events = await _cancel_while_loading(make_server, connect, pipeline, started)
    assert isinstance(events[-1], Cancelled)
    release.set()
    while not pipeline.pool.loading["cpu"].done():  # nobody waits for the failing load any more
        await asyncio.sleep(0.05)
    second, _ = await client.submit(request)
    assert isinstance((await _events(client, second))[-1], Completed)
    assert loads == ["cpu", "cpu"] and "cpu" in pipeline.pool.priors


def test_a_hung_prior_load_does_not_hold_the_event_loops_exit(tmp_path):
    """A prior load that never returns (a stalled disk or device): the server's stop interrupts the job waiting
    for it and ``asyncio.run`` (how `anymole serve` runs the server) returns while the load still hangs, in a
    daemon thread that cannot hold the process's exit either (before: the load ran in the loop's default
    executor, whose threads asyncio.run joins when its coroutine returns, so the loop never ended)."""
    pipeline = AnyMoLePipeline(TINY)
    entered, unblock, threads = threading.Event(), threading.Event(), []

    def hung_load(device: str):
        threads.append(threading.current_thread())
        entered.set()
        unblock.wait(120)
        raise OSError("the stalled read failed at last")

    pipeline.pool.load = hung_load

    async def submit(client: AnyMoLeClient) -> str:
        up = await client.upload_file(ASSETS / "Fox.glb")
        job_id, _ = await client.submit(_request(client, up, keys=KEYS[:1]))
        return job_id

    try:
        cfg = ServerConfig(port=0, data_dir=tmp_path / "d", devices=("cpu",))
        running, states = stop_while_a_stage_hangs(cfg, pipeline, submit, entered)
        assert not running and states == [JobState.INTERRUPTED]  # the loop ended
        (load,) = threads
        assert load.is_alive() and load.daemon  # the load still hangs, and cannot keep the process alive
    finally:
        unblock.set()


async def test_two_workers_on_one_device_take_turns_with_its_prior(make_server, connect):
    """Two workers may share a device (``--device cpu --device cpu``) and so one loaded prior, whose weights
    ICAdapt overwrites in place: a video job waits while another one holds the prior (saying so, once), stops
    at once when cancelled while it waits, and runs once the prior is free, leaving its weights as they were."""
    pipeline = AnyMoLePipeline(TINY)
    server, port = await make_server(pipeline=pipeline, devices=("cpu", "cpu"))
    client, up = await _fox(connect, port)
    loaded = await asyncio.to_thread(pipeline.pool.load, "cpu")
    before = {k: v.clone() for k, v in loaded.prior.state_dict().items()}
    request = _request(client, up, keys=KEYS[:1])
    holder = CancelToken()
    with loaded.exclusive(holder):  # another job holds the prior
        jobs = [(await client.submit(request))[0] for _ in range(2)]
        while any(server.jobs.info(j).state is not JobState.RUNNING for j in jobs):
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # time enough to start rendering, had they not waited
        for job_id in jobs:
            progress = [st.event for st in await server.jobs.events_after(job_id, 0) if isinstance(st.event, Progress)]
            assert [(p.stage, p.stage_fraction) for p in progress] == [("render", 0.0)]  # the wait, nothing after
            assert "waiting for this device's video prior" in progress[0].message
        await client.cancel(jobs[1])
        waited = await _events(client, jobs[1])
    assert isinstance(waited[-1], Cancelled)
    assert [(e.stage, e.stage_fraction) for e in waited if isinstance(e, Progress)] == [("render", 0.0)]
    ran = await _events(client, jobs[0])
    assert isinstance(ran[-1], Completed) and sum(isinstance(e, Preview) for e in ran) == 2
    assert all(torch.equal(v, loaded.prior.state_dict()[k]) for k, v in before.items())


async def test_out_of_memory_in_the_video_stage_says_what_to_change(make_server, connect, monkeypatch):
    import anymole.pipeline.methods.video

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore details")

    monkeypatch.setattr(anymole.pipeline.methods.video, "generate_video", out_of_memory)
    _, port = await make_server(pipeline=AnyMoLePipeline(TINY))
    client, up = await _fox(connect, port)
    failed = [st.event async for st in client.inbetween(_request(client, up, keys=KEYS[:1]))][-1]
    assert isinstance(failed, Failed) and failed.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert "Tried to allocate 2.00 GiB" in failed.message and "--video-size" in failed.message
    assert "more details" not in failed.message


async def test_cancel_while_the_video_is_stored_keeps_the_finished_job(make_server, connect):
    """The result is written and Completed logged with no await in between: a CancelJob that lands while the
    MP4 is stored finds a finished job, whose video stays downloadable."""
    server, port = await make_server(pipeline=AnyMoLePipeline(TINY))
    client, up = await _fox(connect, port)
    store = server.jobs.store
    save = store.save_video

    def save_and_cancel(job_id: str, video) -> None:
        server.jobs.cancel(job_id)  # a CancelJob arriving now
        save(job_id, video)

    store.save_video = save_and_cancel
    events = [st async for st in client.inbetween(_request(client, up, keys=KEYS[:1]))]
    assert isinstance(events[-1].event, Completed)
    assert server.jobs.info(events[0].job_id).state is JobState.COMPLETED
    assert (await client.video(events[0].job_id)).frame_count == 16


def test_a_device_with_its_prior_loaded_does_not_wait_for_another_devices_load():
    pipeline = AnyMoLePipeline(TINY)
    loaded = pipeline.pool.load("cpu")
    pool = ThreadPoolExecutor(1)
    with pipeline.pool.load_lock:  # another device's prior is loading (for 30 s at full size)
        again = pool.submit(pipeline.pool.load, "cpu").result(timeout=30)
    pool.shutdown()
    assert again is loaded
