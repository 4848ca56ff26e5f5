"""Discrete causal video tokenizer with finite scalar quantisation (registered as ``fsq``).

FSQ (Mentzer et al., 2023, "Finite Scalar Quantization: VQ-VAE Made Simple"): the encoder emits
``d = len(levels)`` channels; channel ``i`` is squashed into ``levels[i]`` bins and rounded
(straight-through gradient). The code grid is fixed, so there is no codebook to learn, collapse or
commit to, and every one of the ``prod(levels)`` ids is reachable. An id is the mixed-radix number
whose digits are the per-channel bin indices.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from einops import rearrange
from torch import Tensor, nn

from worldline.core.config import register_model
from worldline.core.errors import WorldlineError
from worldline.tokenizers.base import ConvTokenizer, TokenizerConfig


@dataclasses.dataclass
class FSQTokenizerConfig(TokenizerConfig):
    levels: tuple[int, ...] = (8, 5, 5, 5)  # bins per code channel; vocab = prod = 1000 (the paper's ~1k setting)

    def __post_init__(self):
        super().__post_init__()
        if not self.levels or min(self.levels) < 2:
            raise ValueError(f"levels need at least one entry, each >= 2, got {self.levels=}")
        if math.prod(self.levels) > 2**31:
            raise ValueError(f"prod(levels) must fit in int32 ids, got {self.levels=}")


class FSQ(nn.Module):
    """Quantiser with no weights: ``h`` (..., d) -> codes (..., d) on a grid in [-1, 1]; codes <-> ids."""

    def __init__(self, levels: tuple[int, ...]):
        super().__init__()
        levels_t = torch.tensor(levels, dtype=torch.int64)
        basis = torch.cumprod(torch.tensor([1, *levels[:-1]], dtype=torch.int64), 0)
        # Buffers (not parameters) so they follow .to(device); non-persistent: derived from the config.
        self.register_buffer("levels", levels_t, persistent=False)
        self.register_buffer("basis", basis, persistent=False)
        self.vocab_size = math.prod(levels)

    def bound(self, h: Tensor) -> Tensor:
        """Squash to (-L/2, L/2) so rounding yields exactly L integers. Even L: the range is shifted by
        half a bin ([-L/2, L/2 - 1]), and tanh is offset so h = 0 still maps to the code 0."""
        levels = self.levels.to(h.dtype)
        half = (levels - 1) * (1 + 1e-3) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0).to(h.dtype)
        shift = torch.atanh(offset / half)
        return torch.tanh(h + shift) * half - offset

    def quantize(self, h: Tensor) -> Tensor:
        """(..., d) -> codes (..., d) in [-1, 1]; straight-through gradient through the rounding.
        Done in float32: under bf16 autocast tanh * half could land on the wrong side of a bin edge."""
        z = self.bound(h.float())
        q = z + (z.round() - z).detach()
        return q / (self.levels // 2).float()

    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """(..., d) codes -> (...) int64 ids in [0, vocab_size)."""
        half = self.levels // 2
        digits = (codes * half.to(codes.dtype)).round().long() + half
        return (digits * self.basis).sum(-1)

    def indices_to_codes(self, ids: Tensor) -> Tensor:
        """(...) int64 ids -> (..., d) float codes in [-1, 1]."""
        digits = (ids.long().unsqueeze(-1) // self.basis) % self.levels
        half = self.levels // 2
        return (digits - half).float() / half.float()


@register_model("fsq", FSQTokenizerConfig)
class FSQTokenizer(ConvTokenizer):
    """Frames (B, T, C, H, W) in [-1, 1] <-> ids (B, 1 + (T-1)/ct, H/s, W/s) int64 in [0, vocab_size)."""

    discrete = True
    config: FSQTokenizerConfig

    def __init__(self, config: FSQTokenizerConfig):
        super().__init__(config, len(config.levels))
        self.fsq = FSQ(tuple(config.levels))

    @property
    def vocab_size(self) -> int:
        return self.fsq.vocab_size

    def bottleneck(self, h: Tensor) -> Tensor:
        h = rearrange(h, "b t d y x -> b t y x d")
        return rearrange(self.fsq.quantize(h), "b t y x d -> b t d y x")

    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """(B, t, d, h, w) codes -> (B, t, h, w) ids."""
        return self.fsq.codes_to_indices(rearrange(codes, "b t d y x -> b t y x d"))

    def indices_to_codes(self, ids: Tensor) -> Tensor:
        """(B, t, h, w) ids -> (B, t, d, h, w) codes (what the decoder takes)."""
        return rearrange(self.fsq.indices_to_codes(ids), "b t y x d -> b t d y x")

    def encode(self, frames: Tensor) -> Tensor:
        self.check_frames(frames)
        return self.codes_to_indices(self.bottleneck(self.encoder(frames)))

    def decode(self, latents: Tensor) -> Tensor:
        """Ids (B, t, h, w); codes (B, t, d, h, w) are accepted too (e.g. a model's soft prediction)."""
        if latents.dim() == 4 and not latents.is_floating_point():
            if latents.numel() and (latents.min() < 0 or latents.max() >= self.vocab_size):
                raise WorldlineError(f"token ids must lie in [0, {self.vocab_size}), got {latents.min().item()}..{latents.max().item()}")
            codes = self.indices_to_codes(latents)
        elif latents.dim() == 5 and latents.shape[2] == len(self.config.levels):
            codes = latents
        else:
            raise WorldlineError(
                f"decode takes ids (B, t, h, w) int64 or codes (B, t, {len(self.config.levels)}, h, w), got "
                f"{tuple(latents.shape)} {latents.dtype}"
            )
        return self.decoder(codes).clamp(-1, 1)

    def latent_logs(self, z: Tensor) -> dict[str, float]:
        ids = self.codes_to_indices(z.detach())
        return {"code_usage": ids.unique().numel() / self.vocab_size}
