"""Does an encoder see the scene? Two cheap checks of frozen embeddings against the true env state.

- ``channel_spread``: per-channel standard deviation across frames, averaged over channels and
  tokens. A collapsed JEPA encoder maps every frame to nearly the same tokens (spread near 0), and a
  planner's goal cost is then flat.
- ``linear_probe_r2``: how much of a state variable (agent or block position, fingertip position)
  a ridge regression reads off the flattened embeddings, as held-out R^2 per target column. A
  planner can only steer what the embedding encodes, so this bounds what planning can reach.

``collect_states`` plays a built-in env with a scripted policy and returns frames with the state
columns the planning benchmark's success test reads.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from worldline.core.errors import WorldlineError


def channel_spread(z: Tensor) -> float:
    """Mean over channels (and tokens) of the std across frames; ``z`` is (n, ..., D) with n frames."""
    if z.shape[0] < 2:
        raise WorldlineError(f"channel_spread needs at least 2 frames, got {z.shape[0]}")
    return float(z.float().std(dim=0).mean())


def linear_probe_r2(features: np.ndarray | Tensor, targets: np.ndarray | Tensor, ridge: float = 1e-2,
                    test_fraction: float = 0.3, seed: int = 0, groups: np.ndarray | None = None) -> np.ndarray:
    """Held-out R^2 (one per target column) of a ridge regression from ``features`` (n, F) to ``targets`` (n, K).

    Features are standardised on the training split (so ``ridge`` means the same at any feature scale);
    R^2 = 1 - SSE / SST on the test split, so 0 is "predicts the mean", 1 is exact, and it can go negative.
    ``groups`` (n,) keeps each group (an episode) whole on one side of the split: frames of one episode
    share what never moves in it, which a row split would let the probe look up rather than read."""
    x = torch.as_tensor(np.asarray(features), dtype=torch.float64).flatten(1)
    y = torch.as_tensor(np.asarray(targets), dtype=torch.float64)
    if y.dim() == 1:
        y = y[:, None]
    n = x.shape[0]
    if n != y.shape[0] or n < 10:
        raise WorldlineError(f"linear probe needs >= 10 paired rows, got features {n} and targets {y.shape[0]}")
    gen = torch.Generator().manual_seed(seed)
    if groups is None:
        perm = torch.randperm(n, generator=gen)
        n_test = max(2, int(round(n * test_fraction)))
        test, train = perm[:n_test], perm[n_test:]
    else:
        groups = np.asarray(groups)
        if groups.shape != (n,):
            raise WorldlineError(f"groups must be one label per row ({n}), got shape {groups.shape}")
        names = np.unique(groups)
        if len(names) < 2:
            raise WorldlineError("a grouped linear probe needs at least 2 groups")
        pick = names[torch.randperm(len(names), generator=gen).numpy()[: max(1, int(round(len(names) * test_fraction)))]]
        held = torch.from_numpy(np.isin(groups, pick))
        test, train = held.nonzero()[:, 0], (~held).nonzero()[:, 0]
    mu, sd = x[train].mean(0), x[train].std(0).clamp_min(1e-8)
    xs = (x - mu) / sd
    ym = y[train].mean(0)
    xt, yt = xs[train], y[train] - ym
    # dual form when there are fewer rows than features: w = X^T (X X^T + l I)^-1 y
    if xt.shape[0] < xt.shape[1]:
        gram = xt @ xt.T + ridge * xt.shape[1] * torch.eye(xt.shape[0], dtype=xt.dtype)
        w = xt.T @ torch.linalg.solve(gram, yt)
    else:
        gram = xt.T @ xt + ridge * xt.shape[1] * torch.eye(xt.shape[1], dtype=xt.dtype)
        w = torch.linalg.solve(gram, xt.T @ yt)
    pred = xs[test] @ w + ym
    sse = ((pred - y[test]) ** 2).sum(0)
    sst = ((y[test] - y[test].mean(0)) ** 2).sum(0).clamp_min(1e-12)
    return (1 - sse / sst).numpy()


def collect_states(env: str, frames: int, policy: str = "expert", resolution: int = 64, seed: int = 0,
                   episode_steps: int = 50) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """``frames`` frames (n, H, W, 3) uint8 of ``env`` under ``policy`` with the state columns the
    planning success test reads: pusht agent x, y, block x, y (px); reacher fingertip x, y (m), then
    the target's x, y (m), which never moves within an episode: an embedding that encodes it better
    than the fingertip has spent itself on the scene rather than on what the actions move. The last
    array gives each frame's episode (for ``linear_probe_r2(groups=...)``)."""
    from worldline.envs.policies import make_policy
    from worldline.eval.planning import PlanningWorld

    world = PlanningWorld(env, resolution)
    pics, states, episodes = [], [], []
    try:
        episode = 0
        while len(pics) < frames:
            obs, info = world.env.reset(seed=seed + episode)
            pol = make_policy(policy, world.env, seed + episode)
            if world.arm:
                obs = world.env.unwrapped._get_obs()
            for _ in range(episode_steps):
                obs, _, term, trunc, info = world.env.step(pol(obs, info))
                pics.append(world.env.render())
                episodes.append(episode)
                if world.name == "pusht":
                    states.append(world.get_state()[:4])
                else:
                    u = world.env.unwrapped
                    states.append(np.concatenate([u.get_body_com("fingertip")[:2], u.get_body_com("target")[:2]]))
                if term or trunc or len(pics) >= frames:
                    break
            episode += 1
    finally:
        world.close()
    names = ["agent_x", "agent_y", "block_x", "block_y"] if env == "pusht" else ["tip_x", "tip_y", "target_x", "target_y"]
    return np.stack(pics), np.stack(states).astype(np.float64), names, np.array(episodes)
