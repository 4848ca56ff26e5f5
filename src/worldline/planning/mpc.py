"""Receding-horizon control: plan ``horizon`` steps, execute the first ``execute``, plan again from
what really happened. The previous plan, shifted by the executed steps, warm-starts the next search."""

from __future__ import annotations

import torch
from torch import Tensor

from worldline.core.errors import WorldlineError


class MPC:
    def __init__(self, planner, horizon: int, execute: int = 1, warm_start: bool = True):
        if horizon < 1 or not 1 <= execute <= horizon:
            raise WorldlineError(f"MPC needs horizon >= 1 and 1 <= execute <= horizon, got {horizon=} {execute=}")
        self.planner, self.horizon, self.execute, self.warm_start = planner, horizon, execute, warm_start
        self.plan: Tensor | None = None  # the last full plan (B, horizon, A)
        self.first: Tensor | None = None  # what warm-starts the first search after reset()

    def reset(self, init: Tensor | None = None) -> None:
        """Forget the last plan; ``init`` (B, horizon, A), if given, warm-starts the first search
        (a position-controlled robot's "stay where you are" is a better first guess than the
        middle of its action box)."""
        if init is not None and (init.dim() != 3 or init.shape[1] != self.horizon):
            raise WorldlineError(f"an initial plan must be (B, horizon={self.horizon}, A), got {tuple(init.shape)}")
        self.plan, self.first = None, init

    def act(self, world_model, state, goal_z: Tensor) -> Tensor:
        """The next ``execute`` actions (B, execute, A) towards ``goal_z`` from ``state``."""
        init = self.first if self.plan is None else None
        if self.warm_start and self.plan is not None:
            rest = self.plan[:, self.execute :]
            init = torch.cat([rest, rest[:, -1:].expand(-1, self.execute, -1)], dim=1) if rest.shape[1] else None
        self.plan = self.planner.plan(world_model, state, goal_z, self.horizon, init)
        return self.plan[:, : self.execute]
