"""Factorised 3D rotary position embedding over (time, height, width).

RoPE (Su et al. 2021) rotates pairs of query/key channels by an angle proportional to position, so
attention scores depend on relative offsets. For video the head channels are split in three parts,
one per axis (as in Cosmos and V-JEPA 2), and each part rotates with its own axis' coordinate.

Positions are explicit ``(L, 3)`` integer coordinates rather than a fixed grid, so masked subsets of
tokens (JEPA), cached decoding (autoregressive) and sliding windows all use the same code.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def grid_positions(t: int, h: int, w: int, t_start: int = 0, device: torch.device | str | None = None) -> Tensor:
    """(t*h*w, 3) long coordinates (frame, row, column) in raster order, time outermost."""
    tt, hh, ww = torch.meshgrid(
        torch.arange(t_start, t_start + t, device=device),
        torch.arange(h, device=device),
        torch.arange(w, device=device),
        indexing="ij",
    )
    return torch.stack([tt, hh, ww], dim=-1).reshape(t * h * w, 3)  # (L, 3)


class RoPE3D(nn.Module):
    """Angles for a head of ``head_dim`` channels; ``forward(positions)`` -> (cos, sin).

    The head is split into (time, height, width) parts of even size; time gets what is left after
    height and width take ``head_dim // 3`` rounded down to even each, so time keeps the finest
    frequencies when the split is uneven (rollouts extrapolate in time, not in space).
    """

    def __init__(self, head_dim: int, theta: float = 10000.0):
        super().__init__()
        if head_dim % 2 or head_dim < 6:
            raise ValueError(f"3D RoPE needs an even head_dim >= 6, got {head_dim=}")
        hw = (head_dim // 3) // 2 * 2
        self.axes_dim = (head_dim - 2 * hw, hw, hw)
        for name, d in zip(("t", "h", "w"), self.axes_dim):
            inv_freq = theta ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)  # (d/2,)
            self.register_buffer(f"inv_freq_{name}", inv_freq, persistent=False)

    def forward(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """``positions`` (..., L, 3) -> cos, sin of shape (..., L, head_dim // 2)."""
        pos = positions.float()
        angles = torch.cat(
            [
                pos[..., 0:1] * self.inv_freq_t,
                pos[..., 1:2] * self.inv_freq_h,
                pos[..., 2:3] * self.inv_freq_w,
            ],
            dim=-1,
        )  # (..., L, head_dim/2)
        return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate channel pairs (i, i + D/2) of ``x`` (B, nh, L, D) by the given angles.

    ``cos``/``sin`` are (L, D/2) or (B, L, D/2); they broadcast over heads.
    """
    if cos.dim() == 3:
        cos, sin = cos[:, None], sin[:, None]  # (B, 1, L, D/2)
    x1, x2 = x.float().chunk(2, dim=-1)  # (B, nh, L, D/2) each
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.type_as(x)
