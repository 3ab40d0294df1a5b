"""The native side of asset import: libassimp through ctypes, read straight into numpy.

Runs inside a child process (see `anymole.io._isolate`), so nothing here may assume it shares memory with the
server. Everything leaves this module as plain numpy arrays, strings and bytes in a `RawScene`.

Why not ``pyassimp.load()``: it converts the whole scene into Python objects (about 100× slower than the
import itself) and, with libassimp 5.2.x, it crashes on every skinned file because pyassimp 5.2.5's ctypes
``Bone`` lacks the ``mArmature`` and ``mNode`` pointers that assimp inserted after ``mNumWeights``
(/work/shared/assets/NOTES.md). We reuse pyassimp's other struct definitions, which match libassimp 5.2
field by field up to the members we read, and carry our own ``Bone`` for the layouts we know. The library's
version is checked before any struct is read: a layout we have not verified would silently shift fields.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import numpy as np

__all__ = [
    "LibraryMismatch",
    "RawAnimation",
    "RawChannel",
    "RawMesh",
    "RawScene",
    "check_library_version",
    "import_scene",
    "library_version",
]

# aiPostProcessSteps: triangles only, shared vertices (the FBX reader emits one vertex per face corner
# otherwise), normals where missing, and a structural check that turns many malformed files into an error
# message instead of garbage. Deliberately absent: FindInvalidData / OptimizeGraph, which drop keys and nodes
# (the sidecars count keys, and helper nodes carry transforms we fold ourselves).
_AI_JOIN_IDENTICAL_VERTICES = 0x2
_AI_TRIANGULATE = 0x8
_AI_GEN_SMOOTH_NORMALS = 0x40
_AI_VALIDATE_DATA_STRUCTURE = 0x400
_AI_SORT_BY_PTYPE = 0x8000
IMPORT_FLAGS = (
    _AI_JOIN_IDENTICAL_VERTICES
    | _AI_TRIANGULATE
    | _AI_GEN_SMOOTH_NORMALS
    | _AI_VALIDATE_DATA_STRUCTURE
    | _AI_SORT_BY_PTYPE
)
_AI_PRIMITIVE_TRIANGLE = 0x4

# (major, minor) of libassimp whose aiBone layout we have checked against include/assimp/mesh.h.
KNOWN_LIBRARY_VERSIONS = {(5, 2)}
KNOWN_PYASSIMP_VERSIONS = {"5.2.5"}
INSTALL_HINT = (
    "install Debian's libassimp5 5.2.x (`sudo apt-get install libassimp5`, or `bash scripts/setup.sh`) "
    "and pyassimp==5.2.5"
)


class LibraryMismatch(RuntimeError):
    """libassimp or pyassimp is missing or has a struct layout we have not verified."""


@dataclass
class RawChannel:
    """One node's keys, times in seconds. Quaternions are xyzw (assimp stores wxyz)."""

    node: str
    pos_t: np.ndarray  # (Kp,) float64 s
    pos_v: np.ndarray  # (Kp, 3) float64, file units
    rot_t: np.ndarray  # (Kr,) float64 s
    rot_v: np.ndarray  # (Kr, 4) float64, xyzw
    scl_t: np.ndarray  # (Ks,) float64 s
    scl_v: np.ndarray  # (Ks, 3) float64


@dataclass
class RawAnimation:
    name: str
    duration_s: float  # mDuration / mTicksPerSecond
    channels: list[RawChannel]


@dataclass
class RawMesh:
    name: str
    node_ids: list[int]  # nodes that instance this mesh
    vertices: np.ndarray  # (V, 3) float64, mesh space
    normals: np.ndarray | None  # (V, 3) float64
    uvs: list[np.ndarray]  # per UV channel present: (V, 2) float64, assimp convention (v up from the image bottom)
    colors: np.ndarray | None  # (V, 4) float64 RGBA, the first vertex colour set
    faces: np.ndarray  # (T, 3) int64
    material: int
    bone_names: list[str]
    bone_offsets: np.ndarray  # (B, 4, 4) float64, mesh space -> bone space at bind time
    weight_bone: np.ndarray  # (W,) int64 index into bone_names
    weight_vertex: np.ndarray  # (W,) int64
    weight_value: np.ndarray  # (W,) float64


@dataclass
class RawScene:
    """A file as assimp sees it, with column-vector 4×4 matrices (``M @ [x, y, z, 1]``)."""

    node_names: list[str]
    node_parents: np.ndarray  # (N,) int64, -1 for the scene root; parents precede children
    node_local: np.ndarray  # (N, 4, 4) float64
    meshes: list[RawMesh]
    materials: list[dict[str, Any]]  # name, base_color (4,), texture str | None, uv_channel int
    textures: list[dict[str, Any]]  # filename, hint, data bytes (compressed) | rgba (H, W, 4) uint8
    animations: list[RawAnimation]
    metadata: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- library
_LIB: Any = None


def _bone_struct(structs: Any) -> type[ctypes.Structure]:
    """``aiBone`` as libassimp 5.2 lays it out: two node pointers sit between the count and the weights."""

    class Bone52(ctypes.Structure):
        _fields_ = [  # ctypes reads this class attribute
            ("mName", structs.String),
            ("mNumWeights", ctypes.c_uint),
            ("mArmature", ctypes.c_void_p),
            ("mNode", ctypes.c_void_p),
            ("mWeights", ctypes.POINTER(structs.VertexWeight)),
            ("mOffsetMatrix", structs.Matrix4x4),
        ]

    return Bone52


def library_version(lib: Any) -> tuple[int, int, int]:
    """``(major, minor, patch)`` of a loaded libassimp (Debian's 5.2.5 package reports 5.2.4)."""
    out = []
    for fn_name in ("aiGetVersionMajor", "aiGetVersionMinor", "aiGetVersionPatch"):
        fn = getattr(lib, fn_name, None)
        if fn is None:  # aiGetVersionPatch appeared in 5.1; older libraries are unknown anyway
            out.append(-1)
            continue
        fn.restype = ctypes.c_uint
        out.append(int(fn()))
    return out[0], out[1], out[2]


def check_library_version(version: tuple[int, int, int]) -> None:
    """Raise `LibraryMismatch` unless ``(major, minor, patch)`` is a libassimp whose layout we verified."""
    if version[:2] not in KNOWN_LIBRARY_VERSIONS:
        raise LibraryMismatch(
            f"libassimp {'.'.join(map(str, version))} has an aiBone/aiQuatKey layout this build has not "
            f"verified (known: 5.2.x): {INSTALL_HINT}"
        )


def _load_library() -> Any:
    global _LIB
    if _LIB is not None:
        return _LIB
    try:
        pyassimp_version = metadata.version("pyassimp")
    except metadata.PackageNotFoundError:
        raise LibraryMismatch(f"pyassimp is not installed: {INSTALL_HINT}") from None
    if pyassimp_version not in KNOWN_PYASSIMP_VERSIONS:
        raise LibraryMismatch(
            f"pyassimp {pyassimp_version} has struct layouts we have not verified "
            f"(known: {sorted(KNOWN_PYASSIMP_VERSIONS)}): {INSTALL_HINT}"
        )
    from pyassimp import structs  # pure ctypes definitions; pyassimp.core would search for the library itself

    candidates = [ctypes.util.find_library("assimp"), "libassimp.so.5", "libassimp.so", "libassimp.dylib"]
    lib = None
    for name in candidates:
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    if lib is None:
        raise LibraryMismatch(f"libassimp was not found: {INSTALL_HINT}")
    check_library_version(library_version(lib))
    lib.aiImportFileExWithProperties.restype = ctypes.POINTER(structs.Scene)
    lib.aiImportFileExWithProperties.argtypes = [ctypes.c_char_p, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    lib.aiCreatePropertyStore.restype = ctypes.c_void_p
    lib.aiSetImportPropertyInteger.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    lib.aiReleasePropertyStore.argtypes = [ctypes.c_void_p]
    lib.aiReleaseImport.argtypes = [ctypes.POINTER(structs.Scene)]
    lib.aiGetErrorString.restype = ctypes.c_char_p
    _LIB = (lib, structs, _bone_struct(structs))
    return _LIB


# ----------------------------------------------------------------------------------------------- reading
def _copy(addr: int, dtype: np.dtype, count: int) -> np.ndarray:
    """``count`` items of ``dtype`` copied out of native memory at ``addr`` (survives aiReleaseImport)."""
    if count == 0:
        return np.zeros(0, dtype=dtype)
    if not addr:
        raise ValueError("null array pointer with a non-zero count")
    return np.frombuffer(ctypes.string_at(addr, dtype.itemsize * count), dtype=dtype).copy()


def _addr(ptr: Any) -> int:
    return ctypes.cast(ptr, ctypes.c_void_p).value or 0


def _text(s: Any) -> str:
    return bytes(s.data[: s.length]).decode("utf-8", errors="replace")


def _matrix(m: Any) -> np.ndarray:
    return _copy(ctypes.addressof(m), np.dtype("<f4"), 16).reshape(4, 4).astype(np.float64)


def _key_dtype(structs: Any, width: int, ctype: type) -> np.dtype:
    return np.dtype(
        {"names": ["t", "v"], "formats": ["<f8", ("<f4", width)], "offsets": [0, 8], "itemsize": ctypes.sizeof(ctype)}
    )


def _read_nodes(root: Any) -> tuple[list[str], np.ndarray, np.ndarray, dict[int, list[int]]]:
    names: list[str] = []
    parents: list[int] = []
    locals_: list[np.ndarray] = []
    mesh_nodes: dict[int, list[int]] = {}
    stack = [(root, -1)]
    while stack:  # depth-first, children in file order
        ptr, parent = stack.pop()
        node = ptr.contents
        idx = len(names)
        names.append(_text(node.mName))
        parents.append(parent)
        locals_.append(_matrix(node.mTransformation))
        for k in range(node.mNumMeshes):
            mesh_nodes.setdefault(int(node.mMeshes[k]), []).append(idx)
        stack.extend((node.mChildren[c], idx) for c in reversed(range(node.mNumChildren)))
    return names, np.asarray(parents, dtype=np.int64), np.stack(locals_), mesh_nodes


def _read_mesh(m: Any, bone_cls: type, node_ids: list[int]) -> RawMesh | None:
    if not m.mPrimitiveTypes & _AI_PRIMITIVE_TRIANGLE:
        return None  # points/lines after SortByPType: nothing to skin or render
    nv = int(m.mNumVertices)
    vec3 = np.dtype("<f4")
    vertices = _copy(_addr(m.mVertices), vec3, nv * 3).reshape(nv, 3).astype(np.float64)
    normals = None
    if _addr(m.mNormals):
        normals = _copy(_addr(m.mNormals), vec3, nv * 3).reshape(nv, 3).astype(np.float64)
    uvs = []
    for channel in m.mTextureCoords:  # channels are packed from 0: the first null one ends them
        if not _addr(channel):
            break
        uvs.append(_copy(_addr(channel), vec3, nv * 3).reshape(nv, 3)[:, :2].astype(np.float64))
    colors = None
    if _addr(m.mColors[0]):
        colors = _copy(_addr(m.mColors[0]), vec3, nv * 4).reshape(nv, 4).astype(np.float64)
    # aiFace is {unsigned mNumIndices; unsigned *mIndices}; each index block is its own allocation.
    face_dtype = np.dtype({"names": ["n", "p"], "formats": ["<u4", "<u8"], "offsets": [0, 8], "itemsize": 16})
    raw_faces = _copy(_addr(m.mFaces), face_dtype, int(m.mNumFaces))
    tri = raw_faces[raw_faces["n"] == 3]["p"]
    idx_bytes = b"".join(ctypes.string_at(int(p), 12) for p in tri)
    faces = np.frombuffer(idx_bytes, dtype="<u4").reshape(-1, 3).astype(np.int64)
    bones: Any = ctypes.cast(m.mBones, ctypes.POINTER(ctypes.POINTER(bone_cls)))
    names, offsets, wb, wv, ww = [], [], [], [], []
    weight_dtype = np.dtype([("v", "<u4"), ("w", "<f4")])
    for b in range(int(m.mNumBones)):
        bone = bones[b].contents
        names.append(_text(bone.mName))
        offsets.append(_matrix(bone.mOffsetMatrix))
        w = _copy(_addr(bone.mWeights), weight_dtype, int(bone.mNumWeights))
        wb.append(np.full(len(w), b, dtype=np.int64))
        wv.append(w["v"].astype(np.int64))
        ww.append(w["w"].astype(np.float64))
    return RawMesh(
        name=_text(m.mName),
        node_ids=node_ids,
        vertices=vertices,
        normals=normals,
        uvs=uvs,
        colors=colors,
        faces=faces,
        material=int(m.mMaterialIndex),
        bone_names=names,
        bone_offsets=np.stack(offsets) if offsets else np.zeros((0, 4, 4)),
        weight_bone=np.concatenate(wb) if wb else np.zeros(0, np.int64),
        weight_vertex=np.concatenate(wv) if wv else np.zeros(0, np.int64),
        weight_value=np.concatenate(ww) if ww else np.zeros(0),
    )


# aiTextureType: BASE_COLOR (glTF PBR) is preferred over DIFFUSE (FBX, Collada).
_TEX_BASE_COLOR, _TEX_DIFFUSE = 12, 1
_PTI_FLOAT, _PTI_DOUBLE, _PTI_STRING, _PTI_INTEGER = 1, 2, 3, 4


def _read_material(mat: Any) -> dict[str, Any]:
    """``{name, base_color (4,), texture (file reference or None), uv_channel}`` of one aiMaterial."""
    found: dict[tuple[str, int], Any] = {}
    for i in range(int(mat.mNumProperties)):
        prop = mat.mProperties[i].contents
        key = _text(prop.mKey)
        data = ctypes.string_at(_addr(prop.mData), int(prop.mDataLength)) if prop.mDataLength else b""
        if key in ("$clr.base", "$clr.diffuse") and prop.mType in (_PTI_FLOAT, _PTI_DOUBLE):
            found[(key, 0)] = np.frombuffer(data, dtype="<f4" if prop.mType == _PTI_FLOAT else "<f8").astype(float)
        elif key in ("$tex.file", "?mat.name") and prop.mType == _PTI_STRING and int(prop.mIndex) == 0:
            n = int(np.frombuffer(data[:4], dtype="<u4")[0])
            found[(key, int(prop.mSemantic))] = data[4 : 4 + n].decode("utf-8", errors="replace")
        elif key == "$tex.uvwsrc" and prop.mType == _PTI_INTEGER and int(prop.mIndex) == 0 and len(data) >= 4:
            found[(key, int(prop.mSemantic))] = int(np.frombuffer(data[:4], dtype="<i4")[0])
    color = found.get(("$clr.base", 0), found.get(("$clr.diffuse", 0)))
    rgba = np.ones(4)
    if color is not None and color.size >= 3:
        rgba[: min(4, color.size)] = color[:4]
    semantic = _TEX_BASE_COLOR if ("$tex.file", _TEX_BASE_COLOR) in found else _TEX_DIFFUSE
    return {
        "name": found.get(("?mat.name", 0), ""),
        "base_color": rgba,
        "texture": found.get(("$tex.file", semantic)),
        "uv_channel": found.get(("$tex.uvwsrc", semantic), 0),
    }


def _read_texture(t: Any) -> dict[str, Any]:
    width, height = int(t.mWidth), int(t.mHeight)
    out: dict[str, Any] = {"filename": _text(t.mFilename), "hint": bytes(t.achFormatHint).split(b"\0")[0].decode()}
    if height == 0:  # compressed file bytes (png, jpg), mWidth is the byte count
        out["data"] = ctypes.string_at(_addr(t.pcData), width)
    else:  # aiTexel is b, g, r, a
        bgra = _copy(_addr(t.pcData), np.dtype("u1"), width * height * 4).reshape(height, width, 4)
        out["rgba"] = bgra[..., [2, 1, 0, 3]].copy()
    return out


def _read_animation(a: Any, structs: Any) -> RawAnimation:
    tps = float(a.mTicksPerSecond) or 25.0  # assimp's documented default when the file gives no rate
    vkey = _key_dtype(structs, 3, structs.VectorKey)
    qkey = _key_dtype(structs, 4, structs.QuatKey)
    channels = []
    for c in range(int(a.mNumChannels)):
        ch = a.mChannels[c].contents
        pos = _copy(_addr(ch.mPositionKeys), vkey, int(ch.mNumPositionKeys))
        rot = _copy(_addr(ch.mRotationKeys), qkey, int(ch.mNumRotationKeys))
        scl = _copy(_addr(ch.mScalingKeys), vkey, int(ch.mNumScalingKeys))
        wxyz = rot["v"].astype(np.float64)
        channels.append(
            RawChannel(
                node=_text(ch.mNodeName),
                pos_t=pos["t"] / tps,
                pos_v=pos["v"].astype(np.float64),
                rot_t=rot["t"] / tps,
                rot_v=wxyz[:, [1, 2, 3, 0]],
                scl_t=scl["t"] / tps,
                scl_v=scl["v"].astype(np.float64),
            )
        )
    return RawAnimation(name=_text(a.mName), duration_s=float(a.mDuration) / tps, channels=channels)


# aiMetadataType
_META_READERS: dict[int, Any] = {
    0: lambda addr: bool(ctypes.c_bool.from_address(addr).value),
    1: lambda addr: int(ctypes.c_int32.from_address(addr).value),
    2: lambda addr: int(ctypes.c_uint64.from_address(addr).value),
    3: lambda addr: float(ctypes.c_float.from_address(addr).value),
    4: lambda addr: float(ctypes.c_double.from_address(addr).value),
}


def _read_metadata(md_ptr: Any, structs: Any) -> dict[str, Any]:
    if not _addr(md_ptr):
        return {}
    md = md_ptr.contents
    out: dict[str, Any] = {}
    for i in range(int(md.mNumProperties)):
        entry = md.mValues[i]
        addr = _addr(entry.mData)
        if not addr:
            continue
        reader = _META_READERS.get(int(entry.mType))
        if reader is not None:
            out[_text(md.mKeys[i])] = reader(addr)
        elif entry.mType == 5:
            out[_text(md.mKeys[i])] = _text(structs.String.from_address(addr))
    return out


def import_scene(path: str) -> RawScene:
    """Import ``path`` with libassimp and copy everything we use into a `RawScene`.

    Raises:
        LibraryMismatch: libassimp/pyassimp missing or of an unverified version.
        ValueError: assimp rejected the file (its error string is the message).
    """
    lib, structs, bone_cls = _load_library()
    store = lib.aiCreatePropertyStore()
    # Fold FBX pivots and pre-rotations into the node transforms instead of adding `$AssimpFbx$` helper nodes
    # whose keys would otherwise be animated outside the joints.
    lib.aiSetImportPropertyInteger(store, b"IMPORT_FBX_PRESERVE_PIVOTS", 0)
    try:
        scene_ptr = lib.aiImportFileExWithProperties(path.encode(), IMPORT_FLAGS, None, store)
    finally:
        lib.aiReleasePropertyStore(store)
    if not scene_ptr:
        message = (lib.aiGetErrorString() or b"").decode("utf-8", errors="replace")
        raise ValueError(message or "assimp could not import the file")
    try:
        scene = scene_ptr.contents
        if not _addr(scene.mRootNode):
            raise ValueError("the file has no node hierarchy")
        names, parents, local, mesh_nodes = _read_nodes(scene.mRootNode)
        meshes = []
        for i in range(int(scene.mNumMeshes)):
            mesh = _read_mesh(scene.mMeshes[i].contents, bone_cls, mesh_nodes.get(i, []))
            if mesh is not None:
                meshes.append(mesh)
        return RawScene(
            node_names=names,
            node_parents=parents,
            node_local=local,
            meshes=meshes,
            materials=[_read_material(scene.mMaterials[i].contents) for i in range(int(scene.mNumMaterials))],
            textures=[_read_texture(scene.mTextures[i].contents) for i in range(int(scene.mNumTextures))],
            animations=[_read_animation(scene.mAnimations[i].contents, structs) for i in range(int(scene.mNumAnimations))],
            metadata=_read_metadata(scene.mMetadata, structs),
        )
    finally:
        lib.aiReleaseImport(scene_ptr)
