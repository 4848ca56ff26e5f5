"""Dataset statistics (``meta/stats.json``) and the ``worldline data info`` summary.

Per feature: ``min``, ``max``, ``mean``, ``std`` (lists) and ``count`` (rows they were computed
from). Actions and rewards use every row; camera features use a subsample of frames and are per
channel in [0, 1] with shape (3, 1, 1), as LeRobot stores them, so they broadcast over (C, H, W).
Stats of separate writes merge exactly (count-weighted moments), so an append never re-reads old data.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from einops import rearrange

IMAGE_SAMPLES_PER_EPISODE = 16  # frames per episode that feed the image stats (exact stats need no more)


class RunningStats:
    """Exact min/max/mean/std over the rows of ``(N, C)`` arrays, accumulated in float64."""

    def __init__(self, channels: int):
        self.count = 0
        self.sum = np.zeros(channels, np.float64)
        self.sumsq = np.zeros(channels, np.float64)
        self.min = np.full(channels, np.inf)
        self.max = np.full(channels, -np.inf)

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64).reshape(len(x), -1)  # (N, C)
        if not len(x):
            return
        self.count += len(x)
        self.sum += x.sum(0)
        self.sumsq += np.square(x).sum(0)
        self.min = np.minimum(self.min, x.min(0))
        self.max = np.maximum(self.max, x.max(0))

    def to_dict(self, shape: tuple[int, ...] | None = None, count: int | None = None) -> dict[str, Any]:
        n = max(self.count, 1)
        mean = self.sum / n
        std = np.sqrt(np.maximum(self.sumsq / n - mean**2, 0.0))
        lo = np.where(np.isfinite(self.min), self.min, 0.0)
        hi = np.where(np.isfinite(self.max), self.max, 0.0)
        shape = shape or (len(mean),)
        return {
            "min": lo.reshape(shape).tolist(),
            "max": hi.reshape(shape).tolist(),
            "mean": mean.reshape(shape).tolist(),
            "std": std.reshape(shape).tolist(),
            "count": int(self.count if count is None else count),
        }


def image_subsample(num_frames: int, k: int = IMAGE_SAMPLES_PER_EPISODE) -> np.ndarray:
    """Evenly spaced frame indices (at most ``k``) of an episode, always including the first."""
    return np.unique(np.linspace(0, num_frames - 1, num=min(k, num_frames)).round().astype(np.int64))


def image_stats_update(stats: RunningStats, frames: np.ndarray) -> None:
    """Add (T, H, W, 3) uint8 frames to per-channel stats in [0, 1]."""
    pixels = rearrange(frames, "t h w c -> (t h w) c")  # (T*H*W, 3)
    stats.update(pixels.astype(np.float32) / 255.0)


class StatsAccumulator:
    """What a writer feeds while it writes: actions, rewards, dones and sampled frames per camera."""

    def __init__(self, action_dim: int, cameras: list[str], state_dim: int = 0):
        self.action = RunningStats(action_dim)
        self.state = RunningStats(state_dim) if state_dim else None
        self.reward = RunningStats(1)
        self.done = RunningStats(1)
        self.images = {cam: RunningStats(3) for cam in cameras}
        self.image_frames = {cam: 0 for cam in cameras}

    def add_episode(self, frames: dict[str, np.ndarray], actions: np.ndarray, rewards: np.ndarray, dones: np.ndarray,
                    states: np.ndarray | None = None):
        self.action.update(actions)
        if self.state is not None and states is not None:
            self.state.update(states)
        self.reward.update(rewards[:, None])
        self.done.update(dones[:, None].astype(np.float64))
        for cam, video in frames.items():
            picked = video[image_subsample(len(video))]
            image_stats_update(self.images[cam], picked)
            self.image_frames[cam] += len(picked)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "action": self.action.to_dict(),
            "next.reward": self.reward.to_dict(),
            "next.done": self.done.to_dict(),
        }
        if self.state is not None:
            out["observation.state"] = self.state.to_dict()
        for cam, s in self.images.items():
            out[cam] = s.to_dict(shape=(3, 1, 1))
        return out


def merge_stats(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Stats of the union of two disjoint sets of rows, from their stats alone."""
    out = {}
    for key in set(a) | set(b):
        if key not in a or key not in b:
            out[key] = a.get(key) or b.get(key)
            continue
        x, y = a[key], b[key]
        na, nb = int(x["count"]), int(y["count"])
        if na == 0 or nb == 0:
            out[key] = y if na == 0 else x
            continue
        shape = np.asarray(x["mean"]).shape
        ma, mb = np.asarray(x["mean"], np.float64), np.asarray(y["mean"], np.float64)
        va, vb = np.square(np.asarray(x["std"], np.float64)), np.square(np.asarray(y["std"], np.float64))
        n = na + nb
        mean = (na * ma + nb * mb) / n
        var = (na * (va + ma**2) + nb * (vb + mb**2)) / n - mean**2
        out[key] = {
            "min": np.minimum(np.asarray(x["min"]), np.asarray(y["min"])).reshape(shape).tolist(),
            "max": np.maximum(np.asarray(x["max"]), np.asarray(y["max"])).reshape(shape).tolist(),
            "mean": mean.reshape(shape).tolist(),
            "std": np.sqrt(np.maximum(var, 0.0)).reshape(shape).tolist(),
            "count": n,
        }
    return out


def compute_stats(dataset) -> dict[str, Any]:
    """Recompute every feature's stats of a :class:`~worldline.data.format.Dataset` from disk."""
    arrays = dataset.arrays()
    acc = StatsAccumulator(arrays["actions"].shape[1], list(dataset.cameras), len(dataset.state_names))
    acc.action.update(arrays["actions"])
    if acc.state is not None:
        acc.state.update(arrays["states"])
    acc.reward.update(arrays["rewards"][:, None])
    acc.done.update(arrays["dones"][:, None].astype(np.float64))
    for cam in dataset.cameras:
        for i in range(dataset.num_episodes):
            frames = dataset.episode_frames(i, cam)
            picked = frames[image_subsample(len(frames))]
            image_stats_update(acc.images[cam], picked)
            acc.image_frames[cam] += len(picked)
    return acc.to_dict()


# ----------------------------------------------------------------------------------------------
# Summary for `worldline data info`
# ----------------------------------------------------------------------------------------------


def _size_on_disk(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _fmt_list(values: Any, digits: int = 3) -> str:
    flat = np.asarray(values, np.float64).reshape(-1)
    if flat.size > 6:
        return f"[{', '.join(f'{v:.{digits}g}' for v in flat[:6])}, …] ({flat.size})"
    return "[" + ", ".join(f"{v:.{digits}g}" for v in flat) + "]"


def summary_rows(path: str | os.PathLike) -> list[tuple[str, str]]:
    """(field, value) rows describing the dataset at ``path``."""
    from worldline.data.format import Dataset
    from worldline.data.windows import split_episodes

    ds = Dataset(path)
    spec = ds.action_spec
    if spec.kind == "discrete":
        action = f"discrete, {spec.n} actions" + (f" ({', '.join(spec.names)})" if spec.names else "")
    elif spec.kind == "continuous":
        action = f"continuous, dim {spec.dim}"
        if spec.low is not None and spec.high is not None:
            action += f", low {_fmt_list(spec.low)} high {_fmt_list(spec.high)}"
    else:
        action = "none (video only)"
    lengths = ds.episode_lengths
    rows = [
        ("path", str(ds.root)),
        ("format", f"LeRobot {ds.info.get('codebase_version')} ({ds.info.get('worldline', {}).get('created_by', 'external')})"),
        ("episodes", str(ds.num_episodes)),
        ("frames", f"{ds.num_frames} (episode length {lengths.min() if len(lengths) else 0}–{lengths.max() if len(lengths) else 0}, mean {lengths.mean() if len(lengths) else 0:.1f})"),
        ("fps", f"{ds.fps:g}"),
        ("duration", f"{ds.num_frames / ds.fps:.1f} s"),
        ("cameras", ", ".join(f"{c} {'x'.join(map(str, ds.feature_shape(c)))}" for c in ds.cameras)),
        ("action space", action),
        ("proprioception", f"observation.state: {', '.join(ds.state_names)}" if ds.state_names else "none"),
        ("env id", str(ds.env_id)),
    ]
    if ds.num_episodes >= 2:
        from worldline.data.config import DataConfig

        cfg = DataConfig()
        train, val = split_episodes(ds.num_episodes, cfg.val_fraction, cfg.split_seed)
        rows.append(("split", f"{len(train)} train / {len(val)} val episodes (val_fraction {cfg.val_fraction}, seed {cfg.split_seed})"))
    tasks = ds.tasks
    if tasks and tasks != [""]:
        rows.append(("tasks", f"{len(tasks)}: " + "; ".join(t for t in tasks[:3]) + (" …" if len(tasks) > 3 else "")))
    stats = ds.stats
    for key in ["action", "observation.state", "next.reward", *ds.cameras]:
        if key not in stats or (key == "action" and spec.kind == "none"):
            continue
        s = stats[key]
        rows.append((f"stats {key}", f"mean {_fmt_list(s['mean'])} std {_fmt_list(s['std'])} min {_fmt_list(s['min'])} max {_fmt_list(s['max'])}"))
    rows.append(("size on disk", _human(_size_on_disk(ds.root))))
    return rows


def summary(path: str | os.PathLike):
    """A rich Table describing the dataset (episodes, frames, fps, cameras, actions, stats, size)."""
    from rich.table import Table

    table = Table(title=f"worldline dataset {Path(path).name}", show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in summary_rows(path):
        table.add_row(key, value)
    return table


def summary_text(path: str | os.PathLike) -> str:
    """Plain-text form of :func:`summary` (for logs and tests)."""
    rows = summary_rows(path)
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
