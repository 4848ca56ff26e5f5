"""The V-JEPA 2-AC predictor: a block-causal transformer over per-frame embeddings and actions.

Each model step contributes one action token followed by its frame's N embedding tokens. Attention
is block-causal: every token sees its own step and all earlier ones, so the outputs at step t are a
prediction of step t + 1 from steps <= t and the action taken at t; one pass over a window gives all
teacher-forced predictions at once. Tokens carry 3D RoPE positions (step, row, column); action
tokens sit at (step, -1, -1), outside the patch grid.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from worldline.models.jepa.encoder import Block, init_weights
from worldline.nn.attention import block_causal_mask
from worldline.nn.rope import RoPE3D, grid_positions


class ACPredictor(nn.Module):
    """``z`` (B, T, N, D) embeddings + ``a`` (B, T, dim) action embeddings -> (B, T, N, D) next-step embeddings."""

    def __init__(self, embed_dim: int, dim: int, depth: int, heads: int, mlp_ratio: float, grid: int):
        super().__init__()
        self.grid = grid
        self.inp = nn.Linear(embed_dim, dim)
        self.action_type = nn.Parameter(torch.zeros(dim))  # tells action tokens from patch tokens beyond their position
        self.rope = RoPE3D(dim // heads)
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, embed_dim)
        init_weights(self)
        nn.init.zeros_(self.out.weight)  # predicts a zero change at init: the untrained model copies the last embedding
        nn.init.zeros_(self.out.bias)

    def positions(self, steps: int, device) -> Tensor:
        """(steps * (1 + N), 3): per step the action token at (t, -1, -1), then the patch grid."""
        patches = grid_positions(steps, self.grid, self.grid, device=device).view(steps, -1, 3)  # (T, N, 3)
        action = torch.stack([torch.arange(steps, device=device), *(torch.full((steps,), -1, device=device),) * 2], -1)  # (T, 3)
        return torch.cat([action[:, None], patches], dim=1).reshape(-1, 3)  # (T*(1+N), 3)

    def forward(self, z: Tensor, a: Tensor, with_actions: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Next-step embeddings; ``with_actions`` also returns the action tokens' outputs (B, T, dim),
        from which a head can read the next proprioceptive state."""
        B, T, N, _ = z.shape
        x = torch.cat([(a + self.action_type)[:, :, None], self.inp(z)], dim=2)  # (B, T, 1 + N, dim)
        x = rearrange(x, "b t n d -> b (t n) d")  # (B, T*(1+N), dim)
        rope = self.rope(self.positions(T, z.device))
        mask = block_causal_mask(T, N + 1, device=z.device)
        for block in self.blocks:
            x = block(x, rope, mask)
        x = rearrange(self.norm(x), "b (t n) d -> b t n d", t=T)
        nxt = z + self.out(x[:, :, 1:])  # residual on the patch tokens: the network learns the change of each
        return (nxt, x[:, :, 0]) if with_actions else nxt
