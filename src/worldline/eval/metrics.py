"""Frame-quality metrics (torchmetrics), per frame so callers can report them per horizon step."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


def _to_unit(x: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1], clamped, float32."""
    return ((x.float().clamp(-1, 1) + 1) / 2).clamp(0, 1)


def psnr(pred: Tensor, target: Tensor) -> Tensor:
    """PSNR in dB of each frame: (..., C, H, W) in [-1, 1] -> (...)."""
    lead = pred.shape[:-3]
    p = _to_unit(pred).reshape(-1, *pred.shape[-3:])  # (N, C, H, W)
    t = _to_unit(target).reshape(-1, *target.shape[-3:])
    out = peak_signal_noise_ratio(p, t, data_range=1.0, reduction="none", dim=(1, 2, 3))
    return out.reshape(lead)


def ssim(pred: Tensor, target: Tensor) -> Tensor:
    """SSIM (Gaussian window 11, sigma 1.5) of each frame: (..., C, H, W) in [-1, 1] -> (...)."""
    lead = pred.shape[:-3]
    p = _to_unit(pred).reshape(-1, *pred.shape[-3:])
    t = _to_unit(target).reshape(-1, *target.shape[-3:])
    out = structural_similarity_index_measure(p, t, data_range=1.0, reduction="none")
    return out.reshape(lead)


def sharpness(pred: Tensor, target: Tensor) -> Tensor:
    """Fine detail of each predicted frame relative to the real one: (..., C, H, W) in [-1, 1] -> (...).

    The ratio of the frames' high-frequency energies (mean squared 3x3 Laplacian): 1 is as sharp as
    the real frame, below 1 blurred (a regressor's average of futures), above 1 noisier. PSNR and
    SSIM reward the blur of a hedged prediction; this tells it apart from a sharp one."""
    lead = pred.shape[:-3]

    def energy(x: Tensor) -> Tensor:
        x = _to_unit(x).reshape(-1, 1, *x.shape[-2:])  # (N*C, 1, H, W): each channel on its own
        kernel = x.new_tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
        lap = torch.nn.functional.conv2d(x, kernel)  # valid conv: no border artefacts
        return lap.square().reshape(-1, pred.shape[-3], *lap.shape[-2:]).mean(dim=(1, 2, 3))

    return ((energy(pred) + 1e-6) / (energy(target) + 1e-6)).reshape(lead)  # two flat frames: 1


def per_step(metric, pred: Tensor, target: Tensor) -> Tensor:
    """Mean over the batch of ``metric`` at each time step: (B, T, C, H, W) -> (T,)."""
    return metric(pred, target).mean(dim=0)


def to_uint8_frames(x: Tensor) -> "torch.Tensor":
    """(…, C, H, W) in [-1, 1] -> (…, H, W, C) uint8 for writing video/gif."""
    x = (_to_unit(x) * 255).round().to(torch.uint8)
    return rearrange(x, "... c h w -> ... h w c")
