"""Dropout that a training run seeds on its own: `DropoutRng` and the `Dropout` layer that draws from it.

``nn.Dropout`` takes no generator: it draws from torch's global RNG of the tensor's device, which every thread of
the process shares (the estimator beside ICAdapt, another job), and activation checkpointing replays its masks by
swapping that global state in and out from autograd's threads. A run that hands its prior a `DropoutRng` instead
draws every mask from the run's own generator on the training device, so the same seed gives the same masks on
any device whatever other threads draw meanwhile, and its draws move no other thread's RNG.

Two ways to draw, one per execution mode:

- eager: ``bernoulli_`` from ``DropoutRng.generator``, as cheap as ``nn.Dropout``. A checkpointed layer replays
  its masks through `DropoutRng.replay_contexts` (checkpoint's ``context_fn``): the forward notes the
  generator's state, the recomputation draws from that state again and puts back the state it found.
- under ``torch.compile``: a generator argument breaks the graph at every dropout, so compiled code derives the
  mask from a hash of the element index and the layer's key (`Dropout.key`, a view of ``DropoutRng.keys``, which
  `DropoutRng.advance` redraws in place from the generator before each forward). A pure function of tensors:
  inductor fuses it into the neighbouring kernels, and a recomputation gives the same mask by construction.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["Dropout", "DropoutRng", "hashed_keep_mask"]

_MASK32 = 0xFFFFFFFF
#: odd multipliers below 2³¹, so that a 32-bit value times one stays inside int64 (no overflow on any backend)
_MUL = (0x7FEB352D, 0x1B873593)


def _mix32(h: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer finaliser (xor-shift, multiply) on int64 ``h`` in [0, 2³²), elementwise."""
    h = h ^ (h >> 16)
    h = (h * _MUL[0]) & _MASK32
    h = h ^ (h >> 15)
    h = (h * _MUL[1]) & _MASK32
    return h ^ (h >> 16)


def hashed_keep_mask(key: torch.Tensor, shape: torch.Size, p: float) -> torch.Tensor:
    """Dropout's keep mask as a pure function of ``key``: ``(2,)`` int64 in [0, 2³¹) on the tensor's device →
    bool of ``shape``, each element kept with probability ``1 − p`` (to 2⁻³²), independently of the others as
    far as a 32-bit hash of (index, key) goes."""
    index = torch.arange(shape.numel(), device=key.device, dtype=torch.int64).reshape(shape)
    h = _mix32(_mix32((index & _MASK32) ^ key[0]) ^ key[1])
    return h >= round(p * 2**32)


class DropoutRng:
    """One training run's own dropout randomness on ``device``, seeded with ``seed``.

    Attributes:
        generator: the run's generator on ``device`` (eager draws).
        keys: ``(layers, 2)`` int64 keys of the compiled path, one row a `Dropout` layer (see `attach`).
    """

    def __init__(self, seed: int, device: torch.device) -> None:
        self.generator = torch.Generator(device).manual_seed(seed)
        self.keys = torch.zeros(0, 2, dtype=torch.int64, device=device)

    def attach(self, layers: list[Dropout]) -> None:
        """Give each of ``layers`` this stream and its own row of `keys`."""
        self.keys = torch.zeros(len(layers), 2, dtype=torch.int64, device=self.generator.device)
        for layer, key in zip(layers, self.keys, strict=True):
            layer.use(self, key)
        self.advance()

    def advance(self) -> None:
        """New keys for the next forward pass, in place (the layers hold views), drawn from `generator`: call it
        before each forward pass, never between a forward pass and its backward pass (a recomputation reads them)."""
        self.keys.random_(0, 2**31, generator=self.generator)

    def replay_contexts(self) -> tuple[contextlib.AbstractContextManager[None], contextlib.AbstractContextManager[None]]:
        """``context_fn`` of one checkpointed call: (forward, recomputation) contexts that make the recomputation
        draw the forward's masks from `generator` and leave it where the forward left it. The generator's state
        is read and set on the host: no device work, no wait."""
        noted: list[torch.Tensor] = []

        @contextlib.contextmanager
        def forward() -> Iterator[None]:
            noted.append(self.generator.get_state())
            yield

        @contextlib.contextmanager
        def recompute() -> Iterator[None]:
            current = self.generator.get_state()
            self.generator.set_state(noted[0])
            try:
                yield
            finally:
                self.generator.set_state(current)

        return forward(), recompute()


class Dropout(nn.Dropout):
    """``nn.Dropout`` that draws from a `DropoutRng` once one is attached (``rng``), from torch's global RNG as
    before while none is. Same arguments and (empty) state dict as ``nn.Dropout``.

    Each layer draws one mask per forward pass: a layer called twice in one pass under ``torch.compile`` would
    reuse its mask (no layer of the UNet is)."""

    rng: DropoutRng | None = None
    key: torch.Tensor | None = None

    def use(self, rng: DropoutRng | None, key: torch.Tensor | None = None) -> None:
        """Draw from ``rng`` (``key``: this layer's ``(2,)`` row of its keys), or from the global RNG (``None``)."""
        self.rng, self.key = rng, key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rng is None or not self.training or not 0 < self.p < 1:
            return super().forward(x)
        scale = 1 / (1 - self.p)
        if torch.compiler.is_compiling() and self.key is not None:
            # out of place: compiled checkpoint regions must hold no in-place op; inductor fuses it all anyway
            return x * hashed_keep_mask(self.key, x.shape, self.p) * scale
        keep = torch.empty_like(x, dtype=torch.bool).bernoulli_(1 - self.p, generator=self.rng.generator)
        return (x * keep).mul_(scale)  # in place: one product allocated, as native dropout
