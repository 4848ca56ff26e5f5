"""The causal convolutional encoder and decoder shared by the continuous and FSQ tokenizers.

A ladder of resolutions, like the VAE of latent diffusion but causal in time (see
:mod:`worldline.nn.conv`): each rung holds ``blocks[i]`` residual blocks at ``channels[i]`` and then
halves the spatial size; the last ``log2(temporal_compression)`` rungs also halve time. The decoder
mirrors it. On a CPU budget the full-resolution rung is kept thin (few channels, no blocks): most
capacity sits at the lower resolutions, where a 3x3 convolution is 4-16x cheaper.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from worldline.nn.conv import (
    CausalConv3d,
    CausalResBlock,
    FrameGroupNorm,
    SpatialDownsample,
    SpatialUpsample,
    TemporalDownsample,
    TemporalUpsample,
    group_count,
)


def ladder(values: tuple[int, ...], rungs: int) -> list[int]:
    """Per-rung values, the last entry repeated when there are more rungs than entries."""
    return [values[min(i, len(values) - 1)] for i in range(rungs)]


def levels_of(compression: int) -> int:
    """log2 of a power-of-two compression factor."""
    return int(round(math.log2(compression)))


class Encoder(nn.Module):
    """(B, T, C, H, W) -> (B, 1 + (T-1)/ct, out_channels, H/s, W/s)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels: tuple[int, ...],
        blocks: tuple[int, ...],
        spatial_compression: int,
        temporal_compression: int,
        temporal_kernel: int,
        norm_groups: int,
    ):
        super().__init__()
        n_down, n_time = levels_of(spatial_compression), levels_of(temporal_compression)
        widths, depths = ladder(channels, n_down + 1), ladder(blocks, n_down + 1)
        self.stem = CausalConv3d(in_channels, widths[0], 3, temporal_kernel)
        layers: list[nn.Module] = []
        for i in range(n_down + 1):
            layers += [CausalResBlock(widths[i], widths[i], temporal_kernel, norm_groups) for _ in range(depths[i])]
            if i < n_down:
                layers.append(SpatialDownsample(widths[i], widths[i + 1]))
                if i >= n_down - n_time:
                    layers.append(TemporalDownsample(widths[i + 1], max(temporal_kernel, 2)))
        self.layers = nn.Sequential(*layers)
        self.norm_out = FrameGroupNorm(group_count(widths[-1], norm_groups), widths[-1])
        self.conv_out = CausalConv3d(widths[-1], out_channels, 3, temporal_kernel)

    def forward(self, x: Tensor) -> Tensor:
        h = self.layers(self.stem(x))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """(B, t, in_channels, h, w) -> (B, 1 + (t-1)*ct, out_channels, h*s, w*s); causal like the encoder."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels: tuple[int, ...],
        blocks: tuple[int, ...],
        spatial_compression: int,
        temporal_compression: int,
        temporal_kernel: int,
        norm_groups: int,
    ):
        super().__init__()
        n_up, n_time = levels_of(spatial_compression), levels_of(temporal_compression)
        widths, depths = ladder(channels, n_up + 1), ladder(blocks, n_up + 1)
        self.stem = CausalConv3d(in_channels, widths[-1], 3, temporal_kernel)
        layers: list[nn.Module] = []
        for i in reversed(range(n_up + 1)):
            layers += [CausalResBlock(widths[i], widths[i], temporal_kernel, norm_groups) for _ in range(depths[i])]
            if i > 0:
                if i > n_up - n_time:
                    layers.append(TemporalUpsample(widths[i], max(temporal_kernel, 2)))
                layers.append(SpatialUpsample(widths[i], widths[i - 1]))
        self.layers = nn.Sequential(*layers)
        self.norm_out = FrameGroupNorm(group_count(widths[0], norm_groups), widths[0])
        self.conv_out = CausalConv3d(widths[0], out_channels, 3, temporal_kernel)

    def forward(self, z: Tensor) -> Tensor:
        h = self.layers(self.stem(z))
        return self.conv_out(F.silu(self.norm_out(h)))
