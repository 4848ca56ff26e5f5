"""A small policy-gradient agent for any gymnasium env with vector observations: REINFORCE with a
per-step baseline (Williams 1992), behind ``worldline dream-agent``.

It is the "any gymnasium agent" of the DreamEnv floor: trained only inside
``DreamEnv(model, ..., observation="state")`` (rewards from the reward head, episode ends sampled
from the continue head), then run unchanged in the real env through ``FilteredEnv``. It knows
nothing of world models: it sees observations, actions and rewards.

Each update takes a batch of whole episodes; the advantage of step t is the discounted
return-to-go minus a baseline, scaled by the advantages' std. The baseline is a value of the
observation (``baseline="ridge"``: a ridge regression of the returns-to-go on the observations of
the previous ``window`` episodes, solved exactly each update, so it never lags the way a critic
trained by small gradient steps does while returns grow) or the mean return-to-go at step t over
the batch's episodes still running (``baseline="batch"``: blind to the state).
"""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path
from typing import Callable

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from worldline.agents.networks import Policy
from worldline.core.errors import WorldlineError
from worldline.core.io import atomic_dir, read_json, write_json
from worldline.models.rssm.networks import mlp


@dataclasses.dataclass
class ReinforceConfig:
    episodes: int = 2000  # training episodes in all (CartPole dreams: ~20 steps each, 2-3 CPU minutes)
    batch: int = 16  # episodes per update (and the per-step baseline's average without a value)
    lr: float = 3e-3  # Adam; measured in CartPole dreams: 1e-2 collapsed onto one action, 1e-3 had not converged after 2000 episodes
    gamma: float = 0.99  # discount of the return-to-go (CartPole's credit: about 100 steps back)
    hidden: int = 64  # 0: a linear policy (few parameters, like V-M-C's C); > 0: one hidden layer this wide
    entropy: float = 0.03  # weight of the entropy bonus: keeps both actions sampled while the value is still poor
    baseline: str = "ridge"  # "ridge" (value of the observation, least squares) or "batch" (per-step batch mean)
    lam: float = 0.95  # GAE lambda with the ridge value: 1 = returns-to-go minus the value; < 1 bootstraps (less variance, some bias; in CartPole dreams a seed that settled on a constant push at 1 learned at 0.95)
    window: int = 64  # episodes the ridge baseline is fitted on (the policy changes; older returns mislead)
    seed: int = 0

    def __post_init__(self):
        if self.episodes < 1 or self.batch < 1 or self.hidden < 0:
            raise ValueError(f"episodes, batch >= 1 and hidden >= 0 needed, got {self.episodes=} {self.batch=} {self.hidden=}")
        if not (self.lr > 0 and 0 < self.gamma <= 1 and self.entropy >= 0):
            raise ValueError(f"lr > 0, gamma in (0, 1] and entropy >= 0 needed, got {self.lr=} {self.gamma=} {self.entropy=}")
        if not 0 <= self.lam <= 1:
            raise ValueError(f"lam must be in [0, 1], got {self.lam=}")
        if self.baseline not in ("ridge", "batch") or self.window < 1:
            raise ValueError(f"baseline must be 'ridge' or 'batch' and window >= 1, got {self.baseline=} {self.window=}")


class PolicyNet(nn.Module):
    """Observation (B, F) -> a :class:`Policy` over a Discrete or Box space (a box as [-1, 1] features)."""

    def __init__(self, obs_dim: int, space: gym.Space, hidden: int = 0):
        super().__init__()
        if isinstance(space, gym.spaces.Discrete):
            self.kind, self.action_dim = "discrete", int(space.n)
        elif isinstance(space, gym.spaces.Box) and len(space.shape) == 1 and np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high)):
            self.kind, self.action_dim = "continuous", int(space.shape[0])
        else:
            raise WorldlineError(f"the reinforce agent needs a Discrete or bounded 1-d Box action space, got {space}")
        self.obs_dim, self.hidden, self.space = obs_dim, hidden, space
        out = self.action_dim * (1 if self.kind == "discrete" else 2)
        self.net = nn.Linear(obs_dim, out) if hidden == 0 else mlp(obs_dim, hidden, out, 1)
        last = self.net if hidden == 0 else self.net[-1]
        nn.init.zeros_(last.weight)  # start uniform (discrete) / centred with std ~0.9 (box): no initial preference
        nn.init.zeros_(last.bias)

    def forward(self, obs: Tensor) -> Policy:
        out = self.net(obs)
        if self.kind == "discrete":
            return Policy("discrete", logp=out.log_softmax(-1))
        mean, std = out.chunk(2, -1)
        return Policy("continuous", mean=torch.tanh(mean), std=0.1 + 0.9 * torch.sigmoid(std + 2.0))

    def to_env(self, action: Tensor):
        """A policy sample (1, A) -> the env's action (an int, or a float32 vector inside the box)."""
        if self.kind == "discrete":
            return int(action[0].argmax())
        low, high = self.space.low.astype(np.float32), self.space.high.astype(np.float32)
        a = action[0].clamp(-1, 1).numpy()
        return np.clip(low + (a + 1) / 2 * (high - low), low, high).astype(self.space.dtype)


def _obs(obs) -> Tensor:
    return torch.as_tensor(np.asarray(obs, np.float32).reshape(-1))[None]  # (1, F)


def train_reinforce(env: gym.Env, config: ReinforceConfig, log: Callable[[dict], None] | None = None) -> tuple[PolicyNet, list[float]]:
    """Train a policy on ``env`` (episode i reset with seed ``config.seed * 1_000_003 + i``); returns
    it and the return of every training episode."""
    space = env.observation_space
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
        raise WorldlineError(f"the reinforce agent needs a flat Box observation space, got {space}")
    torch.manual_seed(config.seed)
    policy = PolicyNet(space.shape[0], env.action_space, config.hidden)
    opt = torch.optim.Adam(policy.parameters(), lr=config.lr)
    returns, batch, history = [], [], collections.deque(maxlen=config.window)
    for episode in range(config.episodes):
        obs, _ = env.reset(seed=config.seed * 1_000_003 + episode)
        logps, ents, rewards, seen, done = [], [], [], [], False
        while not done:
            seen.append(_obs(obs))
            dist = policy(seen[-1])
            action = dist.sample()
            logps.append(dist.log_prob(action)[0])
            ents.append(dist.entropy()[0])
            obs, reward, terminated, truncated, _ = env.step(policy.to_env(action))
            rewards.append(float(reward))
            done = terminated or truncated
        returns.append(sum(rewards))
        batch.append(_Episode(torch.stack(logps), torch.stack(ents), torch.tensor(rewards), _returns_to_go(rewards, config.gamma),
                              torch.cat(seen), None if terminated else _obs(obs)))
        if len(batch) == config.batch or episode == config.episodes - 1:
            value = _ridge(history) if config.baseline == "ridge" and history else None
            loss = _loss(batch, config, value)
            history.extend((e.obs, e.returns) for e in batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if log is not None:
                log({"episodes": episode + 1, "mean_return": float(np.mean(returns[-len(batch):])), "loss": loss.item()})
            batch = []
    return policy.eval(), returns


@dataclasses.dataclass
class _Episode:
    logp: Tensor  # (T,) log-probability of each action taken
    entropy: Tensor  # (T,)
    rewards: Tensor  # (T,)
    returns: Tensor  # (T,) discounted returns-to-go
    obs: Tensor  # (T, F) observations the actions were taken at
    last_obs: Tensor | None  # (1, F) the observation a truncated episode stopped at (None: it terminated)


def _returns_to_go(rewards: list[float], gamma: float) -> Tensor:
    out, acc = np.zeros(len(rewards), np.float32), 0.0
    for t in reversed(range(len(rewards))):
        acc = rewards[t] + gamma * acc
        out[t] = acc
    return torch.from_numpy(out)


def _ridge(history, l2: float = 1.0) -> Callable[[Tensor], Tensor]:
    """The least-squares value ``obs (N, F) -> (N,)`` of the returns-to-go in ``history``."""
    x = torch.cat([obs for obs, _ in history]).double()
    x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)  # (N, F + 1): a bias column
    y = torch.cat([g for _, g in history]).double()
    w = torch.linalg.solve(x.T @ x + l2 * torch.eye(x.shape[1], dtype=x.dtype), x.T @ y)  # (F + 1,)
    return lambda obs: (obs.double() @ w[:-1] + w[-1]).float()


def _advantages(e: _Episode, value: Callable[[Tensor], Tensor], gamma: float, lam: float) -> Tensor:
    """GAE (Schulman et al. 2016) of one episode against ``value``; a truncated episode bootstraps
    from the value of where it stopped. At lam = 1 this is the return-to-go minus the value."""
    v = value(e.obs)  # (T,)
    end = value(e.last_obs) if e.last_obs is not None else v.new_zeros(1)
    if lam == 1:  # the same sum without the telescoping round-off
        return e.returns - v + end * gamma ** torch.arange(len(v), 0, -1, dtype=v.dtype)
    delta = e.rewards + gamma * torch.cat([v[1:], end]) - v
    out, acc = torch.zeros_like(delta), 0.0
    for t in reversed(range(len(delta))):
        acc = delta[t] + gamma * lam * acc
        out[t] = acc
    return out


def _loss(batch: list[_Episode], config: ReinforceConfig, value: Callable[[Tensor], Tensor] | None) -> Tensor:
    """REINFORCE against a value of the observation, or without one against the batch's per-step
    mean return-to-go."""
    steps = sum(len(e.returns) for e in batch)
    if value is not None:
        advantages = [_advantages(e, value, config.gamma, config.lam) for e in batch]
    else:
        T = max(len(e.returns) for e in batch)
        padded, alive = torch.zeros(len(batch), T), torch.zeros(len(batch), T)
        for i, e in enumerate(batch):
            padded[i, : len(e.returns)], alive[i, : len(e.returns)] = e.returns, 1
        baseline = padded.sum(0) / alive.sum(0).clamp(min=1)  # (T,)
        advantages = [e.returns - baseline[: len(e.returns)] for e in batch]
    scale = torch.cat(advantages).std() + 1e-6 if steps > 1 else torch.tensor(1.0)
    pg = sum((e.logp * a / scale).sum() for e, a in zip(batch, advantages)) / steps
    ent = sum(e.entropy.sum() for e in batch) / steps
    return -pg - config.entropy * ent


@torch.no_grad()
def run_policy(env: gym.Env, policy: PolicyNet | None, episodes: int, seed: int, explore: bool = False) -> list[float]:
    """Returns of ``episodes`` episodes, episode i reset with ``seed + i``: the policy's mode, samples
    from it (``explore``, under a torch seed of ``seed``) or, with ``policy=None``, uniform random
    actions (the action space seeded with ``seed + i``, as the Dreamer's random baseline)."""
    out = []
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for i in range(episodes):
            obs, _ = env.reset(seed=seed + i)
            env.action_space.seed(seed + i)
            total, done = 0.0, False
            while not done:
                if policy is None:
                    action = env.action_space.sample()
                else:
                    dist = policy(_obs(obs))
                    action = policy.to_env(dist.sample() if explore else dist.mode())
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                done = terminated or truncated
            out.append(total)
    return out


def save_policy(policy: PolicyNet, directory: str | Path) -> Path:
    from safetensors.torch import save_file

    space = policy.space
    meta = {"obs_dim": policy.obs_dim, "hidden": policy.hidden}
    if policy.kind == "discrete":
        meta["action_space"] = {"kind": "discrete", "n": policy.action_dim}
    else:
        meta["action_space"] = {"kind": "continuous", "low": space.low.tolist(), "high": space.high.tolist()}
    with atomic_dir(directory, overwrite=True) as tmp:
        write_json(tmp / "config.json", meta)
        save_file({k: v.contiguous() for k, v in policy.state_dict().items()}, str(tmp / "policy.safetensors"))
    return Path(directory)


def load_policy(directory: str | Path) -> PolicyNet:
    from safetensors.torch import load_file

    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise WorldlineError(f"{directory}: not a saved policy (no config.json)")
    meta = read_json(directory / "config.json")
    try:
        a = meta["action_space"]
        space = gym.spaces.Discrete(int(a["n"])) if a["kind"] == "discrete" else \
            gym.spaces.Box(np.array(a["low"], np.float32), np.array(a["high"], np.float32), dtype=np.float32)
        policy = PolicyNet(int(meta["obs_dim"]), space, int(meta["hidden"]))
    except KeyError as e:
        raise WorldlineError(f"{directory}/config.json: missing field {e.args[0]!r}") from None
    policy.load_state_dict(load_file(str(directory / "policy.safetensors")))
    return policy.eval()
