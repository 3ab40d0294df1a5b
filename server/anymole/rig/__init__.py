"""Rig math: skeletons, batched quaternion and rotation conversions, forward kinematics, skinning."""

from anymole.rig.character import Character, Material, SkinnedMesh
from anymole.rig.fk import fk_motion, forward_kinematics, global_to_local
from anymole.rig.keyframes import Keyframes, cut_clip
from anymole.rig.motion import MAX_FPS, Motion
from anymole.rig.skeleton import Skeleton
from anymole.rig.skinning import joint_matrices, linear_blend_skinning, skin_normals, skinning_matrices

__all__ = [
    "MAX_FPS",
    "Character",
    "Keyframes",
    "Material",
    "Motion",
    "Skeleton",
    "SkinnedMesh",
    "cut_clip",
    "fk_motion",
    "forward_kinematics",
    "global_to_local",
    "joint_matrices",
    "linear_blend_skinning",
    "skin_normals",
    "skinning_matrices",
]
