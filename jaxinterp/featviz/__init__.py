"""Feature visualization: image parameterizations, transformation robustness, composable objectives, in-context
patches and the engine that optimizes every channel of a layer in one jitted, vmapped, sharded call; and the
objective's values on real frames that its images are measured against."""

from jaxinterp.featviz.context import ContextSpec, make_context
from jaxinterp.featviz.engine import Result, VisualizeConfig, Visualizer, make_visualize
from jaxinterp.featviz.objectives import Objective, parse_objective
from jaxinterp.featviz.param import fft, image, pixel
from jaxinterp.featviz.real_values import real_frame_values, real_percentiles
from jaxinterp.featviz.transforms import Transform, no_transforms, standard_transforms

__all__ = [
    "ContextSpec",
    "Objective",
    "Result",
    "Transform",
    "VisualizeConfig",
    "Visualizer",
    "fft",
    "image",
    "make_context",
    "make_visualize",
    "no_transforms",
    "parse_objective",
    "pixel",
    "real_frame_values",
    "real_percentiles",
    "standard_transforms",
]
