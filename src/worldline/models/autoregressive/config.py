"""Config of the autoregressive token world model (Cosmos-Autoregressive, IRIS, MineWorld lineage)."""

from __future__ import annotations

import dataclasses

from worldline.models.latent import LatentWorldModelConfig


@dataclasses.dataclass
class AutoregressiveConfig(LatentWorldModelConfig):
    context_frames: int = 4  # frames a token attends to before its own (the sliding window); also the longest context init_state takes
    train_frames: int = 6  # frames per training window; more than context_frames + 1 so the sliding (banded) attention is trained as decoding uses it
    dim: int = 192  # model width; with 64 tokens per frame a CPU decodes a few hundred tokens/s at this size
    depth: int = 4  # transformer blocks
    heads: int = 6  # attention heads; head_dim = dim / heads must be even and >= 6 for 3D RoPE
    mlp_ratio: float = 8 / 3  # SwiGLU hidden = mlp_ratio * dim (Llama's 2/3 of 4x keeps the parameter count of a GELU MLP)
    rope_theta: float = 100.0  # positions span a few frames and an 8x8 grid; a small base gives those short ranges distinct angles
    action_map: bool = True  # also add a per-position map of the action (nn.embeddings.ActionMap) at the slot predicting each token: where an action acts is local, not one attention hop away
    medusa_heads: int = 3  # extra heads drafting tokens +2..+K+1 for the fast path (0 disables it)
    drafter: str = "previous"  # fast path's drafts: "previous" copies the last frame's tokens (most repeat), "medusa" asks the draft heads
    draft_len: int = 16  # tokens the "previous" drafter proposes per pass: longer runs of static tokens per pass, more compute per pass
    medusa_weight: float = 1.0  # weight of the draft heads' loss; they read detached hidden states, so it cannot change the base model
    z_loss: float = 1e-4  # weight of logsumexp(logits)^2 (PaLM): keeps the softmax normaliser near 0 for stable low-precision training
    action_dropout: float = 0.1  # chance an action slot is trained as "unknown", so context frames without recorded actions stay in distribution
    text: bool = False  # cross-attention to the shared frozen text encoder's tokens (Cosmos Video2World); needs batches with "text"
    correction_gate: float = 0.1  # keep the last real frame's detail where the decoded prediction moved less than ~this ([-1, 1] units); 0 disables

    def __post_init__(self):
        super().__post_init__()
        if self.context_frames < 1:
            raise ValueError(f"context_frames must be >= 1, got {self.context_frames=}")
        if self.train_frames < 2:
            raise ValueError(f"train_frames must be >= 2 (a context frame and a target), got {self.train_frames=}")
        if self.dim % self.heads or (self.dim // self.heads) % 2 or self.dim // self.heads < 6:
            raise ValueError(f"dim / heads must be an even head size >= 6, got {self.dim=} {self.heads=}")
        if self.depth < 1 or self.mlp_ratio <= 0:
            raise ValueError(f"depth must be >= 1 and mlp_ratio > 0, got {self.depth=} {self.mlp_ratio=}")
        if self.medusa_heads < 0 or self.medusa_weight < 0 or self.z_loss < 0:
            raise ValueError(f"medusa_heads, medusa_weight and z_loss must be >= 0, got {self.medusa_heads=} {self.medusa_weight=} {self.z_loss=}")
        if self.drafter not in ("previous", "medusa") or self.draft_len < 1:
            raise ValueError(f"drafter must be 'previous' or 'medusa' and draft_len >= 1, got {self.drafter=} {self.draft_len=}")
        if not 0 <= self.action_dropout < 1:
            raise ValueError(f"action_dropout must be in [0, 1), got {self.action_dropout=}")
        if self.correction_gate < 0:
            raise ValueError(f"correction_gate must be >= 0, got {self.correction_gate=}")
