"""Feature visualization: image parameterizations, transformation robustness, composable objectives and the
engine that optimizes every channel of a layer in one jitted, vmapped, sharded call."""

from jaxinterp.featviz.engine import Result, VisualizeConfig, Visualizer, make_visualize
from jaxinterp.featviz.objectives import Objective, parse_objective
from jaxinterp.featviz.param import fft, image, pixel
from jaxinterp.featviz.transforms import Transform, no_transforms, standard_transforms

__all__ = [
    "Objective",
    "Result",
    "Transform",
    "VisualizeConfig",
    "Visualizer",
    "fft",
    "image",
    "make_visualize",
    "no_transforms",
    "parse_objective",
    "pixel",
    "standard_transforms",
]
