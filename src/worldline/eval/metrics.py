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


def per_step(metric, pred: Tensor, target: Tensor) -> Tensor:
    """Mean over the batch of ``metric`` at each time step: (B, T, C, H, W) -> (T,)."""
    return metric(pred, target).mean(dim=0)


def to_uint8_frames(x: Tensor) -> "torch.Tensor":
    """(…, C, H, W) in [-1, 1] -> (…, H, W, C) uint8 for writing video/gif."""
    x = (_to_unit(x) * 255).round().to(torch.uint8)
    return rearrange(x, "... c h w -> ... h w c")
