"""Writing results as pictures: PNG strips and contact sheets, feature-visualization runs, example sheets,
heatmap overlays and the per-agent report page. It imports the computing packages (featviz, examples, sae); they
never import it.
"""

from jaxinterp.report.agent_report import write_agent_report
from jaxinterp.report.example_sheets import examples_sheet, write_sheets
from jaxinterp.report.object_tables import object_maps_sheet, object_table, write_object_response
from jaxinterp.report.overlays import write_feature_heatmaps, write_overlays, write_saliency
from jaxinterp.report.visualizations import FeatvizSettings, visualize_layers

__all__ = [
    "FeatvizSettings",
    "examples_sheet",
    "object_maps_sheet",
    "object_table",
    "visualize_layers",
    "write_agent_report",
    "write_feature_heatmaps",
    "write_object_response",
    "write_overlays",
    "write_saliency",
    "write_sheets",
]
