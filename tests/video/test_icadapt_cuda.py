"""ICAdapt on CUDA: the optimiser-step loop never makes the host wait for the device (tiny prior)."""

from __future__ import annotations

import warnings

import pytest
import torch

from anymole.video.clips import ClipBank, gather_clips
from anymole.video.dynamicrafter import DynamiCrafterConfig, DynamiCrafterPrior
from anymole.video.icadapt import ICAdaptConfig, icadapt

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("mode", ["spatial", "lora_top"])
def test_icadapt_steps_after_the_first_never_synchronise(mode: str) -> None:
    prior = DynamiCrafterPrior(DynamiCrafterConfig.tiny(), device="cuda")
    frames = 24
    videos = torch.rand(2, 3, frames, 64, 64, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    bank = ClipBank(videos, gather_clips(2, frames, k=16, strides=(1,)), "a fox")
    # uncond_prob 0.3: most micro-batches drop some text and some image (the masked conditioning path)
    cfg = ICAdaptConfig(steps=6, mode=mode, batch_size=4, grad_accum=2, uncond_prob=0.3, gradient_checkpointing=False)

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
