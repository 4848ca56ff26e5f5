"""Agents inside world models: lambda-returns, the imagination actor-critic and CMA-ES on toy dreams,
DreamEnv over the RSSM's heads, and short end-to-end runs of `worldline dreamer` and `worldline vmc`."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from typer.testing import CliRunner

from worldline.agents.config import ActorCriticConfig
from worldline.agents.controller import CMAESConfig, LinearController, dream_fitness, train_controller
from worldline.agents.dream_env import DreamEnv
from worldline.agents.imagination import ImaginationTrainer, lambda_returns
from worldline.agents.networks import ActorCritic
from worldline.cli.main import app
from worldline.core.config import build_model, load_preset
from worldline.core.contracts import ActionSpec
from worldline.core.errors import WorldlineError
from worldline.models.rssm.model import RSSMWorldModel
from worldline.train.config import RunConfig

# ----------------------------------------------------------------------------------------------
# toy dreams: world models that implement only the dream protocol, with known optimal behaviour
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ToyState:
    x: torch.Tensor  # (B, 1) position
    last: torch.Tensor  # (B, A) last action features

    @property
    def feat(self):
        return torch.cat([self.x, self.last], -1)


class ToyDream:
    """Position x moves by 0.5 * action[0]; reward: ``bandit`` pays 1 for discrete action 1, ``target``
    pays -(action - 0.5)^2, ``home`` pays -|x| (go to zero and stay). ``survive`` is CartPole's shape:
    reward 1 on every step, discrete action 1 ends the episode (continue 0.2), so only the continue
    head says which action is better; ``noise`` pays 1 and continues with 0.95 whatever the action;
    ``lag`` pays 5 on one-step episodes whatever the action (every return is 5, far above a fresh critic)."""

    def __init__(self, task: str):
        self.task = task

    def dream_step(self, state, action):
        return ToyState((state.x + 0.5 * action[:, :1]).clamp(-3, 3), action)

    def predict_reward(self, feat):
        x, a = feat[..., 0], feat[..., 1:]
        if self.task in ("survive", "noise"):
            return torch.ones(feat.shape[:-1])
        if self.task == "lag":
            return torch.full(feat.shape[:-1], 5.0)
        if self.task == "bandit":
            return a[..., 1]
        if self.task == "target":
            return -(a[..., 0] - 0.5) ** 2
        return -x.abs()

    def predict_continue(self, feat):
        if self.task == "survive":
            return 1 - 0.8 * feat[..., 2]
        if self.task == "noise":
            return torch.full(feat.shape[:-1], 0.95)
        if self.task == "lag":
            return torch.zeros(feat.shape[:-1])
        return torch.ones(feat.shape[:-1])


def toy_starts(n, action_dim, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ToyState(torch.rand(n, 1, generator=g) * 4 - 2, torch.zeros(n, action_dim))


# ----------------------------------------------------------------------------------------------


def test_lambda_returns_match_their_definition():
    g = torch.Generator().manual_seed(0)
    H, N = 5, 3
    r, d, v = torch.rand(H, N, generator=g), torch.rand(H, N, generator=g), torch.rand(H + 1, N, generator=g)
    # lam = 0: one-step TD targets
    torch.testing.assert_close(lambda_returns(r, d, v, 0.0), r + d * v[1:])
    # lam = 1: discounted sum of rewards, bootstrapped at the horizon
    mc = torch.zeros(H, N)
    for t in range(H):
        acc, disc = torch.zeros(N), torch.ones(N)
        for k in range(t, H):
            acc, disc = acc + disc * r[k], disc * d[k]
        mc[t] = acc + disc * v[H]
    torch.testing.assert_close(lambda_returns(r, d, v, 1.0), mc)
    # in between: the recursion R_t = r_t + d_t ((1 - lam) v_{t+1} + lam R_{t+1})
    R = lambda_returns(r, d, v, 0.7)
    torch.testing.assert_close(R[1], r[1] + d[1] * (0.3 * v[2] + 0.7 * R[2]))


def test_actor_critic_learns_a_discrete_bandit_in_imagination():
    torch.manual_seed(0)
    agent = ActorCritic(3, "discrete", 2, ActorCriticConfig(horizon=5, hidden=32, actor_lr=3e-3, critic_lr=3e-3))
    trainer, dream = ImaginationTrainer(agent), ToyDream("bandit")
    starts = toy_starts(64, 2)
    before = agent.policy(starts.feat).logp.exp()[:, 1].mean().item()
    logs = [trainer.train(dream, starts) for _ in range(60)]
    after = agent.policy(starts.feat).logp.exp()[:, 1].mean().item()
    assert before == pytest.approx(0.5, abs=0.1) and after > 0.9, (before, after)
    assert logs[-1]["imag_return"] > logs[0]["imag_return"]
    assert agent.return_scale.item() > 0  # the percentile range is tracked


def test_actor_critic_learns_to_avoid_termination_from_the_continue_head_alone():
    """CartPole's credit assignment: constant reward, the action that ends the episode must lose."""
    torch.manual_seed(0)
    agent = ActorCritic(3, "discrete", 2, ActorCriticConfig(hidden=32, actor_lr=2e-3, critic_lr=2e-3))
    trainer, starts = ImaginationTrainer(agent), toy_starts(64, 2)
    before = agent.policy(starts.feat).logp.exp()[:, 1].mean().item()
    for _ in range(40):
        trainer.train(ToyDream("survive"), starts)
    after = agent.policy(starts.feat).logp.exp()[:, 1].mean().item()
    assert after < 0.2 and after < before - 0.25, (before, after)


def test_actor_does_not_collapse_when_the_dream_says_nothing_about_actions():
    """Advantages that do not depend on the action must leave the policy near uniform (returns are
    normalised by max(1, S), so noise is not blown up, and the entropy bonus holds it)."""
    torch.manual_seed(0)
    agent = ActorCritic(3, "discrete", 2, ActorCriticConfig(hidden=32, actor_lr=2e-3, critic_lr=2e-3))
    trainer, starts = ImaginationTrainer(agent), toy_starts(64, 2)
    logs = [trainer.train(ToyDream("noise"), starts) for _ in range(40)]
    assert logs[-1]["entropy"] > 0.6, logs[-1]  # log 2 = 0.69


def test_a_lagging_critic_does_not_collapse_the_policy():
    """A dream whose returns (5) are far above the critic's values (it starts at 0 and learns slowly)
    gives every action the same large advantage. REINFORCE with such an offset drifts to a
    deterministic policy (Chung et al. 2021): what collapsed Dreamer on CartPole to always pushing
    one way (9 steps) while its reward head was learning. The actor must only see advantages
    relative to the other actions dreamt from the same step."""
    torch.manual_seed(0)
    agent = ActorCritic(3, "discrete", 2, ActorCriticConfig(hidden=32, actor_lr=1e-3, critic_lr=1e-5))
    trainer, starts = ImaginationTrainer(agent), toy_starts(64, 2)
    logs = [trainer.train(ToyDream("lag"), starts) for _ in range(40)]
    assert min(log["entropy"] for log in logs) > 0.6, [round(log["entropy"], 3) for log in logs]


def test_actor_warmup_trains_the_critic_alone():
    torch.manual_seed(0)
    agent = ActorCritic(3, "discrete", 2, ActorCriticConfig(horizon=5, hidden=16, actor_lr=3e-3, critic_lr=3e-3))
    trainer, starts = ImaginationTrainer(agent), toy_starts(16, 2)
    actor, critic = [p.clone() for p in agent.actor.parameters()], [p.clone() for p in agent.critic.parameters()]
    trainer.train(ToyDream("bandit"), starts, train_actor=False)
    assert all(torch.equal(a, b) for a, b in zip(actor, agent.actor.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(critic, agent.critic.parameters()))
    trainer.train(ToyDream("bandit"), starts)
    assert any(not torch.equal(a, b) for a, b in zip(actor, agent.actor.parameters()))


@pytest.mark.parametrize("actor_grad", ["reinforce", "dynamics"])
def test_actor_critic_learns_a_continuous_target(actor_grad):
    torch.manual_seed(0)
    cfg = ActorCriticConfig(horizon=5, hidden=32, actor_lr=3e-3, critic_lr=3e-3, actor_grad=actor_grad)
    agent = ActorCritic(2, "continuous", 1, cfg)
    trainer, dream = ImaginationTrainer(agent), ToyDream("target")
    starts = toy_starts(64, 1)
    for _ in range(150):
        trainer.train(dream, starts)
    mean = agent.policy(starts.feat).mean.mean().item()
    assert mean == pytest.approx(0.5, abs=0.15), mean


def test_dynamics_gradients_train_the_actor_and_leave_the_world_model_alone():
    wm = rssm_debug("continuous").train()
    before = {k: v.clone() for k, v in wm.state_dict().items()}
    agent = ActorCritic(wm.feat_dim, "continuous", 2, ActorCriticConfig(horizon=3, hidden=8, actor_grad="dynamics"))
    actor_before = [p.clone() for p in agent.actor.parameters()]
    with torch.no_grad():
        starts = wm.init_state(torch.rand(4, 2, 3, 64, 64) * 2 - 1)
    ImaginationTrainer(agent).train(wm, starts)
    assert all(torch.equal(before[k], v) for k, v in wm.state_dict().items())
    assert all(p.grad is None for p in wm.parameters()) and all(p.requires_grad for p in wm.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(actor_before, agent.actor.parameters()))
    with pytest.raises(ValueError, match="continuous"):
        ImaginationTrainer(ActorCritic(3, "discrete", 2, ActorCriticConfig(actor_grad="dynamics"))).train(ToyDream("bandit"), toy_starts(4, 2))


def test_cmaes_improves_a_linear_controller_in_a_toy_dream():
    dream = ToyDream("home")
    controller = LinearController(2, 1, "continuous")
    starts = lambda n, g: toy_starts(n, 1, seed=g)  # noqa: E731
    test = toy_starts(64, 1, seed=999)
    before = dream_fitness(dream, controller, controller.params[None], test, 10)[0]
    history = train_controller(dream, controller, starts, CMAESConfig(generations=15, popsize=8, rollouts=16, horizon=10, sigma0=0.5))
    after = dream_fitness(dream, controller, controller.params[None], test, 10)[0]
    assert len(history) == 15 and after > before + 3.0, (before, after)  # -|x| summed over 10 steps: ~-10 idle, ~-2 homing
    W, b = controller.unpack(controller.params)
    assert W[0, 0, 0] < 0  # it learned to push against the position


def test_controller_batches_candidates_and_checks_kind():
    c = LinearController(3, 2, "discrete")
    params = np.zeros((2, c.size))
    params[1, -1] = 5.0  # candidate 1 prefers action 1 through its bias
    out = c.act(torch.randn(4, 3), params, group=2)
    assert out.argmax(-1).tolist() == [0, 0, 1, 1]
    with pytest.raises(WorldlineError):
        LinearController(3, 2, "none")


# ----------------------------------------------------------------------------------------------
# DreamEnv over the RSSM
# ----------------------------------------------------------------------------------------------


def rssm_debug(kind="discrete"):
    cfg = RunConfig.from_dict(load_preset("wm-rssm", "debug")).model
    spec = ActionSpec(kind="discrete", dim=1, n=3) if kind == "discrete" else ActionSpec(kind="continuous", dim=2, low=[-1, -1], high=[1, 1])
    torch.manual_seed(0)
    return RSSMWorldModel(dataclasses.replace(cfg, action_space=spec)).eval()


@pytest.fixture(scope="module")
def clips():
    return np.random.default_rng(0).integers(0, 256, (3, 2, 64, 64, 3), dtype=np.uint8)


def test_dream_env_over_rssm_and_vmc_passes_check_env(clips):
    for kind in ("discrete", "continuous"):
        env = DreamEnv(rssm_debug(kind), clips, context_frames=2, max_steps=5)
        check_env(env, skip_render_check=True)
    cfg = RunConfig.from_dict(load_preset("vmc", "debug")).model
    vmc = build_model(dataclasses.replace(cfg, action_space=ActionSpec(kind="discrete", dim=1, n=3))).eval()
    check_env(DreamEnv(vmc, clips, context_frames=2, max_steps=5, observation="latent"), skip_render_check=True)


def test_dream_env_takes_reward_and_termination_from_the_heads(clips):
    model = rssm_debug()
    env = DreamEnv(model, clips, context_frames=2, max_steps=50)
    env.reset(seed=0)
    with torch.no_grad():
        expected_state = model.dream_step(env._state.clone(), model.actions(torch.tensor([[1.0]])))
    _, reward, terminated, truncated, _ = env.step(1)
    # replaying the same seeded step outside the env gives the same head outputs
    env.reset(seed=0)
    torch.manual_seed(0)
    _, reward2, *_ = env.step(1)
    assert reward == reward2 and np.isfinite(reward)
    with torch.no_grad():  # the heads answer on the state the env holds
        r, c = model.reward_and_continue(env._state)
    assert reward2 == pytest.approx(float(r[0])) and expected_state.feat.shape == env._state.feat.shape
    # set the heads: reward 2.5 everywhere, continue probability ~0 -> the dream ends after one step
    with torch.no_grad():
        last = model.reward[-1]
        last.weight.zero_()
        last.bias.zero_()
        from worldline.models.rssm.distributions import symlog

        idx = torch.argmin((model.bins - symlog(torch.tensor(2.5))).abs())
        last.bias[idx] = 50.0
        model.cont[-1].bias.fill_(-20.0)
    env.reset(seed=1)
    _, reward, terminated, truncated, _ = env.step(0)
    assert reward == pytest.approx(float(torch.sign(model.bins[idx]) * torch.expm1(model.bins[idx].abs())), rel=1e-3)
    assert terminated and not truncated
    with pytest.raises(WorldlineError, match="outside the action space"):
        env.step(3)


# ----------------------------------------------------------------------------------------------
# end to end
# ----------------------------------------------------------------------------------------------


def test_dreamer_cli_end_to_end_on_the_debug_preset(tmp_path):
    from worldline.agents.dreamer import evaluate_agent, load_agent
    from worldline.core.pretrained import load_pretrained

    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "dreamer", "--env", "CartPole-v1", "--out", str(out), "--size", "debug", "--steps", "60", "--prefill", "20",
        "--train-every", "10", "--batch-size", "2", "--seq-len", "6", "--eval-every", "40", "--eval-episodes", "1",
        "--max-episode-steps", "20", "--set", "agent.hidden=8", "--set", "agent.horizon=3", "--save-data", str(tmp_path / "data"),
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["updates"] == 5 and np.isfinite(summary["final_mean"]) and len(summary["evals"]) == 1
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in rows} >= {"random", "train", "eval"}
    assert (out / "curve.png").stat().st_size > 0
    wm, agent = load_pretrained(out / "world_model"), load_agent(out / "agent")
    assert isinstance(wm, RSSMWorldModel) and wm.action_spec.n == 2
    assert evaluate_agent(wm, agent, "CartPole-v1", 1, 10_000, 20) == [summary["final_returns"][0]]  # reloaded agent acts the same
    assert evaluate_agent(wm, agent, "CartPole-v1", 1, 10_000, 20, explore=True) == [summary["final_sample_returns"][0]]
    assert len(summary["evals"][0]) == 3  # env steps, mode mean, sampled mean
    from worldline.data.format import Dataset

    ds = Dataset(tmp_path / "data")
    assert ds.num_frames <= 60 and ds.num_episodes >= 2 and ds.env_id == "CartPole-v1"


def test_vmc_pipeline_end_to_end_on_the_debug_preset(tmp_path):
    from worldline.agents.vmc import load_controller
    from worldline.core.pretrained import load_pretrained
    from worldline.models.rssm.vmc import VMCWorldModel

    out = tmp_path / "vmc"
    args = ["vmc", "--env", "Pendulum-v1", "--out", str(out), "--episodes", "2", "--max-steps", "12", "--size", "debug",
            "--generations", "2", "--popsize", "4", "--rollouts", "2", "--horizon", "3", "--eval-episodes", "1"]
    result = CliRunner().invoke(app, [*args, "--temperature", "1.5"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["controller_returns"]) == 1 and np.isfinite(summary["random_mean"])
    assert summary["temperature"] == 1.5 and summary["cmaes"]["popsize"] == 4 and summary["eval_seeds"] == [10_000, 10_000]
    check = summary["reward_check"]  # on the one held-out episode, before the search
    assert check["episodes"] == 1 and check["steps"] == 12 and -1 <= check["corr"] <= 1
    assert check["positive_share"] == 0 and check["pred_positive"] is None  # Pendulum never pays > 0
    assert len(summary["bias_only_returns"]) == 1 and len(summary["initial_controller_returns"]) == 1
    # a second call reuses data/ and the finished model/; a bad temperature is refused before the search
    mtime = (out / "model" / "final" / "model.safetensors").stat().st_mtime
    result = CliRunner().invoke(app, [*args, "--temperature", "0"])
    assert isinstance(result.exception, WorldlineError) and "temperature" in str(result.exception)
    assert (out / "model" / "final" / "model.safetensors").stat().st_mtime == mtime
    # --model searches with a saved V+M instead of training one (data/ still gives the dream starts)
    other = tmp_path / "other"
    other.mkdir()
    (other / "data").symlink_to(out / "data")
    args = [*args[:4], str(other), *args[5:]]
    result = CliRunner().invoke(app, [*args, "--model", str(out / "model" / "final")])
    assert result.exit_code == 0, result.output
    assert json.loads((other / "summary.json").read_text())["model"] == str(out / "model" / "final")
    assert not (other / "model").exists()
    result = CliRunner().invoke(app, [*args, "--model", str(tmp_path)])
    assert isinstance(result.exception, WorldlineError) and "not a saved world model" in str(result.exception)
    wm = load_pretrained(out / "model" / "final")
    assert isinstance(wm, VMCWorldModel) and wm.action_spec.kind == "continuous"
    controller = load_controller(out / "controller")
    assert controller.feat_dim == wm.feat_dim and len((out / "cmaes.jsonl").read_text().splitlines()) == 2


def test_cli_bad_input(tmp_path):
    """Bad arguments raise WorldlineError (the `worldline` entry point prints it as one error line, exit 2)."""
    def error(*args):
        result = CliRunner().invoke(app, ["dreamer", "--env", "CartPole-v1", "--out", str(tmp_path / "x"), *args])
        assert isinstance(result.exception, WorldlineError), result.output
        return str(result.exception)

    assert "--set 'foo.bar=1'" in error("--set", "foo.bar=1")
    assert "rssm family" in error("--preset", "wm-deterministic", "--size", "debug")
    assert "gamma" in error("--size", "debug", "--set", "agent.gamma=2")
    assert "actor_warmup" in error("--size", "debug", "--actor-warmup", "-1")
    assert "unknown env id" in CliRunner().invoke(app, ["vmc", "--env", "NoSuchWorld-v9", "--out", str(tmp_path / "y")]).exception.args[0]
