"""`DDIMSchedule`: the discrete diffusion schedule and the DDIM update, pure tensor math.

Knows no model. Matches the DynamiCrafter-512 (interp) training schedule that AnyMoLe fine-tunes:
1000 steps, "linear" betas that are linear in ``sqrt(beta)`` from 0.00085 to 0.012 (SD's ``scaled_linear``),
rescaled to zero terminal SNR (Lin et al. 2023, arXiv 2305.08891, Alg. 1), v-prediction, "trailing" timestep
spacing (999, 979, …, 19 for 50 steps) and DynamiCrafter's dynamic rescale of the clean signal
(``scale_arr``: 1.0 → ``base`` linearly over the first ``turn`` timesteps, then ``base``).

Symbols (DDIM, Song et al. 2021, eq. 12): ``ᾱ_t`` = `alphas_cumprod[t]`, ``s_t`` = dynamic-rescale factor,
``x_t = √ᾱ_t · s_t·x_0 + √(1−ᾱ_t) · ε`` (`add_noise`), ``v = √ᾱ_t · ε − √(1−ᾱ_t) · s_t·x_0`` (`velocity`).
A timestep of ``-1`` means "clean": ``ᾱ = 1``, ``s = 1``; it is the target of the last DDIM step, so the
sampler ends on ``x_0`` itself (as diffusers' ``set_alpha_to_one``; the reference stops at ``ᾱ_0 = 0.99915``,
which leaves a trace of noise and makes known frames come back inexact).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["DDIMSchedule", "StepOutput"]


@dataclass
class StepOutput:
    """Result of one `DDIMSchedule.step`.

    Attributes:
        prev_sample: ``x_{t_prev}``, same shape as the input sample.
        pred_original_sample: the model's estimate of the (rescaled) clean sample, ``s_{t_prev} · x̂_0``.
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


def _zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Shift and scale ``√ᾱ_t`` so that ``√ᾱ_0`` is kept and ``√ᾱ_{T-1} = 0`` (arXiv 2305.08891, Alg. 1)."""
    sqrt_ab = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    sqrt_ab = (sqrt_ab - last) * first / (first - last)
    alphas_bar = sqrt_ab**2
    alphas = torch.cat([alphas_bar[:1], alphas_bar[1:] / alphas_bar[:-1]])
    return 1.0 - alphas


class DDIMSchedule:
    """Diffusion schedule plus the DDIM sampler step.

    Args:
        num_train_timesteps: ``T`` (default 1000).
        beta_start, beta_end: ends of the beta ramp (defaults 0.00085, 0.012).
        beta_schedule: ``"scaled_linear"`` (linear in ``sqrt(beta)``, default) or ``"linear"``.
        rescale_zero_terminal_snr: make ``ᾱ_{T-1} = 0`` (default True). Requires ``prediction_type="v"``.
        prediction_type: ``"v"`` (default) or ``"epsilon"``.
        dynamic_rescale_base: DynamiCrafter's ``base_scale`` (0.7); ``None`` turns the rescale off.
        dynamic_rescale_turn: timesteps over which the scale ramps from 1 to the base (400).

    Raises:
        ValueError: on an unknown schedule or prediction type, or epsilon prediction with zero terminal SNR
            (``x_0 = (x_t − √(1−ᾱ)ε)/√ᾱ`` divides by zero at ``t = T−1``).
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        beta_schedule: str = "scaled_linear",
        rescale_zero_terminal_snr: bool = True,
        prediction_type: str = "v",
        dynamic_rescale_base: float | None = 0.7,
        dynamic_rescale_turn: int = 400,
    ) -> None:
        if beta_schedule not in ("scaled_linear", "linear"):
            raise ValueError(f"beta_schedule={beta_schedule!r}: expected 'scaled_linear' or 'linear'")
        if prediction_type not in ("v", "epsilon"):
            raise ValueError(f"prediction_type={prediction_type!r}: expected 'v' or 'epsilon'")
        if rescale_zero_terminal_snr and prediction_type != "v":
            raise ValueError(
                f"prediction_type={prediction_type!r} with rescale_zero_terminal_snr=True: epsilon cannot "
                "recover x_0 at zero SNR; use prediction_type='v' or rescale_zero_terminal_snr=False"
            )
        if num_train_timesteps < 2:
            raise ValueError(f"num_train_timesteps={num_train_timesteps}: need at least 2")
        self.config = {
            "num_train_timesteps": num_train_timesteps,
            "beta_start": beta_start,
            "beta_end": beta_end,
            "beta_schedule": beta_schedule,
            "rescale_zero_terminal_snr": rescale_zero_terminal_snr,
            "prediction_type": prediction_type,
            "dynamic_rescale_base": dynamic_rescale_base,
            "dynamic_rescale_turn": dynamic_rescale_turn,
        }
        self.num_train_timesteps = num_train_timesteps
        self.prediction_type = prediction_type
        # Built in float64 so that the zero-SNR shift is exact to float32 precision.
        if beta_schedule == "scaled_linear":
            betas = (
                torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
            )
        else:
            betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
        if rescale_zero_terminal_snr:
            betas = _zero_terminal_snr(betas)
        self.betas = betas
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        if dynamic_rescale_base is None:
            self.scale_arr = torch.ones(num_train_timesteps, dtype=torch.float64)
        else:
            ramp = torch.linspace(1.0, dynamic_rescale_base, dynamic_rescale_turn, dtype=torch.float64)
            rest = torch.full((max(num_train_timesteps - dynamic_rescale_turn, 0),), dynamic_rescale_base)
            self.scale_arr = torch.cat([ramp, rest.double()])[:num_train_timesteps]
        self.timesteps: torch.Tensor | None = None
        self._prev: dict[int, int] = {}
        # (table name, device) → that table on the device (see `_gather`)
        self._device_tables: dict[tuple[str, torch.device], torch.Tensor] = {}

    # ------------------------------------------------------------------ per-timestep coefficients
    def _gather(self, name: str, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """``table[t]`` of the float64 table attribute ``name``, with ``t = -1`` meaning 1.0 (clean), float32,
        broadcast to ``like``'s rank over dim 0.

        Neither path makes the host wait for the device: an int ``t`` (the sampler's) gives a 0-dim host
        tensor, which device kernels take as an argument; a ``(B,)`` timestep tensor is looked up where it lives,
        in a copy of the table kept per device (a copy from pageable host memory makes the host wait for all
        queued device work, once per call inside ICAdapt's loop)."""
        table: torch.Tensor = getattr(self, name)
        if not isinstance(t, torch.Tensor):
            return torch.tensor(float(table[t]) if t >= 0 else 1.0, dtype=torch.float32)
        key = (name, t.device)
        if key not in self._device_tables:
            self._device_tables[key] = table.to(t.device)
        table = self._device_tables[key]
        vals = torch.where(t >= 0, table[t.clamp(min=0)], torch.ones((), dtype=table.dtype, device=t.device))
        vals = vals.to(device=like.device, dtype=torch.float32)
        if vals.ndim == 0:
            return vals
        return vals.reshape(vals.shape + (1,) * (like.ndim - vals.ndim))

    def alpha_bar(self, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """``ᾱ_t`` broadcastable to ``like`` (``t`` scalar or ``(B,)``; ``-1`` gives 1)."""
        return self._gather("alphas_cumprod", t, like)

    def signal_scale(self, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """Dynamic-rescale factor ``s_t`` broadcastable to ``like`` (1 where the rescale is off or ``t = -1``)."""
        return self._gather("scale_arr", t, like)

    # ------------------------------------------------------------------ forward process
    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """``q(x_t | x_0)``: ``√ᾱ_t · s_t·x_0 + √(1−ᾱ_t) · ε``.

        Args:
            x0: clean latents ``(B, ...)``.
            noise: ``ε``, same shape.
            t: int or ``(B,)`` int64 timesteps in ``[-1, T)``.
        """
        ab = self.alpha_bar(t, x0)
        x0s = x0 * self.signal_scale(t, x0)
        return (ab.sqrt() * x0s + (1.0 - ab).sqrt() * noise).to(x0.dtype)

    def velocity(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """The v-target ``√ᾱ_t · ε − √(1−ᾱ_t) · s_t·x_0`` for the sample `add_noise` returns (same args)."""
        ab = self.alpha_bar(t, x0)
        x0s = x0 * self.signal_scale(t, x0)
        return (ab.sqrt() * noise - (1.0 - ab).sqrt() * x0s).to(x0.dtype)

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """What the denoiser is trained to output: `velocity` for v-prediction, else ``ε``."""
        return self.velocity(x0, noise, t) if self.prediction_type == "v" else noise

    # ------------------------------------------------------------------ reverse process
    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None) -> None:
        """Choose the ``n`` sampling timesteps, "trailing": ``round(T − i·T/n) − 1`` for ``i = 0…n−1``.

        For ``T = 1000, n = 50`` this is 999, 979, …, 19. The step after the last one goes to ``-1`` (clean).
        """
        if not 1 <= num_inference_steps <= self.num_train_timesteps:
            raise ValueError(
                f"num_inference_steps={num_inference_steps}: expected 1..{self.num_train_timesteps}"
            )
        ratio = self.num_train_timesteps / num_inference_steps
        ts = [round(self.num_train_timesteps - i * ratio) - 1 for i in range(num_inference_steps)]
        self.timesteps = torch.tensor(ts, dtype=torch.long, device=device)
        self._prev = {t: p for t, p in zip(ts, [*ts[1:], -1], strict=True)}

    def prev_timestep(self, t: int) -> int:
        """The timestep `step` moves ``t`` to (``-1`` after the last)."""
        if self.timesteps is None:
            raise RuntimeError("call set_timesteps(n, device) before stepping")
        try:
            return self._prev[int(t)]
        except KeyError:
            raise ValueError(f"t={int(t)} is not one of the timesteps set by set_timesteps") from None

    def step(
        self,
        model_output: torch.Tensor,
        t: int,
        sample: torch.Tensor,
        eta: float = 1.0,
        generator: torch.Generator | None = None,
        variance_noise: torch.Tensor | None = None,
    ) -> StepOutput:
        """One DDIM update ``x_t → x_{t_prev}`` (DDIM eq. 12; ``eta = 1`` is ancestral, ``eta = 0`` deterministic).

        Args:
            model_output: ``v`` or ``ε`` of shape ``(B, ...)``, as `prediction_type`.
            t: the current timestep (one of `timesteps`).
            sample: ``x_t``, same shape.
            eta: DDIM ``η`` (the reference uses 1.0).
            generator: RNG for the fresh noise when ``eta > 0``.
            variance_noise: that noise given explicitly (overrides ``generator``).

        Raises:
            RuntimeError: if `set_timesteps` was not called.
        """
        t_prev = self.prev_timestep(t)
        x = sample.float()
        out = model_output.float()
        a_t, a_prev = self.alpha_bar(t, x), self.alpha_bar(t_prev, x)
        if self.prediction_type == "v":
            pred_x0 = a_t.sqrt() * x - (1.0 - a_t).sqrt() * out  # s_t·x̂_0
            pred_eps = a_t.sqrt() * out + (1.0 - a_t).sqrt() * x
        else:
            pred_eps = out
            pred_x0 = (x - (1.0 - a_t).sqrt() * pred_eps) / a_t.sqrt()
        # Dynamic rescale: the signal at t_prev is s_{t_prev}·x_0, so rescale the estimate of s_t·x_0.
        pred_x0 = pred_x0 * (self.signal_scale(t_prev, x) / self.signal_scale(t, x))
        # σ_t = η √((1−ᾱ_prev)/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev)
        var = (1.0 - a_prev) / (1.0 - a_t).clamp(min=1e-12) * (1.0 - a_t / a_prev)
        sigma = eta * var.clamp(min=0.0).sqrt()
        direction = (1.0 - a_prev - sigma**2).clamp(min=0.0).sqrt() * pred_eps
        prev = a_prev.sqrt() * pred_x0 + direction
        if eta > 0 and t_prev >= 0:
            if variance_noise is None:
                variance_noise = torch.randn(x.shape, generator=generator, device=x.device)
            prev = prev + sigma * variance_noise.float()
        return StepOutput(prev_sample=prev.to(sample.dtype), pred_original_sample=pred_x0.to(sample.dtype))

    def __repr__(self) -> str:
        return f"DDIMSchedule({', '.join(f'{k}={v!r}' for k, v in self.config.items())})"
