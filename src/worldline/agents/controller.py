"""C of V-M-C: a linear controller on a world model's state features, trained by CMA-ES in the dream.

The controller maps features f (B, F) to action features: ``tanh(W f + b)`` for a box (the world
model's [-1, 1] scaling) or ``one_hot(argmax(W f + b))`` for a discrete space. Its few hundred
parameters are one flat vector, which CMA-ES (Hansen's ``cma`` package) searches: each generation,
every candidate drives ``rollouts`` dreams from real start states for ``horizon`` steps in one batch,
and its fitness is the dream's predicted return (rewards weighted by the chance the episode is still
running). Any world model with ``dream_step``/``predict_reward``/``predict_continue`` and a dataclass
state of tensors works (``rssm`` and ``vmc``). A ``reward_fn(frames, action_feats, next_frames) -> (B,)``
on the decoded dream frames (``world_model.decode_state``) replaces a reward head that does not see
what pays (the issue's "user-supplied reward function").
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from worldline.core.errors import WorldlineError


class LinearController:
    """``W (A, F)`` and ``b (A,)`` packed in one flat vector; holds no optimiser state."""

    def __init__(self, feat_dim: int, action_dim: int, kind: str):
        if kind not in ("discrete", "continuous"):
            raise WorldlineError(f"a controller needs a discrete or continuous action space, got {kind!r}")
        self.feat_dim, self.action_dim, self.kind = feat_dim, action_dim, kind
        self.params = np.zeros(self.size, np.float64)

    @property
    def size(self) -> int:
        return self.action_dim * (self.feat_dim + 1)

    def unpack(self, params: np.ndarray | Tensor) -> tuple[Tensor, Tensor]:
        """(P, size) or (size,) -> W (P, A, F), b (P, A)."""
        p = torch.as_tensor(np.asarray(params), dtype=torch.float32).reshape(-1, self.size)
        A, Fd = self.action_dim, self.feat_dim
        return p[:, : A * Fd].reshape(-1, A, Fd), p[:, A * Fd :]

    def act(self, feat: Tensor, params: np.ndarray | None = None, group: int = 1) -> Tensor:
        """Action features (B, A) for features (B, F); with ``params`` (P, size), rows are split into
        P consecutive groups of ``group`` rows, each driven by its own candidate."""
        W, b = self.unpack(self.params if params is None else params)
        W = W.repeat_interleave(group, 0)  # (B, A, F)
        b = b.repeat_interleave(group, 0)  # (B, A)
        out = torch.einsum("baf,bf->ba", W, feat.float()) + b
        if self.kind == "discrete":
            return F.one_hot(out.argmax(-1), self.action_dim).float()
        return torch.tanh(out)


def repeat_state(state, n: int):
    """Each row of a dataclass state of tensors repeated ``n`` times (row-major)."""
    return type(state)(**{f.name: getattr(state, f.name).repeat_interleave(n, 0) for f in dataclasses.fields(state)})


def tile_state(state, n: int):
    """The whole batch of a state stacked ``n`` times: candidate i gets rows [i*B, (i+1)*B)."""
    return type(state)(**{f.name: getattr(state, f.name).repeat(n, *[1] * (getattr(state, f.name).ndim - 1))
                          for f in dataclasses.fields(state)})


RewardFn = Callable[[Tensor, Tensor, Tensor], Tensor]


@torch.no_grad()
def dream_fitness(world_model, controller: LinearController, params: np.ndarray, starts, horizon: int,
                  reward_fn: RewardFn | None = None) -> np.ndarray:
    """Mean predicted return (P,) of each candidate over the B start states, all in one batch; with
    ``reward_fn`` the rewards come from the decoded frames, episode ends still from the continue head."""
    P, B = len(params), starts.feat.shape[0]
    state = tile_state(starts, P)  # (P*B, ...)
    alive = torch.ones(P * B)
    total = torch.zeros(P * B)
    frames = world_model.decode_state(state) if reward_fn is not None else None
    for _ in range(horizon):
        action = controller.act(state.feat, params, group=B)
        state = world_model.dream_step(state, action)
        if reward_fn is None:
            total += alive * world_model.predict_reward(state.feat)
        else:
            frames, previous = world_model.decode_state(state), frames
            total += alive * reward_fn(previous, action, frames)
        alive = alive * world_model.predict_continue(state.feat)
    return total.reshape(P, B).mean(1).numpy()


@dataclasses.dataclass
class CMAESConfig:
    generations: int = 50
    popsize: int = 16  # candidates per generation (the paper: 64 on CarRacing)
    rollouts: int = 16  # dream start states each candidate is scored on (the paper: 16)
    horizon: int = 100  # dream steps per rollout
    sigma0: float = 0.1  # initial search step on the controller's parameters
    seed: int = 0

    def __post_init__(self):
        if min(self.generations, self.popsize, self.rollouts, self.horizon) < 1 or self.popsize < 2:
            raise ValueError(f"generations, rollouts, horizon >= 1 and popsize >= 2 needed, got {self}")
        if self.sigma0 <= 0:
            raise ValueError(f"sigma0 must be > 0, got {self.sigma0=}")


def train_controller(world_model, controller: LinearController, sample_starts: Callable[[int, int], object],
                     config: CMAESConfig, log: Callable[[dict], None] | None = None,
                     reward_fn: RewardFn | None = None) -> list[dict]:
    """CMA-ES on ``controller`` inside the dream; ``sample_starts(n, generation)`` gives n start states.

    Each generation scores all candidates on the same starts (common random numbers, so fitness
    differences come from the candidates) and keeps the best mean ever seen in ``controller.params``.
    Returns one log row per generation.
    """
    import cma

    es = cma.CMAEvolutionStrategy(controller.params.copy(), config.sigma0,
                                  {"popsize": config.popsize, "seed": config.seed + 1, "verbose": -9})
    best, history = -np.inf, []
    torch.manual_seed(config.seed)
    for g in range(config.generations):
        t0 = time.perf_counter()
        starts = sample_starts(config.rollouts, g)
        candidates = np.asarray(es.ask())
        fitness = dream_fitness(world_model, controller, candidates, starts, config.horizon, reward_fn)
        es.tell(list(candidates), list(-fitness))  # cma minimises
        mean_fit = float(dream_fitness(world_model, controller, es.mean[None], starts, config.horizon, reward_fn)[0])
        if mean_fit > best:
            best, controller.params = mean_fit, np.asarray(es.mean, np.float64).copy()
        row = {"generation": g + 1, "best": float(fitness.max()), "mean_candidate": float(fitness.mean()),
               "distribution_mean": mean_fit, "sigma": float(es.sigma), "seconds": time.perf_counter() - t0}
        history.append(row)
        if log is not None:
            log(row)
    return history
