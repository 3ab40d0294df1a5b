"""Regional compilation (``torch.compile`` per UNet block) gives eager's numbers, inside gradient checkpoints.

The ``"eager"`` dynamo backend keeps these CPU tests fast: it traces and guards every block as a real compile
does (graph capture, recompiles per shape, the checkpoint wrapper outside) without generating code.
"""

from __future__ import annotations

import copy

import pytest
import torch
from nonzero_weights import fill_nonzero
from torch._dynamo.utils import counters

from anymole.bench.video import _variant_name
from anymole.errors import InvalidInput
from anymole.video.clips import ClipBank, gather_clips
from anymole.video.dynamicrafter import DynamiCrafterConfig, DynamiCrafterPrior
from anymole.video.icadapt import ICAdaptConfig, icadapt
from anymole.video.prior import VideoCondition
from anymole.video.unet3d import ResBlock, SpatialTransformer, TemporalTransformer

T = 4  # frames: the tiny UNet takes any clip length
WINDOW = 16  # frames of an ICAdapt clip (the prior's conditioning builds a 16-frame window)
BLOCKS = (ResBlock, SpatialTransformer, TemporalTransformer)


@pytest.fixture(scope="module")
def prior() -> DynamiCrafterPrior:
    """The tiny prior with non-zero values everywhere (fresh zero-initialised output layers hide gradients)."""
    model = DynamiCrafterPrior(DynamiCrafterConfig.tiny())
    fill_nonzero(model)
    return model


def _grads(prior: DynamiCrafterPrior, z: torch.Tensor, cond: VideoCondition) -> tuple[float, list[torch.Tensor]]:
    params = [p for p in prior.unet.parameters() if p.requires_grad]
    prior.zero_grad(set_to_none=True)
    loss = prior.predict(z, torch.tensor([400, 700]), cond).square().mean()
    loss.backward()
    return loss.item(), [p.grad.clone() for p in params]


def test_compiled_blocks_match_eager_loss_and_gradients_under_checkpointing(prior) -> None:
    gen = torch.Generator().manual_seed(1)
    cfg = prior.config.unet
    cond = VideoCondition(
        context=torch.randn(2, cfg.text_context_len + cfg.image_tokens_per_frame * T, cfg.context_dim, generator=gen),
        concat=torch.randn(2, 4, T, 8, 8, generator=gen),
        fps=torch.tensor([10.0, 30.0]),
    )
    z = torch.randn(2, 4, T, 8, 8, generator=gen)
    prior.trainable_parameters("spatial")
    prior.enable_gradient_checkpointing(True)
    eager_loss, eager = _grads(prior, z, cond)
    graphs = counters["stats"]["unique_graphs"]
    prior.compile_blocks(True, backend="eager")
    try:
        loss, grads = _grads(prior, z, cond)
        blocks = [m for m in prior.unet.modules() if isinstance(m, BLOCKS)]
        assert blocks and all("forward" in vars(m) for m in blocks)
        # One graph per distinct (class, input shape), at least one per class: the blocks really ran compiled.
        assert counters["stats"]["unique_graphs"] - graphs >= len(BLOCKS)
    finally:
        prior.compile_blocks(False)
        prior.enable_gradient_checkpointing(False)
        prior.zero_grad(set_to_none=True)
    assert not any("forward" in vars(m) for m in prior.unet.modules())  # eager forward restored
    assert loss == pytest.approx(eager_loss, rel=1e-6)
    assert len(grads) == len(eager) > 0 and any(g.abs().sum() > 0 for g in eager)
    for a, b in zip(grads, eager, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_icadapt_with_compiled_blocks_trains_like_eager(prior) -> None:
    videos = torch.rand(1, 3, WINDOW + 1, 64, 64, generator=torch.Generator().manual_seed(2))
    bank = ClipBank(videos, gather_clips(1, WINDOW + 1, k=WINDOW, strides=(1,)), "a character walking")
    base = ICAdaptConfig(steps=2, lr=1e-3, batch_size=2, grad_accum=1, autocast_dtype="fp32")
    eager, compiled = copy.deepcopy(prior), copy.deepcopy(prior)
    ref = icadapt(eager, bank, base)
    run = icadapt(compiled, bank, ICAdaptConfig(**{**vars(base), "compile_blocks": True, "compile_backend": "eager"}))
    assert run.losses == pytest.approx(ref.losses, rel=1e-5) and ref.losses[0] != ref.losses[1]
    for (name, a), b in zip(compiled.named_parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)
    assert not any("forward" in vars(m) for m in compiled.unet.modules())  # the prior leaves eager again


def test_turbo_compiles_under_a_memory_budget_once_and_trains_like_eager(prior) -> None:
    import torch._functorch.config as functorch_config
    from torch._dynamo import register_backend

    budgets: list[float] = []

    @register_backend
    def anymole_budget_probe(gm, example_inputs):  # what the partitioner would read while compiling
        budgets.append(functorch_config.activation_memory_budget)
        return gm.forward

    videos = torch.rand(1, 3, WINDOW + 1, 64, 64, generator=torch.Generator().manual_seed(3))
    bank = ClipBank(videos, gather_clips(1, WINDOW + 1, k=WINDOW, strides=(1,)), "a character walking")
    turbo = ICAdaptConfig.turbo(
        steps=2,
        lr=1e-3,
        batch_size=2,
        autocast_dtype="fp32",
        compile_backend="anymole_budget_probe",
        compile_memory_budget=0.8,
    )
    eager_cfg = ICAdaptConfig(**{**vars(turbo), "compile": False, "compile_memory_budget": 1.0})
    eager, compiled = copy.deepcopy(prior), copy.deepcopy(prior)
    try:
        ref = icadapt(eager, bank, eager_cfg)
        run = icadapt(compiled, bank, turbo)
        graphs = len(budgets)
        icadapt(compiled, bank, ICAdaptConfig(**{**vars(turbo), "steps": 1}))  # the next scene, same shapes
        assert len(budgets) == graphs  # its graphs are reused: the compile is paid once per process
    finally:
        torch._dynamo.reset()
    assert budgets and set(budgets) == {0.8}
    assert functorch_config.activation_memory_budget == 1.0  # restored after the run
    assert run.losses == pytest.approx(ref.losses, rel=1e-5) and ref.losses[0] != ref.losses[1]
    base = dict(prior.named_parameters())
    frozen = [(n.replace(".base_layer", ""), p) for n, p in compiled.named_parameters() if "lora_" not in n]
    assert all(torch.equal(p, base[n]) for n, p in frozen)  # peft wraps adapted layers as `.base_layer`
    lora_b = {n: p for n, p in compiled.named_parameters() if "lora_B" in n}
    trained = {n for n, p in lora_b.items() if p.abs().sum() > 0}
    top = len(prior.unet.output_blocks) - prior.config.unet.num_res_blocks - 1
    assert trained and all(int(n.split(".")[2]) >= top for n in trained)  # the full-resolution blocks
    assert all(n.startswith("unet.output_blocks.") for n in lora_b)  # adapters only where they train


def test_compile_blocks_options_are_validated_and_named() -> None:
    with pytest.raises(InvalidInput, match="compile_blocks"):
        ICAdaptConfig(compile=True, compile_blocks=True)
    with pytest.raises(InvalidInput, match="selective"):
        ICAdaptConfig(compile_blocks=True, selective_checkpointing=True)
    assert not ICAdaptConfig().compile_blocks and ICAdaptConfig().compile_backend == "inductor"
    assert _variant_name("decoder", "full", 8, "regional") == "decoder_b8x1_regional"
    assert _variant_name("spatial", "full", 8, True) == "spatial_b8x1_compiled"
