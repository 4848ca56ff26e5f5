"""Causal convolution layers for video, shared by the tokenizers and any family that needs them.

Video tensors are ``(B, T, C, H, W)``, the layout of the rest of worldline, so per-frame layers fold
time into the batch with a free view and only layers with a temporal extent pay for a transpose.

Causality: every temporal layer pads on the past side only, by repeating the first frame, so output
frame ``t`` depends on input frames ``<= t`` and the first output frame on the first input frame
alone (Cosmos-style). A temporal stride ``s`` maps ``1 + s*k`` frames to ``1 + k``: output ``j``
covers input frames up to ``s*j``, and output 0 is the first frame by itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

# ----------------------------------------------------------------------------------------------
# Convolution and normalisation
# ----------------------------------------------------------------------------------------------


class CausalConv3d(nn.Module):
    """3D convolution over ``(B, T, C, H, W)``, causal in time, 'same' zero padding in space.

    With ``temporal_kernel == 1`` and no temporal stride it runs as a 2D convolution on the folded
    frames, which is both faster on CPU and exactly per-frame (latents can be cached frame by frame).
    The weight is always stored 5D so checkpoints do not depend on that choice.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        temporal_kernel: int = 1,
        stride: int = 1,
        temporal_stride: int = 1,
        bias: bool = True,
    ):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"spatial kernel must be odd for 'same' padding, got {kernel_size=}")
        if temporal_kernel < temporal_stride:
            raise ValueError(f"temporal kernel must cover its stride, got {temporal_kernel=} {temporal_stride=}")
        self.temporal_kernel = temporal_kernel
        self.temporal_stride = temporal_stride
        self.stride = stride
        self.padding = kernel_size // 2
        self.conv = nn.Conv3d(
            in_channels,
            out_channels,
            (temporal_kernel, kernel_size, kernel_size),
            stride=(temporal_stride, stride, stride),
            padding=(0, self.padding, self.padding),
            bias=bias,
        )

    def forward(self, x: Tensor) -> Tensor:
        B = x.shape[0]
        if self.temporal_kernel == 1 and self.temporal_stride == 1:
            x = rearrange(x, "b t c h w -> (b t) c h w")
            y = F.conv2d(x, self.conv.weight[:, :, 0], self.conv.bias, self.stride, self.padding)
            return rearrange(y, "(b t) c h w -> b t c h w", b=B)
        # Past-side padding by the first frame: kt - 1 frames keeps 1 + s*k -> 1 + k for stride s.
        x = rearrange(x, "b t c h w -> b c t h w")
        pad = x[:, :, :1].expand(-1, -1, self.temporal_kernel - 1, -1, -1)  # (B, C, kt-1, H, W)
        y = self.conv(torch.cat([pad, x], dim=2))
        return rearrange(y, "b c t h w -> b t c h w")


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm with statistics per frame: pooling over time would leak the future into the past."""

    def forward(self, x: Tensor) -> Tensor:
        B = x.shape[0]
        y = super().forward(rearrange(x, "b t c h w -> (b t) c h w"))
        return rearrange(y, "(b t) c h w -> b t c h w", b=B)


def group_count(channels: int, groups: int) -> int:
    """Largest group count <= ``groups`` that divides ``channels``."""
    g = max(1, min(groups, channels))
    while channels % g:
        g -= 1
    return g


# ----------------------------------------------------------------------------------------------
# Blocks
# ----------------------------------------------------------------------------------------------


class CausalResBlock(nn.Module):
    """Pre-norm residual block: (norm, SiLU, conv) twice plus a 1x1 skip when the width changes."""

    def __init__(self, in_channels: int, out_channels: int, temporal_kernel: int = 1, norm_groups: int = 8):
        super().__init__()
        self.norm1 = FrameGroupNorm(group_count(in_channels, norm_groups), in_channels)
        self.conv1 = CausalConv3d(in_channels, out_channels, 3, temporal_kernel)
        self.norm2 = FrameGroupNorm(group_count(out_channels, norm_groups), out_channels)
        self.conv2 = CausalConv3d(out_channels, out_channels, 3, temporal_kernel)
        self.skip = CausalConv3d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        # Zero-init the last conv so each block starts as (a projection of) the identity: a deep
        # stack then trains like a shallow one in the first steps, which matters on a CPU budget.
        nn.init.zeros_(self.conv2.conv.weight)
        nn.init.zeros_(self.conv2.conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class SpatialDownsample(nn.Module):
    """Halve H and W with a stride-2 3x3 convolution (per frame)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = CausalConv3d(in_channels, out_channels, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class SpatialUpsample(nn.Module):
    """Double H and W: nearest-neighbour resize then a 3x3 convolution (no checkerboard artefacts)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = CausalConv3d(in_channels, out_channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        B = x.shape[0]
        x = rearrange(x, "b t c h w -> (b t) c h w")
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(rearrange(x, "(b t) c h w -> b t c h w", b=B))


class TemporalDownsample(nn.Module):
    """``1 + 2k`` frames -> ``1 + k``: a causal conv with temporal stride 2 (output 0 sees frame 0 only)."""

    def __init__(self, channels: int, temporal_kernel: int = 3):
        super().__init__()
        self.conv = CausalConv3d(channels, channels, 3, max(temporal_kernel, 2), temporal_stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class TemporalUpsample(nn.Module):
    """``1 + k`` frames -> ``1 + 2k``: predict two frames per input frame (depth-to-time), then drop
    the first, so input 0 gives output frame 0 alone and input ``j`` gives frames ``2j - 1, 2j``."""

    def __init__(self, channels: int, temporal_kernel: int = 3):
        super().__init__()
        self.conv = CausalConv3d(channels, 2 * channels, 3, temporal_kernel)

    def forward(self, x: Tensor) -> Tensor:
        y = rearrange(self.conv(x), "b t (r c) h w -> b (t r) c h w", r=2)  # (B, 2T, C, H, W)
        return y[:, 1:]
