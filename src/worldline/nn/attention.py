"""Attention and MLP blocks shared by every transformer family (DiT, Llama-style AR, ViT, ST blocks).

All attention goes through ``F.scaled_dot_product_attention`` so CPU, CUDA flash and memory-efficient
kernels are picked by PyTorch. Masks are boolean with True meaning "may attend".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from worldline.nn.rope import apply_rope


class KVCache:
    """Keys and values of the tokens seen so far, for one attention layer (autoregressive decoding).

    Keys are stored after RoPE, so cached tokens never need their positions again. ``crop(n)`` keeps
    the first n tokens (rewind after speculative or parallel decoding).
    """

    def __init__(self):
        self.k: Tensor | None = None  # (B, nh, L, hs)
        self.v: Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.k is None else self.k.shape[2]

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if self.k is None:
            self.k, self.v = k, v
        else:
            self.k, self.v = torch.cat([self.k, k], dim=2), torch.cat([self.v, v], dim=2)
        return self.k, self.v

    def crop(self, n: int) -> None:
        if self.k is not None:
            self.k, self.v = self.k[:, :, :n], self.v[:, :, :n]

    def clone(self) -> "KVCache":
        out = KVCache()
        out.k, out.v = self.k, self.v  # tensors are never written in place, so sharing is safe
        return out


class Attention(nn.Module):
    """Multi-head self- or cross-attention with optional QK-normalisation and RoPE.

    QK-norm (RMSNorm on queries and keys per head, Dehghani et al. 2023) keeps attention logits
    bounded, which is what lets larger video transformers train in bf16 without loss spikes.
    """

    def __init__(self, dim: int, heads: int, *, context_dim: int | None = None, qk_norm: bool = True, bias: bool = False):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention dim must be divisible by heads, got {dim=} {heads=}")
        self.heads, self.head_dim = heads, dim // heads
        self.cross = context_dim is not None
        if self.cross:
            self.q = nn.Linear(dim, dim, bias=bias)
            self.kv = nn.Linear(context_dim, 2 * dim, bias=bias)
        else:
            self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.q_norm = nn.RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=bias)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        rope: tuple[Tensor, Tensor] | None = None,
        mask: Tensor | None = None,
        is_causal: bool = False,
        cache: KVCache | None = None,
    ) -> Tensor:
        """``x`` (B, L, dim) -> (B, L, dim).

        rope: (cos, sin) for the L query tokens (self-attention only; keys share the positions).
        mask: bool, broadcastable to (B, nh, L, Lk); True = may attend.
        cache: append this call's keys/values and attend over everything cached (self-attention).
        """
        if self.cross:
            if context is None:
                raise ValueError("cross-attention needs a context")
            q = rearrange(self.q(x), "b l (nh hs) -> b nh l hs", nh=self.heads)
            k, v = rearrange(self.kv(context), "b l (two nh hs) -> two b nh l hs", two=2, nh=self.heads)
        else:
            q, k, v = rearrange(self.qkv(x), "b l (three nh hs) -> three b nh l hs", three=3, nh=self.heads)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if cache is not None:
            k, v = cache.append(k, v)
        if mask is not None and mask.dim() == 3:
            mask = mask[:, None]  # (B, 1, L, Lk): the same mask for every head
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal and mask is None)
        return self.proj(rearrange(y, "b nh l hs -> b l (nh hs)"))


class Mlp(nn.Module):
    """Two-layer GELU MLP (ViT / DiT)."""

    def __init__(self, dim: int, hidden: int, bias: bool = True):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden, bias=bias), nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class ConvMlp(Mlp):
    """GELU MLP whose hidden layer also mixes each token with its neighbours on the frame's grid: a
    depthwise k x k convolution added to the hidden features (PVTv2's ConvFFN). It gives the
    transformer the local bias of a conv net at a small cost. The convolution starts at zero, so the
    block starts as the plain MLP."""

    def __init__(self, dim: int, hidden: int, kernel: int = 3, bias: bool = True):
        super().__init__(dim, hidden, bias)
        self.dw = nn.Conv2d(hidden, hidden, kernel, padding=kernel // 2, groups=hidden)
        nn.init.zeros_(self.dw.weight)
        nn.init.zeros_(self.dw.bias)

    def forward(self, x: Tensor, grid: tuple[int, int, int]) -> Tensor:
        """x: (B, T*h*w, D) tokens in frame-major order, ``grid`` = (T, h, w)."""
        t, h, w = grid
        y = self.fc1(x)
        local = self.dw(rearrange(y, "b (t h w) c -> (b t) c h w", t=t, h=h, w=w))
        y = y + rearrange(local, "(b t) c h w -> b (t h w) c", t=t)
        return self.fc2(F.gelu(y, approximate="tanh"))


class SwiGLU(nn.Module):
    """Gated MLP of Llama (Shazeer 2020): ``w2(silu(w1 x) * w3 x)``, no biases."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def block_causal_mask(frames: int, tokens_per_frame: int, device: torch.device | str | None = None) -> Tensor:
    """(L, L) bool with L = frames * tokens_per_frame: a token sees every token of its own and earlier frames."""
    frame = torch.arange(frames * tokens_per_frame, device=device) // tokens_per_frame  # (L,)
    return frame[:, None] >= frame[None, :]
