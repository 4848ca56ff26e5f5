"""EDM (Karras et al. 2022): preconditioning, the training noise distribution and the loss weighting.

The denoiser is ``D(x; sigma) = c_skip x + c_out F(c_in x; c_noise)`` where F is the network. The
coefficients keep the network's input and its regression target at unit variance at every noise
level for data of standard deviation ``sigma_data``, and the loss weight ``(sigma^2 + sigma_data^2) /
(sigma sigma_data)^2`` equals ``1 / c_out^2``, so the weighted denoiser loss is exactly the plain MSE
of F against ``(x0 - c_skip x) / c_out`` (the form :meth:`EDM.loss` computes; it is better
conditioned in float32 at tiny sigma).
"""

from __future__ import annotations

import dataclasses
import torch
from torch import Tensor


@dataclasses.dataclass(frozen=True)
class EDM:
    sigma_data: float = 1.0  # std of the clean data; 1 for worldline's normalised latents/residuals
    p_mean: float = -0.4  # training log-sigma ~ N(p_mean, p_std^2); DIAMOND's values, which favour mid noise where 1-3 step sampling needs accuracy
    p_std: float = 1.2

    def precondition(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(c_skip, c_out, c_in, c_noise) for noise levels ``sigma`` (any shape)."""
        sd2 = self.sigma_data**2
        s2 = sigma**2
        c_skip = sd2 / (s2 + sd2)
        c_out = sigma * self.sigma_data / (s2 + sd2).sqrt()
        c_in = 1 / (s2 + sd2).sqrt()
        c_noise = sigma.clamp_min(1e-20).log() / 4
        return c_skip, c_out, c_in, c_noise

    def loss_weight(self, sigma: Tensor) -> Tensor:
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2

    def sample_sigma(self, n: int, device=None, generator: torch.Generator | None = None) -> Tensor:
        """``n`` training noise levels from the log-normal."""
        z = torch.randn(n, device=device, generator=generator)
        return (self.p_mean + self.p_std * z).exp()

    def network_target(self, x0: Tensor, x_noisy: Tensor, sigma: Tensor) -> Tensor:
        """What F must output for ``D(x_noisy) == x0``: ``(x0 - c_skip x) / c_out``; sigma broadcasts."""
        c_skip, c_out, _, _ = self.precondition(sigma)
        return (x0 - c_skip * x_noisy) / c_out

    def denoise(self, F_out: Tensor, x_noisy: Tensor, sigma: Tensor) -> Tensor:
        """``D = c_skip x + c_out F``."""
        c_skip, c_out, _, _ = self.precondition(sigma)
        return c_skip * x_noisy + c_out * F_out


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """``steps + 1`` noise levels from ``sigma_max`` down to ``sigma_min`` then 0 (EDM eq. 5)."""
    if steps < 1:
        raise ValueError(f"need at least one sampling step, got {steps=}")
    if steps == 1:
        return torch.tensor([sigma_max, 0.0])
    i = torch.arange(steps, dtype=torch.float64) / (steps - 1)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sig = (hi + i * (lo - hi)) ** rho
    return torch.cat([sig, torch.zeros(1, dtype=torch.float64)]).float()

