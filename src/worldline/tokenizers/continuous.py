"""Continuous causal video autoencoder (registered as ``continuous``).

Bottleneck: ``z = tanh(h)``. A world model trained on these latents (diffusion, regression) needs
them on a known, dataset-independent scale; tanh gives that by construction, deterministically, and
without the blur a KL term adds (a plain AE, as the Cosmos continuous tokenizers, with a bounded
range). Optional Gaussian ``latent_noise`` during training makes the decoder tolerant of the small
errors a world model's predicted latents will carry.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from worldline.core.config import register_model
from worldline.core.errors import WorldlineError
from worldline.tokenizers.base import ConvTokenizer, TokenizerConfig


@dataclasses.dataclass
class ContinuousTokenizerConfig(TokenizerConfig):
    latent_channels: int = 8  # channels per latent position: more is sharper, fewer is easier to predict
    latent_noise: float = 0.0  # std of Gaussian noise on latents in training (decoder robustness); 0 disables

    def __post_init__(self):
        super().__post_init__()
        if self.latent_channels < 1:
            raise ValueError(f"latent_channels must be >= 1, got {self.latent_channels=}")
        if self.latent_noise < 0:
            raise ValueError(f"latent_noise must be >= 0, got {self.latent_noise=}")


@register_model("continuous", ContinuousTokenizerConfig)
class ContinuousTokenizer(ConvTokenizer):
    """Frames (B, T, C, H, W) in [-1, 1] <-> latents (B, 1 + (T-1)/ct, latent_channels, H/s, W/s) in (-1, 1)."""

    discrete = False
    config: ContinuousTokenizerConfig

    def __init__(self, config: ContinuousTokenizerConfig):
        super().__init__(config, config.latent_channels)

    def bottleneck(self, h: Tensor) -> Tensor:
        z = torch.tanh(h)
        if self.training and self.config.latent_noise > 0:
            z = z + self.config.latent_noise * torch.randn_like(z)
        return z

    def encode(self, frames: Tensor) -> Tensor:
        self.check_frames(frames)
        return torch.tanh(self.encoder(frames))

    def decode(self, latents: Tensor) -> Tensor:
        if latents.dim() != 5 or latents.shape[2] != self.latent_channels:
            raise WorldlineError(
                f"latents must be (B, t, {self.latent_channels}, h, w), got {tuple(latents.shape)}"
            )
        return self.decoder(latents).clamp(-1, 1)

    def latent_logs(self, z: Tensor) -> dict[str, float]:
        return {"latent_std": z.detach().std().item()}
