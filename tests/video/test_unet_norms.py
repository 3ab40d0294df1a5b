"""The UNet's norms: float32 statistics, the input's dtype out, under autocast too."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from anymole.video.unet3d import GroupNorm, LayerNorm


def _affine(module: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        module.weight.copy_(1 + 0.1 * torch.randn(module.weight.shape, generator=g))
        module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=g))


@pytest.mark.parametrize("autocast", [False, True])
def test_group_norm_keeps_bf16_and_matches_float32(autocast: bool) -> None:
    norm = GroupNorm(4, 16)
    _affine(norm)
    x = 3 + 2 * torch.randn(6, 16, 5, 7, generator=torch.Generator().manual_seed(1))
    ref = F.group_norm(x, 4, norm.weight, norm.bias, norm.eps)
    with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
        out = norm(x.bfloat16())
    assert out.dtype == torch.bfloat16
    # bf16 input rounding (~2^-9 relative of |x| ≈ 5) through rstd ≈ 0.5, plus the output rounding
    torch.testing.assert_close(out.float(), ref, atol=0.03, rtol=0.01)
    torch.testing.assert_close(norm(x), ref)  # float32 in → float32 math


@pytest.mark.parametrize("autocast", [False, True])
def test_layer_norm_keeps_bf16_and_matches_float32(autocast: bool) -> None:
    norm = LayerNorm(32)
    _affine(norm)
    x = torch.randn(3, 9, 32, generator=torch.Generator().manual_seed(2))
    ref = F.layer_norm(x, (32,), norm.weight, norm.bias, norm.eps)
    with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
        out = norm(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=0.03, rtol=0.01)
    torch.testing.assert_close(norm(x), ref)


def test_norm_gradients_flow_in_bf16() -> None:
    norm = GroupNorm(2, 8)
    x = torch.randn(2, 8, 3, 3, dtype=torch.bfloat16, requires_grad=True)
    with torch.autocast("cpu", torch.bfloat16):
        norm(x).float().square().sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.bfloat16
    assert norm.weight.grad is not None and norm.weight.grad.dtype == torch.float32
    assert float(norm.weight.grad.abs().sum()) > 0


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), spread=st.floats(0.1, 1.0), shift=st.floats(-4.0, 4.0))
def test_half_norms_are_within_the_documented_bound_of_float32(seed: int, spread: float, shift: float) -> None:
    """|ours − y| ≤ 2⁻⁸·(|x̂·w| + |b| + |y|) with ``y`` the float32 norm of the same bf16 input (GroupNorm32's
    own rounding is 2⁻⁹·|y|): only the parameters' and the output's roundings are added."""
    g = torch.Generator().manual_seed(seed)
    for norm, shape, normalise in (
        (GroupNorm(4, 16), (3, 16, 5, 5), lambda x: F.group_norm(x, 4, eps=1e-5)),
        (LayerNorm(32), (3, 7, 32), lambda x: F.layer_norm(x, (32,), eps=1e-5)),
    ):
        c = norm.weight.shape[0]
        with torch.no_grad():
            norm.weight.copy_(1 + spread * torch.randn(c, generator=g))
            norm.bias.copy_(spread * torch.randn(c, generator=g))
        x = (shift + 2 * torch.randn(shape, generator=g)).bfloat16()
        w, b = (v.view(-1, *[1] * (len(shape) - 2)) if len(shape) == 4 else v for v in (norm.weight, norm.bias))
        x_hat = normalise(x.float())
        y = x_hat * w + b
        bound = 2**-8 * ((x_hat * w).abs() + b.abs() + y.abs())
        with torch.autocast("cpu", torch.bfloat16):
            out = norm(x)
        assert out.dtype == torch.bfloat16
        assert bool(((out.float() - y).abs() <= bound).all()), type(norm).__name__
