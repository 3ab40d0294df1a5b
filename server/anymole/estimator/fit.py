"""Per-scene training of the joint estimator on cached backbone features, and inference.

The reference ran both ViTs inside its data loader, 3600 times per image (anymole_reference_code.md §5).
Here each frozen backbone sees each image once (`encode`, in bf16 on CUDA) and the cached grids are
reused by every step. Augmentation therefore works on what is cached:

* whole-cell shifts of the inputs (`shift_grid`): a feature grid moves by ``k`` cells where the image
  would move by ``k·stride`` pixels, labels with it (the reference shifted images by up to ±30 px); border
  cells repeat the edge, which in a render is background or floor;
* ``jitter_copies`` colour-jittered copies of every image, encoded once beside the original (the
  reference's ColorJitter, drawn once per copy instead of once per step).

A trainable backbone (`ConvBackbone`) takes the images themselves, shifted by whole cells of pixels in
the same way, and runs every step: it is a few convolutions.

With ``frame_margin`` (the draft preset) the estimator reads a window around the character, found in each
image's mask, resampled to ``input_pixels`` (`anymole.estimator.framing`); its joints come back in the image's
pixels.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from anymole.errors import InvalidInput
from anymole.estimator.backbones import build_backbone
from anymole.estimator.config import EstimatorConfig
from anymole.estimator.framing import Framing, frame_scene, window_corners
from anymole.estimator.model import EstimatorNet
from anymole.render.gl import Renders
from anymole.seeding import seeded_global_rng

__all__ = ["SceneEstimator", "color_jitter", "encode", "fit_estimator", "shift_grid", "training_set"]

OnStep = Callable[..., None]


def shift_grid(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Shift each map of ``x (B, C, h, w)`` by ``(dy[b], dx[b])`` whole cells (``(B,)`` ints; positive moves the
    content down/right), repeating the edge cells into the vacated border."""
    b, _, h, w = x.shape
    rows = (torch.arange(h, device=x.device)[None] - dy[:, None]).clamp(0, h - 1)  # (B, h) source rows
    cols = (torch.arange(w, device=x.device)[None] - dx[:, None]).clamp(0, w - 1)
    bi = torch.arange(b, device=x.device)[:, None, None]
    return x[bi, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # advanced dims first: (B, h, w, C)


def color_jitter(images: torch.Tensor, generator: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Per-image random brightness (±0.3), contrast (±0.2) and saturation (±0.2) of ``(B, 3, H, W)`` in
    [0, 1] (the reference's ColorJitter ranges, scaled by ``strength``)."""
    b = images.shape[0]

    def factor(r: float) -> torch.Tensor:
        u = torch.rand(b, 1, 1, 1, generator=generator) * 2 - 1
        return (1 + strength * r * u).to(images)

    x = images * factor(0.3)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * factor(0.2) + mean
    grey = (x * torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
    return ((x - grey) * factor(0.2) + grey).clamp(0, 1)


@torch.no_grad()
def encode(
    backbones: Sequence[nn.Module], images: torch.Tensor, config: EstimatorConfig, device: torch.device | str
) -> list[torch.Tensor]:
    """Per backbone, what `EstimatorNet` takes: cached features ``(N, C, h, w)`` of a frozen one (bf16 on CUDA
    with ``autocast_dtype="bf16"``, else float32), or the images ``(N, 3, H, W)`` for a trainable one; all on
    ``device``. Frozen backbones see each image exactly once."""
    dev = torch.device(device)
    use_bf16 = dev.type == "cuda" and config.autocast_dtype == "bf16"
    out: list[torch.Tensor] = []
    for bb in backbones:
        if getattr(bb, "trainable", False):
            out.append(images.to(dev, torch.float32))
            continue
        bb.to(dev)
        chunks = []
        for a in range(0, images.shape[0], config.encode_batch):
            x = images[a : a + config.encode_batch].to(dev, torch.float32)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16):
                f = bb(x)
            chunks.append(f.to(torch.bfloat16 if use_bf16 else torch.float32))
        out.append(torch.cat(chunks))
    return out


@dataclass
class SceneEstimator:
    """A trained estimator: heads (and trainable backbone) plus what maps its outputs back to pixels and metres.

    Attributes:
        config: the settings it was trained with.
        net: the `EstimatorNet`.
        backbones: all backbones, in ``config.backbones`` order (frozen ones encode new images in `predict`).
        image_size: ``(H, W)`` of the images it was trained on (and takes).
        depth_mean, depth_std: metric depth normalisation (m).
        losses: the training loss after each step.
        framing: the window around the character it reads (``None``: the whole image; then `predict` needs no
            masks).
    """

    config: EstimatorConfig
    net: EstimatorNet
    backbones: list[nn.Module]
    image_size: tuple[int, int]
    depth_mean: float
    depth_std: float
    losses: list[float] = field(default_factory=list)
    framing: Framing | None = None

    def to(self, device: torch.device | str) -> SceneEstimator:
        """Move the heads and every backbone to ``device`` (in place, as `nn.Module.to`); returns ``self``."""
        self.net.to(device)
        for b in self.backbones:
            b.to(device)
        return self

    @torch.no_grad()
    def predict(
        self, images: torch.Tensor, masks: torch.Tensor | None = None, batch: int = 32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """2D joints ``(N, J, 2)`` (px of ``images``) and metric depths ``(N, J)`` (m) of ``images (N, 3, H, W)``
        in [0, 1]; with `framing`, ``masks (N, H, W)`` (> 0.5 where the character is: a render's mask or
        `anymole.mimic.character_mask`) place each window."""
        if tuple(images.shape[-2:]) != self.image_size:
            raise InvalidInput("images", f"must be {self.image_size}, the training size, got {tuple(images.shape[-2:])}")
        corners = None
        if self.framing is not None:
            masks = _check_masks(masks, images)
            corners = window_corners(masks.cpu(), self.framing)
            images = self.framing.crop(images, corners.to(images.device))
        size = self.framing.input if self.framing is not None else self.image_size
        dev = next(self.net.parameters()).device
        origin = None if self.framing is None or corners is None else self.framing.origin(corners.to(dev, torch.float32))
        self.net.eval()
        xy, depth = [], []
        for a in range(0, images.shape[0], batch):
            inputs = encode(self.backbones, images[a : a + batch], self.config, dev)
            o = None if origin is None else origin[a : a + batch]
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda" and self.config.autocast_dtype == "bf16"):
                p, d = self.net(inputs, size, o)
            xy.append(p.float())
            depth.append(d.float() * self.depth_std + self.depth_mean)
        joints = torch.cat(xy)
        if self.framing is not None and corners is not None:
            joints = self.framing.from_window(joints, corners.to(joints.device))
        return joints, torch.cat(depth)

    def save(self, folder: str | Path) -> None:
        """``folder/estimator.safetensors`` (heads and trainable backbone) + ``estimator.json`` (config, stats)."""
        from safetensors.torch import save_file

        d = Path(folder)
        d.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous().cpu() for k, v in self.net.state_dict().items()}, str(d / "estimator.safetensors"))
        meta = {"config": asdict(self.config), "image_size": list(self.image_size), "joints": self.net.joints,
                "depth_mean": self.depth_mean, "depth_std": self.depth_std,
                "framing": None if self.framing is None else asdict(self.framing)}  # fmt: skip
        (d / "estimator.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, folder: str | Path, backbones: Sequence[nn.Module] | None = None) -> SceneEstimator:
        """What `save` wrote; frozen ``backbones`` must be given again (they are not saved: they are public)."""
        from safetensors.torch import load_file

        d = Path(folder)
        meta = json.loads((d / "estimator.json").read_text())
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()}
        cfg = EstimatorConfig(**fields)
        fr = meta.get("framing")
        framing = None if fr is None else Framing(tuple(fr["image"]), tuple(fr["window"]), tuple(fr["input"]))
        # The modules draw their (overwritten) initial weights from the global RNG: not inside another thread's
        # seeded span (a job training an estimator beside this one's cache load), whose draws would shift.
        with seeded_global_rng(None):
            bbs = list(backbones) if backbones is not None else [build_backbone(n, cfg) for n in cfg.backbones]
            net = EstimatorNet(cfg, bbs, int(meta["joints"]), windowed=framing is not None)
        net.load_state_dict(load_file(str(d / "estimator.safetensors")))
        h, w = meta["image_size"]
        return cls(cfg, net, bbs, (h, w), float(meta["depth_mean"]), float(meta["depth_std"]), framing=framing)


def training_set(
    renders: Renders, keys: torch.Tensor, views: int = 3, key_weight: float = 3.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`fit_estimator`'s inputs from the context renders: the first ``views`` cameras (the paper's N = 3:
    the main view and its ±5° neighbours), every rendered frame, keyframes at ``key_weight`` (w = 3).

    Args:
        renders: ``(C, F, ...)`` renders with joint labels (`anymole.render.render_motion`).
        keys: ``(F,)`` bool, which rendered frames are keyframes.
        views: cameras to use (``≤ C``).
        key_weight: sample weight of a keyframe (context frames weigh 1).

    Returns:
        ``(images (N, 3, H, W), joints2d (N, J, 2), depths (N, J), weights (N,))`` with ``N = views · F``.
    """
    if renders.joints_px is None or renders.joints_depth is None:
        raise InvalidInput("renders", "carry no joint labels; render them with render_motion")
    c, f = renders.rgb.shape[:2]
    if not 1 <= views <= c:
        raise InvalidInput("views", f"must be in [1, {c}] (the renders' cameras), got {views}")
    if tuple(keys.shape) != (f,):
        raise InvalidInput("keys", f"must have shape ({f},), got {tuple(keys.shape)}")
    weights = torch.where(keys.bool(), key_weight, 1.0).repeat(views)
    return (
        renders.images()[:views].flatten(0, 1),
        renders.joints_px[:views].flatten(0, 1).float(),
        renders.joints_depth[:views].flatten(0, 1).float(),
        weights,
    )


def _one_cycle(config: EstimatorConfig) -> Callable[[int], float]:
    """The reference's OneCycle shape as a factor of ``lr``: cosine from 1/25 up to 1 over the warm-up, then
    cosine down to ``1/final_div``; defined for any step count (torch's OneCycleLR needs a few warm-up steps)."""
    up = max(1, round(config.warmup * config.steps))
    down = max(1, config.steps - up)

    def factor(step: int) -> float:
        if step < up:
            lo, hi, t = 1 / 25, 1.0, step / up
        else:
            lo, hi, t = 1.0, 1 / config.final_div, (step - up) / down
        return hi + (lo - hi) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    return factor


def _check(images: torch.Tensor, joints2d: torch.Tensor, depths: torch.Tensor, weights: torch.Tensor, stride: int) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise InvalidInput("images", f"must have shape (N, 3, H, W), got {tuple(images.shape)}")
    n, _, h, w = images.shape
    if h % stride or w % stride:
        raise InvalidInput("images", f"size {h}x{w} must be a multiple of feature_stride {stride}")
    if joints2d.ndim != 3 or joints2d.shape[0] != n or joints2d.shape[-1] != 2:
        raise InvalidInput("joints2d", f"must have shape ({n}, J, 2), got {tuple(joints2d.shape)}")
    if tuple(depths.shape) != tuple(joints2d.shape[:2]):
        raise InvalidInput("depths", f"must have shape {tuple(joints2d.shape[:2])}, got {tuple(depths.shape)}")
    if tuple(weights.shape) != (n,) or bool((weights <= 0).any()):
        raise InvalidInput("weights", f"must be ({n},) positive sample weights, got shape {tuple(weights.shape)}")


def _check_masks(masks: torch.Tensor | None, images: torch.Tensor) -> torch.Tensor:
    """``masks``, checked to be ``(N, H, W)`` for ``images (N, 3, H, W)``: an estimator that reads a window around
    the character (``frame_margin`` > 0) places it by the masks, in training (`fit_estimator`) and in `predict`."""
    want = (images.shape[0], *images.shape[-2:])
    if masks is None or tuple(masks.shape) != want:
        got = None if masks is None else tuple(masks.shape)
        why = "an estimator that reads a window around the character (frame_margin > 0) needs its masks"
        raise InvalidInput("masks", f"{why} {want}, got {got}")
    return masks


def fit_estimator(
    images: torch.Tensor,
    joints2d: torch.Tensor,
    depths: torch.Tensor,
    weights: torch.Tensor,
    config: EstimatorConfig,
    on_step: OnStep | None = None,
    *,
    backbones: Sequence[nn.Module] | None = None,
    device: torch.device | str | None = None,
    masks: torch.Tensor | None = None,
) -> SceneEstimator:
    """Train a scene-specific estimator on renders with known joints.

    Args:
        images: ``(N, 3, H, W)`` in [0, 1]: the context renders of every training view plus the keyframes.
        joints2d: ``(N, J, 2)`` projected joints (px, `Cameras.project`).
        depths: ``(N, J)`` metric joint depths (m).
        weights: ``(N,)`` sample weights (1 for context renders, 3 for keyframes as in the paper).
        config: architecture and schedule.
        on_step: ``on_step("estimator", fraction)`` after each step; raising (a cancel) stops training.
        backbones: built backbones in ``config.backbones`` order (`build_backbone`); built from the config
            when omitted (a ViT then needs weights: `ModelUnavailable`).
        device: where to train (``images``' device by default).
        masks: ``(N, H, W)`` where the character covers each image (> 0.5); needed with ``config.frame_margin``
            (the window's size and place).

    Returns:
        The trained `SceneEstimator`.
    """
    s = config.feature_stride
    framing = None
    full = (int(images.shape[-2]), int(images.shape[-1]))
    if config.frame_margin:
        masks = _check_masks(masks, images)
        framing = frame_scene(masks.cpu(), config.frame_margin, config.input_pixels, s)
        if framing is not None:  # else the character fills the frame: read the whole image
            corners = window_corners(masks.cpu(), framing)
            images = framing.crop(images, corners.to(images.device))
            joints2d = framing.to_window(joints2d, corners.to(joints2d.device))
            corners_all = corners.float()
    _check(images, joints2d, depths, weights, s)
    dev = torch.device(device) if device is not None else images.device
    gen = torch.Generator().manual_seed(config.seed)
    # Batches and shifts are drawn on the training device: a host-drawn index copied up every step would
    # wait for the GPU's queue each time.
    gen_dev = torch.Generator(device=dev).manual_seed(config.seed)
    autocast = dev.type == "cuda" and config.autocast_dtype == "bf16"
    # The initialisers draw from the global RNG: seeded, and with no other thread's draws in between (an ICAdapt
    # adapting beside this job's estimator forks it), or one request would train different estimators.
    with seeded_global_rng(config.seed):
        bbs = list(backbones) if backbones is not None else [build_backbone(n, config) for n in config.backbones]
        if len(bbs) != len(config.backbones):
            raise InvalidInput("backbones", f"need {len(config.backbones)} ({config.backbones}), got {len(bbs)}")
        net = EstimatorNet(config, bbs, joints2d.shape[1], windowed=framing is not None)
    copies = [images] + [color_jitter(images, gen) for _ in range(config.jitter_copies)]
    reps = len(copies)
    inputs = encode(bbs, torch.cat(copies), config, dev)
    xy_all = joints2d.to(dev, torch.float32).repeat(reps, 1, 1)
    w_all = weights.to(dev, torch.float32).repeat(reps)
    d = depths.to(torch.float64)
    wn = weights.to(torch.float64)[:, None].expand_as(d)
    d_mean = float((d * wn).sum() / wn.sum())
    d_std = float((((d - d_mean) ** 2 * wn).sum() / wn.sum()).sqrt().clamp_min(1e-6))
    dn_all = ((depths.to(dev, torch.float32) - d_mean) / d_std).repeat(reps, 1)
    h, w = images.shape[-2:]
    net = net.to(dev)
    if framing is not None:
        corners_all = corners_all.to(dev)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=config.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _one_cycle(config))
    trainable = [getattr(b, "trainable", False) for b in bbs]
    n = xy_all.shape[0]
    losses = []
    net.train()
    for step in range(config.steps):
        idx = torch.randint(n, (config.batch_size,), generator=gen_dev, device=dev)
        m = config.max_shift
        dy, dx = torch.randint(-m, m + 1, (2, config.batch_size), generator=gen_dev, device=dev)
        batch = []
        for x, tr in zip(inputs, trainable, strict=True):
            xb = x[idx]
            if m:
                # A trainable backbone takes pixels: shift its images by whole cells of `s` pixels.
                xb = shift_grid(xb, dy * s, dx * s) if tr else shift_grid(xb, dy, dx)
            batch.append(xb)
        shift = torch.stack((dx, dy), -1).float() * s  # (B, 2) input px the content moved
        target = xy_all[idx] + shift[:, None]
        origin = None
        if framing is not None:  # content moved right by `shift` = the window's corner moved left in the image
            sx, sy = framing.scale()
            origin = framing.origin(corners_all[idx % corners_all.shape[0]] - shift / torch.tensor([sx, sy], device=dev))
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
            xy, dn = net(batch, (h, w), origin)
        dn = dn.float()
        err_xy = ((xy - target) / s).square().sum(-1).mean(-1)  # (B,) squared error in feature cells
        err_d = (dn - dn_all[idx]).square().mean(-1)
        wb = w_all[idx]
        loss = ((err_xy + config.depth_weight * err_d) * wb).sum() / wb.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, config.grad_clip)
        opt.step()
        sched.step()
        losses.append(loss.detach())
        if on_step is not None:
            on_step("estimator", (step + 1) / config.steps)
    net.eval()
    return SceneEstimator(config, net, bbs, full, d_mean, d_std, torch.stack(losses).tolist(), framing)
