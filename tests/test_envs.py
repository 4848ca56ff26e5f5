"""Built-in worlds, policies and the recorder (worldline.envs)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from worldline.core.errors import WorldlineError
from worldline.data.format import Dataset, DatasetWriter
from worldline.envs.policies import available_policies, make_policy
from worldline.envs.recorder import record, run_episode
from worldline.envs.registry import BUILTIN, action_spec_from_space, make_env

WORLDS = [w for w in BUILTIN if w != "coinrun"]  # coinrun needs the optional procgen: tests/test_envs_coinrun.py
STEPS = 12  # per recorded test episode: enough to see motion, reward and the done flag
EXPECTED = {  # action space of each built-in world
    "pusht": dict(kind="continuous", dim=2, low=[0.0, 0.0], high=[512.0, 512.0]),
    "breakout": dict(kind="discrete", dim=1, n=4, names=["NOOP", "FIRE", "RIGHT", "LEFT"]),
    "reacher": dict(kind="continuous", dim=2, low=[-1.0, -1.0], high=[1.0, 1.0]),
    "reacher-pos": dict(kind="continuous", dim=2, low=[-1.0, -1.0], high=[1.0, 1.0], names=["shoulder_step", "elbow_step"]),
}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Two short episodes of each built-in world, recorded twice with seed 3 and once with seed 4."""
    root = tmp_path_factory.mktemp("record")
    out = {}
    for world in WORLDS:
        policy = "expert"
        for name, seed in (("a", 3), ("b", 3), ("c", 4)):
            path = root / f"{world}-{name}"
            record(world, 2, path, policy=policy, seed=seed, max_steps=STEPS, progress=False)
            out[world, name] = path
    return out


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------


def test_action_spec_from_spaces():
    spec = action_spec_from_space(gym.spaces.Discrete(3), ["a", "b", "c"])
    assert (spec.kind, spec.dim, spec.n, spec.names) == ("discrete", 1, 3, ["a", "b", "c"])
    spec = action_spec_from_space(gym.spaces.Box(-2.0, np.array([1.0, 3.0]), dtype=np.float32))
    assert (spec.kind, spec.dim, spec.low, spec.high) == ("continuous", 2, [-2.0, -2.0], [1.0, 3.0])
    spec = action_spec_from_space(gym.spaces.Box(-np.inf, np.inf, (3,)))
    assert (spec.dim, spec.low, spec.high) == (3, None, None)
    with pytest.raises(WorldlineError, match="must start at 0"):
        action_spec_from_space(gym.spaces.Discrete(3, start=-1))
    with pytest.raises(WorldlineError, match="MultiDiscrete"):
        action_spec_from_space(gym.spaces.MultiDiscrete([2, 3]))
    with pytest.raises(WorldlineError, match=r"1-D, got shape \(2, 2\)"):
        action_spec_from_space(gym.spaces.Box(0, 1, (2, 2)))


def test_unknown_env_id(tmp_path):
    msg = "unknown env id 'NoSuchWorld-v0' (built-in: pusht, breakout, reacher, reacher-pos, coinrun; or any registered gymnasium id)"
    with pytest.raises(WorldlineError) as e:
        make_env("NoSuchWorld-v0")
    assert str(e.value) == msg
    with pytest.raises(WorldlineError, match="unknown env id 'NoSuchWorld-v0'"):
        record("NoSuchWorld-v0", 1, tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("bad", [63, 4, 0, "64"])
def test_bad_resolution(bad):
    with pytest.raises(WorldlineError, match="resolution"):
        make_env("pusht", bad)


@pytest.mark.parametrize("world", WORLDS)
def test_builtin_world_matches_its_entry(world):
    env, info = make_env(world, 32)
    try:
        assert info.env_id == world and info.gym_id == env.spec.id == BUILTIN[world].gym_id
        assert tuple(available_policies(env)) == BUILTIN[world].policies == info.policies
        for key, value in EXPECTED[world].items():
            assert getattr(info.action_spec, key) == value
        env.reset(seed=0)
        frame = env.render()
        assert frame.shape == (32, 32, 3) and frame.dtype == np.uint8
        assert frame.std() > 5  # a picture, not a blank
    finally:
        env.close()


def test_pusht_frames_identical_to_gym_pusht():
    """The faster canvas read gives the very pixels gym-pusht's own renderer gives."""
    import gym_pusht  # noqa: F401

    env, _ = make_env("pusht", 64)
    ref = gym.make("gym_pusht/PushT-v0", obs_type="pixels", observation_width=64, observation_height=64)
    policy = make_policy("smooth", env, 0)
    obs, info = env.reset(seed=5)
    want, _ = ref.reset(seed=5)
    np.testing.assert_array_equal(obs, want)
    for _ in range(20):
        action = policy(obs, info)
        obs, *_, info = env.step(action)
        want, *_ = ref.step(action)
        np.testing.assert_array_equal(env.render(), want)
    env.close()
    ref.close()


def test_any_gymnasium_id(tmp_path):
    """A classic-control id renders at 600x400 and is box-filtered down; Box spaces get smooth."""
    out = record("Pendulum-v1", 2, tmp_path / "pend", policy="smooth", resolution=32, max_steps=8, progress=False)
    ds = Dataset(out)
    assert ds.image_shape == (32, 32, 3) and ds.env_id == "Pendulum-v1"
    assert ds.action_spec.kind == "continuous" and ds.action_spec.low == [-2.0]
    assert list(ds.episode_lengths) == [8, 8]
    env, info = make_env("CartPole-v1", 32)
    assert info.action_spec.n == 2 and info.policies == ("random",) and info.max_steps == 500
    with pytest.raises(WorldlineError, match=r"unknown policy 'smooth' for env CartPole-v1 \(available: random\)"):
        make_policy("smooth", env, 0)
    env.close()
    car, info = make_env("CarRacing-v3", 32)
    assert info.policies == ("random", "smooth", "driver")  # a scripted recording policy is listed with the rest
    car.close()


# ----------------------------------------------------------------------------------------------
# Recording
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("world", WORLDS)
def test_recorded_dataset(recorded, world):
    ds = Dataset(recorded[world, "a"])
    assert ds.num_episodes == 2 and ds.image_shape == (64, 64, 3)
    assert ds.fps == BUILTIN[world].fps and ds.env_id == world
    for key, value in EXPECTED[world].items():
        assert getattr(ds.action_spec, key) == value
    assert all(1 <= n <= STEPS for n in ds.episode_lengths)
    for i in range(2):
        ep = ds.episode(i)
        T = len(ep["actions"])
        assert ep["frames"].shape == (T, 64, 64, 3) and ep["frames"].dtype == np.uint8
        assert ep["actions"].shape == (T, EXPECTED[world]["dim"])
        assert ep["task"] == BUILTIN[world].task
        assert np.isfinite(ep["rewards"]).all()
        assert ep["dones"][-1] and not ep["dones"][:-1].any()
        spec = ds.action_spec
        if spec.kind == "discrete":
            assert set(np.unique(ep["actions"])) <= set(range(spec.n))
        else:
            assert (ep["actions"] >= np.array(spec.low)).all() and (ep["actions"] <= np.array(spec.high)).all()
        assert np.abs(np.diff(ep["frames"].astype(np.int16), axis=0)).max() > 20  # something moved
    # proprioception: the robot's own readings with each frame (observation.state)
    assert ds.state_names == list(BUILTIN[world].proprio)
    if world != "breakout":
        states = ds.arrays()["states"]
        assert states.shape == (ds.num_frames, len(BUILTIN[world].proprio)) and np.isfinite(states).all()
        assert np.abs(np.diff(states[: ds.episode_lengths[0]], axis=0)).max() > 0  # the robot moved
    if world.startswith("reacher"):  # cos and sin of each joint angle
        np.testing.assert_allclose(states[:, :2] ** 2 + states[:, 2:4] ** 2, 1.0, atol=1e-5)
    if world == "pusht":
        assert ((states >= 0) & (states <= 512)).all()  # the disc's position in the 512-px world
        rewards = ds.arrays()["rewards"]
        assert ((rewards >= 0) & (rewards <= 1)).all()
    if world == "reacher":  # reward = -distance - control cost: always negative
        assert (ds.arrays()["rewards"] < 0).all()


@pytest.mark.parametrize("world", WORLDS)
def test_recording_is_reproducible(recorded, world):
    a, b, c = (Dataset(recorded[world, k]) for k in "abc")
    ta, tb, tc = a.arrays(), b.arrays(), c.arrays()
    for key in ("actions", "rewards", "dones"):
        np.testing.assert_array_equal(ta[key], tb[key])
    np.testing.assert_array_equal(a.episode(1)["frames"], b.episode(1)["frames"])
    differs = len(ta["actions"]) != len(tc["actions"]) or not np.array_equal(ta["actions"], tc["actions"])
    assert differs or not np.array_equal(a.episode(0)["frames"], c.episode(0)["frames"])


def test_frame_is_observation_before_action():
    """frames[t] shows the state the policy acted on; rewards[t] follows actions[t]."""
    env, world = make_env("pusht", 64)
    policy = make_policy("random", env, 0)
    ep = run_episode(env, policy, world, seed=7, max_steps=5)
    obs, _ = env.reset(seed=7)
    np.testing.assert_array_equal(ep["frames"][0], obs)
    for t in range(5):
        obs, reward, *_ = env.step(ep["actions"][t])
        assert reward == pytest.approx(ep["rewards"][t])
        if t + 1 < 5:
            np.testing.assert_array_equal(ep["frames"][t + 1], obs)
    assert len(ep["frames"]) == len(ep["actions"]) == 5 and ep["dones"].tolist() == [False] * 4 + [True]
    env.close()


def test_max_steps_replaces_the_time_limit():
    for max_steps, length in ((None, 50), (60, 60), (7, 7)):
        env, world = make_env("reacher", 16, max_steps)
        ep = run_episode(env, make_policy("random", env, 0), world, seed=0, max_steps=world.max_steps)
        assert len(ep["actions"]) == length and ep["dones"].sum() == 1
        env.close()


def test_refuses_existing_dir_then_appends(recorded, tmp_path):
    path = recorded["pusht", "a"]
    before = Dataset(path).arrays()["actions"].copy()
    with pytest.raises(WorldlineError, match="--append"):
        record("pusht", 1, path, policy="expert", max_steps=STEPS, progress=False)
    np.testing.assert_array_equal(Dataset(path).arrays()["actions"], before)

    # one episode, then one appended == two at once (episode i is seeded with seed + i)
    out = tmp_path / "grow"
    record("pusht", 1, out, policy="expert", seed=3, max_steps=STEPS, progress=False)
    record("pusht", 1, out, policy="expert", seed=3, max_steps=STEPS, mode="append", progress=False)
    grown, whole = Dataset(out), Dataset(path)
    assert grown.num_episodes == 2
    np.testing.assert_array_equal(grown.arrays()["actions"], before)
    # the same pictures, though encoded in a different video file (H.264 is lossy, rate control differs)
    diff = np.abs(grown.episode(1)["frames"].astype(np.int16) - whole.episode(1)["frames"].astype(np.int16))
    assert diff.mean() < 1.0, diff.mean()

    with pytest.raises(WorldlineError, match="cannot append"):
        record("pusht", 1, out, resolution=32, max_steps=2, mode="append", progress=False)
    with pytest.raises(WorldlineError, match="cannot append"):
        record("reacher", 1, out, max_steps=2, mode="append", progress=False)
    assert Dataset(out).num_episodes == 2


def test_interrupted_recording_leaves_dataset_intact(recorded, tmp_path, monkeypatch):
    import shutil

    import worldline.envs.recorder as recorder

    path = tmp_path / "ds"
    shutil.copytree(recorded["reacher", "a"], path)
    real, calls = recorder.run_episode, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(recorder, "run_episode", interrupted)
    for mode in ("append", "overwrite"):
        calls.clear()
        with pytest.raises(KeyboardInterrupt):
            record("reacher", 3, path, max_steps=5, mode=mode, progress=False)
        ds = Dataset(path)
        assert ds.num_episodes == 2 and list(ds.episode_lengths) == list(Dataset(recorded["reacher", "a"]).episode_lengths)
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        record("reacher", 3, tmp_path / "new", max_steps=5, progress=False)
    assert not (tmp_path / "new").exists() or not any((tmp_path / "new").iterdir())


def test_bad_record_arguments(tmp_path):
    for kwargs in (dict(episodes=0), dict(episodes=1, max_steps=0), dict(episodes=1, seed=-1)):
        with pytest.raises(WorldlineError, match="must be an integer"):
            record("pusht", out=tmp_path / "x", progress=False, **kwargs)
    with pytest.raises(WorldlineError, match=r"unknown policy 'smooth' for env ALE/Breakout-v5 \(available: random, expert\)"):
        record("breakout", 1, tmp_path / "y", policy="smooth", progress=False)
    with pytest.raises(WorldlineError, match="empty name"):
        record("pusht", 1, tmp_path / "z", policy="expert,", progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists() and not (tmp_path / "z").exists()


def test_policy_mix_alternates_by_episode(tmp_path):
    """'expert,random': even episodes are the expert's and odd ones random, each reproducing the
    single-policy recording with the same seed; appending continues the alternation."""
    record("pusht", 2, tmp_path / "mix", policy="expert,random", seed=5, max_steps=STEPS, progress=False)
    record("pusht", 1, tmp_path / "mix", policy="expert,random", seed=5, max_steps=STEPS, mode="append", progress=False)
    record("pusht", 3, tmp_path / "exp", policy="expert", seed=5, max_steps=STEPS, progress=False)
    record("pusht", 2, tmp_path / "rnd", policy="random", seed=5, max_steps=STEPS, progress=False)
    mix, exp, rnd = (Dataset(tmp_path / n) for n in ("mix", "exp", "rnd"))
    assert mix.num_episodes == 3
    np.testing.assert_array_equal(mix.episode(0)["actions"], exp.episode(0)["actions"])  # seed 5, expert
    np.testing.assert_array_equal(mix.episode(1)["actions"], rnd.episode(1)["actions"])  # seed 6, random
    assert not np.array_equal(mix.episode(0)["actions"], rnd.episode(0)["actions"])
    np.testing.assert_array_equal(mix.episode(2)["actions"], exp.episode(2)["actions"])  # seed 7, expert again


# ----------------------------------------------------------------------------------------------
# Policies
# ----------------------------------------------------------------------------------------------


def _final_coverage(policy_name: str, episodes: int = 4, steps: int = 150) -> float:
    env, _ = make_env("pusht", 64)
    policy = make_policy(policy_name, env, 0)
    finals = []
    for seed in range(episodes):
        obs, info = env.reset(seed=seed)
        policy.reset(seed)
        for _ in range(steps):
            obs, _, terminated, _, info = env.step(policy(obs, info))
            if terminated:
                break
        finals.append(info["coverage"])
    env.close()
    return float(np.mean(finals))


def test_pusht_expert_beats_random():
    expert, random = _final_coverage("expert"), _final_coverage("random")
    assert expert > 0.5, f"expert final coverage {expert:.2f}"
    assert expert > random + 0.4, f"expert {expert:.2f} vs random {random:.2f}"


@pytest.mark.parametrize("world,expert_within,random_beyond", [("reacher", 0.03, 0.03), ("reacher-pos", 0.02, 0.05)])
def test_reacher_expert_reaches_target_and_episodes_end_at_the_cap(world, expert_within, random_beyond):
    env, _ = make_env(world, 16)
    dist = {}
    try:
        for name in ("expert", "random"):
            policy = make_policy(name, env, 0)
            final = []
            for seed in range(4):
                obs, info = env.reset(seed=seed)
                policy.reset(seed)
                for step in range(50):
                    obs, _, _, truncated, info = env.step(policy(obs, info))
                assert truncated and step == 49
                final.append(np.linalg.norm(obs[8:10]))  # fingertip - target
            dist[name] = float(np.mean(final))
    finally:
        env.close()
    assert dist["expert"] < expert_within and dist["random"] > random_beyond, dist


def test_reacher_pos_moves_the_joints_by_the_action_and_holds_the_pose():
    from worldline.envs.arm import MAX_STEP

    env, info = make_env("reacher-pos", 16)
    try:
        assert info.action_spec.dim == 2 and info.action_spec.low == [-1.0, -1.0]
        env.reset(seed=0)
        u = env.unwrapped
        before, target = u.data.qpos[:2].copy(), u.data.qpos[2:].copy()
        obs, reward, terminated, truncated, _ = env.step(np.array([0.5, -1.0], np.float32))
        assert np.allclose(u.data.qpos[:2] - before, [0.5 * MAX_STEP, -MAX_STEP])
        assert np.array_equal(u.data.qpos[2:], target) and not u.data.qvel.any()  # the target stays, nothing coasts
        assert np.allclose(obs[6:8], 0) and not terminated and not truncated
        frame = env.render()
        env.step(np.zeros(2, np.float32))
        assert np.array_equal(env.render(), frame)  # a zero step holds the pose
        env.step(np.array([0.0, 3.0], np.float32))  # clipped to one unit: the elbow is back where it started
        assert u.data.qpos[1] == pytest.approx(before[1], abs=1e-9)
        for _ in range(60):
            env.step(np.array([0.0, 1.0], np.float32))
        assert u.data.qpos[1] <= u.model.jnt_range[1][1] + 1e-9  # the elbow stops at its joint limit
    finally:
        env.close()


def test_breakout_expert_scores_more_than_random():
    env, _ = make_env("breakout", 16)
    score = {}
    for name in ("expert", "random"):
        policy = make_policy(name, env, 0)
        obs, info = env.reset(seed=0)
        policy.reset(0)
        total = 0.0
        for _ in range(400):
            obs, reward, terminated, truncated, info = env.step(policy(obs, info))
            total += reward
            if terminated or truncated:
                break
        score[name] = total
    env.close()
    assert score["expert"] >= 10 and score["expert"] > 3 * score["random"], score


def test_smooth_policy_moves_smoothly_within_bounds():
    env, _ = make_env("pusht", 16)
    steps = {}
    for name in ("smooth", "random"):
        policy = make_policy(name, env, 1)
        actions = np.array([policy(None, {}) for _ in range(200)])
        assert ((actions >= 0) & (actions <= 512)).all()
        steps[name] = float(np.linalg.norm(np.diff(actions, axis=0), axis=1).mean())
        assert actions.std(axis=0).min() > 50  # still covers the workspace
    env.close()
    assert steps["smooth"] < 0.2 * steps["random"], steps


def test_policy_reset_makes_episodes_reproducible():
    env, _ = make_env("reacher", 16)
    policy = make_policy("expert", env, 0)
    obs = env.observation_space.sample()
    policy.reset(11)
    first = [policy(obs, {}) for _ in range(5)]
    policy.reset(11)
    np.testing.assert_array_equal(first, [policy(obs, {}) for _ in range(5)])
    env.close()


def test_appending_to_a_dataset_recorded_without_proprioception_keeps_it_without(tmp_path):
    """Datasets recorded before worldline stored observation.state still take appended episodes."""
    out = tmp_path / "old"
    with DatasetWriter(out, fps=BUILTIN["reacher-pos"].fps, image_shape=(16, 16, 3), env_id="reacher-pos",
                       action_spec=make_env("reacher-pos", 16)[1].action_spec) as w:
        w.add_episode(np.zeros((3, 16, 16, 3), np.uint8), np.zeros((3, 2), np.float32))
    record("reacher-pos", 1, out, policy="expert", resolution=16, max_steps=4, mode="append", progress=False)
    ds = Dataset(out)
    assert ds.num_episodes == 2 and ds.state_names == [] and "states" not in ds.arrays()
