"""Record episodes of a world into a worldline dataset (``worldline record``).

Frame t of an episode is the picture *before* action t; ``next.reward`` and ``next.done`` are what
the env returned *after* it (the LeRobot convention), so an episode of T steps has T frames, T
actions, and the picture after the last action is not stored. ``next.done`` is true on the last
frame of every episode: the env terminated or truncated it, or it reached ``max_steps``.

Reproducibility: dataset episode i is reset with ``seed + i`` and its policy reseeded with the
same number, so the same arguments record the same dataset, and appending N episodes to N recorded
ones gives the episodes that recording 2N at once would have.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from worldline.core.errors import WorldlineError
from worldline.envs.policies import Policy, make_policy
from worldline.envs.registry import WorldInfo, action_row, make_env, read_proprio


def run_episode(
    env,
    policy: Policy,
    world: WorldInfo,
    seed: int,
    max_steps: int,
    on_step: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Play one episode; returns frames (T, H, W, 3) uint8, actions (T, A) f32, rewards (T,) f32,
    dones (T,) bool, the task text and, for a world with proprioception, states (T, P) f32 read with
    each frame: ready for ``DatasetWriter.add_episode``."""
    obs, info = env.reset(seed=int(seed))
    policy.reset(int(seed))
    spec = world.action_spec
    frames, actions, rewards, dones, states = [], [], [], [], []
    for t in range(max_steps):
        frames.append(env.render())
        if world.proprio:
            states.append(read_proprio(env, world))
        action = policy(obs, info)
        actions.append(action_row(spec, action))
        obs, reward, terminated, truncated, info = env.step(action)
        rewards.append(float(reward))
        ended = bool(terminated or truncated) or t == max_steps - 1
        dones.append(ended)
        if on_step is not None:
            on_step(t + 1)
        if ended:
            break
    out = {
        "frames": np.stack(frames),  # (T, H, W, 3)
        "actions": np.stack(actions),  # (T, A)
        "rewards": np.asarray(rewards, np.float32),
        "dones": np.asarray(dones, bool),
        "task": world.task,
    }
    if world.proprio:
        out["states"] = np.stack(states)  # (T, P)
    return out


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise WorldlineError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


class _Progress:
    """Rich progress over episodes (fractional within an episode, so the ETA moves) with the frame
    count and frames/s; does nothing when disabled."""

    def __init__(self, enabled: bool, label: str, episodes: int, max_steps: int):
        self.enabled, self.max_steps = enabled, max_steps
        self.frames_before = 0  # frames of the finished episodes
        self.start = self.last = time.perf_counter()
        if enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[episode]}/{task.total:.0f} episodes"),
                TextColumn("{task.fields[frames]} frames {task.fields[rate]:.0f}/s"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
            )
            self.task = self.bar.add_task(label, total=episodes, episode=0, frames=0, rate=0.0)

    def __enter__(self) -> "_Progress":
        if self.enabled:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.bar.__exit__(*exc)

    def step(self, episode: int, t: int) -> None:
        """``t`` steps of episode ``episode`` (0-based) are done."""
        now = time.perf_counter()
        if self.enabled and now - self.last >= 0.1:
            self.last = now
            self._show(episode + min(t / self.max_steps, 0.99), episode, self.frames_before + t, now)

    def end_episode(self, episode: int, length: int) -> None:
        self.frames_before += length
        if self.enabled:
            self._show(episode + 1, episode + 1, self.frames_before, time.perf_counter())

    def _show(self, completed: float, episode: int, frames: int, now: float) -> None:
        rate = frames / max(now - self.start, 1e-9)
        self.bar.update(self.task, completed=completed, episode=episode, frames=frames, rate=rate)


def record(
    env: str,
    episodes: int,
    out: str | os.PathLike,
    *,
    policy: str = "random",
    resolution: int = 64,
    seed: int = 0,
    max_steps: int | None = None,
    mode: str = "create",
    progress: bool = True,
) -> Path:
    """Record ``episodes`` episodes of ``env`` (a built-in world or any gymnasium id) under ``policy``
    into the dataset ``out``; returns ``out``.

    ``policy`` may name several policies, comma-separated ("expert,smooth"): episode k uses the
    (k mod n)-th, so a dataset mixes purposeful and exploratory behaviour. A world model trained
    only on an expert learns to predict the expert's next move from the past and can ignore the
    action; exploratory episodes make the action the only way to know what comes next.

    ``max_steps`` caps every episode and replaces the env's own time limit (default: the world's,
    e.g. PushT 300). ``mode`` "create" refuses an existing non-empty directory, "append" adds
    episodes to it (same env, resolution and action space), "overwrite" replaces it once the new
    one is complete. A failure or Ctrl-C leaves the directory as it was.
    """
    from worldline.data.format import Dataset, DatasetWriter

    episodes = _check_int("episodes", episodes, 1)
    seed = _check_int("seed", seed, 0)
    if max_steps is not None:
        max_steps = _check_int("max_steps", max_steps, 1)
    gym_env, world = make_env(env, resolution, max_steps)
    try:
        names = [name.strip() for name in policy.split(",")]
        if not all(names):
            raise WorldlineError(f"policy {policy!r} has an empty name (use e.g. 'expert' or 'expert,smooth')")
        policies = [make_policy(name, gym_env, seed) for name in names]
        steps = world.max_steps
        state_names = world.proprio
        if mode == "append" and state_names and (Path(out) / "meta" / "info.json").is_file() and not Dataset(out).state_names:
            state_names = ()  # a dataset recorded before worldline stored proprioception: append without it
        writer = DatasetWriter(
            out,
            fps=world.fps,
            image_shape=(world.resolution, world.resolution, 3),
            action_spec=world.action_spec,
            env_id=world.env_id,
            mode=mode,
            state_names=state_names,
        )
        with writer, _Progress(progress, f"record {world.env_id} ({policy})", episodes, steps) as bar:
            first = writer.num_episodes  # > 0 when appending: continue the seed sequence
            for k in range(episodes):
                pol = policies[(first + k) % len(policies)]
                episode = run_episode(gym_env, pol, world, seed + first + k, steps, on_step=lambda t, k=k: bar.step(k, t))
                if not state_names:
                    episode.pop("states", None)
                writer.add_episode(**episode)
                bar.end_episode(k, len(episode["actions"]))
    finally:
        gym_env.close()
    return Path(out)
