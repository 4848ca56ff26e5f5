"""The V-JEPA encoder: a ViT over space-time patches with 3D RoPE and no learned position table.

Positions are explicit (frame, row, column) coordinates, so the context encoder can run on the
visible subset of a masked clip, and the same weights encode clips or single frames of any size
divisible by the patch.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from worldline.nn.attention import Attention, Mlp
from worldline.nn.patch import PatchEmbed3D
from worldline.nn.rope import RoPE3D, grid_positions


class Block(nn.Module):
    """Pre-norm transformer block (ViT): attention with RoPE, then a GELU MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor], mask: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.norm1(x), rope=rope, mask=mask)
        return x + self.mlp(self.norm2(x))


def init_weights(module: nn.Module) -> None:
    """ViT init: truncated normal 0.02 for linear maps, zero biases, unit LayerNorms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def gather_tokens(x: Tensor, index: Tensor) -> Tensor:
    """``x`` (B, L, C) at ``index`` (B, L') -> (B, L', C)."""
    return torch.gather(x, 1, index[..., None].expand(-1, -1, x.shape[-1]))


class VisionEncoder(nn.Module):
    """(B, T, 3, H, W) in [-1, 1] -> tokens (B, L, dim), optionally only the tokens at ``keep``."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float, patch: int, tubelet: int):
        super().__init__()
        self.dim = dim
        self.patch_embed = PatchEmbed3D(3, dim, (tubelet, patch, patch))
        self.rope = RoPE3D(dim // heads)
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        init_weights(self)

    def grid(self, frames: Tensor) -> tuple[int, int, int]:
        T, _, H, W = frames.shape[1:]
        return self.patch_embed.grid(T, H, W)

    def positions(self, frames: Tensor) -> Tensor:
        """(L, 3) coordinates of every token of ``frames``, raster order, time outermost."""
        return grid_positions(*self.grid(frames), device=frames.device)

    def forward(self, frames: Tensor, keep: Tensor | None = None) -> Tensor:
        x = self.patch_embed(frames)  # (B, L, dim)
        pos = self.positions(frames).expand(x.shape[0], -1, -1)  # (B, L, 3)
        if keep is not None:
            x, pos = gather_tokens(x, keep), gather_tokens(pos, keep)  # (B, Lk, dim), (B, Lk, 3)
        rope = self.rope(pos)
        for block in self.blocks:
            x = block(x, rope)
        return self.norm(x)

    def encode_frames(self, frames: Tensor, tubelet: int, grid: int) -> Tensor:
        """Per-frame embeddings (B, T, dim, grid, grid): each frame encoded alone (repeated over the
        tubelet), its patch grid average-pooled to ``grid`` x ``grid``."""
        B, T = frames.shape[:2]
        x = rearrange(frames, "b t c h w -> (b t) 1 c h w").expand(-1, tubelet, -1, -1, -1)  # (B*T, tubelet, 3, H, W)
        _, h, w = self.grid(x)
        tokens = self(x)  # (B*T, h*w, dim)
        fmap = rearrange(tokens, "n (h w) d -> n d h w", h=h, w=w)  # (B*T, dim, h, w)
        if (h, w) != (grid, grid):
            fmap = nn.functional.adaptive_avg_pool2d(fmap, grid)  # (B*T, dim, grid, grid)
        return rearrange(fmap, "(b t) d h w -> b t d h w", b=B)  # (B, T, dim, grid, grid)

    def encode_keypoints(self, frames: Tensor, tubelet: int, tau: float) -> Tensor:
        """Per-frame keypoints (B, T, 2 * dim, 1, 1): for each channel, the softmax(tokens / ``tau``)
        weighted mean of the patch centres' (x, y) in [-1, 1], all x first, then all y."""
        B, T = frames.shape[:2]
        x = rearrange(frames, "b t c h w -> (b t) 1 c h w").expand(-1, tubelet, -1, -1, -1)  # (B*T, tubelet, 3, H, W)
        _, h, w = self.grid(x)
        p = torch.softmax(self(x)[:, : h * w] / tau, dim=1)  # (B*T, h*w, dim): first tubelet slice's tokens
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, device=x.device), torch.linspace(-1, 1, w, device=x.device), indexing="ij")
        kx = torch.einsum("nld,l->nd", p, xs.flatten())  # (B*T, dim)
        ky = torch.einsum("nld,l->nd", p, ys.flatten())  # (B*T, dim)
        return rearrange(torch.cat([kx, ky], dim=1), "(b t) c -> b t c 1 1", b=B)  # (B, T, 2*dim, 1, 1)
