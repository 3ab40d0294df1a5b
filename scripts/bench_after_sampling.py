"""Time the stages after sampling on one device: estimator training (the paper's ViT pair, random weights),
estimation with a cached estimator, and mimicking of all 6 gaps, for `anymole bench pipeline`'s scene at 512x320.

    python3 scripts/bench_after_sampling.py cuda OUT.json      # bench_scene.pt from `anymole bench pipeline --export-scene`
    python3 scripts/bench_after_sampling.py cpu OUT.json       # a dry run: 1 gap, 96x64, conv backbone, 2 iterations

The generated frames are stood in for by renders of the SLERP fill (timing only). Writes OUT.json after each
figure, so a cut run keeps what it measured.
"""

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from anymole.baseline import inbetween
from anymole.bench.pipeline import load_source, paper_scene
from anymole.estimator import EstimatorConfig, build_backbone
from anymole.mimic import MimicConfig
from anymole.pipeline.estimator_cache import EstimatorCache
from anymole.pipeline.fromvideo import background, estimate, mimic_gaps, train_estimator
from anymole.render.views import pose_motion, render_motion, scene_style
from anymole.video.config import VideoJobConfig
from anymole.video.sampler import RENDER_FPS
from anymole.video.scene import render_scene
from anymole.video.timeline import plan_timeline

dev = sys.argv[1] if len(sys.argv) > 1 else "cuda"
tiny = dev == "cpu"
out: dict = {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu"}


def dump():
    out["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2) if dev == "cuda" else None
    Path(sys.argv[2] if len(sys.argv) > 2 else "stages.json").write_text(json.dumps(out, indent=1))


def sync():
    if dev == "cuda":
        torch.cuda.synchronize()


def clock(name, fn):
    sync()
    t = time.perf_counter()
    r = fn()
    sync()
    out[name] = round(time.perf_counter() - t, 3)
    print(name, out[name], flush=True)
    dump()
    return r


character, clip, cid = load_source(scene=Path("bench_scene.pt"))
spec = paper_scene(character, clip, cid, gaps=1 if tiny else 6)
tl = plan_timeline(spec.context_frames, spec.context.fps, list(spec.keyframes.frames))
w, h = (96, 64) if tiny else (512, 320)
cfg = VideoJobConfig(width=w, height=h, views=4, caption_model=None)
renders = clock(
    "render_s", lambda: render_scene(spec.character, spec.context, spec.keyframes, tl, cfg, device=dev)
)
r0 = tl.render_context_end
render_frames = torch.arange(r0, r0 + RENDER_FPS * tl.num_gaps + 1, 2)
fill = inbetween(spec.context, spec.keyframes, spec.total_frames, root="cubic")
_, verts, _ = pose_motion(character, fill)
video = (
    render_motion(
        character,
        fill.sample(tl.request_positions(render_frames), RENDER_FPS / 2),
        cameras=renders.cameras.select(0),
        style=scene_style(verts),
    )
    .images()[0]
    .transpose(0, 1)
)
names = ("conv",) if tiny else ("dinov2_vitb14_reg", "fit3d_vits14_reg")
ecfg = EstimatorConfig.preset("draft", backbones=names, steps=20 if tiny else 300)
bbs = [build_backbone(n, ecfg, random_init=True).to(dev).eval() for n in names] if not tiny else None
est = clock("estimator_train_300_s", lambda: train_estimator(renders, ecfg, device=dev, backbones=bbs))
with tempfile.TemporaryDirectory() as d:
    cache = EstimatorCache(Path(d))
    cache.put("k", est)
    again = cache.get("k", bbs).to(dev)
n = renders.context.shape[2]
targets = clock(
    "estimate_s", lambda: estimate(again, video, background(renders.context[0], renders.mask[0, :n]))
)
out["frames"] = int(video.shape[1])
cam = renders.cameras.select(0)
for g, preset in ((0, "draft"), (1, "draft"), (0, "fast"), (0, "quality")):
    mc = MimicConfig.preset(preset, steps=2) if tiny else MimicConfig.preset(preset)
    out[f"mimic_{preset}_steps"] = mc.steps
    clock(
        f"mimic_{preset}_gaps_per_solve_{g}_s",
        lambda mc=mc, g=g: mimic_gaps(
            character, fill, tl, render_frames, cam, targets, mc, gaps_per_solve=g, device=dev
        ),
    )
print(json.dumps(out))
