"""Cross-entropy method (Rubinstein 1999) as DINO-WM and V-JEPA 2-AC plan with it, plus the iCEM
refinements that matter at small sample counts (Pinneri et al. 2020): the new distribution is
smoothed with the old one (momentum), and the best samples of an iteration are carried into the next
(elites kept), so a good plan found early is never lost. Discrete action spaces get categorical CEM:
one distribution over the n actions per step, refitted to the elites' frequencies.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from worldline.core.errors import WorldlineError
from worldline.planning.common import ActionBox, Planner, colored_noise, expand_state
from worldline.planning.objectives import GoalCost


@dataclasses.dataclass
class CEM(Planner):
    samples: int = 256  # action sequences scored per iteration (one batched imagine call)
    iterations: int = 4
    elites: int = 32  # best samples the distribution is refitted to
    keep_elites: int = 8  # best samples of an iteration re-scored in the next (iCEM)
    momentum: float = 0.1  # new = momentum * old + (1 - momentum) * elite statistics
    init_std: float = 0.6  # in normalised units (the box is [-1, 1])
    min_std: float = 0.02  # floor, so the search never freezes before the last iteration
    noise_beta: float = 0.0  # samples' noise falls as 1/f^beta over the env steps (iCEM's colored noise): 0 white, 2 smooth
    cost: GoalCost = dataclasses.field(default_factory=GoalCost)
    seed: int | None = None  # None: torch's global generator

    def __post_init__(self):
        if self.samples < 2 or self.iterations < 1:
            raise ValueError(f"CEM needs samples >= 2 and iterations >= 1, got {self.samples=} {self.iterations=}")
        if not 1 <= self.elites <= self.samples:
            raise ValueError(f"elites must be in 1..samples, got {self.elites=} {self.samples=}")
        if not 0 <= self.keep_elites <= self.elites:
            raise ValueError(f"keep_elites must be in 0..elites, got {self.keep_elites=}")
        if self.init_std <= 0 or self.min_std < 0:
            raise ValueError(f"need init_std > 0 and min_std >= 0, got {self.init_std=} {self.min_std=}")
        if not 0 <= self.noise_beta <= 6:
            raise ValueError(f"noise_beta must be in [0, 6] (0 white, 2 smooth), got {self.noise_beta=}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum=}")

    @torch.no_grad()
    def search(self, world_model, state, goal_z: Tensor, horizon: int, init: Tensor | None, box: ActionBox, gen) -> Tensor:
        """``init`` centres the first distribution."""
        many = expand_state(state, self.samples)

        def score(u: Tensor) -> Tensor:
            return self.cost.score(world_model, many, box.to_env(u.to(goal_z.device)), goal_z)

        if box.discrete:
            return self._categorical(box, score, horizon, init, gen)[None]
        mean = torch.zeros(horizon, box.dim) if init is None else box.to_unit(init[0].float().cpu())
        std = torch.full((horizon, box.dim), self.init_std)
        kept = None
        # a model step may be several env steps (frameskip k, actions concatenated oldest first):
        # the noise is coloured over the env steps, so it is smooth across the model steps too
        k = int(getattr(getattr(world_model, "config", None), "frameskip", 1) or 1)
        k = k if box.dim % k == 0 else 1
        for _ in range(self.iterations):
            noise = colored_noise(self.samples, horizon * k, box.dim // k, self.noise_beta, gen).reshape(self.samples, horizon, box.dim)
            u = (mean + std * noise).clamp(-1, 1)
            u[0] = mean  # the current mean is always a candidate
            if kept is not None:
                u[1 : 1 + len(kept)] = kept
            cost = score(u).cpu()
            order = cost.argsort()
            elite = u[order[: self.elites]]
            kept = elite[: self.keep_elites]
            mean = self.momentum * mean + (1 - self.momentum) * elite.mean(0)
            std = (self.momentum * std + (1 - self.momentum) * elite.std(0)).clamp_min(self.min_std)
        return box.to_env(mean)[None].to(goal_z.device)

    def _categorical(self, box: ActionBox, score, horizon: int, init: Tensor | None, gen) -> Tensor:
        probs = torch.full((horizon, box.n), 1.0 / box.n)
        if init is not None:  # lean towards the warm start without excluding anything
            probs = 0.5 * probs + 0.5 * torch.nn.functional.one_hot(init[0, :, 0].long().cpu(), box.n).float()
        best, best_cost = None, float("inf")
        for _ in range(self.iterations):
            idx = torch.multinomial(probs, self.samples, replacement=True, generator=gen).T  # (S, H)
            if best is not None:
                idx[0] = best
            cost = score(idx[..., None].float()).cpu()
            order = cost.argsort()
            if cost[order[0]] < best_cost:
                best, best_cost = idx[order[0]].clone(), float(cost[order[0]])
            elite = idx[order[: self.elites]]  # (E, H)
            freq = torch.nn.functional.one_hot(elite, box.n).float().mean(0)  # (H, n)
            probs = self.momentum * probs + (1 - self.momentum) * freq
            probs = (probs + 1e-3) / (probs + 1e-3).sum(-1, keepdim=True)  # never rule an action out for good
        if best is None:
            raise WorldlineError("categorical CEM scored no samples")
        return best[:, None].float()
