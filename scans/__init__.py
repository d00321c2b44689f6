"""ptychoedge.scans: what scan scripts import, ophyd-async devices and Bluesky plans."""

from ptychoedge.scans.devices import Pipeline, PipelineImages, SimDetector, stage_motors
from ptychoedge.scans.plans import configure_pipeline, ptycho_scan, scan_positions

__all__ = ["Pipeline", "PipelineImages", "SimDetector", "configure_pipeline", "ptycho_scan",
           "scan_positions", "stage_motors"]
