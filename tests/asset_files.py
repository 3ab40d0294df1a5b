"""Shared by the asset tests of every suite: the repo's `assets/` folder, its sidecars (the expected joint
counts and clip lengths), and a cached loader (each load goes through the native import worker, so every
file is loaded once per session)."""

from __future__ import annotations

import os
import shutil
from functools import cache
from pathlib import Path

import pytest

from anymole.io import load_character
from anymole.rig import Character

ASSETS = Path(__file__).resolve().parents[1] / "assets"
VALIDATOR = Path(__file__).resolve().parents[1] / ".tools" / "node_modules" / "gltf-validator"
ASSET_FILES = ("CesiumMan.glb", "Fox.glb", "Fox.fbx", "131_01.bvh", "131_01_30fps.bvh")


def sidecar_joints(name: str) -> int:
    return int((ASSETS / f"{name}.joints").read_text().strip())


def sidecar_clips(name: str) -> list[tuple[str, int, float]]:
    """``(name, keys_or_frames, duration_s)`` per line of ``<file>.clips``, in file order."""
    rows = []
    for line in (ASSETS / f"{name}.clips").read_text().splitlines():
        if line.strip():
            clip, count, seconds = line.split("\t")
            rows.append((clip, int(count), float(seconds)))
    return rows


@cache
def cached_load(name: str, scale: float | None = None, fps: float | None = None) -> Character:
    return load_character(ASSETS / name, scale=scale, fps=fps)


def require_tool(found: bool, what: str) -> None:
    """Skip a test whose external checker (Blender, the glTF Validator) is missing — except in CI
    (``CI=true``, as `.ci/run` runs), where `scripts/setup.sh --dev` installs it, so absence is a failure
    rather than a silently skipped check."""
    if found:
        return
    message = f"needs {what} (bash scripts/setup.sh --dev installs it)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI run without a required checker: {message}")
    pytest.skip(message)


def validator_cmd() -> list[str]:
    """``node -e …`` that validates the GLB paths appended to it with the Khronos glTF Validator and prints
    ``{path: {errors, warnings, codes (of errors and warnings)}}`` as JSON; skips when it is missing."""
    require_tool(shutil.which("node") is not None and VALIDATOR.is_dir(), "node and .tools/node_modules/gltf-validator")
    script = (
        "const fs=require('fs');const v=require(process.argv[1]);(async()=>{const out={};"
        "for(const p of process.argv.slice(2)){const r=await v.validateBytes(new Uint8Array(fs.readFileSync(p)));"
        "out[p]={errors:r.issues.numErrors,warnings:r.issues.numWarnings,"
        "codes:r.issues.messages.filter(m=>m.severity<=1).map(m=>m.code)};}"
        "console.log(JSON.stringify(out));})();"
    )
    return ["node", "-e", script, str(VALIDATOR)]
