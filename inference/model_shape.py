"""The shape of a PtychoNN network, without torch: what a manifest records, and what an
install without torch (inference through ONNX Runtime) still needs to read one.

See model.py for the network itself and what `norm` and `output` mean.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

LEVELS = 3  # each halves the image: the input size must divide by 2**LEVELS
OUTPUTS = ("bounded", "free")  # see model.py
NORMS = ("none", "batch")


@dataclass(frozen=True)
class ModelShape:
    input_size: int = 64
    width: int = 32
    norm: str = "none"  # what models trained before it existed have
    output: str = "bounded"  # likewise
    # the frame folded into fold x fold channels before the first layer, and the output
    # unfolded after the last: the whole frame at the cost of one fold^2 times smaller
    fold: int = 1

    @property
    def core_size(self) -> int:
        """Pixels of the encoder's first level: the input size over the fold."""
        return self.input_size // self.fold

    def __post_init__(self) -> None:
        if self.output not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {self.output!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.fold < 1:
            raise ValueError(f"fold must be at least 1, got {self.fold}")
        multiple = self.fold * 2**LEVELS
        if self.input_size < multiple or self.input_size % multiple:
            raise ValueError(f"input size must be a multiple of {multiple}"
                             + (f" (fold {self.fold})" if self.fold > 1 else "")
                             + f", got {self.input_size}")
        if self.width < 1:
            raise ValueError(f"width must be at least 1, got {self.width}")

    def as_dict(self) -> dict[str, int | str]:
        """The fields, without fold 1: a manifest of an unfolded network reads as before."""
        fields = asdict(self)
        if self.fold == 1:
            del fields["fold"]
        return fields
