"""CoinRun (procgen) as a gymnasium env with four actions, and a policy that holds its actions.

CoinRun is the procedurally generated platform game Genie learnt latent actions on: an agent runs
and jumps through a level towards a coin, past lava, saws and walkers. The camera follows the agent,
so running left or right shifts the whole view and jumping shifts it up: the action decides most
of what changes between frames, which is what a latent action model needs to discover actions.

procgen offers 15 button combinations; CoinRun reads only the direction of each, so the world keeps
the four that are distinct in play: NOOP, LEFT, RIGHT and UP (jump). DOWN does nothing in CoinRun,
the diagonals are a run and a jump at once (a player gets them by holding two keys in turn), and
the letter buttons are unused. The names are the ones ``worldline play`` maps to arrow keys.

procgen's own interface is gym3 (a vector of environments that reset themselves when an episode
ends); :class:`CoinRunEnv` drives one of them and ends the gymnasium episode where gym3 starts the
next one. Each ``reset(seed=s)`` plays level ``s``, so an episode is a function of its seed.
"""

from __future__ import annotations

import contextlib
import io

import gymnasium as gym
import numpy as np

from worldline.core.errors import WorldlineError
from worldline.envs.policies import Policy

ACTION_NAMES = ("NOOP", "LEFT", "RIGHT", "UP")
PROCGEN_COMBOS = ((), ("LEFT",), ("RIGHT",), ("UP",))  # procgen's button sets for ACTION_NAMES, in order
RESOLUTION = 64  # procgen draws 64x64 observations
INSTALL = "pip install --no-deps procgen-mirror gym3 gym gym_notices"


def _procgen():
    try:
        # procgen imports the old gym, which prints a notice to stderr on import (gym_notices)
        with contextlib.redirect_stderr(io.StringIO()):
            from procgen import ProcgenGym3Env
    except ImportError:
        raise WorldlineError(f"env 'coinrun' needs procgen, which is not installed: {INSTALL}") from None
    return ProcgenGym3Env


def procgen_available() -> bool:
    try:
        _procgen()
    except WorldlineError:
        return False
    return True


class CoinRunEnv(gym.Env):
    """procgen CoinRun, one level per episode: observation (64, 64, 3) uint8, ``Discrete(4)`` actions
    (:data:`ACTION_NAMES`), reward 10 for the coin. ``terminated`` when the level ends (coin reached,
    agent dead, or procgen's own 1000-step time-out, which gym3 does not tell apart)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(self, render_mode: str | None = "rgb_array", distribution_mode: str = "easy", backgrounds: bool = True):
        self.env_class = _procgen()
        self.render_mode = render_mode
        self.distribution_mode = distribution_mode  # "easy": the shorter levels procgen's papers train on at 64x64
        self.backgrounds = backgrounds  # the textured backdrop makes the scrolling of the view visible everywhere
        self.action_space = gym.spaces.Discrete(len(ACTION_NAMES))
        self.observation_space = gym.spaces.Box(0, 255, (RESOLUTION, RESOLUTION, 3), np.uint8)
        self._env = None
        self._obs = None
        self._combo_ids: list[int] = []
        self._level_rng = np.random.default_rng()

    def get_action_meanings(self) -> list[str]:
        return list(ACTION_NAMES)

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self._level_rng = np.random.default_rng(seed)
        level = int(seed) if seed is not None else int(self._level_rng.integers(2**31 - 1))
        self.close()
        self._env = self.env_class(
            num=1,
            env_name="coinrun",
            distribution_mode=self.distribution_mode,
            start_level=level,
            num_levels=1,
            rand_seed=level,
            use_backgrounds=self.backgrounds,
        )
        combos = [tuple(c) for c in self._env.get_combos()]
        self._combo_ids = [combos.index(c) for c in PROCGEN_COMBOS]
        _, obs, _ = self._env.observe()
        self._obs = obs["rgb"][0].copy()
        return self._obs, {"level": level}

    def step(self, action):
        if self._env is None:
            raise WorldlineError("coinrun: call reset() before step()")
        a = int(action)
        if not 0 <= a < len(ACTION_NAMES):
            raise WorldlineError(f"coinrun action {action!r} is outside 0..{len(ACTION_NAMES) - 1} ({', '.join(ACTION_NAMES)})")
        self._env.act(np.array([self._combo_ids[a]], np.int32))
        reward, obs, first = self._env.observe()
        info = self._env.get_info()[0]
        ended = bool(first[0])
        # gym3 has already reset: the frame after the last step is the next level's first; keep the
        # last frame instead, the episode being over anyway
        if not ended:
            self._obs = obs["rgb"][0].copy()
        return self._obs, float(reward[0]), ended, False, dict(info)

    def render(self) -> np.ndarray:
        if self._obs is None:
            raise WorldlineError("coinrun rendered nothing (call reset first)")
        return self._obs

    def close(self):
        if self._env is not None:
            self._env.close()
            self._env = None


class HoldPolicy(Policy):
    """Random actions held for a random 4..16 steps (each hold's action drawn from ``weights``); a
    run that stops moving the view (the runner is against a wall) ends its hold early.

    A new uniform action every step barely moves the agent (CoinRun's runner accelerates over a few
    steps and each step's action undoes the last one's); held actions run, stop and jump as a player
    does, so each action's effect shows in the video. Runs are drawn more often than NOOP and UP,
    and RIGHT most (levels start at their left wall and lead right), since running scrolls the view.
    Without the early end, ~60% of the runs' steps pushed against a wall and changed nothing (shifts
    of the view measured on 20 recorded episodes): a video where a run looks like standing still."""

    weights = np.array([1.0, 1.5, 2.5, 1.0]) / 6.0  # NOOP, LEFT, RIGHT, UP
    hold = (4, 16)  # steps an action is held (inclusive)
    blocked_after = 2  # consecutive run steps without a visible change that end the hold
    still = 0.5  # mean absolute pixel change (0..255) below which a frame counts as unchanged

    def reset(self, seed: int) -> None:
        super().reset(seed)
        self.left = 0
        self.action = 0
        self.last = None
        self.blocked = 0

    def act(self, obs, info) -> int:
        frame = np.asarray(obs, np.float32) if obs is not None and np.ndim(obs) == 3 else None
        if frame is not None and self.last is not None and self.action in (1, 2):
            unchanged = np.abs(frame - self.last).mean() < self.still
            self.blocked = self.blocked + 1 if unchanged else 0
            if self.blocked >= self.blocked_after:
                self.left = 0
        self.last = frame
        if self.left == 0:
            self.action = int(self.rng.choice(len(ACTION_NAMES), p=self.weights))
            self.left = int(self.rng.integers(self.hold[0], self.hold[1] + 1))
            self.blocked = 0
        self.left -= 1
        return self.action
