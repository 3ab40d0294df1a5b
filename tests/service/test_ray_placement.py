"""Placement of jobs on Ray workers (`anymole.service.ray_placement`, issue 19.1), without Ray: the worker
holding the scene first, then the least used free one; lost and busy workers take nothing; scene keys follow
the character and context only, and only for methods with per-scene caches."""

from __future__ import annotations

import dataclasses

import torch
from hypothesis import given
from hypothesis import strategies as st
from service_fakes import random_motion, tiny_character

from anymole.pipeline import JobSpec
from anymole.rig import Keyframes
from anymole.service.ray_placement import SceneMemory, WorkerLoad, choose_worker, scene_key


def _spec(method: str = "anymole", seed: int = 0, character_id: str = "sha256:a") -> JobSpec:
    context = random_motion(10, 5, seed=seed)
    keys = Keyframes((12,), random_motion(1, 5, seed=99))
    return JobSpec(character_id, tiny_character(), context, keys, 13, method=method)


def test_the_worker_holding_the_scene_wins_over_a_less_used_one():
    workers = [WorkerLoad("a", jobs_done=5, scenes=frozenset({"s"})), WorkerLoad("b", jobs_done=0)]
    assert choose_worker("s", workers) == "a"
    assert choose_worker("t", workers) == "b"  # another scene: the least used
    assert choose_worker(None, workers) == "b"  # no scene (interp)


def test_a_busy_or_lost_holder_gives_way_to_a_free_worker_and_none_free_means_wait():
    holder = WorkerLoad("a", scenes=frozenset({"s"}))
    other = WorkerLoad("b", jobs_done=3)
    assert choose_worker("s", [dataclasses.replace(holder, busy=True), other]) == "b"
    assert choose_worker("s", [dataclasses.replace(holder, alive=False), other]) == "b"
    assert choose_worker("s", [dataclasses.replace(holder, busy=True), dataclasses.replace(other, alive=False)]) is None
    assert choose_worker("s", []) is None


@given(st.lists(st.tuples(st.booleans(), st.booleans(), st.integers(0, 5), st.booleans()), max_size=6))
def test_the_choice_is_always_a_free_live_worker_preferring_holders_then_fewest_jobs(rows):
    workers = [WorkerLoad(f"w{i}", alive, busy, done, frozenset({"s"}) if holds else frozenset())
               for i, (alive, busy, done, holds) in enumerate(rows)]  # fmt: skip
    free = [w for w in workers if w.alive and not w.busy]
    name = choose_worker("s", workers)
    if not free:
        assert name is None
        return
    chosen = next(w for w in workers if w.name == name)
    assert chosen in free
    if any("s" in w.scenes for w in free):
        assert "s" in chosen.scenes
        free = [w for w in free if "s" in w.scenes]
    assert chosen.jobs_done == min(w.jobs_done for w in free)
    assert chosen is next(w for w in free if w.jobs_done == chosen.jobs_done)  # ties: the first listed


def test_scene_keys_follow_character_and_context_only_and_only_for_cached_methods():
    base = scene_key(_spec())
    assert base is not None and base == scene_key(_spec())
    assert scene_key(dataclasses.replace(_spec(), keyframes=Keyframes((11,), random_motion(1, 5, seed=7)))) == base
    assert scene_key(_spec(method="video")) == base  # the video method's adapted prior is the same artefact
    assert scene_key(_spec(seed=1)) != base
    assert scene_key(_spec(character_id="sha256:b")) != base
    spec = _spec()
    nudged = dataclasses.replace(spec.context, rotations=spec.context.rotations.clone())
    nudged.rotations[3, 2, 0] += 1e-6
    assert scene_key(dataclasses.replace(spec, context=nudged)) != base
    assert scene_key(_spec(method="interp")) is None
    assert torch.equal(spec.context.rotations, _spec().context.rotations)  # keys read, never change, the spec


def test_scene_memory_keeps_the_most_recent_scenes_per_worker():
    memory = SceneMemory(limit=2)
    for scene in ("s1", "s2", "s1", "s3", None):
        memory.add("a", scene)
    assert memory.of("a") == {"s1", "s3"}  # s2 was the least recent
    assert memory.of("b") == frozenset()
