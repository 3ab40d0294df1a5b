"""BVH (Biovision hierarchy) reader and writer.

BVH is plain text, so it is parsed here rather than through assimp (which turns End Sites into nodes and
builds a synthetic skinned mesh with a different bone set; NOTES.md). Conventions handled:

* Each joint's rotation order is read from its own ``CHANNELS`` line (the CMU files mix ``ZYX`` and
  ``ZXY``); angles are degrees, composed in the listed order (``Zrotation Xrotation Yrotation`` →
  ``Rz·Rx·Ry``).
* Position channels are absolute local translations: they replace the joint's OFFSET, as in assimp and
  Blender.
* End Sites are not joints; they become `Skeleton.end_sites`.
* Any whitespace separates tokens, so mixed CR/LF line endings and ``.0083333`` are fine.
* Units: a BVH file does not say. ``scale=None`` picks, among metres, centimetres, millimetres, inches and
  CMU units (0.056444 m), the one that makes the rest pose's largest extent closest to a 1.7 m human
  (log distance); pass ``scale=`` (metres per file unit) to override.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from anymole.errors import AssetError
from anymole.io._keys import clip_grid
from anymole.rig.character import Character
from anymole.rig.motion import MAX_FPS, Motion
from anymole.rig.quat import euler_to_unitquat, quat_continuity, unitquat_to_euler
from anymole.rig.skeleton import Skeleton

__all__ = ["BVH_UNIT_CANDIDATES", "bvh_rotation_orders", "guess_bvh_scale", "read_bvh", "unit_name", "write_bvh"]

# metres per file unit that ``scale=None`` chooses from; CMU: inches / 0.45 (CMU mocap FAQ)
BVH_UNIT_CANDIDATES = {"m": 1.0, "cm": 0.01, "mm": 0.001, "inch": 0.0254, "cmu": 0.056444}
_HUMAN_HEIGHT_M = 1.7


def unit_name(metres_per_unit: float) -> str:
    """``"cm"`` for 0.01 and the other `BVH_UNIT_CANDIDATES` by name; ``"0.3 m"`` for any other unit."""
    for name, s in BVH_UNIT_CANDIDATES.items():
        if abs(metres_per_unit - s) <= 1e-9 * s:
            return name
    return f"{metres_per_unit:g} m"


def _show(text: str, limit: int = 48) -> str:
    """``text`` quoted for a message: control and non-ASCII characters escaped (a binary file's bytes must not
    reach a terminal raw), cut after ``limit`` characters."""
    shown = ascii(text)
    return shown if len(shown) <= limit else shown[:limit] + "..."


class _Tokens:
    def __init__(self, text: str, path: str) -> None:
        self.items = text.split()
        self.pos = 0
        self.path = path

    def fail(self, what: str) -> AssetError:
        near = " ".join(self.items[max(0, self.pos - 3) : self.pos + 3])
        return AssetError(self.path, f"malformed BVH: {what} (near token {self.pos}: {_show(near)})")

    def next(self) -> str:
        if self.pos >= len(self.items):
            raise self.fail("unexpected end of file")
        tok = self.items[self.pos]
        self.pos += 1
        return tok

    def expect(self, *words: str) -> str:
        tok = self.next()
        if tok not in words:
            self.pos -= 1
            raise self.fail(f"expected {' or '.join(words)}, got {_show(tok)}")
        return tok

    def number(self) -> float:
        tok = self.next()
        try:
            value = float(tok)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):  # also keeps "inf" and "nan" out of OFFSETs and the counts
            self.pos -= 1
            raise self.fail(f"expected a finite number, got {_show(tok)}")
        return value


def _parse(text: str, path: str) -> dict:
    tk = _Tokens(text, path)
    tk.expect("HIERARCHY")
    names: list[str] = []
    parents: list[int] = []
    offsets: list[list[float]] = []
    channels: list[list[str]] = []
    end_sites: dict[int, list[float]] = {}

    def joint(parent: int) -> None:
        name = tk.next()
        j = len(names)
        names.append(name)
        parents.append(parent)
        tk.expect("{")
        tk.expect("OFFSET")
        offsets.append([tk.number(), tk.number(), tk.number()])
        tk.expect("CHANNELS")
        n = tk.number()
        if n != int(n) or not 0 <= n <= 6:
            raise tk.fail(f"bad channel count {n}")
        chans = [tk.next() for _ in range(int(n))]
        for c in chans:
            if c.lower() not in {f"{a}{k}" for a in "xyz" for k in ("position", "rotation")}:
                raise tk.fail(f"unknown channel {_show(c)} of joint {_show(name)}")
        channels.append([c.lower() for c in chans])
        while True:
            tok = tk.expect("JOINT", "End", "}")
            if tok == "}":
                return
            if tok == "JOINT":
                joint(j)
            else:
                tk.expect("Site")
                tk.expect("{")
                tk.expect("OFFSET")
                end_sites[j] = [tk.number(), tk.number(), tk.number()]
                tk.expect("}")

    tk.expect("ROOT")
    try:
        joint(-1)
        while tk.expect("ROOT", "MOTION") == "ROOT":
            joint(-1)
    except RecursionError:  # one Python frame per nesting level
        raise tk.fail("joints nested too deeply (thousands of levels); is the hierarchy corrupt?") from None
    tk.expect("Frames:")
    frames = tk.number()
    tk.expect("Frame")
    tk.expect("Time:")
    frame_time = tk.number()
    if frames != int(frames) or frames < 1:
        raise tk.fail(f"Frames must be a positive integer, got {frames:g}")
    if not frame_time >= 1 / MAX_FPS:
        raise tk.fail(f"Frame Time must be at least 1/{MAX_FPS:g} s ({MAX_FPS:g} fps), got {frame_time:g}")
    width = sum(len(c) for c in channels)
    values = tk.items[tk.pos :]
    need = int(frames) * width
    if len(values) < need:
        raise AssetError(
            path,
            f"truncated BVH: Frames says {int(frames)} frames × {width} channels = {need} values, "
            f"the file has {len(values)}",
        )
    try:
        data = np.asarray(values[:need], dtype=np.float64).reshape(int(frames), width)
    except ValueError:
        raise AssetError(path, "malformed BVH: the MOTION section has a value that is not a number") from None
    if not np.isfinite(data).all():
        raise AssetError(path, "malformed BVH: the MOTION section contains NaN or infinite values")
    return {
        "names": names,
        "parents": parents,
        "offsets": np.asarray(offsets, dtype=np.float64),
        "channels": channels,
        "end_sites": {j: np.asarray(v) for j, v in end_sites.items()},
        "frame_time": frame_time,
        "data": data,
    }


def bvh_rotation_orders(path: str | Path) -> list[str]:
    """Each joint's rotation order as its ``CHANNELS`` line lists it (``"ZXY"`` for ``Zrotation Xrotation
    Yrotation``), axes it lacks appended in X, Y, Z order, in joint order (what `write_bvh`'s ``order``
    takes, so a file written from a BVH keeps the input's channel orders)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise AssetError(path, f"cannot read the file: {exc.strerror}") from None
    orders = []
    for chans in _parse(text, str(path))["channels"]:
        axes = [c[0].upper() for c in chans if c.endswith("rotation")]
        orders.append("".join(axes + [a for a in "XYZ" if a not in axes]))
    return orders


def guess_bvh_scale(offsets: np.ndarray, parents: Sequence[int], end_sites: dict[int, np.ndarray]) -> float:
    """Metres per file unit for a BVH rest pose (``offsets (J, 3)`` in file units); see the module docstring."""
    pos = np.zeros_like(offsets)
    for j, p in enumerate(parents):
        pos[j] = offsets[j] + (pos[p] if p >= 0 else 0.0)
    pts = [pos] + [pos[j] + off for j, off in end_sites.items()]
    allp = np.concatenate([np.atleast_2d(x) for x in pts])
    extent = float((allp.max(0) - allp.min(0)).max())
    if extent <= 0:
        return 1.0
    return min(BVH_UNIT_CANDIDATES.values(), key=lambda s: abs(math.log(extent * s / _HUMAN_HEIGHT_M)))


def read_bvh(path: str | Path, *, scale: float | None = None, fps: float | None = None) -> Character:
    """Read a BVH file into a mesh-less `Character` with one clip named after the file stem.

    Args:
        path: the ``.bvh`` file.
        scale: metres per file unit; ``None`` guesses (module docstring).
        fps: resample the clip to this rate (slerp/linear by time); ``None`` keeps ``1 / Frame Time``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise AssetError(path, f"cannot read the file: {exc.strerror}") from None
    if "\x00" in text:  # no text file holds NUL bytes
        raise AssetError(path, "is binary data, not a BVH text file (it should start with HIERARCHY)")
    b = _parse(text, str(path))
    parents = b["parents"]
    s = guess_bvh_scale(b["offsets"], parents, b["end_sites"]) if scale is None else float(scale)
    if not s > 0:
        raise AssetError(path, f"scale must be > 0, got {s}")
    J = len(b["names"])
    data = torch.from_numpy(b["data"])
    frames = data.shape[0]
    offsets = torch.from_numpy(b["offsets"] * s)
    trans = offsets.unsqueeze(0).expand(frames, J, 3).clone()
    quats = torch.zeros((frames, J, 4), dtype=torch.float64)
    quats[..., 3] = 1.0
    groups: dict[str, tuple[list[int], list[list[int]]]] = {}
    col = 0
    moves_non_root = False
    for j, chans in enumerate(b["channels"]):
        rot_axes = [c[0].upper() for c in chans if c.endswith("rotation")]
        rot_cols = [col + i for i, c in enumerate(chans) if c.endswith("rotation")]
        for i, c in enumerate(chans):
            if c.endswith("position"):
                trans[:, j, "xyz".index(c[0])] = data[:, col + i] * s
                moves_non_root |= parents[j] >= 0
        if rot_axes:
            if len(set(rot_axes)) != len(rot_axes):
                raise AssetError(path, f"malformed BVH: joint {_show(b['names'][j])} repeats a rotation axis")
            missing = [a for a in "XYZ" if a not in rot_axes]  # absent axes rotate by 0
            order = "".join(rot_axes + missing)
            cols = rot_cols + [-1] * len(missing)
            groups.setdefault(order, ([], []))[0].append(j)
            groups[order][1].append(cols)
        col += len(chans)
    padded = torch.cat((data, torch.zeros(frames, 1, dtype=torch.float64)), dim=1)  # column -1 reads 0
    for order, (joints, group_cols) in groups.items():  # one batched conversion per distinct rotation order
        angles = torch.deg2rad(padded[:, torch.tensor(group_cols)])  # (F, Jg, 3)
        quats[:, torch.tensor(joints)] = euler_to_unitquat(angles, order)
    quats = quat_continuity(quats, dim=0)
    native_fps = 1.0 / b["frame_time"]
    if fps is not None and abs(fps - native_fps) > 1e-9:
        rate, n = clip_grid((frames - 1) / native_fps, frames, fps)
        grid = Motion(native_fps, quats, trans[:, 0], trans).sample(
            torch.arange(n, dtype=torch.float64) * (native_fps / rate), rate
        )
        assert grid.translations is not None  # sampled from a clip that has them
        quats, trans, native_fps = grid.rotations, grid.translations, rate
    skeleton = Skeleton(
        names=tuple(b["names"]),
        parents=tuple(parents),
        offsets=offsets.float(),
        rest_rotations=torch.tensor([[0.0, 0.0, 0.0, 1.0]]).expand(J, 4).clone(),
        end_sites={j: torch.from_numpy(v * s).float() for j, v in b["end_sites"].items()},
    )
    motion = Motion(
        fps=native_fps,
        rotations=quats.float(),
        root_translation=trans[:, 0].float().contiguous(),
        translations=trans.float().contiguous() if moves_non_root or len(skeleton.roots) > 1 else None,
        name=path.stem,
    )
    return Character(
        name=path.stem, skeleton=skeleton, mesh=None, motions={path.stem: motion}, source=str(path), unit_scale=s
    )


def _fmt(x: float) -> str:
    return f"{x:.9g}"


def write_bvh(
    path: str | Path,
    skeleton: Skeleton,
    motion: Motion,
    *,
    order: str | Sequence[str] = "ZYX",
    unit_scale: float = 1.0,
) -> None:
    """Write one clip as BVH.

    Args:
        path: output file (``.bvh``), overwritten.
        skeleton: the rig; its offsets become OFFSETs. Rest rotations cannot be expressed in BVH (its rest
            pose has none) and are not needed: the frames carry full local rotations.
        motion: the clip; ``fps`` gives ``Frame Time``. Joint 0 (and every other root) gets position channels,
            as does any joint whose ``motion.translations`` leave its rest offset.
        order: rotation channel order, one for all joints (``"ZYX"``) or one per joint.
        unit_scale: file units per metre (1 writes metres; 100 centimetres).

    Leaves get an End Site: `Skeleton.end_sites` where known, else half of the leaf's own offset (a small
    +Y stub for zero-length leaves), because importers such as Blender need a tail for each bone.
    """
    J = skeleton.num_joints
    if motion.num_joints != J:
        raise AssetError(path, f"the motion has {motion.num_joints} joints, the skeleton {J}")
    orders = [order] * J if isinstance(order, str) else list(order)
    if len(orders) != J:
        raise AssetError(path, f"order lists {len(orders)} rotation orders for {J} joints")
    offsets = skeleton.offsets.double() * unit_scale
    trans = (
        motion.translations.double()
        if motion.translations is not None
        else skeleton.offsets.double().unsqueeze(0).expand(motion.num_frames, J, 3).clone()
    )
    trans[:, 0] = motion.root_translation.double()
    trans = trans * unit_scale
    positional = [p < 0 or bool((trans[:, j] - offsets[j]).abs().amax() > 1e-9) for j, p in enumerate(skeleton.parents)]
    # Re-normalise in float64: float32 clips are unit only to ~1e-7, and near gimbal lock the Euler extraction
    # amplifies that by 1 / cos(middle angle) (CesiumMan's root: ~5000x, a 4e-5 round-trip error before this).
    rot = motion.rotations.double()
    rot = rot / rot.norm(dim=-1, keepdim=True)
    eulers = {o: torch.rad2deg(unitquat_to_euler(rot, o)) for o in set(orders)}  # (F, J, 3) per order
    children: list[list[int]] = [[] for _ in range(J)]
    for j, p in enumerate(skeleton.parents):
        if p >= 0:
            children[p].append(j)
    scale_ref = float(offsets.norm(dim=-1).max()) or 1.0

    lines: list[str] = ["HIERARCHY"]
    columns: list[torch.Tensor] = []

    def emit(j: int, depth: int) -> None:
        ind = "\t" * depth
        kind = "ROOT" if skeleton.parents[j] < 0 else "JOINT"
        lines.append(f"{ind}{kind} {skeleton.names[j]}")
        lines.append(f"{ind}{{")
        lines.append(f"{ind}\tOFFSET " + " ".join(_fmt(float(v)) for v in offsets[j]))
        chans = []
        if positional[j]:
            chans += ["Xposition", "Yposition", "Zposition"]
            columns.append(trans[:, j])
        chans += [f"{a}rotation" for a in orders[j].upper()]
        columns.append(eulers[orders[j]][:, j])
        lines.append(f"{ind}\tCHANNELS {len(chans)} " + " ".join(chans))
        for c in children[j]:
            emit(c, depth + 1)
        if not children[j]:
            if j in skeleton.end_sites:
                tip = skeleton.end_sites[j].double() * unit_scale
            elif float(offsets[j].norm()) > 1e-9:
                tip = 0.5 * offsets[j]
            else:
                tip = torch.tensor([0.0, 0.05 * scale_ref, 0.0], dtype=torch.float64)
            lines.append(f"{ind}\tEnd Site")
            lines.append(f"{ind}\t{{")
            lines.append(f"{ind}\t\tOFFSET " + " ".join(_fmt(float(v)) for v in tip))
            lines.append(f"{ind}\t}}")
        lines.append(f"{ind}}}")

    for r in skeleton.roots:
        emit(r, 0)
    lines += ["MOTION", f"Frames: {motion.num_frames}", f"Frame Time: {_fmt(1.0 / motion.fps)}"]
    body = io.StringIO()
    np.savetxt(body, torch.cat(columns, dim=1).numpy(), fmt="%.9g", delimiter=" ")
    try:
        Path(path).write_text("\n".join(lines) + "\n" + body.getvalue(), encoding="utf-8")
    except OSError as exc:
        raise AssetError(path, f"cannot write the file: {exc.strerror}") from None
