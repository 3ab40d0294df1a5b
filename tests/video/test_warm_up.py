"""`generate.warm_up`: a server's start-up compile that jobs then reuse, leaving the prior as it was."""

from __future__ import annotations

import torch
from torch._dynamo import register_backend

from anymole.video.clips import ClipBank, gather_clips
from anymole.video.dynamicrafter import DynamiCrafterConfig, DynamiCrafterPrior
from anymole.video.generate import VideoJobConfig, warm_up
from anymole.video.icadapt import ICAdaptConfig, icadapt

graphs: list[int] = []


@register_backend
def anymole_warm_up_probe(gm, example_inputs):  # counts the graphs dynamo hands to a compiler
    graphs.append(len(example_inputs))
    return gm.forward


def test_warm_up_compiles_what_a_job_then_reuses_and_restores_the_weights() -> None:
    prior = DynamiCrafterPrior(DynamiCrafterConfig.tiny())
    before = {k: v.clone() for k, v in prior.state_dict().items()}
    turbo = ICAdaptConfig.turbo(steps=2, autocast_dtype="fp32", compile_backend="anymole_warm_up_probe")
    cfg = VideoJobConfig(width=64, height=64, icadapt=turbo)
    graphs.clear()
    try:
        seconds = warm_up(prior, cfg)
        compiled = len(graphs)
        now = prior.state_dict()
        lora = [k for k in now if "lora_" in k]
        base = {k.replace(".base_layer", ""): v for k, v in now.items() if "lora_" not in k}  # peft's renaming
        assert lora and base.keys() == before.keys()
        assert all(torch.equal(base[k], before[k]) for k in before)  # base weights as they were
        assert all(float(now[k].abs().sum()) == 0 for k in lora if "lora_B" in k)  # adapters at identity
        assert compiled > 0 and seconds > 0
        # a job's ICAdapt: 4 views of another scene and caption, the same step shape: no new compile
        frames = 33
        videos = torch.rand(4, 3, frames, 64, 64, generator=torch.Generator().manual_seed(1))
        bank = ClipBank(videos, gather_clips(4, frames, k=16, strides=(1, 2)), "a fox trotting")
        run = icadapt(prior, bank, turbo)
        assert len(graphs) == compiled and len(run.losses) == 2
    finally:
        torch._dynamo.reset()
