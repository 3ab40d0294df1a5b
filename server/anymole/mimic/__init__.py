"""Motion video mimicking (paper A.3, Eq. 3): fit joint rotations and the root to the estimator's joints and
the character's silhouette in each generated frame, with regularisers; all gaps batched, filled from both
keys toward the middle; keys and context exact; signs made continuous before smoothing.

Public API::

    MimicConfig.draft() / .fast() / .quality() / .preset(name)
    character_mask(frames, background) -> (F, H, W)
    mimic(skeleton, camera, init, known, MimicTargets(joints_px, depth, mask), config, on_step, mesh=...) -> Motion
    find_gaps(known), phases(gaps), smooth_keep_known(rotations, root, known, sigma)
"""

from anymole.mimic.config import MimicConfig
from anymole.mimic.fit import MimicTargets, mimic
from anymole.mimic.losses import character_mask, joint_loss, root_loss, rotation_loss, silhouette_loss
from anymole.mimic.schedule import Phase, find_gaps, phases, smooth_keep_known

__all__ = [
    "MimicConfig",
    "MimicTargets",
    "Phase",
    "character_mask",
    "find_gaps",
    "joint_loss",
    "mimic",
    "phases",
    "root_loss",
    "rotation_loss",
    "silhouette_loss",
    "smooth_keep_known",
]
