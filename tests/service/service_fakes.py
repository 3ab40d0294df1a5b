"""Test doubles of the service suite: a tiny synthetic character, request builders and `FakePipeline`, a
pipeline of scripted events whose pace the tests control."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import torch

from anymole.pipeline import (
    CancelToken,
    Completed,
    Event,
    JobSpec,
    MethodSpec,
    MotionChunk,
    ProgressReporter,
    run_in_thread,
)
from anymole.rig import Character, Keyframes, Motion, Skeleton, SkinnedMesh
from anymole.rig.quat import quat_normalize
from anymole.wire.proto.anymole.v1 import anymole_pb2 as pb


def tiny_character(num_joints: int = 5, with_mesh: bool = True, name: str = "chain") -> Character:
    """A chain of ``num_joints`` joints 0.1 m apart along +Y, optionally with a 2-triangle skinned quad."""
    g = torch.Generator().manual_seed(num_joints)
    offsets = torch.zeros(num_joints, 3)
    offsets[1:, 1] = 0.1
    skeleton = Skeleton(
        names=tuple(f"j{i}" for i in range(num_joints)),
        parents=(-1, *range(num_joints - 1)),
        offsets=offsets,
        rest_rotations=quat_normalize(torch.randn(num_joints, 4, generator=g)),
    )
    mesh = None
    if with_mesh:
        ibm = torch.eye(4).repeat(num_joints, 1, 1)
        ibm[:, 1, 3] = -0.1 * torch.arange(num_joints)
        mesh = SkinnedMesh(
            vertices=torch.tensor([[0.0, 0, 0], [0.1, 0, 0], [0.1, 0.2, 0], [0.0, 0.2, 0]]),
            faces=torch.tensor([[0, 1, 2], [0, 2, 3]]),
            joint_indices=torch.tensor([[0, 1], [0, 1], [1, 2], [1, 2]]),
            joint_weights=torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.25, 0.75], [0.0, 1.0]]),
            inverse_bind=ibm,
        )
    return Character(name=name, skeleton=skeleton, mesh=mesh)


def random_motion(frames: int, joints: int, seed: int = 0, fps: float = 30.0) -> Motion:
    g = torch.Generator().manual_seed(seed)
    return Motion(
        fps=fps,
        rotations=quat_normalize(torch.randn(frames, joints, 4, generator=g)),
        root_translation=torch.randn(frames, 3, generator=g),
    )


def make_request(
    character_id: str,
    joints: int,
    context_frames: int = 4,
    keys: tuple[int, ...] = (8, 12),
    seed: int = 0,
    **options: Any,
) -> pb.InbetweenRequest:
    """A valid request: random context and keys, timeline = last key + 1 frames."""
    from anymole.wire.convert import inbetween_request

    ctx = random_motion(context_frames, joints, seed)
    keyed = random_motion(len(keys), joints, seed + 1000)
    return inbetween_request(character_id, ctx, Keyframes(tuple(keys), keyed), **options)


class FakePipeline:
    """Scripted pipeline: ``steps`` progress steps of ``step_s`` seconds, one motion chunk per step.

    With ``blocking=True`` the steps run in a worker thread (like a GPU stage) and see cancellation only
    through the `ProgressReporter`; ``steps_after_cancel`` counts steps a cancelled stage still ran.
    The output is deterministic: every gap frame holds the first keyframe's pose.
    """

    def __init__(self, steps: int = 4, step_s: float = 0.0, blocking: bool = False) -> None:
        self.steps = steps
        self.step_s = step_s
        self.blocking = blocking
        self.started: list[str] = []
        self.devices: list[str] = []
        self.steps_after_cancel = 0
        self.stage_exited = threading.Event()
        self.release = asyncio.Event()  # blocks the "gate" method until set

    def methods(self) -> list[MethodSpec]:
        return [
            MethodSpec("fake", "scripted events", ("default", "other")),
            MethodSpec("gate", "waits for FakePipeline.release", ("default",)),
            MethodSpec("broken", "raises a bug", ("default",)),
            MethodSpec("offline", "needs weights", ("default",), available=False, unavailable_reason="no weights"),
        ]

    def _blocking_stage(self, token: CancelToken, report: ProgressReporter) -> None:
        try:
            for i in range(self.steps):
                if token.cancelled:
                    self.steps_after_cancel += 1
                time.sleep(self.step_s)
                report("fake", (i + 1) / self.steps)
        finally:
            self.stage_exited.set()

    async def run(
        self, spec: JobSpec, token: CancelToken, report: ProgressReporter, device: str
    ) -> AsyncIterator[Event]:
        self.started.append(spec.label)
        self.devices.append(device)
        if spec.method == "broken":
            raise ZeroDivisionError("scripted bug")
        if spec.method == "gate":
            await self.release.wait()
        report.set_plan([("fake", 1.0)])
        c, t = spec.context_frames, spec.total_frames
        rot = spec.keyframes.poses.rotations[0].expand(t - c, -1, -1)
        root = spec.keyframes.poses.root_translation[0].expand(t - c, -1)
        if self.blocking:
            await run_in_thread(token, self._blocking_stage, token, report)
        else:
            for i in range(self.steps):
                await token.sleep(self.step_s)
                report("fake", (i + 1) / self.steps)
        yield MotionChunk(c, rot.clone(), root.clone())
        full = Motion(
            fps=spec.context.fps,
            rotations=torch.cat([spec.context.rotations, rot]),
            root_translation=torch.cat([spec.context.root_translation, root]),
        )
        yield Completed("fake done", (("fake", 0.0),), {"steps": float(self.steps)}, t, full)


class HungStage(FakePipeline):
    """A blocking `FakePipeline` whose stage first hangs in one call (a hung device: no report, so no cancel
    reaches it) until ``unblock`` is set; ``entered`` is set once it hangs and ``threads`` holds its thread."""

    def __init__(self) -> None:
        super().__init__(steps=1, blocking=True)
        self.entered, self.unblock = threading.Event(), threading.Event()
        self.threads: list[threading.Thread] = []

    def _blocking_stage(self, token: CancelToken, report: ProgressReporter) -> None:
        self.threads.append(threading.current_thread())
        self.entered.set()
        self.unblock.wait(120)
        super()._blocking_stage(token, report)


async def collect(stream):
    """Every message of a server stream."""
    return [m async for m in stream]


async def wait_for(predicate, timeout=10.0):
    """Poll ``predicate()`` until it holds; TimeoutError after ``timeout`` s."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def stop_while_a_stage_hangs(
    config: Any, pipeline: Any, submit: Callable[[Any], Awaitable[str]], entered: threading.Event, join_s: float = 30.0
) -> tuple[bool, list[Any]]:
    """Serve ``pipeline`` under ``asyncio.run`` in a daemon thread (as `anymole serve` runs the server), submit one
    job through a real client (``submit(client)`` returns its id), wait for ``entered`` (the hung stage or load has
    begun), stop the server abandoning hung stages after 0.2 s, and wait up to ``join_s`` for ``asyncio.run`` to
    return.

    Returns:
        ``(still running, [the job's state after the stop])`` (the list is empty if the loop never got there).
    """
    from anymole.client import AnyMoLeClient
    from anymole.service.server import build_server

    states: list[Any] = []

    async def serve_one_job() -> None:
        server, port = build_server(config, pipeline)
        await server.start()
        async with await AnyMoLeClient.connect(f"127.0.0.1:{port}") as client:
            job_id = await submit(client)
            assert await asyncio.to_thread(entered.wait, 60)
        await server.stop(0.0, stage_stop=0.2)
        states.append(server.jobs.info(job_id).state)

    runner = threading.Thread(target=asyncio.run, args=(serve_one_job(),), daemon=True)
    runner.start()
    runner.join(join_s)
    return runner.is_alive(), states
