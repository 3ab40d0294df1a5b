"""A multi-material character built in the tests and written as glTF with pygltflib: what a real asset has
and the bundled ones lack (several meshes and materials, a texture read through its own UV set, vertex
colours, a morph target and its weight channel, three clips, a material extension, a non-joint node above
the skeleton).

Three joints stand on +Y: ``root`` at the origin, ``spine`` 0.5 m up, ``head`` 1 m up, under a non-joint
``Armature`` node. Two skinned meshes, four primitives, each a box in its own material:

==========  ===========================  =====================================================================
primitive   box centre (m)               how it looks
==========  ===========================  =====================================================================
body        (0, 0.4, 0)                  ``orange`` factor (1.0, 0.5, 0.1); its morph target widens it
arm         (0.55, 0.55, 0)              ``white`` factor × vertex colour (0.9, 0.1, 0.1); a still target
head        (0, 1.1, 0)                  ``textured``: factor (1, 1, 1) × the image's left half, green
                                         (40, 200, 60), read through TEXCOORD_1; TEXCOORD_0 points at the
                                         right half, magenta, so reading the wrong set shows
eyes        (0, 1.15, 0.22)              ``black`` factor (0.05, 0.05, 0.05)
==========  ===========================  =====================================================================
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pygltflib as gl
from PIL import Image

# Expected base colour of each region (RGB in [0, 1]) and a point on its box's front (+Z) face.
REGIONS = {
    "body": ((1.0, 0.5, 0.1), (0.0, 0.4, 0.2)),
    "arm": ((0.9, 0.1, 0.1), (0.55, 0.55, 0.1)),
    "head": ((40 / 255, 200 / 255, 60 / 255), (0.1, 1.0, 0.2)),
    "eyes": ((0.05, 0.05, 0.05), (0.0, 1.15, 0.24)),
}
CLIPS = ("Nod", "Wave", "Walk")
MATERIALS = 4
MORPH_TARGETS = 1
_ARRAY, _ELEMENTS = 34962, 34963


def _box(
    center: tuple[float, float, float], half: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """8 corners ``(8, 3)`` float32 and 12 outward counter-clockwise triangles ``(12, 3)`` uint16."""
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], np.float32)
    verts = (np.asarray(center, np.float32) + corners * np.asarray(half, np.float32)).astype(np.float32)
    # corner index = 4·(x>0) + 2·(y>0) + (z>0)
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = [tri for a, b, c, d in quads for tri in ((a, b, c), (a, c, d))]
    return verts, np.asarray(faces, np.uint16)


class _Builder:
    def __init__(self) -> None:
        self.g = gl.GLTF2(asset=gl.Asset(version="2.0", generator="anymole tests"))
        self.data = bytearray()

    def accessor(self, array: np.ndarray, kind: str, target: int | None = None, bounds: bool = False) -> int:
        self.data.extend(b"\0" * (-len(self.data) % 4))
        raw = np.ascontiguousarray(array).tobytes()
        self.g.bufferViews.append(
            gl.BufferView(buffer=0, byteOffset=len(self.data), byteLength=len(raw), target=target)
        )
        self.data.extend(raw)
        component = {np.float32: gl.FLOAT, np.uint16: gl.UNSIGNED_SHORT, np.uint8: gl.UNSIGNED_BYTE}[
            array.dtype.type
        ]
        flat = array.reshape(len(array), -1)
        acc = gl.Accessor(
            bufferView=len(self.g.bufferViews) - 1, componentType=component, count=len(array), type=kind
        )
        if bounds:
            acc.min, acc.max = flat.min(0).tolist(), flat.max(0).tolist()
        self.g.accessors.append(acc)
        return len(self.g.accessors) - 1

    def image(self, rgb: np.ndarray) -> int:
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="PNG")
        raw = buf.getvalue()
        self.data.extend(b"\0" * (-len(self.data) % 4))
        self.g.bufferViews.append(gl.BufferView(buffer=0, byteOffset=len(self.data), byteLength=len(raw)))
        self.data.extend(raw)
        self.g.images.append(gl.Image(bufferView=len(self.g.bufferViews) - 1, mimeType="image/png"))
        return len(self.g.images) - 1

    def primitive(
        self, box: tuple[np.ndarray, np.ndarray], joint: int, material: int, **extra: np.ndarray
    ) -> gl.Primitive:
        verts, faces = box
        n = len(verts)
        attrs = gl.Attributes(POSITION=self.accessor(verts, gl.VEC3, _ARRAY, bounds=True))
        joints = np.zeros((n, 4), np.uint8)
        joints[:, 0] = joint
        weights = np.zeros((n, 4), np.float32)
        weights[:, 0] = 1.0
        attrs.JOINTS_0 = self.accessor(joints, gl.VEC4, _ARRAY)
        attrs.WEIGHTS_0 = self.accessor(weights, gl.VEC4, _ARRAY)
        for name, value in extra.items():
            setattr(
                attrs,
                name,
                self.accessor(value.astype(np.float32), gl.VEC4 if value.shape[1] == 4 else gl.VEC2, _ARRAY),
            )
        indices = self.accessor(faces.reshape(-1), gl.SCALAR, _ELEMENTS)
        return gl.Primitive(attributes=attrs, indices=indices, material=material)

    def clip(self, name: str, node: int, path: str, times: list[float], values: np.ndarray) -> None:
        t = self.accessor(np.asarray(times, np.float32), gl.SCALAR, bounds=True)
        kind = {4: gl.VEC4, 3: gl.VEC3, 1: gl.SCALAR}[values.shape[1]]
        out = self.accessor(
            values.astype(np.float32).reshape(len(values), -1)
            if kind != gl.SCALAR
            else values.astype(np.float32).reshape(-1),
            kind,
        )
        self.g.animations.append(
            gl.Animation(
                name=name,
                samplers=[gl.AnimationSampler(input=t, output=out)],
                channels=[
                    gl.AnimationChannel(sampler=0, target=gl.AnimationChannelTarget(node=node, path=path))
                ],
            )
        )


def _quat_x(deg: float) -> list[float]:
    h = np.radians(deg) / 2
    return [float(np.sin(h)), 0.0, 0.0, float(np.cos(h))]


def build(path: Path, external: bool = False) -> Path:
    """Write the character to ``path``: ``.glb``, or ``.gltf`` with its buffer as a data URI, or with
    ``external`` its buffer in ``<stem>.bin`` and its image in ``<stem>.png`` next to it."""
    b = _Builder()
    g = b.g
    # nodes: 0 Armature, 1 root, 2 spine, 3 head, 4 body mesh, 5 head mesh
    g.nodes = [
        gl.Node(name="Armature", children=[1]),
        gl.Node(name="root", translation=[0.0, 0.0, 0.0], children=[2]),
        gl.Node(name="spine", translation=[0.0, 0.5, 0.0], children=[3]),
        gl.Node(name="head", translation=[0.0, 0.5, 0.0]),
        gl.Node(name="body_mesh", mesh=0, skin=0),
        gl.Node(name="head_mesh", mesh=1, skin=0),
    ]
    world_y = [0.0, 0.5, 1.0]
    ibm = np.stack([np.eye(4, dtype=np.float32) for _ in world_y])
    for j, y in enumerate(world_y):
        ibm[j, 1, 3] = -y
    g.skins = [
        gl.Skin(
            joints=[1, 2, 3],
            skeleton=1,
            inverseBindMatrices=b.accessor(ibm.transpose(0, 2, 1).reshape(3, 16), gl.MAT4),
        )
    ]

    image = np.zeros((8, 8, 3), np.uint8)
    image[:, :4] = (40, 200, 60)
    image[:, 4:] = (255, 0, 255)
    g.images = []
    b.image(image)
    g.samplers = [gl.Sampler(magFilter=gl.NEAREST, minFilter=gl.NEAREST)]
    g.textures = [gl.Texture(source=0, sampler=0)]
    pbr = lambda rgb, **kw: gl.PbrMetallicRoughness(baseColorFactor=[*rgb, 1.0], metallicFactor=0.0, **kw)  # noqa: E731
    g.materials = [
        gl.Material(name="orange", pbrMetallicRoughness=pbr((1.0, 0.5, 0.1)),
                    extensions={"KHR_materials_emissive_strength": {"emissiveStrength": 1.0}}),
        gl.Material(name="white", pbrMetallicRoughness=pbr((1.0, 1.0, 1.0))),
        gl.Material(name="textured", pbrMetallicRoughness=pbr((1.0, 1.0, 1.0), baseColorTexture=gl.TextureInfo(index=0, texCoord=1))),
        gl.Material(name="black", pbrMetallicRoughness=pbr((0.05, 0.05, 0.05))),
    ]  # fmt: skip
    g.extensionsUsed = ["KHR_materials_emissive_strength"]

    body = _box((0.0, 0.4, 0.0), (0.3, 0.35, 0.2))
    arm = _box((0.55, 0.55, 0.0), (0.15, 0.1, 0.1))
    head = _box((0.0, 1.1, 0.0), (0.2, 0.2, 0.2))
    eyes = _box((0.0, 1.15, 0.22), (0.12, 0.04, 0.02))
    body_prim = b.primitive(body, 0, 0)
    widen = np.zeros((8, 3), np.float32)
    widen[:, 0] = np.sign(body[0][:, 0]) * 0.05
    body_prim.targets = [{"POSITION": b.accessor(widen, gl.VEC3, _ARRAY, bounds=True)}]
    red = np.tile(np.array([[0.9, 0.1, 0.1, 1.0]], np.float32), (8, 1))
    arm_prim = b.primitive(arm, 1, 1, COLOR_0=red)
    arm_prim.targets = [{"POSITION": b.accessor(np.zeros((8, 3), np.float32), gl.VEC3, _ARRAY, bounds=True)}]
    uv0 = np.tile(np.array([[0.75, 0.5]], np.float32), (8, 1))
    uv1 = np.tile(np.array([[0.25, 0.5]], np.float32), (8, 1))
    g.meshes = [
        gl.Mesh(name="body", primitives=[body_prim, arm_prim], weights=[0.0],
                extras={"targetNames": ["widen"]}),
        gl.Mesh(name="head", primitives=[b.primitive(head, 2, 2, TEXCOORD_0=uv0, TEXCOORD_1=uv1), b.primitive(eyes, 2, 3)]),
    ]  # fmt: skip

    b.clip("Nod", 3, "rotation", [0.0, 0.5, 1.0], np.array([_quat_x(0), _quat_x(30), _quat_x(0)]))
    b.clip("Wave", 4, "weights", [0.0, 0.5, 1.0], np.array([[0.0], [1.0], [0.0]]))
    b.clip("Walk", 1, "translation", [0.0, 1.0], np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    # Wave also bends the spine, so it moves a joint as well as the morph weight
    wave = g.animations[1]
    t = wave.samplers[0].input
    out = b.accessor(np.array([_quat_x(0), _quat_x(-20), _quat_x(0)], np.float32), gl.VEC4)
    wave.samplers.append(gl.AnimationSampler(input=t, output=out))
    wave.channels.append(
        gl.AnimationChannel(sampler=1, target=gl.AnimationChannelTarget(node=2, path="rotation"))
    )

    g.scenes = [gl.Scene(nodes=[0, 4, 5])]
    g.scene = 0
    b.data.extend(b"\0" * (-len(b.data) % 4))
    g.buffers = [gl.Buffer(byteLength=len(b.data))]
    g.set_binary_blob(bytes(b.data))
    if external:
        view = g.bufferViews[g.images[0].bufferView]
        png = bytes(b.data[view.byteOffset : view.byteOffset + view.byteLength])
        path.with_suffix(".png").write_bytes(png)
        path.with_suffix(".bin").write_bytes(bytes(b.data))
        g.images[0] = gl.Image(uri=path.with_suffix(".png").name)  # its old view stays, unused
        g.buffers[0].uri = path.with_suffix(".bin").name
        g.save_json(str(path))
    elif path.suffix == ".gltf":
        g.convert_buffers(gl.BufferFormat.DATAURI)
        g.save_json(str(path))
    else:
        g.save_binary(str(path))
    return path
