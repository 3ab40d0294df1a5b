"""Scene-specific joint estimator (paper A.2, supplementary B): backbone features cached once per image,
feature merger → heatmap decoder → soft-argmax 2D joints, sampled features → depth MLP, trained per scene.

Public API::

    EstimatorConfig.draft() / .fast() / .quality() / .preset(name)
    build_backbone(name, config, weights=PATH | random_init=True) -> Backbone   # "conv", ViTs via transformers
    training_set(renders, keys, views=3) -> (images, joints2d, depths, weights)   # keyframes weigh 3
    fit_estimator(images, joints2d, depths, weights, config, on_step, masks=...) -> SceneEstimator
    SceneEstimator.predict(images, masks) -> (joints_px (N, J, 2), depth_m (N, J)); .save(dir) / .load(dir)
    # draft reads a window around the character (anymole.estimator.framing), placed on each image's mask
    to_transformers(state_dict) / from_transformers(state_dict)   # torch.hub / timm ↔ transformers keys
"""

from anymole.estimator.backbones import WEIGHT_URLS, Backbone, ConvBackbone, ViTBackbone, build_backbone
from anymole.estimator.config import BACKBONES, EstimatorConfig
from anymole.estimator.fit import SceneEstimator, encode, fit_estimator, shift_grid, training_set
from anymole.estimator.keymap import detect_schema, from_transformers, to_transformers
from anymole.estimator.model import EstimatorNet, soft_argmax

__all__ = [
    "BACKBONES",
    "WEIGHT_URLS",
    "Backbone",
    "ConvBackbone",
    "EstimatorConfig",
    "EstimatorNet",
    "SceneEstimator",
    "ViTBackbone",
    "build_backbone",
    "detect_schema",
    "encode",
    "fit_estimator",
    "from_transformers",
    "shift_grid",
    "soft_argmax",
    "to_transformers",
    "training_set",
]
