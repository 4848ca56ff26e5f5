"""Genie's dynamics model: a causal space-time transformer over video token ids, MaskGIT-style.

Input: token ids (B, T, S) of T frames, with ``mask_id`` where a token is hidden, and one
conditioning vector per frame: the embedding of the latent action that led into it (frame 1 gets
a "none" entry), plus, with real actions, the embedding of the real action (or a learned "unknown").
Following Genie, the conditioning is added to every token of its frame. Output: logits over the
vocabulary for every token. A frame sees itself and earlier frames only (causal temporal attention),
so one pass trains every frame of a clip, and generation can cache the past.

Cached generation (``frame_logits`` / ``commit``): the keys and values of temporal attention for past
frames do not depend on later frames, so they are kept per layer; a frame being decoded runs alone
through every block (spatial attention over its own tokens, temporal attention over the cache plus
itself). The cache keeps at most ``max_frames - 1`` past frames (the longest history seen in training).
Within the first ``max_frames`` frames this equals the full forward exactly. Past them it streams: the
oldest kept frame's deeper-layer keys/values were computed when it still saw frames now dropped, where
a fresh pass over the window would not have; the price of one frame of compute per committed frame
instead of a window's.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from worldline.core.contracts import ActionSpec
from worldline.nn.attention import KVCache
from worldline.nn.embeddings import ActionEmbedding
from worldline.nn.rope import grid_positions
from worldline.nn.st_block import STTransformer


class DynamicsTransformer(nn.Module):
    def __init__(self, vocab: int, grid: tuple[int, int], dim: int, depth: int, heads: int, mlp_ratio: float,
                 num_latent_actions: int, real_actions: ActionSpec | None):
        super().__init__()
        self.vocab = vocab
        self.mask_id = vocab  # one extra embedding row for "hidden"
        self.none_id = num_latent_actions  # latent action of frame 1, or one hidden on purpose
        self.tokens = nn.Embedding(vocab + 1, dim)
        self.latent_actions = nn.Embedding(num_latent_actions + 1, dim)
        nn.init.normal_(self.tokens.weight, std=0.02)  # GPT-2's embedding scale
        nn.init.normal_(self.latent_actions.weight, std=0.02)
        self.real_actions = ActionEmbedding(real_actions, dim) if real_actions is not None else None
        self.real_unknown = nn.Parameter(torch.zeros(dim)) if real_actions is not None else None
        self.st = STTransformer(dim, depth, heads, grid, mlp_ratio=mlp_ratio, causal=True)
        self.head = nn.Linear(dim, vocab)

    def condition(self, latent: Tensor, real: Tensor | None = None, real_known: Tensor | None = None) -> Tensor:
        """Per-frame conditioning (..., D) from latent action ids (...) (``none_id`` allowed) and, for a
        model with real actions, actions (..., A) with ``real_known`` (...) bool (False = unknown)."""
        cond = self.latent_actions(latent)
        if self.real_actions is not None:
            if real is None:
                return cond + self.real_unknown
            emb = self.real_actions(real)
            if real_known is not None:
                emb = torch.where(real_known[..., None], emb, self.real_unknown)
            cond = cond + emb
        return cond

    def forward(self, ids: Tensor, cond: Tensor) -> Tensor:
        """ids (B, T, S) with ``mask_id`` where hidden, cond (B, T, D) -> logits (B, T, S, vocab)."""
        return self.head(self.hidden(ids, cond))

    def hidden(self, ids: Tensor, cond: Tensor) -> Tensor:
        """The final hidden states (B, T, S, D), for a loss that needs the head at masked tokens only."""
        return self.st(self.tokens(ids) + cond[:, :, None])  # (B, T, S, D)

    # ------------------------------------------------------------------------------------------
    # cached generation, one frame at a time
    # ------------------------------------------------------------------------------------------

    def new_cache(self) -> list[KVCache]:
        return [KVCache() for _ in self.st.blocks]

    def _frame(self, ids: Tensor, cond: Tensor, cache: list[KVCache], t: int) -> Tensor:
        """One frame ``ids`` (B, S) at time position ``t`` through every block; each ``cache`` entry
        gets this frame's temporal keys/values appended. Returns the final hidden states (B, 1, S, D)."""
        h, w = self.st.grid
        x = (self.tokens(ids) + cond[:, None])[:, None]  # (B, 1, S, D)
        B = x.shape[0]
        rope_s = self.st.rope(grid_positions(1, h, w, device=x.device))
        rope_t = self.st.rope(grid_positions(1, 1, 1, t_start=t, device=x.device))
        for block, kv in zip(self.st.blocks, cache):
            x = x + block.spatial_mix(x, rope_s)
            q = rearrange(block.norm_t(x), "b 1 s d -> (b s) 1 d")  # (B*S, 1, D): each position through time
            y = block.temporal(q, rope=rope_t, cache=kv)  # attends over the cached past and itself
            x = x + rearrange(y, "(b s) 1 d -> b 1 s d", b=B)
            x = x + block.mlp(block.norm_m(x))
        return self.st.norm(x)

    def frame_logits(self, ids: Tensor, cond: Tensor, cache: list[KVCache], t: int) -> Tensor:
        """Logits (B, S, vocab) of frame ``t`` given ids (B, S) and cond (B, D); ``cache`` is unchanged."""
        return self.head(self._frame(ids, cond, [kv.clone() for kv in cache], t))[:, 0]

    def commit(self, ids: Tensor, cond: Tensor, cache: list[KVCache], t: int, max_frames: int) -> list[KVCache]:
        """A new cache with the finished frame ``t`` appended, keeping the last ``max_frames - 1`` frames."""
        cache = [kv.clone() for kv in cache]
        self._frame(ids, cond, cache, t)
        keep = max_frames - 1
        for kv in cache:
            if kv.k is not None and kv.k.shape[2] > keep:
                kv.k, kv.v = kv.k[:, :, -keep:], kv.v[:, :, -keep:]
        return cache
