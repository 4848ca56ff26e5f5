"""3D patchify / unpatchify between video tensors and token sequences (ViT, DiT, V-JEPA)."""

from __future__ import annotations

from einops import rearrange
from torch import Tensor, nn


class PatchEmbed3D(nn.Module):
    """(B, T, C, H, W) -> (B, L, dim) tokens, one per (pt, ph, pw) tube, raster order time-outermost.

    A linear map of the flattened tube, which equals a Conv3d with stride = kernel but keeps the
    channels-last layout the transformer wants without a permute.
    """

    def __init__(self, channels: int, dim: int, patch: tuple[int, int, int] = (1, 2, 2)):
        super().__init__()
        self.patch = tuple(patch)
        pt, ph, pw = self.patch
        self.proj = nn.Linear(channels * pt * ph * pw, dim)

    def grid(self, T: int, H: int, W: int) -> tuple[int, int, int]:
        pt, ph, pw = self.patch
        if T % pt or H % ph or W % pw:
            raise ValueError(f"video (T={T}, H={H}, W={W}) is not divisible by the patch size {self.patch}")
        return T // pt, H // ph, W // pw

    def forward(self, x: Tensor) -> Tensor:
        pt, ph, pw = self.patch
        self.grid(*x.shape[1:2], *x.shape[3:])
        tubes = rearrange(x, "b (t pt) c (h ph) (w pw) -> b (t h w) (pt ph pw c)", pt=pt, ph=ph, pw=pw)  # (B, L, C*pt*ph*pw)
        return self.proj(tubes)


def unpatchify(x: Tensor, grid: tuple[int, int, int], patch: tuple[int, int, int], channels: int) -> Tensor:
    """(B, L, pt*ph*pw*C) -> (B, T, C, H, W), the inverse layout of :class:`PatchEmbed3D`."""
    t, h, w = grid
    pt, ph, pw = patch
    return rearrange(x, "b (t h w) (pt ph pw c) -> b (t pt) c (h ph) (w pw)", t=t, h=h, w=w, pt=pt, ph=ph, pw=pw, c=channels)
