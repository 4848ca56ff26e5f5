"""Actor and critic networks of the imagination agent (they predict; training lives in imagination.py).

Both read a world model's state features (B, F). The actor gives a policy over the world model's
action features: a categorical with unimix for a discrete space (one-hot samples), or a normal with
tanh-bounded mean and std in [0.1, 1] for a box scaled to [-1, 1]. The critic gives two-hot logits
over symlog bins of the return.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldline.agents.config import ActorCriticConfig
from worldline.models.rssm.distributions import symlog_bins, two_hot_mean, unimix_logits
from worldline.models.rssm.networks import mlp


@dataclasses.dataclass
class Policy:
    """An action distribution over action features (..., A); no weights."""

    kind: str  # "discrete" or "continuous"
    logp: Tensor | None = None  # (..., n) log-probs of a discrete policy
    mean: Tensor | None = None  # (..., A) of a continuous one
    std: Tensor | None = None

    def sample(self) -> Tensor:
        if self.kind == "discrete":
            index = torch.multinomial(self.logp.exp().reshape(-1, self.logp.shape[-1]), 1).reshape(self.logp.shape[:-1])
            return F.one_hot(index, self.logp.shape[-1]).float()
        return self.mean + self.std * torch.randn_like(self.mean)

    def mode(self) -> Tensor:
        if self.kind == "discrete":
            return F.one_hot(self.logp.argmax(-1), self.logp.shape[-1]).float()
        return self.mean

    def log_prob(self, action: Tensor) -> Tensor:
        if self.kind == "discrete":
            return (action * self.logp).sum(-1)
        return torch.distributions.Normal(self.mean, self.std).log_prob(action).sum(-1)

    def entropy(self) -> Tensor:
        if self.kind == "discrete":
            return -(self.logp.exp() * self.logp).sum(-1)
        return torch.distributions.Normal(self.mean, self.std).entropy().sum(-1)

    @staticmethod
    def to_world(action: Tensor, kind: str) -> Tensor:
        """What the world model is fed: the one-hot as is, a continuous sample clipped to [-1, 1]."""
        return action if kind == "discrete" else action.clamp(-1, 1)


class ActorCritic(nn.Module):
    """Actor, critic and the critic's slow EMA copy, plus the running return scale (a buffer, so a
    saved agent resumes with it)."""

    def __init__(self, feat_dim: int, action_kind: str, action_dim: int, config: ActorCriticConfig):
        super().__init__()
        if action_kind not in ("discrete", "continuous"):
            raise ValueError(f"an agent needs a discrete or continuous action space, got {action_kind=}")
        self.config, self.kind, self.action_dim, self.feat_dim = config, action_kind, action_dim, feat_dim
        out = action_dim if action_kind == "discrete" else 2 * action_dim
        self.actor = mlp(feat_dim, config.hidden, out, config.layers)
        self.critic = mlp(feat_dim, config.hidden, config.bins, config.layers, zero_out=True)
        self.slow_critic = mlp(feat_dim, config.hidden, config.bins, config.layers, zero_out=True)
        self.slow_critic.load_state_dict(self.critic.state_dict())
        self.slow_critic.requires_grad_(False)
        self.register_buffer("bins", symlog_bins(config.bins), persistent=False)
        self.register_buffer("return_scale", torch.zeros(()))  # EMA of the return percentile range

    def policy(self, feat: Tensor) -> Policy:
        out = self.actor(feat)
        if self.kind == "discrete":
            return Policy("discrete", logp=unimix_logits(out, self.config.unimix))
        mean, std = out.chunk(2, -1)
        # std in [0.1, 1]: enough noise to keep exploring, never a collapse to a point (DreamerV3's bounds)
        return Policy("continuous", mean=torch.tanh(mean), std=0.1 + 0.9 * torch.sigmoid(std + 2.0))

    def value(self, feat: Tensor, slow: bool = False) -> Tensor:
        return two_hot_mean((self.slow_critic if slow else self.critic)(feat), self.bins)

    @torch.no_grad()
    def update_slow_critic(self) -> None:
        d = self.config.slow_critic_decay
        for slow, fast in zip(self.slow_critic.parameters(), self.critic.parameters()):
            slow.lerp_(fast, 1 - d)
