"""`anymole.seeding`: a seeded span of torch's global RNG draws the seed's sequence, leaves the caller's state as it
was, and keeps another thread's fork of the RNG from landing between its seed and its draws."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import torch

from anymole.estimator import EstimatorConfig, SceneEstimator, build_backbone
from anymole.estimator.model import EstimatorNet
from anymole.seeding import GLOBAL_RNG_LOCK, seeded_global_rng


def test_a_seeded_span_draws_the_seeds_sequence_and_restores_the_callers_state():
    torch.manual_seed(123)
    expected_after = torch.rand(4)
    torch.manual_seed(123)
    with seeded_global_rng(7):
        inside = torch.rand(4)
    assert torch.equal(inside, torch.rand(4, generator=torch.Generator().manual_seed(7)))
    assert torch.equal(torch.rand(4), expected_after)  # as if the span had not run


def test_another_threads_fork_waits_for_the_span():
    order: list[str] = []
    inside = threading.Event()

    def other() -> None:
        inside.wait()
        with seeded_global_rng(None):  # blocks until the span below releases the lock
            order.append("other")
            torch.rand(100)  # would shift the span's draws were it let in

    t = threading.Thread(target=other)
    t.start()
    with seeded_global_rng(5):
        inside.set()
        t.join(timeout=0.2)  # not done: it waits for the lock
        order.append("span")
        draws = torch.rand(3)
    t.join()
    assert order == ["span", "other"]
    assert torch.equal(draws, torch.rand(3, generator=torch.Generator().manual_seed(5)))
    assert GLOBAL_RNG_LOCK.acquire(blocking=False)  # released by both
    GLOBAL_RNG_LOCK.release()


def test_loading_a_saved_estimator_draws_nothing_inside_a_seeded_span(tmp_path: Path) -> None:
    """A job loading its cached estimator (whose modules draw initial weights before the saved ones replace them)
    beside a job whose seeded span trains one: the span still draws its seed's sequence. Threads switch every
    microsecond so that a draw landing inside a span shows (29 of 2000 spans were shifted before)."""
    cfg = EstimatorConfig.draft()
    bbs = [build_backbone(b, cfg) for b in cfg.backbones]
    SceneEstimator(cfg, EstimatorNet(cfg, bbs, 5), bbs, (64, 64), 0.0, 1.0).save(tmp_path)

    def span() -> torch.Tensor:
        with seeded_global_rng(5):
            return torch.stack([torch.rand(8) for _ in range(4)])  # several draws: room for another thread's

    expected = span()
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            SceneEstimator.load(tmp_path)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    loader = threading.Thread(target=load)
    loader.start()
    try:
        shifted = sum(not torch.equal(span(), expected) for _ in range(2000))
    finally:
        stop.set()
        loader.join()
        sys.setswitchinterval(old)
    assert shifted == 0


def test_a_seeded_span_reseeds_no_gpu_generator_it_does_not_fork(monkeypatch):
    """A span forks and restores the CPU RNG and ``devices`` only, so it must seed only those: the estimator's
    span (no devices) starts while ICAdapt's dropout draws from the GPU's generator on the same device, and a
    reseed there, never restored, would make the adapted prior depend on when the estimator started (before:
    torch.manual_seed seeded every CUDA device). On the CPU: the calls that would reseed a GPU are recorded."""
    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: calls.append(("all", seed)))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: calls.append(("current", seed)))
    with seeded_global_rng(7):
        inside = torch.rand(4)
    assert torch.equal(inside, torch.rand(4, generator=torch.Generator().manual_seed(7)))
    assert calls == []
    if torch.cuda.is_available():  # with a GPU: its generator's state is untouched by a span that does not fork it
        monkeypatch.undo()
        before = torch.cuda.get_rng_state()
        with seeded_global_rng(7):
            torch.rand(4)
        assert torch.equal(torch.cuda.get_rng_state(), before)
