"""Latent action model (Genie, Bruce et al. 2024): actions learned from video alone.

Encoder: a causal space-time transformer over pixel patches of frames 1..T. Its output at frame
t + 1 has seen frames 1..t + 1 and nothing later; pooled over space and quantised, it is the latent
action of the transition t -> t + 1. Decoder: a causal space-time transformer over frames 1..T-1
with each transition's code vector added to the tokens of its source frame; it predicts the next
frame (as a change of the current one). The decoder can only learn what the past does not already
tell it from the code, and the codebook holds a few codes, so the codes come to mean what the
agent did.

Quantiser: binary codes (the sign of each of log2(n) channels; FSQ with two levels, or MAGVIT-v2's
lookup-free quantisation), straight-through. A learnt VQ codebook (cosine, with dead-code restarts)
collapsed onto one code within 100 steps on Breakout; with no codebook there is nothing to collapse,
and a weak entropy term keeps all codes in use. (Standardising codes over the batch made training
codes batch-relative: at eval, with running statistics, every Breakout transition got one code.)

Most pixels of a game screen do not change from one frame to the next, and what does change is what
actions explain, so the reconstruction error is weighted up where the frame changes
(``motion_weight``), and the encoder sees each frame's change from the previous one beside it.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from worldline.nn.patch import PatchEmbed3D, unpatchify
from worldline.nn.st_block import STTransformer


class LatentActionQuantizer(nn.Module):
    """``z`` (..., bits) -> one of ``2**bits`` codes: the sign of each channel (binary FSQ, i.e.
    lookup-free quantisation of MAGVIT-v2), with a straight-through gradient through tanh.

    No codebook is learnt, so there is none to collapse; what keeps every code in use is the entropy
    term of MAGVIT-v2: low entropy of each transition's soft code (decisive codes) and high entropy
    of the batch's average (all codes used).

    High batch entropy pushes every code towards a share of 1/n. A game with fewer actions than
    codes, or with actions of unequal frequency, cannot then give each action one code (CoinRun,
    4 actions, perplexity 7.6: each code held ~1/8 of the transitions, capping purity near 0.5). With
    ``usage_floor`` > 0 the batch term only penalises codes whose share is below the floor (in units
    of the floor, so a code missing entirely costs 1), leaving the split above it to the data.

    Left alone, reconstruction itself wants every code used equally (3 bits carry most when uniform),
    and spends the codes the actions do not need on what else changes (CoinRun: the runner's speed).
    The third loss is the batch entropy of code usage, a rate penalty: weighted up, codes whose split
    gains less reconstruction than it costs in rate merge, and the biggest causes of change (the
    actions) keep codes of their own."""

    def __init__(self, n: int, temperature: float = 1.0, usage_floor: float = 0.0):
        super().__init__()
        bits = n.bit_length() - 1
        if n < 2 or 1 << bits != n:
            raise ValueError(f"binary latent actions need a power-of-two codebook, got {n=}")
        self.n, self.bits = n, bits
        self.temperature = temperature  # of the soft code assignment in the entropy term
        self.usage_floor = usage_floor
        self.register_buffer("basis", 2 ** torch.arange(bits), persistent=False)
        corners = ((torch.arange(n)[:, None] // self.basis) % 2).float() * 2 - 1  # (n, bits) in {-1, 1}
        self.register_buffer("corners", corners, persistent=False)

    def indices(self, z: Tensor) -> Tensor:
        """(..., bits) -> (...) int64 code ids (bit i set where channel i is positive)."""
        return ((z > 0).long() * self.basis).sum(-1)

    def lookup(self, ids: Tensor) -> Tensor:
        """(...) ids -> (..., bits) code vectors in {-1, 1}."""
        return self.corners[ids.long()]

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``z`` (..., bits) -> (quantised (..., bits) with straight-through grad, ids (...),
        losses (3,): entropy term, commitment, batch entropy of code usage)."""
        ids = self.indices(z)
        q = self.lookup(ids)
        soft = torch.tanh(z)
        quantised = soft + (q - soft).detach()
        commit = F.mse_loss(z, q)  # pulls each channel towards +-1, away from the sign boundary
        logits = -torch.cdist(z.reshape(-1, self.bits), self.corners) ** 2 / self.temperature  # (N, n)
        p = logits.softmax(-1)
        per_sample = -(p * p.clamp_min(1e-12).log()).sum(-1).mean()
        avg = p.mean(0)
        batch = -(avg * avg.clamp_min(1e-12).log()).sum()
        if self.usage_floor > 0:
            usage = (self.usage_floor - avg).clamp_min(0).sum() / self.usage_floor
        else:
            usage = -batch
        return quantised, ids, torch.stack([per_sample + usage, commit, batch])


@dataclasses.dataclass
class LAMOutput:
    ids: Tensor  # (B, T-1) code of each transition
    prediction: Tensor  # (B, T-1, 3, H, W) decoded frames 2..T
    recon_loss: Tensor  # pixel MSE of the prediction
    vq_loss: Tensor  # (3,) entropy term, commitment loss, batch entropy of code usage


class LatentActionModel(nn.Module):
    """Frames (B, T, 3, H, W) in [-1, 1] -> one of ``n`` latent actions per transition."""

    def __init__(self, image_size: tuple[int, int], patch: int, dim: int, depth: int, heads: int, n: int,
                 motion_weight: float = 0.0, usage_floor: float = 0.0, code_bias: bool = False):
        super().__init__()
        self.motion_weight = motion_weight
        H, W = image_size
        self.patch = (1, patch, patch)
        self.grid = (H // patch, W // patch)
        self.embed_enc = PatchEmbed3D(6, dim, self.patch)  # each frame and its change from the previous one
        self.encoder = STTransformer(dim, depth, heads, self.grid, causal=True)
        self.pool = nn.Linear(dim, 1)  # attention pooling: the few patches where the agent acts outweigh the static rest
        self.quantizer = LatentActionQuantizer(n, usage_floor=usage_floor)
        code_dim = self.quantizer.bits
        # a code is read from a change of features; without a bias, a transition where (almost) nothing
        # changes sits at the sign boundary of every channel and gets a random code (CoinRun: 537
        # still NOOP transitions spread over all 8 codes); with one, stillness has a code of its own
        self.to_code = nn.Linear(dim, code_dim, bias=code_bias)
        if code_bias:
            nn.init.zeros_(self.to_code.bias)  # starts with no code preference; learns where stillness goes

        self.embed_dec = PatchEmbed3D(3, dim, self.patch)
        self.from_code = nn.Linear(code_dim, dim)
        self.decoder = STTransformer(dim, depth, heads, self.grid, causal=True)
        self.head = nn.Linear(dim, 3 * patch * patch)
        nn.init.zeros_(self.head.weight)  # predicts "nothing changes" at init, the right prior for video
        nn.init.zeros_(self.head.bias)

    def tokens(self, embed: PatchEmbed3D, frames: Tensor) -> Tensor:
        B, T = frames.shape[:2]
        return rearrange(embed(frames), "b (t s) d -> b t s d", t=T)  # (B, T, S, D)

    def encode(self, frames: Tensor) -> Tensor:
        """Pre-quantisation latent actions (B, T-1, code_dim); entry t depends on frames 1..t+2 only.

        A code is read from how the pooled features change from frame t+1 to t+2, not from the
        features themselves: every frame of a game shares most of its features, and a code read from
        them started out the same for every transition (measured on Breakout: std 0.01 around 0.6)."""
        change = torch.cat([torch.zeros_like(frames[:, :1]), frames[:, 1:] - frames[:, :-1]], dim=1)  # (B, T, 3, H, W)
        h = self.encoder(self.tokens(self.embed_enc, torch.cat([frames, change], dim=2)))  # (B, T, S, D)
        pooled = (self.pool(h).softmax(dim=2) * h).sum(dim=2)  # (B, T, D)
        return self.to_code(pooled[:, 1:] - pooled[:, :-1])  # (B, T-1, code_dim)

    def infer(self, frames: Tensor) -> Tensor:
        """Code ids (B, T-1) of the transitions in ``frames``."""
        return self.quantizer.indices(self.encode(frames))

    def decode(self, frames: Tensor, codes: Tensor) -> Tensor:
        """Frames 2..T (B, T-1, 3, H, W) from frames 1..T-1 ``frames`` (B, T-1, ...) and code vectors (B, T-1, d)."""
        B, T = frames.shape[:2]
        h = self.tokens(self.embed_dec, frames) + self.from_code(codes)[:, :, None]  # (B, T-1, S, D)
        out = rearrange(self.head(self.decoder(h)), "b t s p -> b (t s) p")  # (B, (T-1)*S, 3*p*p)
        delta = unpatchify(out, (T, *self.grid), self.patch, 3)  # (B, T-1, 3, H, W)
        return frames + delta

    def forward(self, frames: Tensor) -> LAMOutput:
        q, ids, vq_loss = self.quantizer(self.encode(frames))
        prediction = self.decode(frames[:, :-1], q)
        target = frames[:, 1:]
        weight = 1 + self.motion_weight * (target - frames[:, :-1]).abs().amax(dim=2, keepdim=True) / 2  # (B, T-1, 1, H, W)
        recon = (weight * (prediction - target) ** 2).mean() / weight.mean()
        return LAMOutput(ids, prediction, recon, vq_loss)
