"""V-JEPA encoder pretraining, registered as model type ``jepa_encoder``.

Masked latent prediction (Bardes et al. 2024): the context encoder sees the visible tokens of a
clip, a narrow predictor fills in the embeddings of the masked tubes, and the targets are the
layer-normalised tokens of an EMA copy of the encoder, under stop-gradient; the loss is L1. The EMA
target (not the online encoder) is what the action-conditioned model later loads, as in V-JEPA 2.
With ``var_weight`` > 0 a VICReg variance hinge (Bardes et al. 2022) keeps every channel of the
context tokens varying across the batch: on small scenes that are mostly background the L1 alone
is met by near-constant tokens that barely encode the objects.

The EMA update runs at the start of every training-mode ``loss`` call: the online weights then are
the ones the optimiser produced at the previous step, so this equals an update after each step
without a trainer hook (one call per micro-batch under gradient accumulation).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldline.core.config import register_model
from worldline.core.errors import WorldlineError
from worldline.core.pretrained import PretrainedMixin
from worldline.models.jepa.config import JEPAEncoderConfig
from worldline.models.jepa.encoder import Block, VisionEncoder, gather_tokens, init_weights
from worldline.models.jepa.masking import tube_masks
from worldline.nn.rope import RoPE3D


def sincos_positions(pos: Tensor, dim: int) -> Tensor:
    """(..., 3) integer (t, row, col) positions -> (..., dim) fixed sin-cos features, dim/3 per axis
    (zero-padded to ``dim``); frequencies 1 / 100^(i/f) suit grids of a few dozen positions."""
    f = dim // 6
    freqs = 100.0 ** (-torch.arange(f, device=pos.device, dtype=torch.float32) / max(f, 1))  # (f,)
    angles = pos.float()[..., None] * freqs  # (..., 3, f)
    feats = torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)  # (..., 6f)
    return F.pad(feats, (0, dim - feats.shape[-1]))


class MaskPredictor(nn.Module):
    """Context tokens + positions of the masked tokens -> predicted embeddings of the masked tokens."""

    def __init__(self, embed_dim: int, dim: int, depth: int, heads: int, mlp_ratio: float, abs_pos: bool = False):
        super().__init__()
        self.abs_pos = abs_pos
        self.inp = nn.Linear(embed_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(dim))
        self.rope = RoPE3D(dim // heads)
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, embed_dim)
        init_weights(self)
        nn.init.trunc_normal_(self.mask_token, std=0.02)  # one shared query; its position comes from RoPE

    def forward(self, context: Tensor, context_pos: Tensor, target_pos: Tensor) -> Tensor:
        """context (B, Lk, D), context_pos (B, Lk, 3), target_pos (B, Lm, 3) -> (B, Lm, D)."""
        B, Lm = target_pos.shape[:2]
        x = torch.cat([self.inp(context), self.mask_token.expand(B, Lm, -1)], dim=1)  # (B, Lk + Lm, dim)
        positions = torch.cat([context_pos, target_pos], dim=1)  # (B, Lk + Lm, 3)
        if self.abs_pos:
            x = x + sincos_positions(positions, x.shape[-1])
        rope = self.rope(positions)
        for block in self.blocks:
            x = block(x, rope)
        return self.out(self.norm(x[:, -Lm:]))


@register_model("jepa_encoder", JEPAEncoderConfig)
class JEPAEncoderPretrainer(PretrainedMixin, nn.Module):
    """Online encoder + EMA target encoder + masked predictor; ``loss(batch)`` needs only frames."""

    def __init__(self, config: JEPAEncoderConfig):
        super().__init__()
        self.config = config
        c = config
        self.encoder = VisionEncoder(c.dim, c.depth, c.heads, c.mlp_ratio, c.patch, c.tubelet)
        self.target = copy.deepcopy(self.encoder).requires_grad_(False)  # starts equal to the online encoder
        self.predictor = MaskPredictor(c.dim, c.pred_dim, c.pred_depth, c.pred_heads, c.mlp_ratio, c.pred_abs_pos)
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))  # saved, so a resumed run keeps its schedule

    def window(self) -> int:
        return self.config.frames

    def momentum(self) -> float:
        c = self.config
        progress = min(1.0, int(self.ema_updates) / c.ema_steps)
        return c.ema_start + (c.ema_end - c.ema_start) * progress

    @torch.no_grad()
    def update_target(self) -> None:
        """target <- m * target + (1 - m) * online, then advance the momentum schedule."""
        m = self.momentum()
        target = list(self.target.parameters())
        online = [p.detach() for p in self.encoder.parameters()]
        torch._foreach_lerp_(target, online, 1.0 - m)
        self.ema_updates += 1

    def train(self, mode: bool = True):
        super().train(mode)
        self.target.eval()
        return self

    def check_frames(self, frames: Tensor) -> None:
        if frames.dim() != 5 or frames.shape[2] != 3:
            raise WorldlineError(f"frames must be (B, T, 3, H, W), got shape {tuple(frames.shape)}")
        H, W = frames.shape[-2:]
        if H % self.config.patch or W % self.config.patch:
            raise WorldlineError(f"frames of {H}x{W} do not split into {self.config.patch}-pixel patches")

    def loss(self, batch) -> tuple[Tensor, dict[str, float]]:
        c = self.config
        frames = batch["frames"].float()
        self.check_frames(frames)
        if frames.shape[1] % c.tubelet:
            raise WorldlineError(f"batch has {frames.shape[1]} frames, not a multiple of the tubelet {c.tubelet}")
        if self.training and torch.is_grad_enabled():
            self.update_target()
        B = frames.shape[0]
        grid = self.encoder.grid(frames)
        keep, masked = tube_masks(B, grid, c.mask_ratio, tuple(c.mask_scale), tuple(c.mask_aspect))
        keep, masked = keep.to(frames.device), masked.to(frames.device)
        pos = self.encoder.positions(frames).expand(B, -1, -1)  # (B, L, 3)

        with torch.no_grad():
            target = self.target(frames)  # (B, L, D)
            target = F.layer_norm(target, target.shape[-1:])  # V-JEPA regresses normalised target features
            # what predicting each position's batch-mean target would score: an l1 near or above it
            # means the loss is met by position-dependent constants, not by reading the context
            position_mean_l1 = gather_tokens((target - target.mean(0, keepdim=True)).abs(), masked).mean()
            target = gather_tokens(target, masked)  # (B, Lm, D)
        context = self.encoder(frames, keep)  # (B, Lk, D)
        pred = self.predictor(context, gather_tokens(pos, keep), gather_tokens(pos, masked))  # (B, Lm, D)
        l1 = (pred - target).abs().mean()
        loss = l1
        spread = context.flatten(0, 1).std(dim=0)  # (D,) per-channel std over all context tokens of the batch
        if c.var_weight > 0:
            loss = loss + c.var_weight * F.relu(c.var_target - spread).mean()
        logs = {
            "l1": l1.item(),
            "position_mean_l1": position_mean_l1.item(),
            "context_std": spread.mean().item(),
            # a collapsing encoder shows as target features that stop varying across samples
            "target_std": target.std(dim=0).mean().item(),
            "momentum": self.momentum(),
        }
        return loss, logs

    @torch.no_grad()
    def embed(self, frames: Tensor, grid: int | None = None) -> Tensor:
        """Per-frame embeddings of the target encoder (B, T, D, g, g), g = the patch grid or ``grid``."""
        self.check_frames(frames)
        g = grid or frames.shape[-1] // self.config.patch
        return self.target.encode_frames(frames.float(), self.config.tubelet, g)

    def forward(self, batch):
        return self.loss(batch)
