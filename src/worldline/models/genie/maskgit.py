"""MaskGIT decoding (Chang et al. 2022): a frame of tokens in a few parallel steps. No weights here.

A frame starts fully masked. Each step the network predicts every masked position at once; the
most confident predictions are kept and the rest masked again, following a cosine schedule: after
step i of N, ``floor(S * cos(pi/2 * (i+1)/N))`` tokens stay masked, so few tokens are committed
early (when the frame is most uncertain) and all are committed by step N. Training masks each frame
with a rate drawn from the same cosine curve, so every masking level the sampler meets was trained.

With ``temperature = 0`` every position takes its most likely id and confidence is its probability
(deterministic). With ``temperature > 0`` ids are sampled and Gumbel noise scaled by
``temperature * (1 - (i+1)/N)`` perturbs the confidences, MaskGIT's annealed "choice temperature".
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor


def schedule(steps: int, length: int) -> list[int]:
    """Tokens still masked after each of ``steps`` steps: strictly decreasing, ending at 0."""
    if not 1 <= steps <= length:
        raise ValueError(f"MaskGIT needs 1 <= steps <= tokens per frame, got {steps=} {length=}")
    out, prev = [], length
    for i in range(steps):
        n = math.floor(length * math.cos(math.pi / 2 * (i + 1) / steps))
        n = max(min(n, prev - 1), steps - 1 - i)  # at least one token per step, and one left for each later step
        out.append(n)
        prev = n
    return out


def training_mask(shape: tuple[int, ...], device: torch.device | str | None = None,
                  generator: torch.Generator | None = None) -> Tensor:
    """Bool mask (..., S), True = masked: each row's rate is cos(pi/2 * u), u ~ U(0, 1), the
    schedule's curve (so rates near 1, the first decoding steps, are drawn as often as they occur)."""
    u = torch.rand(shape[:-1], device=device, generator=generator)
    rate = torch.cos(math.pi / 2 * u)[..., None]  # (..., 1)
    return torch.rand(shape, device=device, generator=generator) < rate


@torch.no_grad()
def decode(logits_fn: Callable[[Tensor], Tensor], batch: int, length: int, mask_id: int, steps: int,
           temperature: float = 0.0, device: torch.device | str | None = None,
           generator: torch.Generator | None = None) -> Tensor:
    """Token ids (batch, length) of one frame. ``logits_fn(ids)`` maps ids (B, S), with ``mask_id``
    where unknown, to logits (B, S, V) over the real ids."""
    ids = torch.full((batch, length), mask_id, dtype=torch.long, device=device)
    known = torch.zeros(batch, length, dtype=torch.bool, device=device)
    for i, n_masked in enumerate(schedule(steps, length)):
        logits = logits_fn(ids).float()  # (B, S, V)
        if temperature > 0:
            probs = (logits / temperature).softmax(-1)
            flat = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator)  # (B*S, 1)
            sampled = flat.reshape(batch, length)
        else:
            probs = logits.softmax(-1)
            sampled = probs.argmax(-1)
        confidence = probs.gather(-1, sampled[..., None])[..., 0].clamp_min(1e-20).log()  # (B, S)
        if temperature > 0:
            u = torch.rand(confidence.shape, device=confidence.device, generator=generator).clamp(1e-20, 1 - 1e-7)
            confidence = confidence + temperature * (1 - (i + 1) / steps) * -torch.log(-torch.log(u))
        sampled = torch.where(known, ids, sampled)
        confidence = confidence.masked_fill(known, float("inf"))  # committed tokens are never re-masked
        keep = confidence.topk(length - n_masked, dim=-1).indices  # (B, S - n_masked)
        known = torch.zeros_like(known).scatter_(1, keep, True)
        ids = torch.where(known, sampled, torch.full_like(sampled, mask_id))
    return ids
