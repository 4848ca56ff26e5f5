"""V-M-C on CarRacing: the road-following driver that records data and the reward-head check that
runs before CMA-ES (the CLI's new options are in test_agents.py's end-to-end run)."""

import numpy as np
import pytest
import torch

from worldline.agents.vmc import reward_check
from worldline.core.errors import WorldlineError


class AlignedStub:
    """Just enough of a V-M-C model for ``reward_check``: the memory after action t holds action t,
    and the reward head reads its first feature back."""

    def encode(self, frames):  # (1, T, 3, H, W) -> (1, T, 1)
        mean = frames.mean((2, 3, 4))[..., None]
        return mean, torch.zeros_like(mean)

    def actions(self, actions):
        return actions

    def memory(self, z, action_feats, hc):
        return action_feats, action_feats

    def predict_reward(self, feat):  # feat = [z (1), h (A)]
        return feat[:, 1]


def write_episodes(path, lengths):
    """Episodes with reward_t = action_t[0], so a head aligned with the actions reads them exactly."""
    from worldline.core.contracts import ActionSpec
    from worldline.data.format import DatasetWriter

    rng = np.random.default_rng(0)
    episodes = []
    spec = ActionSpec(kind="continuous", dim=2, low=[-1.0, -1.0], high=[1.0, 1.0])
    with DatasetWriter(path, fps=10, image_shape=(16, 16, 3), action_spec=spec) as w:
        for n in lengths:
            actions = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
            frames = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
            w.add_episode(frames, actions, actions[:, 0].copy(), np.arange(n) == n - 1)
            episodes.append(actions)
    return episodes


def test_reward_check_reads_the_reward_of_step_t_from_the_memory_after_action_t(tmp_path):
    actions = write_episodes(tmp_path / "d", [30, 25])
    check = reward_check(AlignedStub(), tmp_path / "d", [0, 1], window=5)
    assert check["steps"] == 55 and check["episodes"] == 2
    assert check["corr"] == pytest.approx(1.0) and check["corr_window"] == pytest.approx(1.0)
    first = np.concatenate(actions)[:, 0]
    assert check["pred_positive"] == pytest.approx(first[first > 0].mean(), rel=1e-5)
    assert check["true_positive"] == pytest.approx(first[first > 0].mean(), rel=1e-5)
    assert check["positive_share"] == pytest.approx((first > 0).mean())
    with pytest.raises(WorldlineError, match="at least one episode"):
        reward_check(AlignedStub(), tmp_path / "d", [])


def test_road_driver_follows_the_track_and_is_a_function_of_its_seed():
    """The recording driver collects tiles (random driving loses reward on CarRacing), and the same
    seed gives the same episode."""
    pytest.importorskip("Box2D")
    from worldline.envs.policies import make_policy
    from worldline.envs.recorder import run_episode
    from worldline.envs.registry import make_env

    env, info = make_env("CarRacing-v3", 64, max_steps=120)
    try:
        driver = make_policy("driver", env, 0)
        driver.lapse_rate = (0.0, 0.0)  # no lapses: the driver alone
        first = run_episode(env, driver, info, 3, 120)
        again = run_episode(env, driver, info, 3, 120)
        rand = run_episode(env, make_policy("random", env, 0), info, 3, 120)
    finally:
        env.close()
    np.testing.assert_array_equal(first["actions"], again["actions"])
    assert first["rewards"].sum() > 20 > rand["rewards"].sum()
    assert (first["rewards"] > 0).mean() > 0.05
