"""An in-memory replay of real experience as one stream, for the online Dreamer loop.

Rows follow the dataset convention: frame t, the action taken there, the reward and termination it
led to. ``is_first`` marks each episode's first frame, so windows may cross episode boundaries (short
episodes still train the model) and the world model restarts its memory there. ``to_dataset`` writes
the episodes as a worldline dataset, so what the agent saw can train other models.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from worldline.core.contracts import ActionSpec


class Replay:
    def __init__(self, capacity: int, image_shape: tuple[int, int, int], action_dim: int):
        self.frames = np.zeros((capacity, *image_shape), np.uint8)
        self.actions = np.zeros((capacity, action_dim), np.float32)
        self.rewards = np.zeros(capacity, np.float32)
        self.terminals = np.zeros(capacity, bool)  # the env terminated (not truncated) after this action
        self.ends = np.zeros(capacity, bool)  # last frame of its episode (terminated, truncated or capped)
        self.is_first = np.zeros(capacity, bool)
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, frame: np.ndarray, action: np.ndarray, reward: float, terminal: bool, end: bool, first: bool) -> None:
        if self.size >= len(self.frames):
            raise IndexError("replay is full")  # capacity = the run's env steps, so this is a bug, not user input
        i = self.size
        self.frames[i], self.actions[i], self.rewards[i] = frame, action, reward
        self.terminals[i], self.ends[i], self.is_first[i] = terminal, end, first
        self.size += 1

    def sample(self, batch: int, length: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """Windows (B, T) of consecutive rows: frames float (B, T, 3, H, W) in [-1, 1], actions, rewards,
        ``dones`` (terminations), ``is_first``."""
        if self.size < length:
            raise ValueError(f"replay has {self.size} rows, a window needs {length}")
        starts = rng.integers(0, self.size - length + 1, batch)
        rows = starts[:, None] + np.arange(length)[None]  # (B, T)
        frames = torch.from_numpy(self.frames[rows]).permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0  # (B, T, 3, H, W)
        return {
            "frames": frames,
            "actions": torch.from_numpy(self.actions[rows]),
            "rewards": torch.from_numpy(self.rewards[rows]),
            "dones": torch.from_numpy(self.terminals[rows]),
            "is_first": torch.from_numpy(self.is_first[rows]),
        }

    def episodes(self) -> list[slice]:
        """Row ranges of the complete episodes."""
        starts = np.flatnonzero(self.is_first[: self.size])
        ends = np.flatnonzero(self.ends[: self.size])
        return [slice(int(s), int(e) + 1) for s, e in zip(starts, ends) if e >= s]

    def to_dataset(self, path: str | Path, fps: float, spec: ActionSpec, env_id: str, task: str = "") -> Path:
        from worldline.data.format import DatasetWriter

        with DatasetWriter(path, fps=fps, image_shape=self.frames.shape[1:], action_spec=spec, env_id=env_id, mode="overwrite") as w:
            for s in self.episodes():
                w.add_episode(self.frames[s], self.actions[s], self.rewards[s], self.ends[s], task=task)
        return Path(path)
