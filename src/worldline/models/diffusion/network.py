"""The denoiser network: a DiT over tokenizer latents (Peebles & Xie 2023, with Cosmos' video choices).

Input: the frames of a clip (clean context latents followed by the noisy frames to denoise), each
with a binary mask channel (1 = context) as Cosmos' Video2World does, and, on the noisy frames only,
the last context latents stacked on channels (DIAMOND's frame stacking), cut into 1 x p x p tubes.
Positions: a learnable absolute embedding (per frame + per spatial cell) added to the tokens, and
factorised 3D RoPE (time, height, width) inside self-attention. Each block: adaLN-modulated
self-attention with QK-norm, cross-attention to text tokens when the model uses text, and a GELU MLP.
Conditioning is per frame (B, T, D): its noise level plus the action that led into it, so context
frames (lightly noised) and target frames (noised to sigma) are told apart.
Output: for the last ``n_out`` frames only, the EDM network output F (B, n_out, c, h, w).
"""

from __future__ import annotations

import torch
from einops import rearrange, repeat
from torch import Tensor, nn

from worldline.nn.adaln import AdaLNModulation, AdaLNShared, gate_frames, modulate_frames
from worldline.nn.attention import Attention, ConvMlp, Mlp
from worldline.nn.patch import PatchEmbed3D, unpatchify
from worldline.nn.rope import RoPE3D, grid_positions


class DiTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, lora_rank: int, text_dim: int | None,
                 local_mix: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)  # affine comes from adaLN
        self.attn = Attention(dim, heads, qk_norm=True)
        self.cross = None
        if text_dim is not None:
            self.norm_text = nn.LayerNorm(dim, eps=1e-6)
            self.cross = Attention(dim, heads, context_dim=text_dim, qk_norm=True)
            nn.init.zeros_(self.cross.proj.weight)  # text starts as a no-op and is learned in, like the adaLN gates
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio)) if local_mix else Mlp(dim, int(dim * mlp_ratio))
        self.ada = AdaLNModulation(dim, dim, 6, lora_rank)

    def forward(self, x: Tensor, cond: Tensor, rope: tuple[Tensor, Tensor], mask: Tensor | None,
                text: Tensor | None, text_mask: Tensor | None, grid: tuple[int, int, int]) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(cond)  # (B, T, D) each
        x = x + gate_frames(self.attn(modulate_frames(self.norm1(x), scale1, shift1), rope=rope, mask=mask), gate1)
        if self.cross is not None:
            x = x + self.cross(self.norm_text(x), text, mask=text_mask[:, None, :])  # (B, 1, Lt) for every query
        h = modulate_frames(self.norm2(x), scale2, shift2)
        return x + gate_frames(self.mlp(h, grid) if isinstance(self.mlp, ConvMlp) else self.mlp(h), gate2)


class DiT(nn.Module):
    """``forward(x (B, T, C + extra, h, w), cond (B, T, D), t_pos (T,), n_out) -> (B, n_out, C, h, w)``."""

    def __init__(self, channels: int, latent_hw: tuple[int, int], max_frames: int, patch: int, dim: int,
                 depth: int, heads: int, mlp_ratio: float, lora_rank: int = 0, text_dim: int | None = None,
                 extra_channels: int = 1, local_mix: bool = False):
        super().__init__()
        self.channels, self.patch = channels, (1, patch, patch)
        h, w = latent_hw
        if h % patch or w % patch:
            raise ValueError(f"latents of {h}x{w} do not split into {patch}x{patch} patches")
        self.grid_hw = (h // patch, w // patch)
        self.embed = PatchEmbed3D(channels + extra_channels, dim, self.patch)  # + mask channel and stacked context
        # Absolute positions next to RoPE (the DiT): small random init, as ViT/DiT learnable tables.
        self.pos_time = nn.Parameter(torch.randn(max_frames, dim) * 0.02)
        self.pos_space = nn.Parameter(torch.randn(self.grid_hw[0] * self.grid_hw[1], dim) * 0.02)
        self.rope = RoPE3D(dim // heads)
        self.shared = AdaLNShared(dim, lora_rank) if lora_rank > 0 else None
        self.blocks = nn.ModuleList([DiTBlock(dim, heads, mlp_ratio, lora_rank, text_dim, local_mix) for _ in range(depth)])
        self.norm_out = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ada_out = AdaLNModulation(dim, dim, 2, lora_rank)
        self.out = nn.Linear(dim, patch * patch * channels)
        nn.init.zeros_(self.out.weight)  # F = 0 at init: the denoiser starts as c_skip * x, the data mean at high sigma
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, cond: Tensor, t_pos: Tensor, n_out: int, key_mask: Tensor | None = None,
                text: Tensor | None = None, text_mask: Tensor | None = None, frame_tokens: Tensor | None = None,
                token_bias: Tensor | None = None) -> Tensor:
        """key_mask: (B, T) bool, False for padding frames no token may attend to (a shortened context).
        frame_tokens: (B, T, D) added to every token of its frame (the action, next to its adaLN path:
        added to the tokens it meets the position embedding, so where an action acts can be learned).
        token_bias: (B, T, N, D) added token by token (the action's per-position map)."""
        B, T = x.shape[:2]
        gh, gw = self.grid_hw
        N = gh * gw
        tokens = self.embed(x)  # (B, T*N, D)
        pos = rearrange(self.pos_time[t_pos][:, None] + self.pos_space[None], "t n d -> (t n) d")  # (T*N, D)
        tokens = tokens + pos
        if frame_tokens is not None:
            tokens = tokens + repeat(frame_tokens, "b t d -> b (t n) d", n=N)
        if token_bias is not None:
            tokens = tokens + rearrange(token_bias, "b t n d -> b (t n) d")  # (B, T*N, D)
        positions = grid_positions(T, gh, gw, device=x.device)  # (T*N, 3), frames numbered 0..T-1
        positions[:, 0] = repeat(t_pos, "t -> (t n)", n=N)  # the clip's real frame positions
        rope = self.rope(positions)
        mask = None
        if key_mask is not None and not bool(key_mask.all()):
            mask = repeat(key_mask, "b t -> b 1 1 (t n)", n=N)  # (B, 1, 1, T*N): True = may attend
        c = self.shared(cond) if self.shared is not None else cond
        for block in self.blocks:
            tokens = block(tokens, c, rope, mask, text, text_mask, (T, gh, gw))
        shift, scale = self.ada_out(c)
        out = self.out(modulate_frames(self.norm_out(tokens), scale, shift))  # (B, T*N, p*p*C)
        out = out[:, (T - n_out) * N :]  # (B, n_out*N, p*p*C): only the frames being denoised
        return unpatchify(out, (n_out, gh, gw), self.patch, self.channels)  # (B, n_out, C, h, w)
