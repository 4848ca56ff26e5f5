"""Gradient-based planning: Adam on the action sequence, back-propagating the goal cost through the
world model's ``imagine`` (which must be differentiable in the actions). Several starts run in one
batch and the best is kept, since the cost landscape of a learned model is far from convex."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from worldline.planning.common import ActionBox, Planner, expand_state
from worldline.planning.objectives import GoalCost


@dataclasses.dataclass
class GradientPlanner(Planner):
    starts: int = 16  # parallel initial plans (the warm start, if any, is one of them)
    steps: int = 30  # Adam steps
    lr: float = 0.1  # in normalised action units
    init_std: float = 0.5
    cost: GoalCost = dataclasses.field(default_factory=lambda: GoalCost(kind="l2"))  # smooth gradients
    seed: int | None = None

    def __post_init__(self):
        if self.starts < 1 or self.steps < 1 or self.lr <= 0:
            raise ValueError(f"need starts >= 1, steps >= 1, lr > 0, got {self.starts=} {self.steps=} {self.lr=}")

    continuous_only = "the gradient planner"

    def search(self, world_model, state, goal_z: Tensor, horizon: int, init: Tensor | None, box: ActionBox, gen) -> Tensor:
        u0 = self.init_std * torch.randn(self.starts, horizon, box.dim, generator=gen)
        if init is not None:
            u0[0] = box.to_unit(init[0].float().cpu())
        else:
            u0[0] = 0
        # tanh keeps every iterate inside the box with a gradient everywhere (clamping would zero it)
        x = torch.atanh(u0.clamp(-0.999, 0.999)).to(goal_z.device).requires_grad_(True)
        many = expand_state(state, self.starts)
        m, v = torch.zeros_like(x), torch.zeros_like(x)
        b1, b2 = 0.9, 0.999
        with torch.enable_grad():
            for i in range(1, self.steps + 1):
                cost = self.cost.score(world_model, many, box.to_env(torch.tanh(x)), goal_z)
                (grad,) = torch.autograd.grad(cost.sum(), x)  # leaves the model's .grad untouched
                with torch.no_grad():  # Adam (Kingma & Ba 2015), written out: one tensor needs no optimiser object
                    m.mul_(b1).add_(grad, alpha=1 - b1)
                    v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
                    x -= self.lr * (m / (1 - b1**i)) / ((v / (1 - b2**i)).sqrt() + 1e-8)
        with torch.no_grad():
            u = torch.tanh(x)
            cost = self.cost.score(world_model, many, box.to_env(u), goal_z)
            return box.to_env(u[cost.argmin()])[None]
