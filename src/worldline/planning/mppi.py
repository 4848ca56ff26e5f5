"""Model-predictive path integral control (Williams et al. 2017): Gaussian perturbations of the
current plan, averaged with weights exp(-cost / temperature). Costs are rescaled to [0, 1] per
iteration, so one temperature works whatever the scale of the embedding distance."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from worldline.planning.common import ActionBox, Planner, expand_state
from worldline.planning.objectives import GoalCost


@dataclasses.dataclass
class MPPI(Planner):
    samples: int = 256
    iterations: int = 4
    noise_std: float = 0.4  # perturbation std in normalised units
    temperature: float = 0.05  # on costs rescaled to [0, 1]: lower is greedier
    decay: float = 0.7  # noise std shrinks by this factor each iteration
    cost: GoalCost = dataclasses.field(default_factory=GoalCost)
    seed: int | None = None

    def __post_init__(self):
        if self.samples < 2 or self.iterations < 1:
            raise ValueError(f"MPPI needs samples >= 2 and iterations >= 1, got {self.samples=} {self.iterations=}")
        if self.temperature <= 0 or self.noise_std <= 0:
            raise ValueError(f"temperature and noise_std must be > 0, got {self.temperature=} {self.noise_std=}")

    continuous_only = "MPPI"

    @torch.no_grad()
    def search(self, world_model, state, goal_z: Tensor, horizon: int, init: Tensor | None, box: ActionBox, gen) -> Tensor:
        many = expand_state(state, self.samples)
        mean = torch.zeros(horizon, box.dim) if init is None else box.to_unit(init[0].float().cpu())
        std = self.noise_std
        for _ in range(self.iterations):
            u = (mean + std * torch.randn(self.samples, horizon, box.dim, generator=gen)).clamp(-1, 1)
            u[0] = mean
            cost = self.cost.score(world_model, many, box.to_env(u.to(goal_z.device)), goal_z).cpu()
            scaled = (cost - cost.min()) / (cost.max() - cost.min()).clamp_min(1e-12)
            w = torch.softmax(-scaled / self.temperature, dim=0)  # (S,)
            mean = (w[:, None, None] * u).sum(0)
            std *= self.decay
        return box.to_env(mean)[None].to(goal_z.device)
