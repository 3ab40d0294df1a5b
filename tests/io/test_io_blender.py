"""A real consumer reads our files: Blender imports the GLB and BVH we write, and its joint world positions
match ours. Blender also exports the imported GLB as Collada, which we then load (our DAE path, checked
against a file we did not write). One Blender process for everything: it is the slow part."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import torch

from anymole.io import load_character, write_bvh, write_glb
from anymole.rig import fk_motion
from asset_files import cached_load, require_tool

pytestmark = pytest.mark.blender

# Two shims for Debian's Blender 3.4 on Python 3.11 / numpy 1.24 (NOTES.md): numpy.bool for the glTF
# importer, and open() without the 'U' mode flag for the BVH importer.
BLENDER_SCRIPT = r"""
import builtins, json, sys
import numpy
numpy.bool = bool
_open = builtins.open
builtins.open = lambda file, mode="r", *a, **k: _open(file, mode.replace("U", ""), *a, **k)
import bpy

glb, bvh, fox_bvh, dae, out_path, glb_frames, bvh_frames = sys.argv[sys.argv.index("--") + 1:]

def world_heads(frames, first):
    arm = next(o for o in bpy.data.objects if o.type == "ARMATURE")
    scene = bpy.context.scene
    out = []
    for f in range(int(frames)):
        scene.frame_set(first + f)
        out.append({pb.name: list(arm.matrix_world @ pb.head) for pb in arm.pose.bones})
    return out

result = {}
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.import_scene.gltf(filepath=glb)
result["glb_fps"] = bpy.context.scene.render.fps
result["glb"] = world_heads(glb_frames, 0)  # the glTF importer puts t = 0 at frame 0
scene = bpy.context.scene
scene.frame_start, scene.frame_end = 0, int(glb_frames) - 1
bpy.ops.wm.collada_export(filepath=dae, include_animations=True, sampling_rate=1)
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.import_anim.bvh(filepath=bvh)
result["bvh"] = world_heads(bvh_frames, 1)  # the BVH importer puts frame 0 of the file at scene frame 1
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.import_anim.bvh(filepath=fox_bvh)
result["fox_bvh"] = world_heads(glb_frames, 1)
with _open(out_path, "w") as f:
    json.dump(result, f)
"""


def _to_blender(p: torch.Tensor) -> torch.Tensor:
    """Our +Y-up glTF space → Blender's +Z-up world, as both Blender importers convert: (x, −z, y)."""
    return torch.stack((p[..., 0], -p[..., 2], p[..., 1]), dim=-1)


@pytest.fixture(scope="module")
def blender_run(tmp_path_factory):
    require_tool(shutil.which("blender") is not None, "Debian's blender on PATH")
    out = tmp_path_factory.mktemp("blender")
    fox = cached_load("Fox.glb", scale=0.01)
    walk = fox.motions["Walk"]  # 24 fps, Blender's default scene rate
    write_glb(out / "fox.glb", fox, {"Walk": walk})
    cmu = cached_load("131_01_30fps.bvh")
    clip = cmu.motions["131_01_30fps"].slice(0, 60)
    write_bvh(out / "cmu.bvh", cmu.skeleton, clip)
    # the Fox's rest rotations are not the identity (the CMU skeleton's are): BVH has none, so our writer
    # folds them into every frame's full local rotation, and Blender must still pose it the same
    write_bvh(out / "fox.bvh", fox.skeleton, walk)
    args = [str(out / n) for n in ("fox.glb", "cmu.bvh", "fox.bvh", "fox.dae", "result.json")]
    cmd = ["blender", "-b", "--factory-startup", "--python-expr", BLENDER_SCRIPT, "--", *args,
           str(walk.num_frames), str(clip.num_frames)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    if proc.returncode != 0 or not (out / "result.json").exists():
        pytest.fail(f"blender failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    result = json.loads((out / "result.json").read_text())
    return {"result": result, "fox": fox, "walk": walk, "cmu": cmu, "clip": clip, "dae": out / "fox.dae",
            "glb": out / "fox.glb"}  # fmt: skip


def test_blender_reads_our_glb(blender_run):
    fox, walk, frames = blender_run["fox"], blender_run["walk"], blender_run["result"]["glb"]
    assert blender_run["result"]["glb_fps"] == walk.fps == 24
    assert len(frames) == walk.num_frames and set(frames[0]) == set(fox.skeleton.names)
    _, pos = fk_motion(fox.skeleton, walk)
    theirs = torch.tensor([[f[n] for n in fox.skeleton.names] for f in frames])
    assert float((_to_blender(pos) - theirs).abs().max()) < 1e-4  # metres


@pytest.mark.parametrize(("character", "motion", "frames"), [("cmu", "clip", "bvh"), ("fox", "walk", "fox_bvh")])
def test_blender_reads_our_bvh(blender_run, character, motion, frames):
    ch, clip, frames = blender_run[character], blender_run[motion], blender_run["result"][frames]
    assert len(frames) == clip.num_frames and set(frames[0]) == set(ch.skeleton.names)
    _, pos = fk_motion(ch.skeleton, clip)
    theirs = torch.tensor([[f[n] for n in ch.skeleton.names] for f in frames])
    assert float((_to_blender(pos) - theirs).abs().max()) < 1e-4  # metres


def test_collada_exported_by_blender_loads(blender_run):
    """Blender's DAE is Z-up (declared in <up_axis>), prefixes node names with the armature's, and skins
    only the 22 bones that carry weight (the Fox's `_rootJoint` and `b_Root_00` carry none): those two
    become folded ancestors, and world poses still match our GLB."""
    dae = load_character(blender_run["dae"])
    ours = load_character(blender_run["glb"])
    assert dae.skeleton.num_joints == 22
    idx = [ours.skeleton.index(n.removeprefix("Armature_")) for n in dae.skeleton.names]
    (clip,) = dae.motions.values()
    assert clip.num_frames == ours.motions["Walk"].num_frames and clip.fps == 24.0
    _, p_dae = fk_motion(dae.skeleton, clip)
    _, p_ours = fk_motion(ours.skeleton, ours.motions["Walk"])
    assert float((p_dae - p_ours[:, idx]).abs().max()) < 1e-4
    v_dae, v_ours = dae.mesh.vertices, ours.mesh.vertices
    assert float((v_dae.min(0).values - v_ours.min(0).values).abs().max()) < 1e-4
    assert float((v_dae.max(0).values - v_ours.max(0).values).abs().max()) < 1e-4
