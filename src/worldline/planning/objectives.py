"""Goal costs: how far a predicted latent trajectory ends from a goal embedding (and, for a model
that reads proprioception, from the robot's readings at the goal: DINO-WM's objective)."""

from __future__ import annotations

import dataclasses

from torch import Tensor

from worldline.core.errors import WorldlineError


@dataclasses.dataclass
class Goal:
    """A goal embedding with the robot's proprioception at the goal (standardised by the model, as its
    ``normalize_proprio`` does). Planners treat it as they treat a goal tensor: it has a batch
    ``shape``, a ``device`` and slices along the batch."""

    z: Tensor  # (1 | B, ...) the goal picture's embedding
    proprio: Tensor  # (1 | B, P)

    def __post_init__(self):
        if self.proprio.dim() != 2 or self.proprio.shape[0] != self.z.shape[0]:
            raise WorldlineError(f"goal proprioception must be ({self.z.shape[0]}, P), got {tuple(self.proprio.shape)}")

    @property
    def shape(self):
        return self.z.shape

    @property
    def device(self):
        return self.z.device

    def __getitem__(self, index) -> "Goal":
        return Goal(self.z[index], self.proprio[index])


@dataclasses.dataclass
class GoalCost:
    """``cost(z_traj (N, H, ...), goal (1 | N, ...)) -> (N,)``.

    The distance of the last predicted step to the goal (V-JEPA 2-AC, DINO-WM), plus ``path_weight``
    times the mean distance of all steps, which rewards getting close early and breaks ties between
    plans that end equally far. L1 is what V-JEPA 2 plans with; L2 (mean squared) is smoother.
    """

    kind: str = "l1"  # l1 or l2
    path_weight: float = 0.0
    proprio_weight: float = 0.0  # with a Goal: weight of the same distance between the predicted and the goal proprioception (DINO-WM's alpha)

    def __post_init__(self):
        if self.kind not in ("l1", "l2"):
            raise ValueError(f"goal cost kind must be l1 or l2, got {self.kind=}")
        if self.path_weight < 0 or self.proprio_weight < 0:
            raise ValueError(f"path_weight and proprio_weight must be >= 0, got {self.path_weight=} {self.proprio_weight=}")

    def score(self, world_model, state, actions: Tensor, goal: "Tensor | Goal") -> Tensor:
        """Cost (N,) of imagining ``actions`` (N, H, A) from ``state`` (batch N): what planners call.
        A :class:`Goal` adds the proprioception term (the model must predict proprioception)."""
        if not isinstance(goal, Goal):
            return self(world_model.imagine(state, actions), goal)
        imagine = getattr(world_model, "imagine_proprio", None)
        if imagine is None or not getattr(world_model, "uses_proprio", False):
            raise WorldlineError(f"a goal with proprioception needs a model that predicts it; {type(world_model).__name__} does not")
        z, p = imagine(state, actions)
        cost = self(z, goal.z)
        return cost + self.proprio_weight * self(p, goal.proprio) if self.proprio_weight else cost

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
