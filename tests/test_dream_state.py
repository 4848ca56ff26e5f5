"""DreamEnv(observation="state") and its real-env counterpart FilteredEnv: the agent sees the world
model's own state features in the dream and, through the model's posterior, in the real env; the
REINFORCE agent of `worldline dream-agent`; bad input."""

import dataclasses
import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from typer.testing import CliRunner

from worldline.agents.dream_env import DreamEnv
from worldline.agents.filtered_env import FilteredEnv, frame_tensor
from worldline.agents.reinforce import ReinforceConfig, load_policy, run_policy, save_policy, train_reinforce
from worldline.cli.main import app
from worldline.core.config import build_model, load_preset
from worldline.core.contracts import ActionSpec
from worldline.core.errors import WorldlineError
from worldline.envs.registry import make_env
from worldline.train.config import RunConfig

CARTPOLE = ActionSpec(kind="discrete", dim=1, n=2)


def debug_model(preset: str, spec: ActionSpec = CARTPOLE):
    cfg = RunConfig.from_dict(load_preset(preset, "debug")).model
    torch.manual_seed(0)
    return build_model(dataclasses.replace(cfg, action_space=spec)).eval()


@pytest.fixture(scope="module")
def rssm():
    return debug_model("wm-rssm")


@pytest.fixture(scope="module")
def vmc():
    return debug_model("vmc")


@pytest.fixture(scope="module")
def clips():
    return np.random.default_rng(0).integers(0, 256, (3, 2, 64, 64, 3), dtype=np.uint8)


def test_dream_state_observations_are_the_models_state_features(rssm, vmc, clips):
    for model in (rssm, vmc):
        env = DreamEnv(model, clips, context_frames=2, max_steps=5, observation="state")
        assert env.observation_space.shape == (model.feat_dim,) and env.observation_space.dtype == np.float32
        obs, _ = env.reset(seed=0)
        for _ in range(3):
            with torch.no_grad():
                expected = model.state_features(env._state)[0].numpy()
            assert obs.dtype == np.float32 and obs.shape == (model.feat_dim,)
            np.testing.assert_array_equal(obs, expected)
            obs, *_ = env.step(1)
        check_env(env, skip_render_check=True)
    # without render or reward_fn no frame is decoded; the dream is the same one
    runs = []
    for render_mode in (None, "rgb_array"):
        env = DreamEnv(rssm, clips, context_frames=2, max_steps=5, observation="state", render_mode=render_mode)
        runs.append(np.stack([env.reset(seed=4)[0]] + [env.step(a)[0] for a in (0, 1, 1)]))
        assert (env.render() is None) == (render_mode is None)
    np.testing.assert_array_equal(*runs)


def real_episode(actions, seed=3):
    """Frames (T+1, 64, 64, 3) of a real CartPole episode under ``actions``."""
    env, _ = make_env("CartPole-v1", 64)
    env.reset(seed=seed)
    frames = [env.render()]
    for a in actions:
        env.step(a)
        frames.append(env.render())
    env.close()
    return np.stack(frames)


def test_filtered_env_yields_the_features_the_model_computes_by_filtering(rssm, vmc):
    """Step by step through the real env equals filtering the recorded episode in one pass: the
    RSSM's sequence filter (posterior modes), V-M-C's init_state over the frames so far."""
    actions = [1, 0, 0, 1, 1]
    frames = real_episode(actions)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)[None].float() / 127.5 - 1.0  # (1, T+1, 3, 64, 64)
    acts = torch.tensor(actions + [0], dtype=torch.float32)[None, :, None]  # (1, T+1, 1)

    env = FilteredEnv("CartPole-v1", rssm, sample=False)
    seen = [env.reset(seed=3)[0]] + [env.step(a)[0] for a in actions]
    with torch.no_grad():
        out = rssm.observe(x, rssm.actions(acts), sample=False)
    expected = torch.cat([out["h"], out["z"]], -1)[0].numpy()  # (T+1, F)
    np.testing.assert_allclose(np.stack(seen), expected, atol=1e-5)

    env = FilteredEnv("CartPole-v1", vmc)
    seen = [env.reset(seed=3)[0]] + [env.step(a)[0] for a in actions]
    for t in range(len(seen)):
        with torch.no_grad():
            state = vmc.init_state(x[:, : t + 1], acts[:, : t + 1])
        np.testing.assert_allclose(seen[t], vmc.state_features(state)[0].numpy(), atol=1e-5)


def test_filtered_env_passes_check_env_and_replays_under_a_seed(rssm):
    env = FilteredEnv("CartPole-v1", rssm)
    assert env.observation_space.shape == (rssm.feat_dim,)
    check_env(env, skip_render_check=True, skip_close_check=True)  # a wrapper around a model cannot be re-made from its spec
    runs = []
    for _ in range(2):
        obs = [env.reset(seed=11)[0]] + [env.step(a)[0] for a in (0, 1, 1)]
        runs.append(np.stack(obs))
    np.testing.assert_array_equal(*runs)
    # the Dreamer's player filters through the same model methods
    from worldline.agents.dreamer import Player

    player, frame = Player(rssm, agent=None), real_episode([])[0]
    torch.manual_seed(0)
    player.reset(frame)
    torch.manual_seed(0)
    with torch.no_grad():
        assert torch.equal(player.state.feat, rssm.filter_start(frame_tensor(frame)).feat)


def test_bad_input(rssm, clips):
    from test_contracts import build

    deterministic = build("wm-deterministic").eval()
    with pytest.raises(WorldlineError, match="no state_features"):
        DreamEnv(deterministic, np.zeros((2, 4, 64, 64, 3), np.uint8), reward_fn=lambda *a: 0.0, observation="state")
    with pytest.raises(WorldlineError, match="no state_features"):
        FilteredEnv("CartPole-v1", deterministic)
    with pytest.raises(WorldlineError, match="'state'"):
        DreamEnv(rssm, clips, observation="pixels")
    with pytest.raises(WorldlineError, match="is not the world model's"):
        FilteredEnv("CartPole-v1", debug_model("wm-rssm", ActionSpec(kind="discrete", dim=1, n=3)))
    env = FilteredEnv("CartPole-v1", rssm)
    with pytest.raises(WorldlineError, match="before reset"):
        env.step(0)
    env.reset(seed=0)
    with pytest.raises(WorldlineError, match="outside the action space"):
        env.step(2)
    dream = DreamEnv(rssm, clips, context_frames=2, observation="state")
    dream.reset(seed=0)
    with pytest.raises(WorldlineError, match="outside the action space"):
        dream.step(5)
    with pytest.raises(WorldlineError, match="Box observation"):
        train_reinforce(gym.make("FrozenLake-v1"), ReinforceConfig(episodes=1))
    with pytest.raises(ValueError, match="batch"):
        ReinforceConfig(batch=0)


class Signs(gym.Env):
    """One-step episodes: the observation's sign says which of two actions pays 1."""

    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.s = int(self.np_random.integers(2, size=2)[1])  # not the draw a same-seeded action space makes first
        return np.array([1.0 if self.s else -1.0, 0.5], np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), float(action == self.s), True, False, {}


def test_reinforce_learns_what_the_observation_says_and_round_trips(tmp_path):
    env = Signs()
    assert np.mean(run_policy(env, None, 100, 0)) == pytest.approx(0.5, abs=0.15)
    policy, returns = train_reinforce(env, ReinforceConfig(episodes=320, batch=16, lr=0.05, hidden=0, entropy=0.0, seed=0))
    assert np.mean(returns[:32]) < 0.75 and np.mean(run_policy(env, policy, 100, 0)) > 0.95
    loaded = load_policy(save_policy(policy, tmp_path / "p"))
    obs = torch.tensor([[1.0, 0.5], [-1.0, 0.5]])
    torch.testing.assert_close(loaded(obs).logp, policy(obs).logp)
    with pytest.raises(WorldlineError, match="not a saved policy"):
        load_policy(tmp_path)


def test_advantages_are_gae_against_the_value():
    """lam = 1: returns-to-go minus the value (plus the discounted value where a truncated episode
    stopped); lam = 0: the one-step TD error."""
    from worldline.agents.reinforce import _advantages, _Episode, _returns_to_go

    rewards, gamma = [1.0, 0.0, 2.0], 0.9
    obs, last = torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([[4.0]])
    value = lambda o: o[:, 0] * 0.5  # noqa: E731  values 0.5, 1, 1.5 and 2 where it stopped
    ended = _Episode(None, None, torch.tensor(rewards), _returns_to_go(rewards, gamma), obs, None)
    torch.testing.assert_close(_advantages(ended, value, gamma, 1.0), torch.tensor([1 + 0.81 * 2 - 0.5, 0.9 * 2 - 1.0, 2 - 1.5]))
    cut = dataclasses.replace(ended, last_obs=last)
    torch.testing.assert_close(_advantages(cut, value, gamma, 1.0), _advantages(ended, value, gamma, 1.0) + 2 * gamma ** torch.tensor([3.0, 2.0, 1.0]))
    torch.testing.assert_close(_advantages(cut, value, gamma, 0.0), torch.tensor([1 + 0.9 * 1 - 0.5, 0 + 0.9 * 1.5 - 1, 2 + 0.9 * 2 - 1.5]))
    torch.testing.assert_close(_advantages(cut, value, gamma, 0.999999), _advantages(cut, value, gamma, 1.0), atol=1e-4, rtol=0)


def test_dream_agent_cli_on_the_debug_preset(rssm, tmp_path):
    rssm.save_pretrained(tmp_path / "wm")
    out = tmp_path / "agent"
    result = CliRunner().invoke(app, [
        "dream-agent", "--wm", str(tmp_path / "wm"), "--env", "CartPole-v1", "--out", str(out), "--starts", "2",
        "--episodes", "4", "--batch", "2", "--dream-steps", "5", "--eval-episodes", "2", "--max-steps", "10",
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["dream_returns"]) == 4 and np.isfinite(summary["dream_last100"])
    assert len(summary["real_mode"]["returns"]) == 2 and len(summary["random"]["returns"]) == 2
    policy = load_policy(out / "policy")
    assert policy.obs_dim == rssm.feat_dim
    real = FilteredEnv("CartPole-v1", rssm, max_steps=10)
    assert run_policy(real, policy, 2, 10_000) == summary["real_mode"]["returns"]  # the saved policy acts the same


def test_cmaes_fitness_takes_a_reward_from_the_dreamt_frames(vmc):
    """A user reward on decoded frames replaces the reward head; episode ends still weight it."""
    from worldline.agents.controller import LinearController, dream_fitness, tile_state

    model = debug_model("vmc", ActionSpec(kind="continuous", dim=2, low=[-1, -1], high=[1, 1]))
    controller = LinearController(model.feat_dim, model.actions.dim, "continuous")
    params = np.random.default_rng(0).normal(size=(3, controller.size)) * 0.3
    with torch.no_grad():
        starts = model.init_state(torch.rand(2, 2, 3, 64, 64) * 2 - 1)
    calls = []

    def brightness(frames, action, next_frames):
        calls.append((frames.shape, action.shape, next_frames.shape))
        return next_frames.mean((1, 2, 3)) + 1  # in [0, 2]

    torch.manual_seed(0)
    fitness = dream_fitness(model, controller, params, starts, 4, reward_fn=brightness)
    assert calls == [((6, 3, 64, 64), (6, 2), (6, 3, 64, 64))] * 4
    torch.manual_seed(0)  # the same dream by hand
    with torch.no_grad():
        state, alive, total = tile_state(starts, 3), torch.ones(6), torch.zeros(6)
        for _ in range(4):
            state = model.dream_step(state, controller.act(state.feat, params, group=2))
            total += alive * (model.decode_state(state).mean((1, 2, 3)) + 1)
            alive = alive * model.predict_continue(state.feat)
    np.testing.assert_allclose(fitness, total.reshape(3, 2).mean(1).numpy(), rtol=1e-5)
