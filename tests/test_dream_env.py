"""DreamEnv: a world model as a gymnasium environment (gymnasium's own checker, seeding, errors)."""

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from _data_helpers import write_dataset
from test_contracts import build
from worldline.agents.dream_env import DreamEnv
from worldline.core.errors import WorldlineError

H = 64


def brightness(obs, action, next_obs) -> float:
    return float(next_obs.mean() / 255.0)


@pytest.fixture(scope="module")
def world_model():
    return build("wm-deterministic").eval()


@pytest.fixture(scope="module")
def clips():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (3, 4, H, H, 3), dtype=np.uint8)


def test_passes_gymnasium_env_checker(world_model, clips):
    env = DreamEnv(world_model, clips, reward_fn=brightness, max_steps=5)
    check_env(env, skip_render_check=True)


def test_episode_runs_and_truncates(world_model, clips):
    env = DreamEnv(world_model, clips, reward_fn=brightness, max_steps=3)
    obs, info = env.reset(seed=1)
    assert obs.shape == (H, H, 3) and obs.dtype == np.uint8
    np.testing.assert_array_equal(obs, clips[info["context"], -1])  # the dream starts from the real last frame
    for t in range(3):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert obs.shape == (H, H, 3) and 0.0 <= reward <= 1.0 and not terminated
        assert truncated == (t == 2)


def test_seeded_reset_replays_the_same_dream(world_model, clips):
    env = DreamEnv(world_model, clips, reward_fn=brightness)
    actions = [np.array([100.0, 400.0], np.float32), np.array([300.0, 50.0], np.float32)]
    runs = []
    for _ in range(2):
        env.reset(seed=7)
        runs.append([env.step(a)[0] for a in actions])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    before = torch.get_rng_state()
    env.step(actions[0])
    assert torch.equal(before, torch.get_rng_state()), "stepping must not disturb the caller's torch RNG"


def test_latent_observations(world_model, clips):
    env = DreamEnv(world_model, clips, reward_fn=brightness, observation="latent")
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == env.observation_space.shape == tuple(world_model.latent_shape)
    obs, *_ = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs)


def test_contexts_from_a_dataset(world_model, tmp_path):
    write_dataset(tmp_path / "ds", [12, 9], size=H)
    env = DreamEnv(world_model, tmp_path / "ds", reward_fn=brightness, episodes=[1])
    obs, info = env.reset(seed=0)
    assert obs.shape == (H, H, 3)


def test_dataset_contexts_are_filtered_with_their_own_actions(world_model, tmp_path):
    from worldline.data.format import Dataset

    write_dataset(tmp_path / "ds", [12, 9], size=H)
    seen = []

    class Spy(ConstantContinue):
        def init_state(self, frames, context_actions=None, text=None):
            seen.append(context_actions)
            return self.model.init_state(frames, context_actions)

    env = DreamEnv(Spy(world_model, 0.9), tmp_path / "ds", context_frames=3, episodes=[1])
    _, info = env.reset(seed=0, options={"context": 1})
    ds = Dataset(tmp_path / "ds")
    starts = list(range(0, 9 - 3 + 1, 3))  # the clip starts DreamEnv cuts from a 9-frame episode
    want = ds.episode(1)["actions"][starts[1] : starts[1] + 2]  # the 2 actions between its 3 frames
    assert seen[-1].shape == (1, 2, want.shape[-1])
    np.testing.assert_array_equal(seen[-1][0].numpy(), want)
    DreamEnv(Spy(world_model, 0.9), np.zeros((1, 3, H, H, 3), np.uint8), context_frames=3).reset(seed=0)
    assert seen[-1] is None  # bare frames carry no actions: the model reads them as a world running on its own


def test_bad_input(world_model, clips, tmp_path):
    with pytest.raises(WorldlineError, match="no reward head"):
        DreamEnv(world_model, clips)
    env = DreamEnv(world_model, clips, reward_fn=brightness)
    with pytest.raises(WorldlineError, match="before reset"):
        env.step(np.zeros(2, np.float32))
    env.reset(seed=0)
    with pytest.raises(WorldlineError, match="outside the action space"):
        env.step(np.array([1e4, 0.0], np.float32))
    with pytest.raises(WorldlineError, match="outside the action space"):
        env.step(np.zeros(5, np.float32))
    with pytest.raises(WorldlineError, match="32x32"):
        DreamEnv(world_model, clips[:, :, :32, :32], reward_fn=brightness)
    write_dataset(tmp_path / "short", [3], size=H)
    with pytest.raises(WorldlineError, match="no episode has 4 frames"):
        DreamEnv(world_model, tmp_path / "short", reward_fn=brightness)


class ConstantContinue(torch.nn.Module):
    """Wraps a world model with heads that say reward 1 and continue probability ``p`` everywhere."""

    has_reward_head = True

    def __init__(self, model, p):
        super().__init__()
        self.model, self.p = model, p
        self.action_spec, self.config = model.action_spec, model.config

    def init_state(self, *a, **k):
        return self.model.init_state(*a, **k)

    def step(self, state, action):
        return self.model.step(state, action)

    def embed(self, frames):
        return self.model.embed(frames)

    def reward_and_continue(self, state):
        return torch.ones(1), torch.full((1,), self.p)


def test_continue_head_ends_episodes_by_sampling_or_threshold(world_model, clips):
    """Continue 0.8 everywhere: sampled ends give episodes of mean length ~1/0.2 = 5; the 0.5
    threshold never ends one (the failure that left DreamEnv agents nothing to learn from)."""
    dream = ConstantContinue(world_model, 0.8)
    env = DreamEnv(dream, clips, max_steps=60)
    env.reset(seed=0)
    lengths = []
    for _ in range(100):
        env.reset()
        t, done = 0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            t += 1
            done = terminated or truncated
        assert reward == 1.0
        lengths.append(t)
    assert 3.6 < np.mean(lengths) < 6.6 and max(lengths) < 60, np.mean(lengths)  # 5 +- 3.3 standard errors
    env = DreamEnv(dream, clips, max_steps=6, termination="threshold")
    env.reset(seed=0)
    outcomes = [env.step(env.action_space.sample())[2:4] for _ in range(6)]
    assert outcomes == [(False, False)] * 5 + [(False, True)]
    with pytest.raises(WorldlineError, match="termination"):
        DreamEnv(dream, clips, termination="sometimes")
