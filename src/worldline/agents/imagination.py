"""Behaviour learning in imagination (DreamerV3, Hafner et al. 2023, section "Actor critic learning").

From each start state (the world model's posterior states of a replayed batch) the actor dreams
``horizon`` steps through the world model; the model's heads give rewards and continuation
probabilities; lambda-returns bootstrap from the critic. The critic regresses the returns (two-hot)
plus its own slow copy. The actor maximises returns divided by ``max(1, S)``, S an EMA of the
5th-95th percentile range of returns, so one entropy weight fits dense and sparse rewards alike and
small returns are not blown up into noise: by REINFORCE with the critic as baseline, recentred over
the batch of dreams (:func:`centred_advantage`; discrete
actions, DreamerV3), or for continuous actions by backpropagating the returns through the frozen
world model's dream (``actor_grad="dynamics"``, DreamerV1/V2).

Any world model works that offers ``dream_step(state, action_features) -> state`` with a
``state.feat`` (B, F), ``predict_reward(feat)``, ``predict_continue(feat)`` — the ``rssm`` family.
"""

from __future__ import annotations

import torch
from torch import Tensor

from worldline.agents.networks import ActorCritic, Policy
from worldline.models.rssm.distributions import two_hot_loss


def lambda_returns(reward: Tensor, discount: Tensor, values: Tensor, lam: float) -> Tensor:
    """(H, N) lambda-returns: R_t = r_t + d_t ((1 - lam) v_{t+1} + lam R_{t+1}), R_H = v_H.

    ``reward``/``discount`` (H, N) belong to the transition t -> t+1 (discount = gamma * continue);
    ``values`` (H + 1, N) are the critic's values of states 0..H.
    """
    H = reward.shape[0]
    out = []
    last = values[H]
    for t in reversed(range(H)):
        last = reward[t] + discount[t] * ((1 - lam) * values[t + 1] + lam * last)
        out.append(last)
    return torch.stack(out[::-1])


def centred_advantage(advantage: Tensor, weight: Tensor) -> Tensor:
    """(H, N) advantages minus their weighted mean over the N dreams of each step.

    While the critic lags the returns (early on, or when the reward head moves), every action gets
    the same large positive advantage; its expected policy gradient is zero, but stochastic REINFORCE
    with such an offset drifts to a deterministic policy (Chung et al. 2021, "Beyond variance
    reduction"), which is how Dreamer collapsed on CartPole. The mean over dreams of one step is an
    action-independent baseline that removes the offset; with a critic that has caught up it is ~0.
    """
    w = weight.detach()
    mean = (w * advantage).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp(min=1e-8)  # (H, 1)
    return advantage - mean


def percentile_range(returns: Tensor, q: float) -> Tensor:
    flat = returns.detach().float().reshape(-1)
    return torch.quantile(flat, 1 - q) - torch.quantile(flat, q)


class ImaginationTrainer:
    """Owns the actor and critic optimisers; ``train(world_model, starts)`` is one update."""

    def __init__(self, agent: ActorCritic):
        self.agent = agent
        cfg = agent.config
        self.actor_opt = torch.optim.Adam(agent.actor.parameters(), lr=cfg.actor_lr, eps=1e-5)
        self.critic_opt = torch.optim.Adam(agent.critic.parameters(), lr=cfg.critic_lr, eps=1e-5)

    @torch.no_grad()
    def dream(self, world_model, starts) -> tuple[Tensor, Tensor]:
        """Imagined features (H + 1, N, F) and the sampled actions (H, N, A) from ``starts``."""
        agent, state = self.agent, starts
        feats, actions = [state.feat], []
        for _ in range(agent.config.horizon):
            action = agent.policy(state.feat).sample()
            actions.append(action)
            state = world_model.dream_step(state, Policy.to_world(action, agent.kind))
            feats.append(state.feat)
        return torch.stack(feats), torch.stack(actions)

    def dream_differentiable(self, world_model, starts) -> tuple[Tensor, Tensor]:
        """As :meth:`dream`, with reparameterised actions whose gradient flows through the dream."""
        agent, state = self.agent, starts
        feats, actions = [state.feat], []
        for _ in range(agent.config.horizon):
            policy = agent.policy(state.feat)
            action = policy.mean + policy.std * torch.randn_like(policy.mean)
            actions.append(action)
            state = world_model.dream_step(state, Policy.to_world(action, agent.kind))
            feats.append(state.feat)
        return torch.stack(feats), torch.stack(actions)

    def train(self, world_model, starts, train_actor: bool = True) -> dict[str, float]:
        """One critic update, and one actor update unless ``train_actor`` is False (warm-up)."""
        agent, cfg = self.agent, self.agent.config
        dynamics = cfg.actor_grad == "dynamics" or (cfg.actor_grad == "auto" and agent.kind == "continuous")
        if dynamics and agent.kind == "discrete":
            raise ValueError("actor_grad='dynamics' needs continuous actions")
        frozen = [p for p in getattr(world_model, "parameters", lambda: [])() if p.requires_grad]
        for p in frozen:  # the agent's losses must never move the world model
            p.requires_grad_(False)
        try:
            return self._train(world_model, starts, dynamics, train_actor)
        finally:
            for p in frozen:
                p.requires_grad_(True)

    def _train(self, world_model, starts, dynamics: bool, train_actor: bool = True) -> dict[str, float]:
        agent, cfg = self.agent, self.agent.config
        with torch.set_grad_enabled(dynamics):
            feats, actions = self.dream_differentiable(world_model, starts) if dynamics else self.dream(world_model, starts)
            reward = world_model.predict_reward(feats[1:])  # (H, N)
            discount = cfg.gamma * world_model.predict_continue(feats[1:])  # (H, N)
            values = agent.value(feats)  # (H + 1, N)
            returns = lambda_returns(reward, discount, values, cfg.lam)  # (H, N)
        with torch.no_grad():
            # weight of step t: the probability that the dream is still in the episode there
            disc = discount.detach()
            weight = torch.cumprod(torch.cat([torch.ones_like(disc[:1]), disc[:-1] / cfg.gamma]), 0)  # (H, N)
            spread = percentile_range(returns, cfg.return_quantile)
            agent.return_scale.mul_(cfg.return_decay).add_((1 - cfg.return_decay) * spread)
            scale = agent.return_scale.clamp(min=1.0)
            slow_values = agent.value(feats[:-1].detach(), slow=True)

        policy = agent.policy(feats[:-1].detach())
        entropy = policy.entropy()
        if dynamics:
            objective = returns / scale
        else:
            objective = policy.log_prob(actions.detach()) * (centred_advantage(returns - values[:-1], weight) / scale).detach()
        actor_loss = -(weight * (objective + cfg.entropy * entropy)).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        torch.nn.utils.clip_grad_norm_(agent.actor.parameters(), cfg.grad_clip)
        if train_actor:
            self.actor_opt.step()

        logits = agent.critic(feats[:-1].detach())
        target = returns.detach()
        critic_loss = (weight * (two_hot_loss(logits, target, agent.bins)
                                 + cfg.slow_critic_weight * two_hot_loss(logits, slow_values, agent.bins))).mean()
        self.critic_opt.zero_grad(set_to_none=True)  # also drops what the actor's backward left on the critic
        critic_loss.backward()
        torch.nn.utils.clip_grad_norm_(agent.critic.parameters(), cfg.grad_clip)
        self.critic_opt.step()
        agent.update_slow_critic()
        return {
            "actor_loss": actor_loss.item(), "critic_loss": critic_loss.item(), "entropy": entropy.mean().item(),
            "imag_return": returns[0].mean().item(), "imag_reward": reward.mean().item(), "return_scale": scale.item(),
        }
