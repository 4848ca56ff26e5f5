"""Config of the deterministic latent predictor (the baseline every real family has to beat)."""

from __future__ import annotations

import dataclasses

from worldline.models.latent import LatentWorldModelConfig


@dataclasses.dataclass
class DeterministicConfig(LatentWorldModelConfig):
    context_frames: int = 4  # latents stacked on channels; 4 frames give velocity and acceleration
    train_horizon: int = 4  # predicted frames per training window (window = context_frames + train_horizon)
    rollout_steps: int = 4  # steps fed back on the model's own predictions in the loss, so long rollouts stay stable
    rollout_weight: float = 1.0  # weight of the rollout loss next to the teacher-forced one
    patch: int = 2  # latents are cut into patch x patch cells stacked on channels: 4x fewer positions, so a CPU budget buys depth
    width: int = 64  # channels of the first U-Net level
    channel_mult: tuple[int, ...] = (1, 2)  # channels per level (x width); one entry = a plain ResNet, no downsampling
    blocks_per_level: int = 2  # residual blocks per level on the way down (and one per level on the way up)
    action_dim: int = 128  # action embedding size fed to every block's FiLM
    correction_gate: float = 0.1  # detail of the last real frame is kept where a prediction stays within ~this of it ([-1, 1] units); 0 disables
    coord_channels: bool = True  # x/y grids as input so absolute actions (e.g. PushT targets) can be mapped to places

    def __post_init__(self):
        super().__post_init__()
        if self.context_frames < 1:
            raise ValueError(f"context_frames must be >= 1, got {self.context_frames=}")
        if self.train_horizon < 1:
            raise ValueError(f"train_horizon must be >= 1, got {self.train_horizon=}")
        if not 0 <= self.rollout_steps <= self.train_horizon:
            raise ValueError(f"rollout_steps must be in [0, train_horizon], got {self.rollout_steps=} {self.train_horizon=}")
        if self.correction_gate < 0:
            raise ValueError(f"correction_gate must be >= 0, got {self.correction_gate=}")
        if self.rollout_weight < 0:
            raise ValueError(f"rollout_weight must be >= 0, got {self.rollout_weight=}")
        if self.width < 8 or not self.channel_mult or min(self.channel_mult) < 1:
            raise ValueError(f"width must be >= 8 and channel_mult positive, got {self.width=} {self.channel_mult=}")
        if self.patch < 1:
            raise ValueError(f"patch must be >= 1, got {self.patch=}")
        if self.blocks_per_level < 1:
            raise ValueError(f"blocks_per_level must be >= 1, got {self.blocks_per_level=}")
