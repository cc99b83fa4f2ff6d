"""Writing results as pictures: PNG strips and contact sheets, feature-visualization runs, example sheets and
heatmap overlays. It imports the computing packages (featviz, examples); they never import it.
"""

from jaxinterp.report.examples import examples_sheet, write_sheets
from jaxinterp.report.featviz import visualize_layers
from jaxinterp.report.heatmaps import write_feature_heatmaps, write_overlays, write_saliency
from jaxinterp.report.objects import object_maps_sheet, object_table, write_object_response

__all__ = [
    "examples_sheet",
    "object_maps_sheet",
    "object_table",
    "visualize_layers",
    "write_feature_heatmaps",
    "write_object_response",
    "write_overlays",
    "write_saliency",
    "write_sheets",
]
