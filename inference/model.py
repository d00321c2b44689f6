"""PtychoNN: one diffraction pattern in, the amplitude and phase under the probe out.

After Cherukara et al., Appl. Phys. Lett. 117, 044103 (2020): a convolutional
encoder of three levels (width, 2x width, 4x width channels, each halving the
image) and two decoders of the same shape in reverse, one ending in a sigmoid
for the amplitude (0..1), one in a scaled tanh for the phase (-pi..pi). With
`input_size=64, width=32` it is the original network (about 1.15 M weights).

`norm="batch"` puts batch normalisation after every hidden convolution. Without it,
training sits for thousands of steps at the flat mean of the targets (see
inference/MODELS.md); with it the network leaves the plateau within a hundred steps.
At inference it is a fixed scale and offset, which the ONNX export folds into the
convolutions, so it costs nothing there.

`output` says how the heads' last values become amplitude and phase: "bounded" (the
original: sigmoid, pi tanh) or "free" (amplitude exp(z), phase z wrapped to [-pi, pi)),
where nothing saturates, which training through the physics needs: the flux behind a
recorded scan is known only roughly, so the amplitude that explains it may exceed 1,
and a patch's free constant phase may drift to +-pi, where a tanh is flat.
`initialise` starts a network at the empty beam (amplitude 1, phase 0).

`fold=2` sees the whole frame at the cost of a network of half its size: the input is
folded (pixel unshuffle) into 4 channels of half the size, and each head's last
convolution gives 4 channels that unfold (pixel shuffle) into the full-size output. So
a 128-pixel frame, uncropped and unbinned, is reconstructed over the probe's whole
window at the detector's own object pixel, where binning it to 64 would alias its far
field (inference/MODELS.md, "Where the network loses the sample").
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ptychoedge.inference.model_shape import LEVELS, ModelShape


def _double_conv(channels_in: int, channels_out: int, norm: str) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for size_in in (channels_in, channels_out):
        layers.append(nn.Conv2d(size_in, channels_out, 3, padding=1))
        if norm == "batch":
            layers.append(nn.BatchNorm2d(channels_out))
        layers.append(nn.ReLU(inplace=True))
    return layers


def _decoder(width: int, last: nn.Module, norm: str, fold: int) -> nn.Sequential:
    channels = [width * 2**level for level in reversed(range(LEVELS))]  # 4w, 2w, w
    layers: list[nn.Module] = []
    previous = channels[0]
    for count in channels:
        layers += _double_conv(previous, count, norm)
        layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
        previous = count
    layers.append(nn.Conv2d(previous, fold * fold, 3, padding=1))
    if fold > 1:
        layers.append(nn.PixelShuffle(fold))
    layers.append(last)
    return nn.Sequential(*layers)


class ScaledTanh(nn.Module):
    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.tanh(x)


class Exponential(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(x)


class WrappedPhase(nn.Module):
    """z wrapped to [-pi, pi): the gradient is 1 everywhere, nothing saturates."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - 2 * math.pi * torch.floor((x + math.pi) / (2 * math.pi))


class PtychoNN(nn.Module):
    """(batch, 1, n, n) preprocessed diffraction -> (batch, 2, n, n) amplitude, phase."""

    def __init__(self, shape: ModelShape | None = None):
        super().__init__()
        self.shape = shape = shape or ModelShape()
        layers: list[nn.Module] = [nn.PixelUnshuffle(shape.fold)] if shape.fold > 1 else []
        previous = shape.fold * shape.fold
        for level in range(LEVELS):
            layers += _double_conv(previous, shape.width * 2**level, shape.norm)
            layers.append(nn.MaxPool2d(2))
            previous = shape.width * 2**level
        self.encoder = nn.Sequential(*layers)
        if shape.output == "free":
            self.amplitude = _decoder(shape.width, Exponential(), shape.norm, shape.fold)
            self.phase = _decoder(shape.width, WrappedPhase(), shape.norm, shape.fold)
        else:
            self.amplitude = _decoder(shape.width, nn.Sigmoid(), shape.norm, shape.fold)
            self.phase = _decoder(shape.width, ScaledTanh(math.pi), shape.norm, shape.fold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        code = self.encoder(x)
        return torch.cat([self.amplitude(code), self.phase(code)], dim=1)


def initialise(model: PtychoNN) -> None:
    """Fresh weights for training from scratch: He-normal convolutions (zero biases) keep
    the frame-to-frame differences alive through the 14 ReLU layers (PyTorch's default
    shrinks them about 3x a layer: the untrained network's output then varies 1e-7 from
    frame to frame, and a loss without labels settles on one patch for all); the last
    convolution of each head starts at zero, so a "free" network starts at the empty
    beam, amplitude 1 and phase 0, for every frame."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.zeros_(module.bias)
    start_at_empty_beam(model)


def start_at_empty_beam(model: PtychoNN) -> None:
    """Zero the last convolution of each head: a "free" network then answers amplitude 1,
    phase 0 for every frame, and learns from there what each frame adds."""
    for head in (model.amplitude, model.phase):
        last = [module for module in head if isinstance(module, nn.Conv2d)][-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_frame(shape: ModelShape) -> float:
    """Multiply-adds x 2 of the convolutions, for one frame."""
    n, w = shape.core_size, shape.width
    total = 0.0
    size, previous = n, shape.fold * shape.fold
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
        total += size_d * size_d * 9 * prev * shape.fold * shape.fold
    return 2 * total
