"""Exponential moving average of a model's trainable weights, used for validation and export.

Averaging the late iterates of a noisy optimiser gives smoother, usually better weights (Polyak
averaging; standard for diffusion models since DDPM/EDM). The shadow copy is kept in float32 so that
updates of size (1 - decay) are not lost to rounding when the model itself runs in lower precision.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


class EMA:
    """Shadow weights ``s <- d * s + (1 - d) * p`` for every parameter that requires grad.

    The effective decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so a short
    run is not dominated by the random initialisation (as in timm / TF's ExponentialMovingAverage).
    Frozen parameters and buffers are not averaged: they are the model's own.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay=}")
        self.decay = decay
        self.updates = 0
        self.shadow: dict[str, torch.Tensor] = {
            name: p.detach().float().clone() for name, p in model.named_parameters() if p.requires_grad
        }

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        params = dict(model.named_parameters())
        names = list(self.shadow)
        shadow = [self.shadow[n] for n in names]
        current = [params[n].detach().float() for n in names]
        torch._foreach_lerp_(shadow, current, 1.0 - d)
        self.updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        for name, s in self.shadow.items():
            params[name].copy_(s)

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily swap the EMA weights into ``model`` (for validation or export)."""
        params = dict(model.named_parameters())
        backup = {name: params[name].detach().clone() for name in self.shadow}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, b in backup.items():
                    params[name].copy_(b)

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, float | int]]:
        """(tensors, scalars): shadow weights for safetensors, counters for JSON."""
        return dict(self.shadow), {"decay": self.decay, "updates": self.updates}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], scalars: dict[str, float | int]) -> None:
        missing = set(self.shadow) - set(tensors)
        unexpected = set(tensors) - set(self.shadow)
        if missing or unexpected:
            raise KeyError(f"EMA state does not match the model: missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}")
        for name, t in tensors.items():
            self.shadow[name].copy_(t)
        self.updates = int(scalars["updates"])

    def to(self, device: torch.device) -> "EMA":
        self.shadow = {n: s.to(device) for n, s in self.shadow.items()}
        return self
