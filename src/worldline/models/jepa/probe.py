"""A pixel probe on frozen JEPA embeddings, only for looking at rollouts.

JEPA has no decoder: its embeddings are never trained to keep pixels. The probe is trained on
detached embeddings of real frames, so it cannot shape the embedding space or the predictor; it
shows what the embeddings (and the predictor's outputs) still say about the picture.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn


class PixelProbe(nn.Module):
    """(B, D, g, g) embeddings -> (B, 3, H, W) in [-1, 1]: 1x1 projection, then nearest x2 upsampling
    with 3x3 convolutions until the frame size."""

    def __init__(self, embed_dim: int, grid: int, image_size: tuple[int, int], width: int):
        super().__init__()
        self.image_size = tuple(image_size)
        ups = max(0, math.ceil(math.log2(max(image_size) / grid)))
        self.inp = nn.Conv2d(embed_dim, width, 1)
        self.ups = nn.ModuleList([nn.Conv2d(width, width, 3, padding=1) for _ in range(ups)])
        self.out = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        x = self.inp(z)
        for conv in self.ups:
            x = F.gelu(conv(F.interpolate(x, scale_factor=2.0, mode="nearest")))
        x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False)
        return self.out(x)
