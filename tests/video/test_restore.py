"""The weights a video job overwrites are put back bit for bit, from host copies kept across jobs
(`anymole.video.snapshot`)."""

from __future__ import annotations

import torch

from anymole.video.dynamicrafter import DynamiCrafterConfig, DynamiCrafterPrior
from anymole.video.snapshot import _host_copies, restore, snapshot


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_same(module: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    now = module.state_dict()
    assert sorted(now) == sorted(expected)
    for k, v in expected.items():
        assert now[k].dtype == v.dtype and torch.equal(now[k], v), k


def _job(prior, mode: str, seed: int) -> None:
    """What a job does to the prior between snapshot and restore: ICAdapt's optimiser steps, in place."""
    saved = snapshot(prior, mode)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in prior.trainable_parameters(mode):
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
    restore(saved)


def test_a_job_leaves_the_weights_bit_for_bit_and_frozen(conv_prior) -> None:
    before = _weights(conv_prior)
    _job(conv_prior, "spatial", seed=0)
    _assert_same(conv_prior, before)
    assert not any(p.requires_grad for p in conv_prior.trainable_parameters("spatial"))
    _job(conv_prior, "spatial", seed=1)  # the second job reuses the copies
    _job(conv_prior, "full", seed=2)  # another mode: the temporal layers join, the rest is reused
    _assert_same(conv_prior, before)
    assert len(_host_copies[conv_prior]) == len(list(conv_prior.parameters()))


def test_the_host_copies_are_reused_not_read_again(conv_prior) -> None:
    _job(conv_prior, "spatial", seed=0)
    copies = _host_copies[conv_prior]
    weight = conv_prior.spatial.weight
    # Mark the kept copy: a snapshot that reused it restores the mark, one that read the prior again would not.
    copies[id(weight)].value.fill_(0.25)
    _job(conv_prior, "spatial", seed=1)
    assert torch.equal(weight, torch.full_like(weight, 0.25))


def test_weights_changed_between_jobs_are_snapshotted_again(make_conv_prior) -> None:
    prior, other = make_conv_prior(), make_conv_prior()
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(-2.0)
    _job(prior, "spatial", seed=0)
    prior.load_state_dict(other.state_dict())  # another checkpoint, copied in place
    after_load = _weights(prior)
    _job(prior, "spatial", seed=1)
    _assert_same(prior, after_load)

    prior.double()  # new storages, another dtype
    as_double = _weights(prior)
    _job(prior, "spatial", seed=2)
    _assert_same(prior, as_double)

    prior.load_state_dict({k: v.float() + 1 for k, v in other.state_dict().items()}, assign=True)  # new parameters
    assigned = _weights(prior)
    _job(prior, "full", seed=3)
    _assert_same(prior, assigned)
    # The copies of parameters that were replaced are dropped with them.
    assert len(_host_copies[prior]) == len(list(prior.parameters()))


def test_lora_jobs_put_the_adapters_back_at_their_start() -> None:
    torch.manual_seed(0)
    prior = DynamiCrafterPrior(DynamiCrafterConfig.tiny()).eval()
    base = _weights(prior)
    _job(prior, "lora", seed=0)  # the first LoRA job injects the adapters (at their identity start)
    after = _weights(prior)
    adapters = {k: v for k, v in after.items() if "lora_" in k}
    assert adapters and all(torch.equal(v, torch.zeros_like(v)) for k, v in adapters.items() if "lora_B" in k)
    # the base weights are untouched (peft moves a wrapped layer's weights under `base_layer`)
    unwrapped = {k.replace(".base_layer", ""): v for k, v in after.items() if "lora_" not in k}
    assert sorted(unwrapped) == sorted(base) and all(torch.equal(unwrapped[k], v) for k, v in base.items())
    _job(prior, "lora", seed=1)
    _job(prior, "spatial", seed=2)
    _job(prior, "lora_decoder", seed=3)
    _assert_same(prior, after)
