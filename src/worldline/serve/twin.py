"""The real world beside the dream: the built-in env a dataset was recorded from, stepped with the
same actions the player gives the model.

A gymnasium env cannot be copied, so the twin keeps every action since its reset and rebuilds any
earlier moment by resetting with the same seed and replaying them (the built-in worlds are
deterministic given seed and actions). That is how it starts at a dataset frame (the recorder resets
episode i with seed i, see envs/recorder.py) and how it follows a restore or a branch. Whether the
rebuilt picture matches the recording is measured (PSNR against the dataset frame), not assumed.
"""

from __future__ import annotations

import numpy as np

from worldline.core.contracts import ActionSpec

SYNC_PSNR_DB = 25.0  # above this the replayed world shows the recorded frame (H.264 alone costs ~35-45 dB)
MAX_STEPS = 10**7  # play has no time limit; the player resets when they like


class Twin:
    """One session's real env (its ``render()`` gives (R, R, 3) uint8 at the model's size)."""

    def __init__(self, env_id: str, resolution: int, spec: ActionSpec):
        from worldline.envs.registry import make_env

        self.env, self.info = make_env(env_id, resolution=resolution, max_steps=MAX_STEPS)
        self.spec = spec
        self.seed = 0
        self.actions: list[np.ndarray] = []  # every action since the reset, so any moment can be rebuilt
        self.done = False
        self.frame = np.zeros((resolution, resolution, 3), np.uint8)

    def reset(self, seed: int, actions: list[np.ndarray] | tuple = ()) -> np.ndarray:
        """Reset with ``seed`` and replay ``actions``; returns the picture reached."""
        self.env.reset(seed=int(seed))
        self.seed, self.actions, self.done = int(seed), [], False
        self.frame = self.env.render()
        for a in actions:
            self.step(a)
        return self.frame

    def step(self, action: np.ndarray) -> np.ndarray:
        """One env step with a dataset-style action row (A,) float32; a finished episode stays on
        its last picture until the next reset."""
        action = np.asarray(action, np.float32).reshape(-1)
        self.actions.append(action)
        if self.done:
            return self.frame
        env_action = int(round(float(action[0]))) if self.spec.kind == "discrete" else action
        _, _, terminated, truncated, _ = self.env.step(env_action)
        self.done = bool(terminated or truncated)
        self.frame = self.env.render()
        return self.frame

    def close(self) -> None:
        self.env.close()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
