"""What every planner shares: the action box in normalised units, and batching a model's state."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from worldline.core.contracts import ActionSpec, State
from worldline.core.errors import WorldlineError


class ActionBox:
    """Continuous actions are searched in normalised units u in [-1, 1]^A and mapped to the env's box
    (unbounded dimensions are taken as [-1, 1]); discrete ones are indices 0..n-1."""

    def __init__(self, spec: ActionSpec):
        if spec.kind == "none":
            raise WorldlineError("this world model takes no actions, so there is nothing to plan")
        self.spec = spec
        self.discrete = spec.kind == "discrete"
        self.dim = spec.dim
        self.n = spec.n
        if not self.discrete:
            low = torch.tensor([-1.0 if x is None else float(x) for x in (spec.low or [None] * spec.dim)])
            high = torch.tensor([1.0 if x is None else float(x) for x in (spec.high or [None] * spec.dim)])
            bad = ~(torch.isfinite(low) & torch.isfinite(high) & (high > low))
            low, high = torch.where(bad, -torch.ones_like(low), low), torch.where(bad, torch.ones_like(high), high)
            self.center, self.half = (high + low) / 2, (high - low) / 2

    def to_env(self, u: Tensor) -> Tensor:
        """Normalised (..., A) -> env units (discrete: indices pass through as floats)."""
        if self.discrete:
            return u.float()
        return self.center.to(u) + self.half.to(u) * u.clamp(-1, 1)

    def to_unit(self, a: Tensor) -> Tensor:
        if self.discrete:
            return a.float()
        return ((a - self.center.to(a)) / self.half.to(a)).clamp(-1, 1)


def colored_noise(samples: int, steps: int, dim: int, beta: float, gen: torch.Generator | None = None) -> Tensor:
    """Gaussian noise (samples, steps, dim) of unit variance whose power spectrum over the steps falls
    as 1 / f^beta (iCEM, Pinneri et al. 2020): beta 0 is white, 2 is a random walk's smoothness.
    iCEM found smooth samples search a controller's actions, which are coherent in time, better."""
    if beta == 0:
        return torch.randn(samples, steps, dim, generator=gen)
    freqs = torch.fft.rfftfreq(steps)
    freqs[0] = 1.0 / steps  # the lowest frequency the window can hold, so the constant part stays finite
    scale = freqs ** (-beta / 2)
    re = torch.randn(samples, dim, len(freqs), generator=gen)
    im = torch.randn(samples, dim, len(freqs), generator=gen)
    im[..., 0] = 0  # the constant and (for even lengths) the alternating components are real
    if steps % 2 == 0:
        im[..., -1] = 0
    x = torch.fft.irfft(torch.complex(re, im) * scale, n=steps)  # (samples, dim, steps)
    # Var(x_n) = (s_0^2 + 4 sum_mid s_k^2 + s_nyq^2) / steps^2 for the components drawn above
    ends = scale[0] ** 2 + (scale[-1] ** 2 if steps % 2 == 0 else 0.0)
    mid = scale[1:-1] if steps % 2 == 0 else scale[1:]
    var = (ends + 4 * (mid**2).sum()) / steps**2
    return (x / var.sqrt()).transpose(1, 2)


def _fields(state: State) -> dict:
    if not dataclasses.is_dataclass(state):
        raise WorldlineError(f"{type(state).__name__} is not a dataclass, so planners cannot batch it")
    return {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}


def expand_state(state: State, n: int) -> State:
    """A batch-1 state repeated ``n`` times along the batch axis (views, no copies), for scoring
    ``n`` candidate action sequences in one ``imagine`` call. States may provide ``expand(n)``."""
    if hasattr(state, "expand"):
        return state.expand(n)
    out = {}
    for name, value in _fields(state).items():
        if isinstance(value, Tensor):
            if value.shape[0] != 1:
                raise WorldlineError(f"expand_state needs a batch-1 state, {name} has batch {value.shape[0]}")
            value = value.expand(n, *value.shape[1:])
        out[name] = value
    return type(state)(**out)


def select_state(state: State, i: int) -> State:
    """Element ``i`` of a batched state, as a batch-1 state."""
    return type(state)(**{k: v[i : i + 1] if isinstance(v, Tensor) else v for k, v in _fields(state).items()})


def state_batch(state: State) -> int:
    for value in _fields(state).values():
        if isinstance(value, Tensor):
            return value.shape[0]
    raise WorldlineError(f"{type(state).__name__} holds no tensor")


def check_goal(goal_z: Tensor, batch: int) -> Tensor:
    if goal_z.shape[0] not in (1, batch):
        raise WorldlineError(f"goal_z has batch {goal_z.shape[0]}, the state has {batch}")
    return goal_z


def per_item(planner, world_model, state: State, goal_z: Tensor, horizon: int, init: Tensor | None) -> Tensor | None:
    """Plan each element of a batched state on its own; None when the batch is 1."""
    B = state_batch(state)
    if B == 1:
        return None
    check_goal(goal_z, B)
    plans = []
    for i in range(B):
        g = goal_z[i : i + 1] if goal_z.shape[0] == B else goal_z
        plans.append(planner.plan(world_model, select_state(state, i), g, horizon, None if init is None else init[i : i + 1]))
    return torch.cat(plans)


class Planner:
    """What every search planner does before searching: check the horizon, plan a batched state one
    element at a time, check the goal, build the action box and the seeded generator. Subclasses
    set ``continuous_only`` (their name, for the error) if they cannot search discrete actions, and
    implement ``search(world_model, state, goal_z, horizon, init, box, gen) -> (1, horizon, A)``."""

    continuous_only: str = ""

    def plan(self, world_model, state, goal_z: Tensor, horizon: int, init: Tensor | None = None) -> Tensor:
        """Actions (B, horizon, A) in env units; ``init`` (B, horizon, A) warm-starts the search."""
        horizon = check_horizon(horizon)
        batched = per_item(self, world_model, state, goal_z, horizon, init)
        if batched is not None:
            return batched
        check_goal(goal_z, 1)
        box = ActionBox(world_model.action_spec)
        if box.discrete and self.continuous_only:
            raise WorldlineError(f"{self.continuous_only} needs continuous actions; use --planner cem for discrete ones")
        gen = None if self.seed is None else torch.Generator().manual_seed(self.seed)
        return self.search(world_model, state, goal_z, horizon, init, box, gen)


def check_horizon(horizon: int) -> int:
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise WorldlineError(f"planning horizon must be an integer >= 1, got {horizon!r}")
    return horizon
