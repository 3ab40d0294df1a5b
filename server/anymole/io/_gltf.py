"""`write_glb`: a character (skeleton, skinned mesh, materials) and its clips as one binary glTF 2.0 file.

Layout: nodes ``0..J-1`` are the joints (TRS = rest pose, so the file opens in its bind pose), the skinned
mesh node (if any) is a scene root with an identity transform (glTF ignores a skinned mesh node's
transform) whose mesh has one primitive per material (each with the vertices its faces use; vertex colours
as ``COLOR_0``), and every clip is one animation with linear samplers at ``k / fps`` seconds: rotations for all
joints, translations for joint 0, for any other root, and for joints whose translation is animated.
Everything is float32, little-endian, in one buffer with 4-byte aligned views, so the Khronos glTF
Validator reports no errors (checked in tests/io).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pygltflib as gl
import torch

from anymole.errors import AssetError
from anymole.rig.character import Character, SkinnedMesh
from anymole.rig.motion import Motion

__all__ = ["write_glb"]

_ARRAY_BUFFER = 34962
_ELEMENT_ARRAY_BUFFER = 34963


class _Blob:
    """The binary chunk and the views/accessors that point into it."""

    def __init__(self, gltf: gl.GLTF2) -> None:
        self.gltf = gltf
        self.data = bytearray()

    def view(self, raw: bytes, target: int | None = None) -> int:
        self.data.extend(b"\0" * (-len(self.data) % 4))
        self.gltf.bufferViews.append(
            gl.BufferView(buffer=0, byteOffset=len(self.data), byteLength=len(raw), target=target)
        )
        self.data.extend(raw)
        return len(self.gltf.bufferViews) - 1

    def accessor(
        self, array: np.ndarray, kind: str, *, target: int | None = None, bounds: bool = False
    ) -> int:
        component = {np.dtype("float32"): gl.FLOAT, np.dtype("uint16"): gl.UNSIGNED_SHORT,
                     np.dtype("uint8"): gl.UNSIGNED_BYTE, np.dtype("uint32"): gl.UNSIGNED_INT}[array.dtype]
        flat = np.ascontiguousarray(array).reshape(array.shape[0], -1)
        acc = gl.Accessor(
            bufferView=self.view(flat.astype(array.dtype.newbyteorder("<")).tobytes(), target),
            componentType=component,
            count=int(flat.shape[0]),
            type=kind,
        )
        if bounds:  # required for POSITION and animation inputs
            acc.min = flat.min(0).astype(float).tolist()
            acc.max = flat.max(0).astype(float).tolist()
        self.gltf.accessors.append(acc)
        return len(self.gltf.accessors) - 1


def _unit(q: torch.Tensor) -> np.ndarray:
    q = q.detach().double()
    return (q / q.norm(dim=-1, keepdim=True)).float().cpu().numpy()


def _png(image: torch.Tensor) -> bytes:
    from PIL import Image

    arr = image.detach().cpu().numpy().astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(arr, "RGBA" if arr.shape[-1] == 4 else "RGB").save(out, format="PNG")
    return out.getvalue()


def _attributes(blob: _Blob, mesh: SkinnedMesh, used: np.ndarray, num_joints: int) -> gl.Attributes:
    """Vertex attribute accessors of the vertices ``used`` (indices into the mesh's)."""
    sel = torch.from_numpy(used.astype(np.int64))

    def arr(t: torch.Tensor) -> np.ndarray:
        return t.detach().cpu()[sel].float().numpy()

    attrs = gl.Attributes(POSITION=blob.accessor(arr(mesh.vertices), gl.VEC3, target=_ARRAY_BUFFER, bounds=True))
    if mesh.normals is not None:
        n = mesh.normals.detach().double()
        attrs.NORMAL = blob.accessor(arr(n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)), gl.VEC3, target=_ARRAY_BUFFER)
    if mesh.uvs is not None:
        attrs.TEXCOORD_0 = blob.accessor(arr(mesh.uvs), gl.VEC2, target=_ARRAY_BUFFER)
    if mesh.colors is not None:
        attrs.COLOR_0 = blob.accessor(arr(mesh.colors), gl.VEC4, target=_ARRAY_BUFFER)
    ji = mesh.joint_indices.detach().cpu()[sel].numpy()
    jw = mesh.joint_weights.detach().cpu()[sel].double().numpy()
    k = -(-ji.shape[1] // 4) * 4  # glTF packs influences in sets of four
    ji = np.pad(ji, ((0, 0), (0, k - ji.shape[1])))
    jw = np.pad(jw, ((0, 0), (0, k - jw.shape[1])))
    ji = np.where(jw > 0, ji, 0)  # unused slots point at joint 0 with weight 0
    jw = (jw / jw.sum(1, keepdims=True)).astype(np.float32)
    jtype = np.uint8 if num_joints <= 256 else np.uint16
    for s in range(k // 4):
        setattr(attrs, f"JOINTS_{s}", blob.accessor(ji[:, 4 * s : 4 * s + 4].astype(jtype), gl.VEC4, target=_ARRAY_BUFFER))
        setattr(attrs, f"WEIGHTS_{s}", blob.accessor(jw[:, 4 * s : 4 * s + 4], gl.VEC4, target=_ARRAY_BUFFER))
    return attrs


def write_glb(
    path: str | Path,
    character: Character,
    motions: Mapping[str, Motion] | Sequence[Motion] | None = None,
) -> None:
    """Write ``character`` and ``motions`` (default: ``character.motions``) as a ``.glb`` file.

    Args:
        path: output file, overwritten.
        character: skeleton and, if present, the skinned mesh with its materials and textures.
        motions: clips on ``character.skeleton`` (each ``(F, J, 4)`` rotations); a mapping gives the
            animation names, a sequence uses each ``Motion.name`` (``animation_<i>`` when empty).

    Raises:
        AssetError: a clip's joint count differs from the skeleton's, or the file cannot be written.
    """
    sk = character.skeleton
    J = sk.num_joints
    if motions is None:
        motions = character.motions
    if isinstance(motions, Mapping):
        clips = list(motions.items())
    else:
        clips = [(m.name or f"animation_{i}", m) for i, m in enumerate(motions)]
    for name, m in clips:
        if m.num_joints != J:
            raise AssetError(path, f"clip {name!r} has {m.num_joints} joints, the skeleton has {J}")

    gltf = gl.GLTF2(asset=gl.Asset(version="2.0", generator="anymole.io"))
    blob = _Blob(gltf)
    offsets = sk.offsets.detach().float().cpu().numpy()
    rest = _unit(sk.rest_rotations)
    for j in range(J):
        gltf.nodes.append(
            gl.Node(
                name=sk.names[j],
                translation=offsets[j].astype(float).tolist(),
                rotation=rest[j].astype(float).tolist(),
                children=list(sk.children(j)) or None,
            )
        )
    scene_nodes = list(sk.roots)

    mesh = character.mesh
    if mesh is not None:
        faces = mesh.faces.detach().cpu().numpy().astype(np.uint32)
        face_mat = mesh.material_of_faces().cpu().numpy()
        images: dict[int, int] = {}  # id of a texture tensor -> glTF texture index
        primitives = []
        for k, material in enumerate(mesh.materials):
            picked = faces[face_mat == k]
            if not len(picked):
                continue
            # one material keeps every vertex (and their order); several get the vertices each one uses, as
            # assimp's importer misreads skin weights of primitives that share attribute accessors
            used = np.arange(len(mesh.vertices)) if len(mesh.materials) == 1 else np.unique(picked)
            attrs = _attributes(blob, mesh, used, J)
            remap = np.zeros(len(mesh.vertices), np.uint32)
            remap[used] = np.arange(len(used), dtype=np.uint32)
            indices = blob.accessor(remap[picked].reshape(-1, 1), gl.SCALAR, target=_ELEMENT_ARRAY_BUFFER)
            color = material.base_color.detach().float().cpu().numpy().astype(float).tolist()
            pbr = gl.PbrMetallicRoughness(baseColorFactor=color, metallicFactor=0.0, roughnessFactor=1.0)
            if material.texture is not None and mesh.uvs is not None:
                if id(material.texture) not in images:
                    gltf.images.append(gl.Image(bufferView=blob.view(_png(material.texture)), mimeType="image/png"))
                    if not gltf.samplers:
                        gltf.samplers.append(gl.Sampler(magFilter=gl.LINEAR, minFilter=gl.LINEAR_MIPMAP_LINEAR))
                    gltf.textures.append(gl.Texture(source=len(gltf.images) - 1, sampler=0))
                    images[id(material.texture)] = len(gltf.textures) - 1
                pbr.baseColorTexture = gl.TextureInfo(index=images[id(material.texture)])
            gltf.materials.append(
                gl.Material(name=material.name or f"{character.name}_material_{k}", pbrMetallicRoughness=pbr)
            )
            primitives.append(gl.Primitive(attributes=attrs, indices=indices, material=len(gltf.materials) - 1))
        gltf.meshes.append(gl.Mesh(name=character.name, primitives=primitives))
        # column-major mat4, as glTF stores matrices
        ibm = mesh.inverse_bind.detach().float().cpu().numpy().transpose(0, 2, 1).reshape(J, 16)
        gltf.skins.append(
            gl.Skin(joints=list(range(J)), inverseBindMatrices=blob.accessor(ibm, gl.MAT4), skeleton=sk.roots[0])
        )
        gltf.nodes.append(gl.Node(name=character.name, mesh=0, skin=0))
        scene_nodes.append(J)

    roots = set(sk.roots)
    for name, m in clips:
        times = (np.arange(m.num_frames, dtype=np.float64) / m.fps).astype(np.float32).reshape(-1, 1)
        t_acc = blob.accessor(times, gl.SCALAR, bounds=True)
        anim = gl.Animation(name=name)
        rot = _unit(m.rotations)
        trans = (
            m.translations.detach().float().cpu().numpy()
            if m.translations is not None
            else np.broadcast_to(offsets, (m.num_frames, J, 3)).copy()
        )
        trans[:, 0] = m.root_translation.detach().float().cpu().numpy()
        for j in range(J):
            anim.samplers.append(gl.AnimationSampler(input=t_acc, output=blob.accessor(rot[:, j], gl.VEC4)))
            anim.channels.append(
                gl.AnimationChannel(sampler=len(anim.samplers) - 1, target=gl.AnimationChannelTarget(node=j, path="rotation"))
            )
            if j in roots or np.abs(trans[:, j] - offsets[j]).max() > 1e-7:
                anim.samplers.append(gl.AnimationSampler(input=t_acc, output=blob.accessor(trans[:, j], gl.VEC3)))
                anim.channels.append(
                    gl.AnimationChannel(
                        sampler=len(anim.samplers) - 1, target=gl.AnimationChannelTarget(node=j, path="translation")
                    )
                )
        gltf.animations.append(anim)

    gltf.scenes = [gl.Scene(nodes=scene_nodes)]
    gltf.scene = 0
    blob.data.extend(b"\0" * (-len(blob.data) % 4))
    gltf.buffers = [gl.Buffer(byteLength=len(blob.data))]
    gltf.set_binary_blob(bytes(blob.data))
    try:
        gltf.save_binary(str(path))
    except OSError as exc:
        raise AssetError(path, f"cannot write the file: {exc.strerror}") from None
