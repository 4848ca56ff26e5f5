"""The autoregressive world model's network: a Llama-style decoder-only transformer over frame tokens.

Sequence layout: every frame is ``1 + N`` slots, an action slot then its ``N = h * w`` token ids in
raster order. Slot 0 of frame t holds the action that led to frame t (a learned "unknown action"
vector where there is none); the output at slot s < N predicts token s of the same frame, so the
first token of a frame is predicted from its action slot and the last slot predicts nothing.

Attention is block-causal with a sliding window: a token sees the earlier tokens of its own frame and
every token of the ``context_frames`` frames before it (Mistral-style banded attention at frame
granularity). Trained this way on windows longer than the band, a KV cache that simply drops frames
older than the band decodes exactly what a full forward pass over the whole rollout computes.

Positions: factorised 3D RoPE on (frame, row, column) in every attention layer (the action slot sits
at row = column = -1, before the frame's first row) plus a learned absolute embedding of the slot
inside the frame. There is no absolute time embedding: time is only relative, so a rollout can run
past the training window.

Blocks: pre-RMSNorm, self-attention with QK-norm, optional cross-attention to text tokens, SwiGLU,
no biases. Medusa heads (Cai et al. 2024) draft tokens +2..+K+1 from the last hidden state for the
fast decoding path; they share the output projection (read, never trained, by them).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from worldline.core.contracts import ActionSpec
from worldline.nn.attention import Attention, KVCache, SwiGLU
from worldline.nn.embeddings import ActionEmbedding, ActionMap
from worldline.nn.rope import RoPE3D
from worldline.models.autoregressive.config import AutoregressiveConfig


# ----------------------------------------------------------------------------------------------
# cache and mask
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ARCache:
    """Per-layer keys/values of the slots fed so far, with each slot's (frame, slot) coordinates."""

    layers: list[KVCache]
    frames: Tensor  # (L,) long frame index of every cached slot
    slots: Tensor  # (L,) long slot inside its frame: 0 = action, 1 + i = token i

    @classmethod
    def empty(cls, depth: int, device: torch.device) -> "ARCache":
        none = torch.zeros(0, dtype=torch.long, device=device)
        return cls([KVCache() for _ in range(depth)], none, none.clone())

    def __len__(self) -> int:
        return self.frames.numel()

    def crop(self, n: int) -> None:
        """Keep the first ``n`` slots (rewind after a rejected draft)."""
        for layer in self.layers:
            layer.crop(n)
        self.frames, self.slots = self.frames[:n], self.slots[:n]

    def drop_before(self, frame: int) -> None:
        """Forget slots of frames older than ``frame`` (the sliding window moves on)."""
        n = int((self.frames < frame).sum())
        if n == 0:
            return
        for layer in self.layers:
            if layer.k is not None:
                layer.k, layer.v = layer.k[:, :, n:], layer.v[:, :, n:]
        self.frames, self.slots = self.frames[n:], self.slots[n:]

    def clone(self) -> "ARCache":
        return ARCache([layer.clone() for layer in self.layers], self.frames, self.slots)


def attend_mask(q_frames: Tensor, q_slots: Tensor, k_frames: Tensor, k_slots: Tensor, context: int) -> Tensor:
    """(Lq, Lk) bool, True = may attend: earlier slots of the same frame, all slots of the ``context`` frames before."""
    df = q_frames[:, None] - k_frames[None, :]  # (Lq, Lk)
    same_frame_causal = (df == 0) & (k_slots[None, :] <= q_slots[:, None])
    return same_frame_causal | ((df > 0) & (df <= context))


# ----------------------------------------------------------------------------------------------
# blocks
# ----------------------------------------------------------------------------------------------


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, text_dim: int | None):
        super().__init__()
        self.attn_norm = nn.RMSNorm(dim)
        self.attn = Attention(dim, heads, qk_norm=True, bias=False)
        self.cross_norm = nn.RMSNorm(dim) if text_dim else None
        self.cross = Attention(dim, heads, context_dim=text_dim, qk_norm=True, bias=False) if text_dim else None
        self.mlp_norm = nn.RMSNorm(dim)
        self.mlp = SwiGLU(dim, hidden)

    def forward(self, x: Tensor, rope, mask: Tensor, cache: KVCache | None, text: tuple[Tensor, Tensor] | None) -> Tensor:
        x = x + self.attn(self.attn_norm(x), rope=rope, mask=mask, cache=cache)
        if self.cross is not None and text is not None:
            emb, keep = text  # (B, Lt, text_dim), (B, Lt) bool
            x = x + self.cross(self.cross_norm(x), emb, mask=keep[:, None, :])  # (B, 1, Lt) -> every query
        return x + self.mlp(self.mlp_norm(x))


class DraftHead(nn.Module):
    """Medusa head: a residual SiLU layer on the hidden state; zero-initialised so every head starts
    by drafting what the base head predicts, a sensible guess on mostly static video."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, dim, bias=False)
        nn.init.zeros_(self.proj.weight)

    def forward(self, h: Tensor) -> Tensor:
        return h + F.silu(self.proj(h))


# ----------------------------------------------------------------------------------------------
# the transformer
# ----------------------------------------------------------------------------------------------


class ARTransformer(nn.Module):
    """Slot embeddings (B, L, dim) at (frame, slot) coordinates -> final hidden states (B, L, dim)."""

    def __init__(self, config: AutoregressiveConfig, vocab_size: int, grid: tuple[int, int], action_spec: ActionSpec,
                 text_dim: int | None = None):
        super().__init__()
        h, w = grid
        dim = config.dim
        self.vocab_size, self.grid, self.tokens_per_frame = vocab_size, (h, w), h * w
        self.context_frames = config.context_frames
        self.tok_embed = nn.Embedding(vocab_size, dim)
        self.slot_embed = nn.Parameter(torch.zeros(1 + h * w, dim))  # learned absolute position inside the frame
        self.action_embed = ActionEmbedding(action_spec, dim)
        self.no_action = nn.Parameter(torch.zeros(dim))  # the action slot of a frame whose action is unknown
        self.action_map = ActionMap(action_spec, h * w, dim) if config.action_map else None
        self.rope = RoPE3D(dim // config.heads, theta=config.rope_theta)
        hidden = int(round(config.mlp_ratio * dim / 8)) * 8
        self.blocks = nn.ModuleList([Block(dim, config.heads, hidden, text_dim) for _ in range(config.depth)])
        self.norm = nn.RMSNorm(dim)
        self.lm_head = nn.Linear(dim, vocab_size, bias=False)
        self.draft_heads = nn.ModuleList([DraftHead(dim) for _ in range(config.medusa_heads)])

        idx = torch.arange(1 + h * w) - 1  # slot -> token index (-1 for the action slot)
        self.register_buffer("slot_row", torch.where(idx < 0, -1, idx.div(w, rounding_mode="floor")), persistent=False)
        self.register_buffer("slot_col", torch.where(idx < 0, -1, idx % w), persistent=False)
        self._init_weights(config.depth)

    def _init_weights(self, depth: int) -> None:
        """GPT-2 init: N(0, 0.02) everywhere, residual output projections scaled by 1/sqrt(2 * depth)
        so the residual stream's variance does not grow with depth."""
        for name, p in self.named_parameters():
            if name.startswith("draft_heads") or p.dim() < 2 or "norm" in name:
                continue
            std = 0.02 / math.sqrt(2 * depth) if name.endswith(("attn.proj.weight", "cross.proj.weight", "mlp.w2.weight")) else 0.02
            nn.init.normal_(p, std=std)
        nn.init.normal_(self.slot_embed, std=0.02)
        nn.init.normal_(self.no_action, std=0.02)

    # ------------------------------------------------------------------------------------------
    # inputs
    # ------------------------------------------------------------------------------------------

    def action_inputs(self, actions: Tensor, known: Tensor | None = None) -> Tensor:
        """Per-slot action inputs (B, F, 1 + N, dim) of frames from the actions that led to them (B, F, A):
        the action vector at the action slot, and with ``action_map`` the map's vector for token s at
        the slot that predicts it (slot s; the last slot predicts nothing and gets none). Frames with
        ``known`` False get the "unknown action" vector and no map."""
        vec = self.action_embed(actions.to(self.no_action.dtype))  # (B, F, dim)
        if known is not None:
            vec = torch.where(known[..., None], vec, self.no_action.to(vec.dtype))
        B, F_ = vec.shape[:2]
        out = vec.new_zeros(B, F_, 1 + self.tokens_per_frame, vec.shape[-1])
        out[:, :, 0] = vec
        if self.action_map is not None:
            amap = self.action_map(actions.to(self.no_action.dtype))  # (B, F, N, dim)
            if known is not None:
                amap = amap * known[..., None, None]
            out[:, :, : self.tokens_per_frame] += amap
        return out

    def embed_frames(self, ids: Tensor, inputs: Tensor) -> Tensor:
        """Whole frames: ids (B, F, N) and their action inputs (B, F, 1 + N, dim) -> (B, F * (1 + N), dim)."""
        tokens = torch.cat([inputs.new_zeros(*ids.shape[:2], 1, inputs.shape[-1]), self.tok_embed(ids)], dim=2)
        x = tokens + inputs + self.slot_embed  # (B, F, 1 + N, dim)
        return rearrange(x, "b f s d -> b (f s) d")  # (B, F * (1 + N), dim)

    def embed_tokens(self, ids: Tensor, slots: Tensor, inputs: Tensor | None = None) -> Tensor:
        """Tokens ids (B, L) at ``slots`` (L,) (1 + token index) of a frame with action inputs
        ``inputs`` (B, 1 + N, dim) -> (B, L, dim)."""
        x = self.tok_embed(ids) + self.slot_embed[slots]
        return x if inputs is None else x + inputs[:, slots]

    def embed_action(self, inputs: Tensor) -> Tensor:
        """The action slot of a frame with action inputs (B, 1 + N, dim) -> (B, 1, dim)."""
        return (inputs[:, 0] + self.slot_embed[0])[:, None]

    def layout(self, first_frame: int, frames: int, device=None) -> tuple[Tensor, Tensor]:
        """(frame, slot) coordinates (L,), (L,) of ``frames`` whole frames starting at ``first_frame``."""
        S = 1 + self.tokens_per_frame
        i = torch.arange(frames * S, device=device)
        return first_frame + i.div(S, rounding_mode="floor"), i % S

    # ------------------------------------------------------------------------------------------
    # forward
    # ------------------------------------------------------------------------------------------

    def forward(self, x: Tensor, frames: Tensor, slots: Tensor, *, cache: ARCache | None = None,
                text: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """``x`` (B, L, dim) slot embeddings at ``frames``/``slots`` (L,) -> final hidden (B, L, dim).

        With ``cache``, the slots attend to everything cached as well, and are appended to it."""
        positions = torch.stack([frames, self.slot_row[slots], self.slot_col[slots]], dim=-1)  # (L, 3)
        rope = self.rope(positions)
        k_frames, k_slots = frames, slots
        if cache is not None:
            k_frames, k_slots = torch.cat([cache.frames, frames]), torch.cat([cache.slots, slots])
            cache.frames, cache.slots = k_frames, k_slots
        mask = attend_mask(frames, slots, k_frames, k_slots, self.context_frames)  # (L, Lk)
        if x.shape[1] == 1 and cache is not None and bool(mask.all()):
            mask = None  # one query that sees the whole cache (plain decoding): SDPA's fastest path
        for i, block in enumerate(self.blocks):
            x = block(x, rope, mask, cache.layers[i] if cache is not None else None, text)
        return self.norm(x)

    def logits(self, h: Tensor) -> Tensor:
        """Hidden (..., dim) -> next-token logits (..., V)."""
        return self.lm_head(h)

    def draft_logits(self, h: Tensor) -> Tensor:
        """Hidden (..., dim) -> draft logits (..., K, V): head k guesses the token k + 1 slots after the
        base head's."""
        return torch.stack([self.lm_head(head(h)) for head in self.draft_heads], dim=-2)

    def draft_head_logits(self, k: int, h: Tensor) -> Tensor:
        """Training: logits (..., V) of head ``k`` on detached hidden states with the output projection
        detached too, so the drafts learn without changing the base model."""
        return F.linear(self.draft_heads[k](h.detach()), self.lm_head.weight.detach())
