"""Synthetic episodes for the data tests: smooth moving scenes that H.264 keeps well above 35 dB."""

from __future__ import annotations

import numpy as np

from worldline.core.contracts import ActionSpec
from worldline.data.format import DatasetWriter

SPEC = ActionSpec(kind="continuous", dim=2, low=[-1.0, -1.0], high=[1.0, 1.0])


def make_frames(length: int, seed: int, size: int = 32) -> np.ndarray:
    """(T, size, size, 3) uint8: a coloured gradient per episode with a square moving across it."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([x, y, (x + y) / 2], -1) * rng.uniform(80, 200, 3) + rng.uniform(0, 40, 3)
    frames = np.repeat(base[None], length, 0)
    for t in range(length):
        cx = (3 + 2 * t + seed) % (size - 8)
        frames[t, 8:16, cx : cx + 8] = (240, 240, 240)
    return frames.clip(0, 255).astype(np.uint8)


def make_episode(length: int, seed: int, size: int = 32, dim: int = 2) -> dict:
    rng = np.random.default_rng(1000 + seed)
    return {
        "frames": make_frames(length, seed, size),
        "actions": rng.uniform(-1, 1, (length, dim)).astype(np.float32),
        "rewards": rng.standard_normal(length).astype(np.float32),
        "dones": np.arange(length) == length - 1,
    }


def write_dataset(path, lengths, size: int = 32, mode: str = "create", seed: int = 0, **kw) -> list[dict]:
    """Write episodes of the given lengths; returns them as written."""
    episodes = [make_episode(n, seed + i, size) for i, n in enumerate(lengths)]
    with DatasetWriter(path, fps=10, image_shape=(size, size, 3), action_spec=SPEC, mode=mode, **kw) as w:
        for i, ep in enumerate(episodes):
            w.add_episode(ep["frames"], ep["actions"], ep["rewards"], ep["dones"], task=f"task {i % 2}")
    return episodes


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))
