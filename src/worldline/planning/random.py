"""The random-action planner: the floor a planner must clear to show the model is worth anything."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from worldline.planning.common import ActionBox, check_horizon, state_batch


@dataclasses.dataclass
class RandomPlanner:
    seed: int | None = None

    def plan(self, world_model, state, goal_z: Tensor, horizon: int, init: Tensor | None = None) -> Tensor:
        horizon = check_horizon(horizon)
        box = ActionBox(world_model.action_spec)
        gen = None if self.seed is None else torch.Generator().manual_seed(self.seed)
        B = state_batch(state)
        if box.discrete:
            return torch.randint(0, box.n, (B, horizon, 1), generator=gen).float()
        return box.to_env(torch.rand(B, horizon, box.dim, generator=gen) * 2 - 1)
