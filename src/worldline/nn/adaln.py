"""Adaptive layer-norm modulation (adaLN-Zero of DiT, adaLN-LoRA of Cosmos).

A DiT block normalises its tokens without learned affine parameters and takes the shift, scale and
gate of each sub-layer from a conditioning vector (noise level, action, pooled text). The projection
that makes them is zero-initialised, so every block starts as the identity (DiT's adaLN-Zero: the
best of the conditioning schemes Peebles & Xie compared).

adaLN-LoRA (Cosmos): the full projection costs ``cond_dim x chunks*dim`` weights per block, the bulk
of a small DiT. With a rank r > 0 the conditioning is first projected once to r channels by one
:class:`AdaLNShared` for the whole network, and each block keeps only an ``r x chunks*dim`` up-projection.

Conditioning may be per sample ``(B, D)`` or per frame ``(B, T, D)`` (a video DiT whose frames carry
different noise levels or actions); :func:`modulate_frames` broadcasts it over each frame's tokens.
"""

from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


class AdaLNShared(nn.Module):
    """The one low-rank projection of adaLN-LoRA: ``cond (..., D) -> (..., rank)``, computed once per forward."""

    def __init__(self, cond_dim: int, rank: int):
        super().__init__()
        self.down = nn.Linear(cond_dim, rank, bias=False)

    def forward(self, cond: Tensor) -> Tensor:
        return self.down(F.silu(cond))


class AdaLNModulation(nn.Module):
    """``cond -> chunks`` tensors of ``dim`` channels (shift, scale, gate, ...).

    ``lora_rank == 0``: ``Linear(cond_dim, chunks*dim)`` on ``silu(cond)``, the DiT layout.
    ``lora_rank > 0``: the input is the shared low-rank code of :class:`AdaLNShared` instead.
    """

    def __init__(self, cond_dim: int, dim: int, chunks: int, lora_rank: int = 0):
        super().__init__()
        self.chunks, self.lora = chunks, lora_rank > 0
        self.proj = nn.Linear(lora_rank if self.lora else cond_dim, chunks * dim)
        nn.init.zeros_(self.proj.weight)  # adaLN-Zero: gates start at 0, so the block starts as the identity
        nn.init.zeros_(self.proj.bias)

    def forward(self, cond: Tensor) -> tuple[Tensor, ...]:
        h = cond if self.lora else F.silu(cond)
        return self.proj(h).chunk(self.chunks, dim=-1)


def modulate_frames(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """``x * (1 + scale) + shift`` for tokens ``x`` (B, T*N, C) and per-frame ``scale``/``shift`` (B, T, C)."""
    T = scale.shape[1]
    x = rearrange(x, "b (t n) c -> b t n c", t=T)  # (B, T, N, C)
    x = x * (1 + scale[:, :, None]) + shift[:, :, None]
    return rearrange(x, "b t n c -> b (t n) c")  # (B, T*N, C)


def gate_frames(x: Tensor, gate: Tensor) -> Tensor:
    """``x * gate`` for tokens ``x`` (B, T*N, C) and a per-frame ``gate`` (B, T, C)."""
    T = gate.shape[1]
    return rearrange(rearrange(x, "b (t n) c -> b t n c", t=T) * gate[:, :, None], "b t n c -> b (t n) c")
