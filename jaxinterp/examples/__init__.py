"""Dataset examples: what a feature responds to in real play (top-k frames, receptive-field patches kept diverse,
heatmaps, attributions, responses to game objects), streamed over datasets of any size. Everything works on a ``Feature``: channels of a
layer, a direction in channel space, or any ``acts -> (N, H, W, F)`` function (an SAE latent).
"""

from jaxinterp.examples.attribution import (
    INPUT,
    Attribution,
    forward_with_delta,
    gradient_x_activation,
    integrated_gradients,
    saliency,
)
from jaxinterp.examples.features import Feature, channels, compute_feature_maps, direction, feature_maps
from jaxinterp.examples.find import DEFAULT_K, ExamplesResult, find_examples, load_npz, save_npz
from jaxinterp.examples.object_response import ObjectResponse, object_response
from jaxinterp.examples.patches import crop_positions, select_diverse, similarity
from jaxinterp.examples.source import EMPTY
from jaxinterp.examples.topk import Ranked, scan

__all__ = [
    "DEFAULT_K",
    "EMPTY",
    "INPUT",
    "Attribution",
    "ExamplesResult",
    "Feature",
    "ObjectResponse",
    "Ranked",
    "channels",
    "compute_feature_maps",
    "crop_positions",
    "direction",
    "feature_maps",
    "find_examples",
    "forward_with_delta",
    "gradient_x_activation",
    "integrated_gradients",
    "load_npz",
    "object_response",
    "saliency",
    "save_npz",
    "scan",
    "select_diverse",
    "similarity",
]
