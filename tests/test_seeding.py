"""`anymole.seeding`: a seeded span of torch's global RNG draws the seed's sequence, leaves the caller's state as it
was, and keeps another thread's fork of the RNG from landing between its seed and its draws."""

from __future__ import annotations

import threading

import torch

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
