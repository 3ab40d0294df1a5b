"""`add_clip_to_gltf`: a glTF/GLB file with one clip added or replaced, everything else as it was.

An animator's file has more than our `Character` holds: several meshes and skins, materials, morph targets
and their weight channels, cameras, extensions, clips we did not touch. So a fill is written by editing a
copy of the input: the new clip's keys are appended to the end of the binary buffer (every existing byte
and accessor stays as it is, so other clips come back byte-identical) and one animation is added, or put
in the place of the clip it replaces. The JSON is rewritten by pygltflib, which keeps every glTF property,
``extensions`` and ``extras``.

Joints map to nodes by the names the importer gave them (the node's name; ``nodes[<i>]`` for an unnamed
node, which is what assimp calls it; ``name#k`` for the k-th repeat), and the mapping is checked against the
skeleton's parents. `Motion` keeps a root joint's rotation and position in world space (nodes above it
folded in, `anymole.io._scene`), so the root's keys are brought back into its parent node's space at the
parent chain's rest transform; the other joints' keys are their local rotations and translations as they
are. Scale is never animated by the new clip.
"""

from __future__ import annotations

import base64
import re
import warnings
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pygltflib as gl
import torch

from anymole.errors import AssetError
from anymole.rig.character import Character
from anymole.rig.motion import Motion
from anymole.rig.quat import quat_conj, quat_mul, rotmat_to_unitquat, unitquat_to_rotmat

__all__ = ["add_clip_to_gltf", "clip_names"]

_UNNAMED = re.compile(r"^nodes\[(\d+)\]$")
_REPEAT = re.compile(r"^(.*)#(\d+)$")


def clip_names(gltf: gl.GLTF2) -> list[str]:
    """The names `load_character` gives the file's animations, in file order (``animation_<i>`` when unnamed,
    ``name#k`` for the k-th repeat of a name)."""
    seen: dict[str, int] = {}
    out = []
    for i, a in enumerate(gltf.animations):
        n = a.name or f"animation_{i}"
        k = seen.get(n, 0)
        seen[n] = k + 1
        out.append(n if k == 0 else f"{n}#{k}")
    return out


def _local_matrix(node: gl.Node) -> np.ndarray:
    if node.matrix is not None:
        return np.asarray(node.matrix, dtype=np.float64).reshape(4, 4).T  # glTF stores columns
    m = np.eye(4)
    t = node.translation or [0.0, 0.0, 0.0]
    r = node.rotation or [0.0, 0.0, 0.0, 1.0]
    s = node.scale or [1.0, 1.0, 1.0]
    rot = unitquat_to_rotmat(torch.tensor(r, dtype=torch.float64)).numpy()
    m[:3, :3] = rot * np.asarray(s, dtype=np.float64)
    m[:3, 3] = t
    return m


def _parents(gltf: gl.GLTF2) -> list[int]:
    parents = [-1] * len(gltf.nodes)
    for i, node in enumerate(gltf.nodes):
        for c in node.children or []:
            parents[c] = i
    return parents


def _world(gltf: gl.GLTF2, parents: list[int], node: int) -> np.ndarray:
    m = np.eye(4)
    while node >= 0:
        m = _local_matrix(gltf.nodes[node]) @ m
        node = parents[node]
    return m


def _joint_nodes(gltf: gl.GLTF2, character: Character, parents: list[int], path: Path) -> list[int]:
    """The glTF node of each joint of ``character``, checked against the skeleton's hierarchy."""
    by_name: dict[str, list[int]] = {}
    for i, node in enumerate(gltf.nodes):
        by_name.setdefault(node.name or f"nodes[{i}]", []).append(i)
    out = []
    for name in character.skeleton.names:
        base, k = name, 0
        unnamed = _UNNAMED.match(name)
        repeat = _REPEAT.match(name)
        if name not in by_name and repeat:
            base, k = repeat.group(1), int(repeat.group(2))
        nodes = by_name.get(base, [])
        if unnamed and not nodes and int(unnamed.group(1)) < len(gltf.nodes):
            nodes = [int(unnamed.group(1))]
        if k >= len(nodes):
            raise AssetError(
                path, f"joint {name!r} has no node of that name in the file; was it loaded from this file?"
            )
        out.append(nodes[k])
    for j, p in enumerate(character.skeleton.parents):
        if p < 0:
            continue
        a = parents[out[j]]
        while a >= 0 and a != out[p]:
            a = parents[a]
        if a < 0:
            raise AssetError(
                path,
                f"joint {character.skeleton.names[j]!r} is not below {character.skeleton.names[p]!r} in the file",
            )
    return out


def _load(source: Path) -> tuple[gl.GLTF2, bytearray]:
    """The glTF and its one binary buffer; a .gltf's external or data-URI buffers and images are moved into
    it, since the GLB may be written elsewhere."""
    try:
        gltf = gl.GLTF2().load(str(source))
    except Exception as exc:  # pygltflib raises whatever its JSON and struct parsing meet
        raise AssetError(source, f"cannot read the glTF to edit: {exc}") from None
    if gltf is None:
        raise AssetError(source, "cannot read the glTF to edit")
    if any(b.uri for b in gltf.buffers):
        # pygltflib warns that the input's .bin "will be left orphaned": it is the input's, left alone as meant
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Conversion will leave", category=UserWarning)
            gltf.convert_buffers(gl.BufferFormat.BINARYBLOB)
    data = bytearray(gltf.binary_blob() or b"")
    for image in gltf.images:
        if image.uri:
            _embed(gltf, image, data, source)
    return gltf, data


def _embed(gltf: gl.GLTF2, image: gl.Image, data: bytearray, source: Path) -> None:
    """Move an image given by URI (data URI or a file next to ``source``) into ``data`` as a buffer view."""
    uri = image.uri or ""
    if uri.startswith("data:"):
        header, _, payload = uri.partition(",")
        raw = base64.b64decode(payload)
        mime = header[5:].split(";")[0]
    else:
        file = source.parent / unquote(uri)
        try:
            raw = file.read_bytes()
        except OSError as exc:
            raise AssetError(source, f"image {uri!r} cannot be read: {exc.strerror}") from None
        mime = "image/png" if file.suffix.lower() == ".png" else "image/jpeg"
    data.extend(b"\0" * (-len(data) % 4))
    gltf.bufferViews.append(gl.BufferView(buffer=0, byteOffset=len(data), byteLength=len(raw)))
    data.extend(raw)
    image.bufferView, image.mimeType, image.uri = len(gltf.bufferViews) - 1, image.mimeType or mime, None


def add_clip_to_gltf(
    path: str | Path,
    source: str | Path,
    character: Character,
    motion: Motion,
    name: str,
    *,
    replace: str | None = None,
    unit_scale: float = 1.0,
) -> None:
    """Write ``source`` to ``path`` as GLB with ``motion`` added as the animation ``name``.

    Args:
        path: the ``.glb`` to write.
        source: the ``.glb``/``.gltf`` ``character`` was loaded from.
        character: its skeleton (joint names and parents find the nodes).
        motion: the new clip on that skeleton.
        name: the new animation's name.
        replace: the name (as in ``character.motions``) of a clip to replace: the new animation takes its
            place and name, every other clip keeps its index, and the replaced clip's channels that do not
            pose the skeleton (morph weights, other nodes) are kept, on their own timeline.
        unit_scale: metres per file unit the character was loaded with (1 for glTF unless ``scale=`` was
            passed).

    Raises:
        AssetError: the file cannot be read or written, a joint has no node, or ``replace`` names no clip.
    """
    source, path = Path(source), Path(path)
    sk = character.skeleton
    if motion.num_joints != sk.num_joints:
        raise AssetError(path, f"the clip has {motion.num_joints} joints, the skeleton {sk.num_joints}")
    gltf, data = _load(source)
    parents = _parents(gltf)
    nodes = _joint_nodes(gltf, character, parents, source)

    def accessor(array: np.ndarray, kind: str, bounds: bool = False) -> int:
        data.extend(b"\0" * (-len(data) % 4))
        raw = np.ascontiguousarray(array, dtype="<f4").tobytes()
        gltf.bufferViews.append(gl.BufferView(buffer=0, byteOffset=len(data), byteLength=len(raw)))
        data.extend(raw)
        flat = array.reshape(array.shape[0], -1)
        acc = gl.Accessor(
            bufferView=len(gltf.bufferViews) - 1, componentType=gl.FLOAT, count=len(array), type=kind
        )
        if bounds:
            acc.min, acc.max = flat.min(0).astype(float).tolist(), flat.max(0).astype(float).tolist()
        gltf.accessors.append(acc)
        return len(gltf.accessors) - 1

    rot = motion.rotations.detach().double().cpu()
    rot = rot / rot.norm(dim=-1, keepdim=True)
    trans = None if motion.translations is None else motion.translations.detach().double().cpu() / unit_scale
    root_t = motion.root_translation.detach().double().cpu() / unit_scale
    offsets = sk.offsets.detach().double().cpu() / unit_scale
    anim = gl.Animation(name=name)
    times = accessor((np.arange(motion.num_frames) / motion.fps).astype(np.float32), gl.SCALAR, bounds=True)

    def channel(node: int, path_: str, values: torch.Tensor) -> None:
        output = accessor(values.float().numpy(), gl.VEC4 if path_ == "rotation" else gl.VEC3)
        anim.samplers.append(gl.AnimationSampler(input=times, output=output))
        target = gl.AnimationChannelTarget(node=node, path=path_)
        anim.channels.append(gl.AnimationChannel(sampler=len(anim.samplers) - 1, target=target))

    for j, node in enumerate(nodes):
        _to_trs(gltf.nodes[node])  # an animated node may not use `matrix`
        q, t = rot[:, j], None
        parent_world = _world(gltf, parents, parents[node])
        if sk.parents[j] < 0:  # world space → the parent node's space at rest
            lin = parent_world[:3, :3]
            s = abs(np.linalg.det(lin)) ** (1.0 / 3.0)
            pq = rotmat_to_unitquat(torch.from_numpy(lin / s)).expand_as(q)
            q = quat_mul(quat_conj(pq), q)
            if j == 0:
                world = root_t
            else:  # another root: it moves only with per-joint translations
                world = trans[:, j] if trans is not None else offsets[j].expand(motion.num_frames, 3)
            t = (world - torch.from_numpy(parent_world[:3, 3])) @ torch.from_numpy(np.linalg.inv(lin).T)
        elif trans is not None and bool((trans[:, j] - offsets[j]).abs().amax() > 1e-7):
            # Motion's joint translations carry the parent chain's uniform scale; the node's are before it
            s = abs(np.linalg.det(parent_world[:3, :3])) ** (1.0 / 3.0)
            t = trans[:, j] / s
        channel(node, "rotation", q)
        if t is not None:
            channel(node, "translation", t)

    if replace is not None:
        names = clip_names(gltf)
        if replace not in names:
            raise AssetError(source, f"no clip {replace!r} to replace; the file has {names}")
        old = gltf.animations[names.index(replace)]
        anim.name, anim.extras = old.name, old.extras  # an unnamed clip stays unnamed: same name on reload
        _keep_other_channels(old, anim, _posed_nodes(nodes, sk.parents, parents))
        gltf.animations[names.index(replace)] = anim
    else:
        gltf.animations.append(anim)
    data.extend(b"\0" * (-len(data) % 4))
    if not gltf.buffers:
        gltf.buffers.append(gl.Buffer())
    gltf.buffers[0].byteLength = len(data)
    gltf.set_binary_blob(bytes(data))
    try:
        gltf.save_binary(str(path))
    except OSError as exc:
        raise AssetError(path, f"cannot write the file: {exc.strerror}") from None


def _posed_nodes(nodes: list[int], joint_parents: tuple[int, ...], parents: list[int]) -> set[int]:
    """The nodes whose transforms the new clip defines: the joints and the nodes above each root joint (whose
    animation the importer folded into the root's keys)."""
    out = set(nodes)
    for node, p in zip(nodes, joint_parents, strict=True):
        a = parents[node] if p < 0 else -1
        while a >= 0:
            out.add(a)
            a = parents[a]
    return out


def _keep_other_channels(old: gl.Animation, new: gl.Animation, posed: set[int]) -> None:
    """Copy into ``new`` the channels of ``old`` that animate something besides the posed nodes' transforms
    (morph weights, props, cameras), with their samplers' accessors as they were."""
    for c in old.channels:
        if c.target.node in posed and c.target.path in ("rotation", "translation", "scale"):
            continue
        new.samplers.append(old.samplers[c.sampler])
        new.channels.append(
            gl.AnimationChannel(
                sampler=len(new.samplers) - 1, target=c.target, extensions=c.extensions, extras=c.extras
            )
        )


def _to_trs(node: gl.Node) -> None:
    """Replace a node's ``matrix`` by the same transform as translation, rotation and scale."""
    if node.matrix is None:
        return
    m = _local_matrix(node)
    scale = np.linalg.norm(m[:3, :3], axis=0)
    rot = m[:3, :3] / scale
    if np.linalg.det(rot) < 0:  # a mirror: put it in the scale
        scale[0], rot[:, 0] = -scale[0], -rot[:, 0]
    node.translation = m[:3, 3].tolist()
    node.rotation = rotmat_to_unitquat(torch.from_numpy(rot)).tolist()
    node.scale = scale.tolist()
    node.matrix = None
