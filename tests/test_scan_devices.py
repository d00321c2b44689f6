"""The scan devices' declared signals: built from the PV spec, of the declared type."""

from __future__ import annotations

import asyncio
import typing

import pytest
from ophyd_async.core import init_devices

from ptychoedge.scans.devices import Pipeline, SimDetector, SimDetectorDriver


def mock_devices() -> tuple[Pipeline, SimDetector]:
    async def build() -> tuple[Pipeline, SimDetector]:
        async with init_devices(mock=True):
            pipeline = Pipeline("EDGE1:")
            detector = SimDetector("SIM1:")
        return pipeline, detector

    return asyncio.run(build())


@pytest.mark.parametrize("device_class", [Pipeline, SimDetectorDriver])
def test_every_declared_signal_is_built_from_the_spec_with_its_type(device_class):
    pipeline, detector = mock_devices()
    device = pipeline if device_class is Pipeline else detector.driver
    hints = typing.get_type_hints(device_class)
    for name in device_class.__annotations__:  # its own declarations, not its bases'
        declared, built = hints[name], getattr(device, name)
        assert isinstance(built, typing.get_origin(declared) or declared), (name, built)
        if typing.get_args(declared):  # a signal: its datatype is the spec's
            assert built.datatype is typing.get_args(declared)[0], (name, built.datatype)
