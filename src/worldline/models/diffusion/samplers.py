"""EDM samplers: Euler and Heun over a Karras noise schedule. They hold no weights.

A sampler gets ``denoise(x, sigma) -> x0 estimate`` (the preconditioned network, with guidance
folded in by the caller), the shape of the sample and the noise levels, and integrates the
probability-flow ODE ``dx/dsigma = (x - D(x; sigma)) / sigma`` from ``sigmas[0]`` to 0.

With one step the sample is ``D(sigma_max * noise; sigma_max)``: a single network call that returns
(almost) the conditional mean, which is what an interactive 20+ fps world model can afford; DIAMOND
found 1-3 Euler steps enough when the context pins the next frame down. Heun adds a second-order
correction per step (two calls; the last step to 0 is plain Euler, as in EDM Algorithm 1).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

Denoiser = Callable[[Tensor, Tensor], Tensor]  # (x (B, ...), sigma (B,)) -> x0 estimate (B, ...)
SAMPLERS = ("euler", "heun")


def sample(denoise: Denoiser, shape: tuple[int, ...], sigmas: Tensor, *, method: str = "euler",
           generator: torch.Generator | None = None, device=None) -> Tensor:
    """A sample of ``shape`` following ``sigmas`` (decreasing, ending at 0) with ``method``."""
    if method not in SAMPLERS:
        raise ValueError(f"unknown sampler {method=} (known: {', '.join(SAMPLERS)})")
    noise = torch.randn(shape, generator=generator, device="cpu" if generator is None or generator.device.type == "cpu" else device)
    x = noise.to(device) * sigmas[0]
    step = euler_step if method == "euler" else heun_step
    for i in range(len(sigmas) - 1):
        x = step(denoise, x, float(sigmas[i]), float(sigmas[i + 1]))
    return x


def euler_step(denoise: Denoiser, x: Tensor, sigma: float, sigma_next: float) -> Tensor:
    d = (x - denoise(x, _full(x, sigma))) / sigma  # dx/dsigma
    return x + (sigma_next - sigma) * d


def heun_step(denoise: Denoiser, x: Tensor, sigma: float, sigma_next: float) -> Tensor:
    d = (x - denoise(x, _full(x, sigma))) / sigma
    x_next = x + (sigma_next - sigma) * d
    if sigma_next == 0:
        return x_next
    d_next = (x_next - denoise(x_next, _full(x, sigma_next))) / sigma_next
    return x + (sigma_next - sigma) * (d + d_next) / 2


def _full(x: Tensor, sigma: float) -> Tensor:
    return torch.full((x.shape[0],), sigma, device=x.device, dtype=x.dtype)
