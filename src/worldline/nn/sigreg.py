"""SIGReg: the sketched isotropic Gaussian regulariser (Balestriero & LeCun 2025, LeJEPA; LeWM 2026).

An embedding trained only to be predictable collapses to a constant. SIGReg keeps it spread by
testing that its distribution is N(0, I): the batch is projected onto random unit directions (by the
Cramer-Wold theorem a distribution is Gaussian iff every 1-D projection is), and each projection's
empirical characteristic function is compared with exp(-t^2 / 2), the standard normal's, by the
Epps-Pulley statistic: the Gaussian-weighted squared gap, integrated over t in [-t_max, t_max] (the
integrand is even, so twice the trapezoid rule over [0, t_max]). The statistic is scaled by the batch size, as the test statistic is, so the
regulariser's weight does not depend on it.
"""

from __future__ import annotations

import torch
from torch import Tensor


def sigreg(z: Tensor, projections: int = 256, knots: int = 17, t_max: float = 3.0,
           generator: torch.Generator | None = None) -> Tensor:
    """Mean Epps-Pulley statistic of ``z`` (..., N, D): N samples of D-dim embeddings per leading index
    (LeWM passes one batch per time step), over ``projections`` fresh random directions. 0 for N(0, I)
    data in the limit of many samples; grows with any departure (shift, scale, collapse, skew)."""
    if z.dim() < 2 or z.shape[-2] < 2:
        raise ValueError(f"sigreg needs (..., N >= 2, D) samples, got {tuple(z.shape)}")
    N, D = z.shape[-2:]
    z = z.float()  # the complex exponentials lose too much in half precision
    dirs = torch.randn(D, projections, device=z.device, generator=generator)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)  # (D, P) unit columns
    t = torch.linspace(0, t_max, knots, device=z.device)  # (K,)
    xt = (z @ dirs)[..., None] * t  # (..., N, P, K)
    gauss = torch.exp(-0.5 * t.square())  # the N(0, 1) characteristic function, also the weighting window
    err = (xt.cos().mean(-3) - gauss).square() + xt.sin().mean(-3).square()  # (..., P, K): |ecf - cf|^2
    step = t_max / (knots - 1)
    trap = torch.full((knots,), 2 * step, device=z.device)  # trapezoid weights over [0, t_max], doubled for [-t_max, 0]
    trap[[0, -1]] = step
    return ((err @ (trap * gauss)) * N).mean()
