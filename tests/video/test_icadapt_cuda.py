"""ICAdapt on CUDA (tiny prior): the optimiser-step loop never makes the host wait for the device, and the dropout
draws from the run's own stream: the seed alone sets the adapted weights, and the run moves no global RNG."""

from __future__ import annotations

import sys
import threading
import warnings
from dataclasses import replace

import pytest
import torch
from nonzero_weights import fill_nonzero

from anymole.video.clips import ClipBank, gather_clips
from anymole.video.dynamicrafter import DynamiCrafterConfig, DynamiCrafterPrior
from anymole.video.icadapt import ICAdaptConfig, icadapt

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("mode", ["spatial", "lora_top"])
@pytest.mark.parametrize("dropout", [0.0, 0.3], ids=["no_dropout", "dropout"])
def test_icadapt_steps_after_the_first_never_synchronise(mode: str, dropout: float) -> None:
    """With dropout, also with checkpointing: its masks, drawn and replayed from the run's stream, never wait."""
    tiny = DynamiCrafterConfig.tiny()
    prior = DynamiCrafterPrior(replace(tiny, unet=replace(tiny.unet, dropout=dropout)), device="cuda")
    frames = 24
    videos = torch.rand(2, 3, frames, 64, 64, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    bank = ClipBank(videos, gather_clips(2, frames, k=16, strides=(1,)), "a fox")
    # uncond_prob 0.3: most micro-batches drop some text and some image (the masked conditioning path)
    cfg = ICAdaptConfig(steps=6, mode=mode, batch_size=4, grad_accum=2, uncond_prob=0.3, gradient_checkpointing=dropout > 0)

    def on_step(stage: str, fraction: float, **_: object) -> None:
        # steps 2.. run under sync debugging; it is off again before the run reads its losses back
        torch.cuda.set_sync_debug_mode("warn" if fraction < 1.0 else "default")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = icadapt(prior, bank, cfg, on_step=on_step)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    # torch warns of each synchronising call ("called a synchronizing CUDA operation"); the notice that the
    # debug mode is a prototype, given when it is switched on, also says "Synchronization" and is no host wait.
    syncs = [str(w.message) for w in caught if "called a synchronizing" in str(w.message)]
    assert syncs == []
    assert len(result.losses) == 6 and all(loss > 0 for loss in result.losses)


def _dropout_prior() -> DynamiCrafterPrior:
    """The tiny prior with dropout 0.3 and non-zero values everywhere (the zero-initialised output convs of a fresh
    prior sit right after most dropouts and would hide the masks from the gradients); the same weights each call."""
    tiny = DynamiCrafterConfig.tiny()
    prior = DynamiCrafterPrior(replace(tiny, unet=replace(tiny.unet, dropout=0.3)), device="cuda")
    fill_nonzero(prior)
    return prior


@pytest.mark.parametrize("selective", [False, True], ids=["full_ckpt", "selective_ckpt"])
def test_icadapt_dropout_on_cuda_is_the_seeds_alone_and_moves_no_global_rng(selective: bool, record_dropout) -> None:
    """Two runs with one seed draw the same dropout masks while another thread seeds and draws from the global CPU
    and CUDA RNGs without a lock; each checkpoint recomputation zeroes what its forward zeroed; that thread's draws
    stay its seeds' sequences; the run leaves both global RNGs as it found them. Before: the UNet's dropout drew
    from the device's default generator (unseeded, shared with every thread), and checkpointing's recomputation, on
    autograd's device thread, swapped the global CPU and CUDA states in and out without the lock. (The masks, not
    the weights, are compared: cuDNN and attention kernels need not be bit-reproducible.)"""
    frames = 24
    videos = torch.rand(2, 3, frames, 64, 64, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    bank = ClipBank(videos, gather_clips(2, frames, k=16, strides=(1,)), "a fox")
    cfg = ICAdaptConfig(steps=3, lr=3e-3, batch_size=2, grad_accum=2, mode="decoder" if selective else "spatial",
                        gradient_checkpointing=True, selective_checkpointing=selective)  # fmt: skip

    def adapt(seed: int, prior: DynamiCrafterPrior) -> list[list[torch.Tensor]]:
        drops = record_dropout(prior)
        icadapt(prior, bank, replace(cfg, seed=seed))
        return list(drops.values())

    prior = _dropout_prior()  # before the states are read: building draws initial weights from the global RNGs
    torch.manual_seed(1)
    cpu_state, cuda_state = torch.get_rng_state(), torch.cuda.get_rng_state()
    alone = adapt(cfg.seed, prior)
    assert torch.equal(torch.get_rng_state(), cpu_state)
    assert torch.equal(torch.cuda.get_rng_state(), cuda_state)

    stop = threading.Event()
    moved: list[int] = []

    def other() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            torch.manual_seed(n)  # seeds the CPU and every CUDA generator
            cpu = torch.stack([torch.rand(16) for _ in range(4)])
            gpu = torch.stack([torch.rand(16, device="cuda") for _ in range(4)])
            cpu_ref = torch.rand(4, 16, generator=torch.Generator().manual_seed(n))
            g = torch.Generator("cuda").manual_seed(n)
            gpu_ref = torch.stack([torch.rand(16, device="cuda", generator=g) for _ in range(4)])
            if not (torch.equal(cpu, cpu_ref) and torch.equal(gpu, gpu_ref)):
                moved.append(n)

    prior = _dropout_prior()  # built before the thread starts: building draws initial weights from the global RNG
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    thread = threading.Thread(target=other)
    thread.start()
    try:
        beside = adapt(cfg.seed, prior)
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(old)
    assert moved == []
    passes = cfg.steps * cfg.grad_accum
    pairs = [(c[i], c[i + 1]) for c in alone if len(c) == 2 * passes for i in range(0, 2 * passes, 2)]
    assert len(pairs) > 20 and all(torch.equal(f, r) and f.any() for f, r in pairs)
    first, again = ([m for calls in run for m in calls] for run in (alone, beside))
    assert len(first) == len(again) and all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    other_seed = [m for calls in adapt(cfg.seed + 7, _dropout_prior()) for m in calls]
    assert len(other_seed) == len(first) and not any(torch.equal(a, b) for a, b in zip(first, other_seed, strict=True))
