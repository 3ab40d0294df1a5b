"""ICAdapt's dropout draws from the run's own stream (`anymole.video.dropout`): the same seed adapts the prior to
the same weights whatever other threads draw from torch's global RNG meanwhile, the run moves no other thread's
RNG, and activation checkpointing's recomputation replays the forward's masks (eager and compiled blocks)."""

from __future__ import annotations

import contextlib
import copy
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest
import torch
from nonzero_weights import fill_nonzero
from torch._dynamo.utils import counters

from anymole.video.clips import ClipBank, gather_clips
from anymole.video.dropout import Dropout, DropoutRng, hashed_keep_mask
from anymole.video.dynamicrafter import DynamiCrafterConfig, DynamiCrafterPrior
from anymole.video.icadapt import ICAdaptConfig, icadapt
from anymole.video.schedule import DDIMSchedule

SIZE = 32  # pixels: 4×4 latents keep the CPU runs short
P = 0.3  # dropout of the test prior (0 in `tiny`)


@pytest.fixture(scope="module")
def base() -> DynamiCrafterPrior:
    """The tiny prior with dropout ``P`` and non-zero values everywhere: the zero-initialised output convs of a
    fresh prior sit right after most dropouts and would hide the masks from the gradients."""
    tiny = DynamiCrafterConfig.tiny()
    model = DynamiCrafterPrior(replace(tiny, unet=replace(tiny.unet, dropout=P))).eval()
    fill_nonzero(model)
    return model


@pytest.fixture(scope="module")
def bank() -> ClipBank:
    frames = 17
    video = torch.full((1, 3, frames, SIZE, SIZE), 0.3)
    for f in range(frames):
        video[:, :, f, 8:20, f : f + 8] = 0.9
    return ClipBank(video, gather_clips(1, frames, k=16, strides=(1,)), "a box sliding")


CFG = ICAdaptConfig(steps=2, lr=3e-3, batch_size=2, grad_accum=1, mode="spatial", autocast_dtype="fp32",
                    gradient_checkpointing=True)  # fmt: skip


def _adapt(base: DynamiCrafterPrior, bank: ClipBank, cfg: ICAdaptConfig) -> list[torch.Tensor]:
    prior = copy.deepcopy(base)
    icadapt(prior, bank, cfg, schedule=DDIMSchedule(**prior.config.scheduler_kwargs()))
    return [p.detach().clone() for p in prior.trainable_parameters(cfg.mode)]


def _without_dropout(base: DynamiCrafterPrior) -> DynamiCrafterPrior:
    prior = copy.deepcopy(base)
    for layer in prior.modules():
        if isinstance(layer, Dropout):
            layer.p = 0.0
    return prior


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.fixture
def fast_thread_switches() -> Iterator[None]:
    """Threads switch every microsecond, so that a draw landing inside another thread's work shows."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


@contextlib.contextmanager
def _a_thread_seeding_and_drawing() -> Iterator[list[int]]:
    """Another thread seeds torch's global CPU RNG and draws from it, without any lock, while the block runs;
    yields the seeds whose draws came out other than their sequence (filled as the thread runs)."""
    stop = threading.Event()
    moved: list[int] = []

    def other() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            torch.manual_seed(n)
            draws = torch.stack([torch.rand(16) for _ in range(4)])
            if not torch.equal(draws, torch.rand(4, 16, generator=torch.Generator().manual_seed(n))):
                moved.append(n)

    thread = threading.Thread(target=other)
    thread.start()
    try:
        yield moved
    finally:
        stop.set()
        thread.join()


def test_a_thread_drawing_from_the_global_rng_neither_moves_icadapt_nor_is_moved(base, bank, fast_thread_switches):
    """Another thread seeds and draws from torch's global CPU RNG, without any lock, all through an ICAdapt run:
    the run adapts the prior exactly as it does alone, and every one of the thread's seeded draws is its seed's
    sequence (before: the run swapped its stream into the global RNG for each micro-step, so the thread's draws
    landed in the run's stream and came out of it)."""
    alone = _adapt(base, bank, CFG)
    with _a_thread_seeding_and_drawing() as moved:
        beside = _adapt(base, bank, CFG)
    assert _same(beside, alone)
    assert moved == []


def test_the_run_leaves_the_global_rng_where_it_was(base, bank):
    torch.manual_seed(5)
    state = torch.get_rng_state()
    _adapt(base, bank, CFG)
    assert torch.equal(torch.get_rng_state(), state)


def test_the_seed_sets_the_weights_and_the_masks_are_live(base, bank):
    alone = _adapt(base, bank, CFG)
    assert _same(_adapt(base, bank, CFG), alone)
    assert not _same(_adapt(_without_dropout(base), bank, CFG), alone)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"mode": "decoder", "selective_checkpointing": True}, {"compile_blocks": True, "compile_backend": "eager"}],
    ids=["full", "selective", "compiled_blocks"],
)
def test_checkpoint_recomputation_replays_the_forward_masks(base, bank, overrides):
    """Gradients from a recomputation that drew other masks than its forward would move the weights elsewhere:
    with checkpointing the run adapts the prior exactly as without (compiled blocks: their hashed masks)."""
    cfg = replace(CFG, **overrides)
    with torch._dynamo.config.patch(recompile_limit=64):  # the first run compiles each block shape once
        checkpointed = _adapt(base, bank, cfg)
        plain = _adapt(base, bank, replace(cfg, gradient_checkpointing=False, selective_checkpointing=False))
    assert _same(checkpointed, plain)


def test_recomputed_masks_are_the_forwards_and_two_runs_draw_the_same(base, bank, record_dropout):
    """The masks themselves: each recomputation zeroes what its forward zeroed, and a second run with the seed
    draws every mask again; another seed draws others."""
    runs = []
    for seed in (CFG.seed, CFG.seed, CFG.seed + 7):
        prior = copy.deepcopy(base)
        drops = record_dropout(prior)
        icadapt(prior, bank, replace(CFG, seed=seed), schedule=DDIMSchedule(**prior.config.scheduler_kwargs()))
        runs.append(drops)
    passes = CFG.steps * CFG.grad_accum
    pairs = [(c[i], c[i + 1]) for c in runs[0].values() if len(c) == 2 * passes for i in range(0, 2 * passes, 2)]
    assert len(pairs) > 20 and all(torch.equal(f, r) and f.any() for f, r in pairs)
    first, again, other = ([m for calls in run.values() for m in calls] for run in runs)
    assert len(first) == len(again) == len(other)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not any(torch.equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize(
    "overrides",
    [{"compile_blocks": True}, {"compile": True, "gradient_checkpointing": False}],
    ids=["compiled_blocks", "compiled_denoiser"],
)
def test_compiled_dropout_is_the_seeds_alone(base, bank, overrides, fast_thread_switches):
    """Compiled code draws its masks from the run's keys: the seed sets the weights, beside a thread drawing from
    the global RNG, and the masks are live (without dropout the prior adapts elsewhere)."""
    cfg = replace(CFG, compile_backend="eager", **overrides)
    with torch._dynamo.config.patch(recompile_limit=64):
        alone = _adapt(base, bank, cfg)
        with _a_thread_seeding_and_drawing():
            beside = _adapt(base, bank, cfg)
        elsewhere = _adapt(_without_dropout(base), bank, cfg)
    assert _same(beside, alone)
    assert not _same(elsewhere, alone)


def test_compiled_blocks_compile_once_for_every_key(base, bank):
    """The compiled path's keys are tensors redrawn in place each forward pass: no recompile a step."""
    cfg = replace(CFG, steps=3, compile_blocks=True, compile_backend="eager")
    graphs: list[int] = []
    prior = copy.deepcopy(base)
    torch._dynamo.reset()
    icadapt(prior, bank, cfg, on_step=lambda *_, **__: graphs.append(counters["stats"]["unique_graphs"]))
    assert graphs[0] > 0 and graphs[-1] == graphs[0]


def test_a_checkpointed_dropout_layer_replays_its_mask_and_leaves_the_stream_where_the_forward_did():
    rng = DropoutRng(3, torch.device("cpu"))
    layer = Dropout(0.5).train()
    rng.attach([layer])
    x = torch.ones(1000, requires_grad=True)
    forward, recompute = rng.replay_contexts()
    with forward:
        first = layer(x)
    after_forward = rng.generator.get_state()
    with recompute:
        again = layer(x)
    assert torch.equal(again, first)
    assert torch.equal(rng.generator.get_state(), after_forward)
    assert not torch.equal(layer(x), first)  # the next draw moves on
    assert set(first.unique().tolist()) == {0.0, 2.0}  # kept elements scaled by 1 / (1 − p)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_hashed_masks_keep_one_minus_p_and_differ_between_keys(p):
    shape = torch.Size((64, 32, 50))  # 102 400 elements
    a = hashed_keep_mask(torch.tensor([1, 2]), shape, p)
    b = hashed_keep_mask(torch.tensor([1, 3]), shape, p)
    c = hashed_keep_mask(torch.tensor([2, 2]), shape, p)
    assert a.shape == shape and a.dtype == torch.bool
    for mask in (a, b, c):
        assert abs(mask.float().mean().item() - (1 - p)) < 0.01  # σ ≈ 0.0016
    # independent masks agree on p² + (1 − p)² of the elements
    for other in (b, c):
        assert abs((a == other).float().mean().item() - (p**2 + (1 - p) ** 2)) < 0.01
    assert torch.equal(hashed_keep_mask(torch.tensor([1, 2]), shape, p), a)
    # neighbours are not correlated: a kept element's right neighbour is kept with probability 1 − p
    kept = a.flatten()
    assert abs(kept[1:][kept[:-1]].float().mean().item() - (1 - p)) < 0.01


@pytest.mark.parametrize("compile_option", ["compile_blocks", "compile"])
def test_a_run_that_fails_before_its_first_step_leaves_the_prior_as_it_found_it(base, bank, compile_option):
    """The pool's prior serves the jobs after this one: a run that raises while it sets up (here torch.compile
    refusing a backend) must not leave it training (dropout live in their sampling), checkpointing, or drawing
    its dropout from this run's stream (before: those were set ahead of the ``try`` whose ``finally`` undoes them)."""
    prior = copy.deepcopy(base)
    cfg = replace(CFG, compile_backend="no_such_backend", **{compile_option: True})
    with pytest.raises(Exception, match="no_such_backend"):
        icadapt(prior, bank, cfg, schedule=DDIMSchedule(**prior.config.scheduler_kwargs()))
    assert not prior.training
    assert not any(getattr(m, "gradient_checkpointing", False) for m in prior.modules())
    assert all(layer.rng is None for layer in prior.modules() if isinstance(layer, Dropout))
