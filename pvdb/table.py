"""The PV table of the README, generated from the spec so the two never drift.

Run `python -m ptychoedge.pvdb.table` to print the Markdown table.
"""

from __future__ import annotations

from ptychoedge.pvdb import detector, node, pipeline, stage
from ptychoedge.pvdb.spec import Kind, PvSpec


def _limits(spec: PvSpec) -> str:
    if spec.kind is Kind.ENUM:
        return " / ".join(spec.choices)
    if spec.low is None and spec.high is None:
        return ""
    return f"{spec.low:g} .. {spec.high:g}"


def _row(prefix: str, spec: PvSpec) -> str:
    name = f"`{prefix}{spec.name}`" + (" (+`_RBV`)" if spec.readback else "")
    access = "read/write" if spec.writable else "read"
    return (f"| {name} | {spec.kind.value} | {spec.units} | {_limits(spec)} | {access} "
            f"| {spec.description} |")


def markdown() -> str:
    """The README's PV table, in Markdown."""
    lines = ["| PV | type | units | range / choices | access | what |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [_row("$(D)", spec) for spec in detector.PVS]
    lines.append(f"| `$(D){detector.IMAGE}` | NTNDArray | | | read (monitor) "
                 "| Frames, with `PosX`/`PosY` attributes in metres |")
    lines += [f"| `$(D){motor.name}` | motor record | {motor.units} "
              f"| {motor.low_limit:g} .. {motor.high_limit:g} | read/write "
              f"| {motor.description} |" for motor in stage.MOTORS]
    lines += [_row("$(P)", spec) for spec in pipeline.PVS]
    lines += [f"| `$(P){image}` | NTNDArray | | | read (monitor) | {what} |"
              for image, what in zip(pipeline.IMAGES, (
                  "Amplitude of the latest patch", "Phase of the latest patch (rad)",
                  "Stitched amplitude of the sample", "Stitched phase of the sample (rad)"),
                  strict=True)]
    lines += [f"| `$(P){image}` | NTNDArray | | | read (monitor) | {what} |"
              for image, what in zip(pipeline.REFINED_IMAGES, (
                  "Refined amplitude of the kept frames' sample (after `Refine`)",
                  "Refined phase of the kept frames' sample (rad)"), strict=True)]
    lines += [_row("$(P)Node<n>:", spec) for spec in node.PVS]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
