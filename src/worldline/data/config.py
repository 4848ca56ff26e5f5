"""Where training data comes from and how it is split."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class DataConfig:
    path: str = ""  # worldline dataset directory (set by --data)
    camera: str = "observation.image"  # video feature to train on
    val_fraction: float = 0.1  # fraction of episodes held out for validation (split by episode)
    split_seed: int = 0  # seed of the episode split, so every stage agrees on held-out episodes
    stride: int = 1  # frame step inside a window (2 = every other frame)

    def __post_init__(self):
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction=}")
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride=}")
