"""The estimator's heads (supplementary B, Figure 1): feature merger → heatmap decoder → soft-argmax 2D
joints, and features sampled at the joints + position + joint-index embedding → depth MLP.

Shapes: images ``(B, 3, H, W)``; feature grids ``(B, C, h, w)`` with ``h = H / stride``; heatmaps
``(B, J, h·2^u, w·2^u)``; joints ``(B, J, 2)`` in image pixels (x right, y down, pixel centres at +0.5, the
`anymole.render.Cameras` convention); depths ``(B, J)`` normalised (the caller scales them back to metres).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

from anymole.estimator.config import EstimatorConfig

__all__ = ["EstimatorNet", "HeatmapDecoder", "soft_argmax"]


def _conv(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, 1, k // 2, bias=False), nn.BatchNorm2d(cout), nn.SiLU())


class ZeroResidual(nn.Module):
    """``x + zero_conv(block(x))``: the last conv starts at zero, so the block starts as the identity."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = _conv(channels, channels)
        self.zero = nn.Conv2d(channels, channels, 3, 1, 1)
        nn.init.zeros_(self.zero.weight)
        nn.init.zeros_(cast(torch.Tensor, self.zero.bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.zero(self.block(x))


class HeatmapDecoder(nn.Module):
    """Conv block, then per level a zero-initialised residual block, a ×2 bilinear upsample and a conv block
    that halves the width (the full-resolution levels stay cheap), then a zero-initialised residual block and
    a 1×1 conv to one heatmap a joint: ``(B, C, h, w)`` → ``(B, J, h·2^u, w·2^u)`` logits."""

    def __init__(self, cin: int, channels: int, joints: int, upsamples: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv(cin, channels)]
        c = channels
        for _ in range(upsamples):
            half = max(8, c // 2)
            layers += [ZeroResidual(c), nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), _conv(c, half)]
            c = half
        layers += [ZeroResidual(c), nn.Conv2d(c, joints, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f)


def soft_argmax(logits: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Expected pixel position under ``softmax`` of each heatmap.

    Args:
        logits: ``(B, J, h, w)`` heatmap logits.
        image_size: ``(H, W)`` of the image the heatmaps cover (each cell spans ``H/h × W/w`` pixels).

    Returns:
        ``(B, J, 2)`` ``(x, y)`` in image pixels; cell ``(i, j)``'s centre is ``((j + ½)·W/w, (i + ½)·H/h)``.
    """
    b, j, h, w = logits.shape
    prob = logits.float().flatten(2).softmax(-1).view(b, j, h, w)
    xs = (torch.arange(w, device=logits.device, dtype=prob.dtype) + 0.5) * (image_size[1] / w)
    ys = (torch.arange(h, device=logits.device, dtype=prob.dtype) + 0.5) * (image_size[0] / h)
    # Products and sums, not a matmul: autocast would run a matmul in bf16, whose 8-bit mantissa is pixels off.
    return torch.stack(((prob.sum(2) * xs).sum(-1), (prob.sum(3) * ys).sum(-1)), -1)


def sample_at(features: torch.Tensor, joints: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Bilinear samples ``(B, J, C)`` of ``features (B, C, h, w)`` at ``joints (B, J, 2)`` image pixels."""
    h, w = image_size
    grid = torch.stack((2.0 * joints[..., 0] / w - 1.0, 2.0 * joints[..., 1] / h - 1.0), -1)  # align_corners=False
    out = nn.functional.grid_sample(features, grid.unsqueeze(2).to(features), align_corners=False)  # (B, C, J, 1)
    return out.squeeze(-1).transpose(1, 2)


class EstimatorNet(nn.Module):
    """Merger, heatmap decoder and depth MLP over the features of one or more backbones.

    Trainable backbones (``trainable`` is ``True``) live inside the net and take images; the others' features
    are computed once outside (`anymole.estimator.fit.encode`) and passed in.

    Args:
        config: widths, upsamples, embedding size.
        backbones: one per ``config.backbones`` entry, in that order.
        joints: ``J``.
    """

    def __init__(
        self, config: EstimatorConfig, backbones: Sequence[nn.Module], joints: int, windowed: bool = False
    ) -> None:
        super().__init__()
        self.trainable = nn.ModuleDict(
            {str(i): b for i, b in enumerate(backbones) if getattr(b, "trainable", False)}
        )
        widths = [int(getattr(b, "channels")) for b in backbones]  # noqa: B009 - a Backbone attribute
        # Per-backbone projections (reference: 768→512 for the 2D ViT, 384→384 for the 3D one), concatenated,
        # then two conv blocks to F.
        self.project = nn.ModuleList(_conv(c, min(c, config.merge_channels), 1) for c in widths)
        cat = sum(min(c, config.merge_channels) for c in widths)
        self.merge = nn.Sequential(_conv(cat, config.merge_channels), _conv(config.merge_channels, config.merge_channels))
        self.decoder = HeatmapDecoder(config.merge_channels, config.decoder_channels, joints, config.heatmap_upsamples)
        self.embed = nn.Embedding(joints, config.joint_embed) if config.joint_embed else None
        # With a window around the character (`anymole.estimator.framing`) the depth MLP also reads where the window
        # sits in the image: a joint's place in the whole frame (how high above the horizon) is a cue to its depth.
        self.windowed = windowed
        dims = [config.merge_channels + 2 + config.joint_embed + 2 * self.windowed, *config.depth_hidden]
        mlp: list[nn.Module] = []
        for a, b in itertools.pairwise(dims):
            mlp += [nn.Linear(a, b), nn.LayerNorm(b), nn.SiLU()]
        self.depth = nn.Sequential(*mlp, nn.Linear(dims[-1], 1))
        self.joints = joints

    def merged(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """F ``(B, merge_channels, h, w)`` from per-backbone inputs (images for trainable ones, features else)."""
        feats = []
        for i, (x, proj) in enumerate(zip(inputs, self.project, strict=True)):
            f = self.trainable[str(i)](x) if str(i) in self.trainable else x
            feats.append(proj(f.float()))
        return self.merge(torch.cat(feats, 1))

    def forward(
        self, inputs: Sequence[torch.Tensor], image_size: tuple[int, int], origin: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(joints (B, J, 2) px, depth (B, J) normalised)`` from per-backbone inputs of ``image_size (H, W)``;
        ``origin (B, 2)``: with a window, its corner in the whole image, in [−1, 1] (``x0 / W``, ``y0 / H`` mapped
        as the positions are).

        The depth MLP reads F at the predicted joints, detached: the depth loss trains the sampled features,
        not the 2D positions.
        """
        f = self.merged(inputs)
        xy = soft_argmax(self.decoder(f), image_size)
        b = xy.shape[0]
        parts = [sample_at(f, xy.detach(), image_size)]
        h, w = image_size
        parts.append(torch.stack((2.0 * xy[..., 0] / w - 1.0, 2.0 * xy[..., 1] / h - 1.0), -1).detach())
        if self.windowed:
            if origin is None:
                raise ValueError("origin: a windowed estimator needs each window's corner (B, 2)")
            parts.append(origin.to(xy)[:, None].expand(b, xy.shape[1], 2))
        if self.embed is not None:
            parts.append(self.embed.weight.unsqueeze(0).expand(b, -1, -1))
        return xy, self.depth(torch.cat(parts, -1)).squeeze(-1)
