"""ptychoedge.scans: what scan scripts import, ophyd-async devices and Bluesky plans.

Names are loaded on first use: the devices load Channel Access (aioca's libca),
which a process that only plans or analyses scans need not load.
"""

from importlib import import_module

_HOMES = {
    "Pipeline": "devices", "PipelineImages": "devices", "SimDetector": "devices",
    "stage_motors": "devices", "configure_pipeline": "plans", "ptycho_scan": "plans",
    "scan_positions": "plans",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(import_module(f"ptychoedge.scans.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'ptychoedge.scans' has no attribute {name!r}")
