"""`RawScene` (what assimp read) → `Character` in the canonical space of ARCHITECTURE.md.

Steps, each in one place:

1. **Canonical space.** Every node transform, key, vertex and bone offset is conjugated by
   ``C = [s·M, 0; 0, 1]``: ``M`` maps the file's axes to +Y up / +Z forward / +X (FBX axis metadata;
   identity for glTF and Collada, whose importer already applies ``<up_axis>``), ``s`` converts file units
   to metres (FBX ``UnitScaleFactor``/100; 1 for glTF, whose unit is the metre). ``C L C⁻¹`` keeps every
   product of transforms consistent, so world points simply become ``C p``.
2. **Joints.** The skin's bones (union over meshes, matched to nodes by name), plus any node lying between
   two bones, so the hierarchy has no gaps. Files without skin (rare) take their animated nodes instead.
   Nodes above the top joint (glTF's −90° X root in CesiumMan, FBX's ``root`` armature with scale 100) are
   not joints: their transforms, animated ones included, are folded into the root joint, so world
   transforms stay right. Uniform node scale is folded into the children's offsets; animated scale is not
   representable in `Motion` and is ignored.
3. **Mesh.** Bind-pose world vertices are computed with the file's own offset (inverse-bind) matrices and
   the node rest pose (``v_w = Σ_b w_b · G_b · O_b · v``), and ``inverse_bind`` is the inverse of each
   joint's rigid rest transform, so skinning at rest returns ``v_w`` by construction. Sub-meshes are merged;
   each face keeps its sub-mesh's material (base colour factor, base-colour texture read at the UV channel
   the material names) and each vertex its first colour set.
4. **Clips** are sampled by time on a regular grid (slerp for rotations, linear for translations; a joint
   without a channel keeps its node transform).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anymole.errors import AssetError
from anymole.io._assimp import RawAnimation, RawScene
from anymole.io._keys import ON_GRID, clip_grid, sample_quat_keys, sample_vec_keys
from anymole.io._materials import SceneMaterials
from anymole.rig.character import Character, SkinnedMesh
from anymole.rig.motion import Motion
from anymole.rig.quat import (
    quat_apply,
    quat_conj,
    quat_continuity,
    quat_mul,
    rotmat_to_unitquat,
)
from anymole.rig.skeleton import Skeleton
from anymole.rig.skinning import inverse_bind_matrices

__all__ = ["scene_to_character"]

log = logging.getLogger(__name__)

_F64 = torch.float64


# ------------------------------------------------------------------------------------------- transforms
def _decompose(mats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(N, 4, 4)`` → translation ``(N, 3)``, unit rotation ``(N, 4)``, uniform scale ``(N,)`` and the
    determinant ``(N,)`` of the linear part (``<= 0``: mirrored or degenerate, checked by the caller for
    the nodes that matter). Non-uniform scale is approximated by the geometric mean of the axes."""
    lin = mats[:, :3, :3]
    det = torch.linalg.det(lin)
    cols = lin.norm(dim=-2).clamp_min(1e-30)  # (N, 3) per-axis scale: lin = R @ diag(s)
    rot = rotmat_to_unitquat(lin / cols.unsqueeze(-2))
    return mats[:, :3, 3].clone(), rot, det.abs() ** (1.0 / 3.0), det


def _check_nodes(cv: _Converted, raw: RawScene, nodes: list[int], path: str, refuse_non_uniform: bool = False) -> None:
    """Refuse mirrored/degenerate transforms on the nodes that build the skeleton; warn on uneven scale, or
    with ``refuse_non_uniform`` (the server: the wire contract has no joint scale) refuse it naming the node."""
    for n in nodes:
        if float(cv.det[n]) <= 0:
            raise AssetError(
                path,
                f"node {raw.node_names[n]!r} has a mirrored or degenerate transform (determinant "
                f"{float(cv.det[n]):.3g}); apply the transform in your DCC tool and re-export",
            )
        cols = cv.local[n, :3, :3].norm(dim=-2)
        if float(cols.max() / cols.min()) - 1.0 > 1e-3 and refuse_non_uniform:
            raise AssetError(
                path,
                f"joint {raw.node_names[n]!r} has a non-uniform scale ({', '.join(f'{float(c):.4g}' for c in cols)}); "
                "the AnyMoLe contract has no joint scale: apply the scale in your DCC tool and re-export",
            )
        if float(cols.max() / cols.min()) - 1.0 > 1e-3:
            log.warning("%s: non-uniform scale on %r is approximated by a uniform one", path, raw.node_names[n])


def _axis_matrix(meta: dict[str, Any]) -> np.ndarray:
    """FBX axis metadata → ``M`` (3×3) with ``M @ v_file = v_canonical`` (+X right, +Y up, +Z forward)."""
    m = np.zeros((3, 3))
    for row, (axis, sign) in enumerate((("CoordAxis", "CoordAxisSign"), ("UpAxis", "UpAxisSign"), ("FrontAxis", "FrontAxisSign"))):
        a, s = int(meta.get(axis, row)), int(meta.get(sign, 1))
        if a not in (0, 1, 2):
            return np.eye(3)
        m[row, a] = 1.0 if s >= 0 else -1.0
    if abs(abs(np.linalg.det(m)) - 1.0) > 1e-6:  # two metadata axes coincide: ignore rather than collapse
        return np.eye(3)
    return m


def _conjugator(fmt: str, meta: dict[str, Any], scale: float | None, path: str) -> tuple[np.ndarray, float]:
    if fmt == ".fbx":
        m = _axis_matrix(meta)
        s = float(meta.get("UnitScaleFactor", 1.0)) / 100.0 if scale is None else float(scale)
    else:
        m, s = np.eye(3), 1.0 if scale is None else float(scale)
    if not s > 0:  # a file's UnitScaleFactor can be anything
        raise AssetError(path, f"unit scale must be > 0 m per file unit, got {s}; pass scale= (metres per unit)")
    return m, s


# ------------------------------------------------------------------------------------------- joints
def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        k = seen.get(n, 0)
        seen[n] = k + 1
        out.append(n if k == 0 else f"{n}#{k}")
    return out


def _node_index(raw: RawScene) -> dict[str, int]:
    """Name → index of the first node of that name (bones and channels name their node; names may repeat)."""
    index: dict[str, int] = {}
    for i, n in enumerate(raw.node_names):
        index.setdefault(n, i)
    return index


def _select_joints(raw: RawScene, path: str) -> list[int]:
    """Node indices of the skeleton's joints, in the node list's depth-first order."""
    index = _node_index(raw)
    bones: set[int] = set()
    for mesh in raw.meshes:
        for b in mesh.bone_names:
            if b not in index:
                raise AssetError(path, f"skin bone {b!r} has no node in the hierarchy; the file is inconsistent")
            bones.add(index[b])
    if not bones:  # skeleton-only files: the animated nodes are the joints
        bones = {index[c.node] for a in raw.animations for c in a.channels if c.node in index}
    if not bones:
        raise AssetError(
            path, "no skeleton: the file has no skinned mesh and no animated nodes (export it with its armature)"
        )
    parents = raw.node_parents
    joints = set(bones)
    for bone in bones:  # add the nodes bridging a bone to its nearest bone ancestor
        path_nodes, up = [], int(parents[bone])
        while up >= 0 and up not in bones:
            path_nodes.append(up)
            up = int(parents[up])
        if up >= 0:
            joints.update(path_nodes)
    return sorted(joints)


# ------------------------------------------------------------------------------------------- main
class _Converted:
    """Node transforms of a scene in canonical space, decomposed once."""

    def __init__(self, raw: RawScene, m: np.ndarray, s: float, path: str) -> None:
        self.m, self.s = m, s
        c = np.eye(4)
        c[:3, :3] = s * m
        c_inv = np.linalg.inv(c)
        self.c, self.c_inv = c, c_inv
        local = torch.from_numpy(c @ raw.node_local @ c_inv)
        self.local = local
        self.t, self.q, self.scale, self.det = _decompose(local)
        # the rotation that conjugates key rotations; -M when M mirrors, which gives the same conjugation
        rm = torch.from_numpy(m if np.linalg.det(m) > 0 else -m)
        self.qm = rotmat_to_unitquat(rm)
        glob = torch.empty_like(local)
        for n, p in enumerate(raw.node_parents.tolist()):  # parents precede children in the node list
            glob[n] = local[n] if p < 0 else glob[p] @ local[n]
        self.glob = glob

    def vec(self, v: np.ndarray) -> np.ndarray:
        return (self.s * v) @ self.m.T

    def quat(self, q: np.ndarray) -> torch.Tensor:
        qt = torch.from_numpy(np.asarray(q, dtype=np.float64))
        qm = self.qm.expand_as(qt)
        return quat_mul(quat_mul(qm, qt), quat_conj(qm))


def scene_to_character(
    raw: RawScene,
    path: str | Path,
    *,
    fmt: str,
    scale: float | None = None,
    fps: float | None = None,
    clip: str | None = None,
    refuse_non_uniform_scale: bool = False,
) -> Character:
    """Build a `Character` from an assimp scene; see the module docstring for the conventions. A non-uniform
    scale on a skeleton node is approximated (with a warning), or refused with ``refuse_non_uniform_scale``."""
    path = str(path)
    m, s = _conjugator(fmt, raw.metadata, scale, path)
    cv = _Converted(raw, m, s, path)
    joint_nodes = _select_joints(raw, path)
    node_to_joint = {n: j for j, n in enumerate(joint_nodes)}
    parents_node = raw.node_parents.tolist()

    def joint_parent(n: int) -> int:
        p = parents_node[n]
        while p >= 0 and p not in node_to_joint:
            p = parents_node[p]
        return node_to_joint.get(p, -1)

    parents = [joint_parent(n) for n in joint_nodes]
    skeleton_nodes = sorted(set(joint_nodes) | {a for n in joint_nodes for a in _ancestors(parents_node, n)})
    _check_nodes(cv, raw, skeleton_nodes, path, refuse_non_uniform_scale)
    names = _unique_names([raw.node_names[n] for n in joint_nodes])
    jn = torch.tensor(joint_nodes)

    # cumulative uniform scale of every node (ancestors included): children's offsets are multiplied by it
    cum = torch.empty(len(raw.node_names), dtype=_F64)
    for n, p in enumerate(parents_node):
        cum[n] = cv.scale[n] * (cum[p] if p >= 0 else 1.0)
    parent_scale = torch.tensor([float(cum[parents_node[n]]) if parents_node[n] >= 0 else 1.0 for n in joint_nodes], dtype=_F64)

    world_q = rotmat_to_unitquat(cv.glob[jn, :3, :3] / cum[jn].view(-1, 1, 1))
    world_p = cv.glob[jn, :3, 3]
    is_root = torch.tensor([p < 0 for p in parents])
    offsets = torch.where(is_root.unsqueeze(-1), world_p, cv.t[jn] * parent_scale.unsqueeze(-1))
    rest_rot = torch.where(is_root.unsqueeze(-1), world_q, cv.q[jn])
    skeleton = Skeleton(
        names=tuple(names),
        parents=tuple(parents),
        offsets=offsets.float(),
        rest_rotations=rest_rot.float(),
    )

    mesh = _build_mesh(raw, cv, node_to_joint, world_q, world_p, path)
    motions = _build_motions(raw, cv, joint_nodes, parents, parent_scale, offsets, cum, fps, clip, path)
    return Character(name=Path(path).stem, skeleton=skeleton, mesh=mesh, motions=motions, source=path, unit_scale=s)


def _ancestors(parents_node: list[int], n: int) -> list[int]:
    out, p = [], parents_node[n]
    while p >= 0:
        out.append(p)
        p = parents_node[p]
    return out


def _build_mesh(
    raw: RawScene,
    cv: _Converted,
    node_to_joint: dict[int, int],
    world_q: torch.Tensor,
    world_p: torch.Tensor,
    path: str,
) -> SkinnedMesh | None:
    index = _node_index(raw)
    verts, norms, uvs, colors, faces, face_mat, jidx = [], [], [], [], [], [], []
    has_normals = all(mesh.normals is not None for mesh in raw.meshes)
    # one sub-mesh with UVs or colours gives the merged mesh them; the others get neutral fill-ins
    has_uvs = any(mesh.uvs for mesh in raw.meshes)
    has_colors = any(mesh.colors is not None for mesh in raw.meshes)
    materials = SceneMaterials(raw, path)
    base = 0
    for mesh in raw.meshes:
        v = torch.from_numpy(cv.vec(mesh.vertices))
        n = torch.from_numpy(mesh.normals @ cv.m.T) if mesh.normals is not None else None
        nv = v.shape[0]
        if mesh.bone_names:
            bone_nodes = [index[b] for b in mesh.bone_names]
            # G_b · O_b in canonical space: the mesh-space → world transform each bone applies at bind time
            off = torch.from_numpy(cv.c @ mesh.bone_offsets @ cv.c_inv)
            xf = cv.glob[torch.tensor(bone_nodes)] @ off  # (B, 4, 4)
            wb = torch.from_numpy(mesh.weight_bone)
            wv = torch.from_numpy(mesh.weight_vertex)
            ww = torch.from_numpy(mesh.weight_value)
            total = torch.zeros(nv, dtype=_F64).index_add_(0, wv, ww)
            unbound = int((total <= 1e-8).sum())
            if unbound:
                raise AssetError(
                    path,
                    f"{unbound} of {nv} vertices of mesh {mesh.name!r} have no skin weights; weight every vertex "
                    "to at least one bone (or parent rigid parts to a bone) and re-export",
                )
            blended = torch.zeros((nv, 4, 4), dtype=_F64).index_add_(0, wv, ww.view(-1, 1, 1) * xf[wb])
            blended = blended / total.view(-1, 1, 1)
            vw = (blended[:, :3, :3] @ v.unsqueeze(-1)).squeeze(-1) + blended[:, :3, 3]
            if n is not None:
                n = (blended[:, :3, :3] @ n.unsqueeze(-1)).squeeze(-1)
            joint_of_bone = torch.tensor([node_to_joint[b] for b in bone_nodes])
            wv_s, wj_s, ww_s = wv, joint_of_bone[wb], ww / total[wv]
        else:
            host = next((nd for nd in mesh.node_ids if _joint_ancestor(raw, nd, node_to_joint) >= 0), None)
            if host is None:
                log.warning("%s: mesh %r is not skinned nor under a joint; left out", path, mesh.name)
                continue
            j = _joint_ancestor(raw, host, node_to_joint)
            g = cv.glob[host]
            vw = (g[:3, :3] @ v.unsqueeze(-1)).squeeze(-1) + g[:3, 3]
            if n is not None:
                n = (g[:3, :3] @ n.unsqueeze(-1)).squeeze(-1)
            wv_s = torch.arange(nv)
            wj_s = torch.full((nv,), j)
            ww_s = torch.ones(nv, dtype=_F64)
        verts.append(vw)
        if has_normals and n is not None:
            norms.append(n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12))
        if has_uvs:
            uvs.append(torch.from_numpy(materials.uvs_of(mesh)))
        if has_colors:
            colors.append(torch.ones(nv, 4, dtype=_F64) if mesh.colors is None else torch.from_numpy(mesh.colors))
        faces.append(torch.from_numpy(mesh.faces) + base)
        face_mat.append(torch.full((len(mesh.faces),), materials.index_of(mesh.material), dtype=torch.long))
        jidx.append((wv_s + base, wj_s, ww_s))
        base += nv
    if not verts:
        return None
    if np.linalg.det(cv.m) < 0:  # a mirroring axis change flips the winding
        faces = [f[:, [0, 2, 1]] for f in faces]
    vertex = torch.cat([x[0] for x in jidx])
    joint = torch.cat([x[1] for x in jidx])
    weight = torch.cat([x[2] for x in jidx])
    # rank of each influence within its vertex (influences are grouped by vertex, stably)
    order = torch.argsort(vertex, stable=True)
    vertex, joint, weight = vertex[order], joint[order], weight[order]
    counts = torch.bincount(vertex, minlength=base)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(vertex)) - starts[vertex]
    k = int(counts.max())
    ji = torch.zeros((base, k), dtype=torch.long)
    jw = torch.zeros((base, k), dtype=_F64)
    ji[vertex, rank] = joint
    jw[vertex, rank] = weight
    jw = jw / jw.sum(-1, keepdim=True)  # CesiumMan's weights sum to < 1 on 210 vertices: normalise
    uv = None
    if has_uvs:
        uv = torch.cat(uvs)
        uv = torch.stack((uv[:, 0], 1.0 - uv[:, 1]), -1)  # assimp flips v; SkinnedMesh uses glTF's v-down
    fm = torch.cat(face_mat)
    return SkinnedMesh(
        vertices=torch.cat(verts).float(),
        faces=torch.cat(faces).long(),
        joint_indices=ji,
        joint_weights=jw.float(),
        inverse_bind=inverse_bind_matrices(world_q, world_p).float(),
        normals=torch.cat(norms).float() if has_normals and norms else None,
        uvs=uv.float() if uv is not None else None,
        materials=materials.used(),
        face_materials=fm if bool((fm != 0).any()) else None,
        colors=torch.cat(colors).clamp(0.0, 1.0).float() if has_colors else None,
    )


def _joint_ancestor(raw: RawScene, node: int, node_to_joint: dict[int, int]) -> int:
    p = node
    while p >= 0:
        if p in node_to_joint:
            return node_to_joint[p]
        p = int(raw.node_parents[p])
    return -1


def _clip_names(anims: list[RawAnimation]) -> list[str]:
    names = [a.name or f"animation_{i}" for i, a in enumerate(anims)]
    return _unique_names(names)


def _build_motions(
    raw: RawScene,
    cv: _Converted,
    joint_nodes: list[int],
    parents: list[int],
    parent_scale: torch.Tensor,
    offsets: torch.Tensor,
    cum: torch.Tensor,
    fps: float | None,
    clip: str | None,
    path: str,
) -> dict[str, Motion]:
    names = _clip_names(raw.animations)
    if clip is not None and clip not in names:
        raise AssetError(path, f"no clip {clip!r}; the file has {names}")
    parents_node = raw.node_parents.tolist()
    # nodes whose transform enters some joint's world transform: the joints and every ancestor of a root joint
    needed = sorted(
        set(joint_nodes) | {a for j, n in enumerate(joint_nodes) if parents[j] < 0 for a in _ancestors(parents_node, n)}
    )
    slot = {n: i for i, n in enumerate(needed)}
    index = _node_index(raw)
    out: dict[str, Motion] = {}
    for anim, name in zip(raw.animations, names, strict=True):
        if clip is not None and name != clip:
            continue
        chans = [c for c in anim.channels if index.get(c.node) in slot]
        n_keys = max([len(c.rot_t) for c in chans] + [len(c.pos_t) for c in chans] + [1])
        rate, frames = clip_grid(anim.duration_s, n_keys, fps)
        t = (torch.arange(frames, dtype=_F64) / rate).clamp(max=max(anim.duration_s, 0.0))
        densest = max(([c.rot_t for c in chans] + [c.pos_t for c in chans]), key=len, default=np.zeros(0))
        if fps is None and len(densest) == frames and bool((torch.from_numpy(densest) - t).abs().max() < ON_GRID / rate):
            # keys sit on the grid up to float32 rounding of their times: sample at the keys themselves,
            # so frames reproduce key values exactly (and our own exports round-trip exactly)
            t = torch.from_numpy(densest).to(_F64)
        # local TRS of every needed node at every frame, starting from the rest pose
        lt = cv.t[needed].unsqueeze(1).expand(-1, frames, -1).clone()  # (Nn, F, 3)
        lq = cv.q[needed].unsqueeze(1).expand(-1, frames, -1).clone()  # (Nn, F, 4)
        scaled = [c.node for c in chans if len(c.scl_t) and np.abs(c.scl_v / float(cv.scale[index[c.node]]) - 1).max() > 1e-3]
        if scaled:  # cv.scale holds the rest scale; keys are in file space, unaffected by the unit change
            log.warning("%s: clip %r animates scale on %s; Motion has no scale, so it is ignored", path, name, scaled[:3])
        pos = [c for c in chans if len(c.pos_t)]
        rot = [c for c in chans if len(c.rot_t)]
        if pos:
            vals = sample_vec_keys([(c.pos_t, cv.vec(c.pos_v)) for c in pos], t)
            lt[torch.tensor([slot[index[c.node]] for c in pos])] = vals
        if rot:
            keys = [(c.rot_t, cv.quat(c.rot_v).numpy()) for c in rot]
            lq[torch.tensor([slot[index[c.node]] for c in rot])] = sample_quat_keys(keys, t)
        gq, gp = _compose_roots(joint_nodes, parents, parents_node, slot, lt, lq, cum)
        jslots = torch.tensor([slot[n] for n in joint_nodes])
        is_root = torch.tensor([p < 0 for p in parents])
        rotations = torch.where(is_root.view(-1, 1, 1), gq, lq[jslots]).transpose(0, 1)  # (F, J, 4)
        trans = torch.where(is_root.view(-1, 1, 1), gp, lt[jslots] * parent_scale.view(-1, 1, 1)).transpose(0, 1)
        rotations = quat_continuity(rotations / rotations.norm(dim=-1, keepdim=True), dim=0)
        # per-joint translations only when something besides joint 0 moves off its rest offset
        moved = len(joint_nodes) > 1 and bool((trans[:, 1:] - offsets[1:]).abs().amax() > 1e-6)
        out[name] = Motion(
            fps=rate,
            rotations=rotations.float(),
            root_translation=trans[:, 0].float().contiguous(),
            translations=trans.float().contiguous() if moved else None,
            name=name,
        )
    return out


def _compose_roots(
    joint_nodes: list[int],
    parents: list[int],
    parents_node: list[int],
    slot: dict[int, int],
    lt: torch.Tensor,
    lq: torch.Tensor,
    cum: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """World rotation/position ``(J, F, ·)`` of each root joint with its (possibly animated) ancestors
    folded in; rows of non-root joints are left as zeros (unused by the caller)."""
    frames = lt.shape[1]
    gq = torch.zeros((len(joint_nodes), frames, 4), dtype=_F64)
    gp = torch.zeros((len(joint_nodes), frames, 3), dtype=_F64)
    for j, n in enumerate(joint_nodes):  # roots only: usually one
        if parents[j] >= 0:
            continue
        chain = [n, *_ancestors(parents_node, n)]
        q = lq[slot[chain[-1]]]
        pos = lt[slot[chain[-1]]]
        for a in reversed(chain[:-1]):  # top-down: parent world ∘ child local
            s_parent = float(cum[parents_node[a]])
            pos = pos + quat_apply(q, lt[slot[a]] * s_parent)
            q = quat_mul(q, lq[slot[a]])
        gq[j], gp[j] = q, pos
    return gq, gp
