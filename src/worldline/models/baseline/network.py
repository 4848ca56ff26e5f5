"""The baseline's network: a small action-conditioned U-Net over stacked context latents.

Input: the last K normalised latents, cut into p x p cells (space-to-depth) and stacked on channels,
plus x/y coordinate grids; every residual block is modulated by the action embedding (FiLM).
Output: the residual z_{t+1} - z_t, put back from cells to the latent grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from worldline.nn.embeddings import FiLM


def _groups(channels: int) -> int:
    """GroupNorm groups: 8 channels per group where possible (GN works at batch size 1, unlike BN)."""
    for g in (32, 16, 8, 4, 2):
        if channels % g == 0 and channels // g >= 4:
            return g
    return 1


class ResBlock(nn.Module):
    """Pre-norm residual block; the action enters between the two convolutions via FiLM."""

    def __init__(self, cin: int, cout: int, cond_dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.film = FiLM(cond_dim, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity (ADM/DiT practice): a deep net trains from step one
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.film(self.norm2(h), cond)))
        return self.skip(x) + h


class LatentUNet(nn.Module):
    """``(B, K*c, h, w)`` stacked latents + ``(B, D)`` action embedding -> ``(B, c, h, w)`` residual."""

    def __init__(self, in_channels: int, out_channels: int, width: int, channel_mult: tuple[int, ...],
                 blocks_per_level: int, cond_dim: int, coord_channels: bool):
        super().__init__()
        self.coord_channels = coord_channels
        chans = [width * m for m in channel_mult]
        self.stem = nn.Conv2d(in_channels + (2 if coord_channels else 0), chans[0], 3, padding=1)

        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for i, c in enumerate(chans):
            cin = chans[max(i - 1, 0)]
            self.down.append(nn.ModuleList([ResBlock(cin if j == 0 else c, c, cond_dim) for j in range(blocks_per_level)]))
            if i < len(chans) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))

        self.up = nn.ModuleList()
        for i in reversed(range(len(chans) - 1)):
            self.up.append(ResBlock(chans[i + 1] + chans[i], chans[i], cond_dim))  # upsampled + skip
        self.out_norm = nn.GroupNorm(_groups(chans[0]), chans[0])
        self.out = nn.Conv2d(chans[0], out_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)  # predicts a zero residual at init: the untrained model is copy-last-latent
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        if self.coord_channels:
            B, _, H, W = x.shape
            ys = torch.linspace(-1, 1, H, device=x.device, dtype=x.dtype)
            xs = torch.linspace(-1, 1, W, device=x.device, dtype=x.dtype)
            grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"))  # (2, H, W)
            x = torch.cat([x, repeat(grid, "two h w -> b two h w", b=B)], dim=1)  # (B, K*c + 2, H, W)
        h = self.stem(x)
        skips = []
        for i, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, cond)
            if i < len(self.downsample):
                skips.append(h)
                h = self.downsample[i](h)
        for block in self.up:
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = block(torch.cat([h, skip], dim=1), cond)
        return self.out(F.silu(self.out_norm(h)))


def stack_context(z: Tensor, patch: int) -> Tensor:
    """(B, K, c, h, w) context latents -> (B, K*c*p*p, h/p, w/p) network input, oldest first."""
    return rearrange(z, "b k c (h p1) (w p2) -> b (k c p1 p2) h w", p1=patch, p2=patch)


def unpatch(x: Tensor, patch: int) -> Tensor:
    """(B, c*p*p, h/p, w/p) network output -> (B, c, h, w) latent residual."""
    return rearrange(x, "b (c p1 p2) h w -> b c (h p1) (w p2)", p1=patch, p2=patch)
