"""Multi-block tube masking (I-JEPA / V-JEPA): masked spatial blocks extended through time.

A few rectangles of random area and aspect ratio are unioned on the spatial patch grid until they
cover the requested fraction; the same cells are masked in every frame (a tube), so the predictor
cannot copy a masked patch from a neighbouring frame and must model the scene. The count is made
exact (the last block gives back its surplus cells) so every sample of a batch hides the same number
of tokens and the batch stays one tensor.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def block_mask(h: int, w: int, ratio: float, scale: tuple[float, float], aspect: tuple[float, float],
               generator: torch.Generator | None = None) -> Tensor:
    """(h, w) bool spatial mask with exactly ``round(ratio * h * w)`` cells (at least 1, at most h*w - 1)."""
    target = min(max(round(ratio * h * w), 1), h * w - 1)
    mask = torch.zeros(h, w, dtype=torch.bool)

    def uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * torch.rand((), generator=generator).item()

    while int(mask.sum()) < target:
        area = uniform(*scale) * h * w
        r = math.exp(uniform(math.log(aspect[0]), math.log(aspect[1])))  # log-uniform aspect: tall and wide equally likely
        bh = min(max(round(math.sqrt(area * r)), 1), h)
        bw = min(max(round(math.sqrt(area / r)), 1), w)
        top = int(torch.randint(0, h - bh + 1, (), generator=generator))
        left = int(torch.randint(0, w - bw + 1, (), generator=generator))
        block = torch.zeros_like(mask)
        block[top : top + bh, left : left + bw] = True
        new = block & ~mask
        surplus = int(mask.sum()) + int(new.sum()) - target
        if surplus > 0:  # give back cells of this block only, so earlier blocks stay whole
            cells = new.flatten().nonzero()[:, 0]
            drop = cells[torch.randperm(len(cells), generator=generator)[:surplus]]
            new = new.flatten().clone()
            new[drop] = False
            new = new.view(h, w)
        mask |= new
    return mask


def tube_masks(batch: int, grid: tuple[int, int, int], ratio: float, scale: tuple[float, float],
               aspect: tuple[float, float], generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Token indices (raster order, time outermost) for a batch of tube masks.

    Returns ``keep`` (B, Lk) and ``masked`` (B, Lm) long, sorted, with Lk + Lm = t*h*w.
    """
    t, h, w = grid
    keep, masked = [], []
    for _ in range(batch):
        spatial = block_mask(h, w, ratio, scale, aspect, generator)  # (h, w)
        tube = spatial.flatten().repeat(t)  # (t*h*w,): same cells in every frame
        masked.append(tube.nonzero()[:, 0])
        keep.append((~tube).nonzero()[:, 0])
    return torch.stack(keep), torch.stack(masked)
