"""Space-time transformer block (Genie, Bruce et al. 2024; the ST-ViViT factorisation).

Tokens of a video are laid out ``(B, T, S, D)``: T frames of S spatial tokens. One block is spatial
self-attention within each frame, then causal temporal self-attention across frames at the same
spatial position, then an MLP. Cost grows linearly with T (attention is over S or over T, never over
T*S), and a frame's tokens never see a later frame, so the same block serves training on whole clips
and generation frame by frame.

Positions: one :class:`~worldline.nn.rope.RoPE3D` serves both attentions. Spatial attention rotates
by (0, row, col), so its time channels stay unrotated; temporal attention rotates by (t, 0, 0).
"""

from __future__ import annotations

from einops import rearrange
from torch import Tensor, nn

from worldline.nn.attention import Attention, Mlp
from worldline.nn.rope import RoPE3D, grid_positions


class STBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, qk_norm: bool = True, causal: bool = True):
        super().__init__()
        self.causal = causal  # False for an encoder that may look at the whole clip (e.g. a latent action encoder)
        self.norm_s, self.norm_t, self.norm_m = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.spatial = Attention(dim, heads, qk_norm=qk_norm)
        self.temporal = Attention(dim, heads, qk_norm=qk_norm)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, rope_s: tuple[Tensor, Tensor] | None = None, rope_t: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """``x`` (B, T, S, D) -> (B, T, S, D); ``rope_s`` for the S positions, ``rope_t`` for the T frames."""
        x = x + self.spatial_mix(x, rope_s)
        x = x + self.temporal_mix(x, rope_t)
        return x + self.mlp(self.norm_m(x))

    def spatial_mix(self, x: Tensor, rope: tuple[Tensor, Tensor] | None = None) -> Tensor:
        B = x.shape[0]
        h = rearrange(self.norm_s(x), "b t s d -> (b t) s d")  # (B*T, S, D): each frame on its own
        return rearrange(self.spatial(h, rope=rope), "(b t) s d -> b t s d", b=B)

    def temporal_mix(self, x: Tensor, rope: tuple[Tensor, Tensor] | None = None) -> Tensor:
        B = x.shape[0]
        h = rearrange(self.norm_t(x), "b t s d -> (b s) t d")  # (B*S, T, D): each position through time
        return rearrange(self.temporal(h, rope=rope, is_causal=self.causal), "(b s) t d -> b t s d", b=B)


class STTransformer(nn.Module):
    """A stack of :class:`STBlock` with 3D RoPE over a (h, w) grid of spatial tokens, and a final norm."""

    def __init__(self, dim: int, depth: int, heads: int, grid: tuple[int, int], mlp_ratio: float = 4.0,
                 qk_norm: bool = True, causal: bool = True):
        super().__init__()
        self.grid = tuple(grid)
        self.rope = RoPE3D(dim // heads)
        self.blocks = nn.ModuleList(STBlock(dim, heads, mlp_ratio, qk_norm, causal) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, t_start: int = 0) -> Tensor:
        """``x`` (B, T, S, D) with S = h * w -> (B, T, S, D); ``t_start`` offsets frame positions."""
        B, T, S, _ = x.shape
        h, w = self.grid
        if S != h * w:
            raise ValueError(f"expected {h}x{w}={h * w} spatial tokens per frame, got {S}")
        rope_s = self.rope(grid_positions(1, h, w, device=x.device))  # (S, hd/2) each
        rope_t = self.rope(grid_positions(T, 1, 1, t_start=t_start, device=x.device))  # (T, hd/2) each
        for block in self.blocks:
            x = block(x, rope_s, rope_t)
        return self.norm(x)
