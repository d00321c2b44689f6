"""PtychoNN: one diffraction pattern in, the amplitude and phase under the probe out.

After Cherukara et al., Appl. Phys. Lett. 117, 044103 (2020): a convolutional
encoder of three levels (width, 2x width, 4x width channels, each halving the
image) and two decoders of the same shape in reverse, one ending in a sigmoid
for the amplitude (0..1), one in a scaled tanh for the phase (-pi..pi). With
`input_size=64, width=32` it is the original network (about 1.15 M weights).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

LEVELS = 3  # each halves the image: the input size must divide by 2**LEVELS


@dataclass(frozen=True)
class ModelShape:
    input_size: int = 64
    width: int = 32

    def __post_init__(self) -> None:
        if self.input_size < 2**LEVELS or self.input_size % 2**LEVELS:
            raise ValueError(f"input size must be a multiple of {2**LEVELS}, "
                             f"got {self.input_size}")
        if self.width < 1:
            raise ValueError(f"width must be at least 1, got {self.width}")

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _double_conv(channels_in: int, channels_out: int) -> list[nn.Module]:
    return [
        nn.Conv2d(channels_in, channels_out, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(channels_out, channels_out, 3, padding=1), nn.ReLU(inplace=True),
    ]


def _decoder(width: int, last: nn.Module) -> nn.Sequential:
    channels = [width * 2**level for level in reversed(range(LEVELS))]  # 4w, 2w, w
    layers: list[nn.Module] = []
    previous = channels[0]
    for count in channels:
        layers += _double_conv(previous, count)
        layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
        previous = count
    layers += [nn.Conv2d(previous, 1, 3, padding=1), last]
    return nn.Sequential(*layers)


class ScaledTanh(nn.Module):
    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.tanh(x)


class PtychoNN(nn.Module):
    """(batch, 1, n, n) preprocessed diffraction -> (batch, 2, n, n) amplitude, phase."""

    def __init__(self, shape: ModelShape = ModelShape()):
        super().__init__()
        self.shape = shape
        layers: list[nn.Module] = []
        previous = 1
        for level in range(LEVELS):
            layers += _double_conv(previous, shape.width * 2**level)
            layers.append(nn.MaxPool2d(2))
            previous = shape.width * 2**level
        self.encoder = nn.Sequential(*layers)
        self.amplitude = _decoder(shape.width, nn.Sigmoid())
        self.phase = _decoder(shape.width, ScaledTanh(math.pi))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        code = self.encoder(x)
        return torch.cat([self.amplitude(code), self.phase(code)], dim=1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_frame(shape: ModelShape) -> float:
    """Multiply-adds x 2 of the convolutions, for one frame."""
    n, w = shape.input_size, shape.width
    total = 0.0
    size, previous = n, 1
    for level in range(LEVELS):  # encoder: two convolutions per level, then pool
        channels = w * 2**level
        total += size * size * 9 * (previous * channels + channels * channels)
        previous, size = channels, size // 2
    for _ in range(2):  # two decoders
        size_d, prev = size, previous
        for level in reversed(range(LEVELS)):
            channels = w * 2**level
            total += size_d * size_d * 9 * (prev * channels + channels * channels)
            prev, size_d = channels, size_d * 2
        total += size_d * size_d * 9 * prev
    return 2 * total
