"""DDIMSchedule: timesteps, schedule values and the step against closed forms."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from anymole.video.schedule import DDIMSchedule


def test_trailing_timesteps_50() -> None:
    s = DDIMSchedule()
    s.set_timesteps(50)
    assert s.timesteps.tolist() == list(range(999, 0, -20))
    assert s.timesteps[0] == 999 and s.timesteps[-1] == 19 and len(s.timesteps) == 50
    assert s.prev_timestep(999) == 979 and s.prev_timestep(19) == -1


def test_schedule_values_match_dynamicrafter() -> None:
    s = DDIMSchedule()
    ab = s.alphas_cumprod
    # Values recomputed from the DynamiCrafter config (dynamicrafter_notes.md §3).
    assert ab[0].item() == pytest.approx(0.99915, abs=1e-5)
    assert ab[499].item() == pytest.approx(0.242359, abs=1e-5)
    assert ab[999].item() == 0.0 and s.betas[999].item() == pytest.approx(1.0)
    assert bool((ab[1:] < ab[:-1]).all())
    assert s.scale_arr[0].item() == 1.0 and s.scale_arr[399].item() == pytest.approx(0.7)
    assert s.scale_arr[999].item() == pytest.approx(0.7)


def test_step_requires_set_timesteps() -> None:
    s = DDIMSchedule()
    x = torch.zeros(1, 4)
    with pytest.raises(RuntimeError, match="set_timesteps"):
        s.step(x, 999, x)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="epsilon"):
        DDIMSchedule(prediction_type="epsilon")
    with pytest.raises(ValueError, match="beta_schedule"):
        DDIMSchedule(beta_schedule="cosine")


@settings(max_examples=30, deadline=None)
@given(i=st.integers(0, 49), seed=st.integers(0, 2**16))
def test_deterministic_step_is_closed_form(i: int, seed: int) -> None:
    """With the true v, an η=0 step lands exactly on q(x_prev | x0, ε) with the same ε."""
    g = torch.Generator().manual_seed(seed)
    x0, eps = torch.randn(2, 3, 5, generator=g, dtype=torch.float64).float().unbind(0)
    s = DDIMSchedule()
    s.set_timesteps(50)
    t = int(s.timesteps[i])
    t_prev = s.prev_timestep(t)
    x_t = s.add_noise(x0, eps, t)
    v = s.velocity(x0, eps, t)
    out = s.step(v, t, x_t, eta=0.0)
    ab_p = 1.0 if t_prev < 0 else s.alphas_cumprod[t_prev].item()
    sc_p = 1.0 if t_prev < 0 else s.scale_arr[t_prev].item()
    expected = ab_p**0.5 * sc_p * x0 + (1 - ab_p) ** 0.5 * eps
    torch.testing.assert_close(out.prev_sample, expected, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(out.pred_original_sample, sc_p * x0, atol=2e-5, rtol=1e-4)


def test_last_step_returns_clean_sample() -> None:
    s = DDIMSchedule()
    s.set_timesteps(50)
    x0, eps = torch.randn(2, 4, 8).unbind(0)
    out = s.step(s.velocity(x0, eps, 19), 19, s.add_noise(x0, eps, 19), eta=1.0)
    torch.testing.assert_close(out.prev_sample, x0, atol=1e-5, rtol=1e-5)


def test_eta_noise_has_ddim_sigma() -> None:
    s = DDIMSchedule()
    s.set_timesteps(50)
    t, t_prev = 499, 479
    x, v = torch.randn(2, 1, 16).unbind(0)
    a0 = s.step(v, t, x, eta=1.0, variance_noise=torch.zeros_like(x)).prev_sample
    a1 = s.step(v, t, x, eta=1.0, variance_noise=torch.ones_like(x)).prev_sample
    at, ap = s.alphas_cumprod[t].item(), s.alphas_cumprod[t_prev].item()
    sigma = ((1 - ap) / (1 - at) * (1 - at / ap)) ** 0.5
    torch.testing.assert_close(a1 - a0, torch.full_like(x, sigma), atol=1e-6, rtol=1e-5)


def test_first_step_at_zero_snr_predicts_minus_v() -> None:
    """At t=999, ᾱ=0: x_t is pure noise and x̂0 = −v (scaled by s_prev/s_t = 1)."""
    s = DDIMSchedule()
    s.set_timesteps(50)
    x, v = torch.randn(2, 3, 7).unbind(0)
    out = s.step(v, 999, x, eta=0.0)
    torch.testing.assert_close(out.pred_original_sample, -v)


def test_add_noise_per_sample_timesteps() -> None:
    s = DDIMSchedule()
    x0 = torch.ones(3, 2, 4)
    eps = torch.zeros(3, 2, 4)
    t = torch.tensor([0, 500, 999])
    out = s.add_noise(x0, eps, t)
    for b in range(3):
        ab, sc = s.alphas_cumprod[t[b]].item(), s.scale_arr[t[b]].item()
        torch.testing.assert_close(out[b], torch.full((2, 4), ab**0.5 * sc))


def test_epsilon_schedule_roundtrip() -> None:
    s = DDIMSchedule(prediction_type="epsilon", rescale_zero_terminal_snr=False, dynamic_rescale_base=None)
    s.set_timesteps(10)
    x0, eps = torch.randn(2, 5).unbind(0)
    t = int(s.timesteps[3])
    out = s.step(eps, t, s.add_noise(x0, eps, t), eta=0.0)
    torch.testing.assert_close(out.pred_original_sample, x0, atol=1e-4, rtol=1e-4)
    assert s.training_target(x0, eps, t) is eps


def test_timesteps_are_looked_up_where_they_live() -> None:
    """Training passes ``(B,)`` timesteps on the GPU: the lookup must not copy them to the host (a sync per
    micro-batch). A meta tensor cannot be copied at all, so this fails wherever the lookup leaves ``t``'s device."""
    s = DDIMSchedule()
    x0 = torch.empty(3, 4, 16, 8, 8, device="meta")
    t = torch.empty(3, dtype=torch.long, device="meta")
    assert s.add_noise(x0, x0, t).shape == x0.shape and s.training_target(x0, x0, t).device.type == "meta"
    # On the CPU the values are the table's, -1 meaning clean.
    cpu = s.alpha_bar(torch.tensor([-1, 0, 999]), torch.zeros(3, 1))
    torch.testing.assert_close(cpu[:, 0], torch.tensor([1.0, float(s.alphas_cumprod[0]), 0.0]))


def test_coefficients_of_int_and_tensor_timesteps_agree_and_tables_are_kept_per_device() -> None:
    s = DDIMSchedule()
    like = torch.zeros(3, 2, 2)
    t = torch.tensor([0, 500, 999])
    batch = s.alpha_bar(t, like)
    assert batch.shape == (3, 1, 1) and batch.dtype == torch.float32
    for i, ti in enumerate(t.tolist()):
        one = s.alpha_bar(ti, like)
        assert one.ndim == 0 and one.device.type == "cpu"
        assert float(one) == float(batch[i])  # the same float32 either way
        assert float(s.signal_scale(ti, like)) == float(s.signal_scale(t, like)[i])
    assert float(s.alpha_bar(-1, like)) == 1.0 == float(s.alpha_bar(torch.tensor([-1]), like)[0])
    assert set(s._device_tables) == {("alphas_cumprod", torch.device("cpu")), ("scale_arr", torch.device("cpu"))}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_coefficients_never_make_the_host_wait_for_the_device() -> None:
    s = DDIMSchedule()
    x0 = torch.randn(4, 4, 16, 8, 8, device="cuda")
    noise, t = torch.randn_like(x0), torch.randint(0, 1000, (4,), device="cuda")
    s.add_noise(x0, noise, t)  # the first call copies the tables to the device
    torch.cuda.set_sync_debug_mode("error")
    try:
        s.add_noise(x0, noise, t)
        s.training_target(x0, noise, t)
        s.add_noise(x0, noise, 500)  # the sampler's int timestep
    finally:
        torch.cuda.set_sync_debug_mode("default")
