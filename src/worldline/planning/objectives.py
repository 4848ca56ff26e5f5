"""Goal costs: how far a predicted latent trajectory ends from a goal embedding."""

from __future__ import annotations

import dataclasses

from torch import Tensor

from worldline.core.errors import WorldlineError


@dataclasses.dataclass
class GoalCost:
    """``cost(z_traj (N, H, ...), goal (1 | N, ...)) -> (N,)``.

    The distance of the last predicted step to the goal (V-JEPA 2-AC, DINO-WM), plus ``path_weight``
    times the mean distance of all steps, which rewards getting close early and breaks ties between
    plans that end equally far. L1 is what V-JEPA 2 plans with; L2 (mean squared) is smoother.
    """

    kind: str = "l1"  # l1 or l2
    path_weight: float = 0.0

    def __post_init__(self):
        if self.kind not in ("l1", "l2"):
            raise ValueError(f"goal cost kind must be l1 or l2, got {self.kind=}")
        if self.path_weight < 0:
            raise ValueError(f"path_weight must be >= 0, got {self.path_weight=}")

    def distance(self, z: Tensor, goal: Tensor) -> Tensor:
        """Per-item distance (N,) between ``z`` (N, ...) and ``goal`` (1 | N, ...)."""
        if tuple(goal.shape[1:]) != tuple(z.shape[1:]):
            raise WorldlineError(f"goal embedding has shape {tuple(goal.shape[1:])}, the model predicts {tuple(z.shape[1:])}")
        d = z - goal
        d = d.abs() if self.kind == "l1" else d.square()
        return d.flatten(1).mean(1)

    def __call__(self, z_traj: Tensor, goal: Tensor) -> Tensor:
        if z_traj.dim() < 2 or z_traj.shape[1] < 1:
            raise WorldlineError(f"a latent trajectory must be (N, H >= 1, ...), got {tuple(z_traj.shape)}")
        if goal.dim() == z_traj.dim():  # (1|N, 1, ...) goal given as a one-frame trajectory
            goal = goal[:, -1]
        cost = self.distance(z_traj[:, -1], goal)
        if self.path_weight:
            H = z_traj.shape[1]
            steps = sum(self.distance(z_traj[:, t], goal) for t in range(H)) / H
            cost = cost + self.path_weight * steps
        return cost
