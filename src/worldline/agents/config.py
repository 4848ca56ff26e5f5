"""Configs of the agents: the imagination actor-critic (DreamerV3) and the online Dreamer loop."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class ActorCriticConfig:
    horizon: int = 15  # imagined steps per start state (DreamerV3: 15)
    gamma: float = 0.985  # discount; DreamerV3 uses 0.997 for long tasks, a short CPU run credits nearer rewards
    lam: float = 0.95  # lambda of the lambda-returns: bootstraps mostly from later returns, a little from the critic
    entropy: float = 3e-4  # weight of the policy entropy bonus (DreamerV3's fixed eta, valid because returns are normalised)
    return_decay: float = 0.99  # EMA of the 5th-95th percentile range of returns that scales advantages
    return_quantile: float = 0.05  # lower percentile of that range (upper = 1 - this)
    slow_critic_decay: float = 0.98  # EMA of the critic that regularises it towards its own past (stabilises bootstrapping)
    slow_critic_weight: float = 1.0
    hidden: int = 256  # MLP width of actor and critic
    layers: int = 2  # hidden layers of actor and critic
    actor_lr: float = 1e-4
    critic_lr: float = 1e-4
    grad_clip: float = 100.0
    unimix: float = 0.01  # uniform mixed into a discrete policy: it never stops exploring entirely
    bins: int = 255  # two-hot bins of the critic, over symlog(return)
    actor_grad: str = "auto"  # "reinforce", "dynamics" (backprop through the model's dream) or "auto": dynamics for continuous actions, reinforce for discrete (DreamerV2's choice; far fewer updates on continuous control)

    def __post_init__(self):
        if self.horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {self.horizon=}")
        if not (0 < self.gamma <= 1 and 0 <= self.lam <= 1):
            raise ValueError(f"gamma must be in (0, 1] and lam in [0, 1], got {self.gamma=} {self.lam=}")
        if self.entropy < 0 or not 0 <= self.return_decay < 1 or not 0 < self.return_quantile < 0.5:
            raise ValueError(f"bad return normalisation or entropy: {self.entropy=} {self.return_decay=} {self.return_quantile=}")
        if self.actor_grad not in ("auto", "reinforce", "dynamics"):
            raise ValueError(f"actor_grad must be auto, reinforce or dynamics, got {self.actor_grad=}")
        if self.hidden < 1 or self.layers < 1 or self.bins < 2:
            raise ValueError(f"hidden, layers >= 1 and bins >= 2 needed, got {self.hidden=} {self.layers=} {self.bins=}")


@dataclasses.dataclass
class DreamerConfig:
    env_steps: int = 20000  # real environment steps in all, the prefill included
    prefill: int = 1000  # random-policy steps before the first update
    train_every: int = 4  # env steps per gradient update (model + agent): a replay ratio of batch*length/train_every
    batch_size: int = 16
    sequence_length: int = 32  # replayed window length (overrides the model preset's)
    model_lr: float = 1e-3  # see presets/wm-rssm.yaml: at 3e-4 the reward head stayed at the mean for 300+ updates
    model_grad_clip: float = 100.0
    actor_warmup: int = 150  # updates that train only the model and critic: until the reward/continue heads and the critic have learned, the advantages are ~1e-3 and action-independent, yet Adam turns their consistent sign into full-size steps and the policy collapses to one action within 50 updates
    eval_every: int = 2000  # env steps between evaluations (policy mode and sampled policy); 0 disables
    eval_episodes: int = 5
    max_episode_steps: int = 500  # cap of a real episode
    seed: int = 0

    def __post_init__(self):
        for name in ("env_steps", "train_every", "batch_size", "sequence_length", "eval_episodes", "max_episode_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)=}")
        if not 0 <= self.prefill <= self.env_steps:
            raise ValueError(f"prefill must be in [0, env_steps], got {self.prefill=} {self.env_steps=}")
        if self.actor_warmup < 0:
            raise ValueError(f"actor_warmup must be >= 0, got {self.actor_warmup=}")
        if self.sequence_length < 2:
            raise ValueError(f"sequence_length must be >= 2, got {self.sequence_length=}")
