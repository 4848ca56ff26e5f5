"""How predictable PushT's pusher is from what a world model sees: a least-squares fit on recorded frames.

    python benchmarks/pusht_pusher_fit.py --data DIR [--episodes 12] [--resolution 64]

The pusher (the blue disc) is found in each frame by its colour. Its next position is fitted as
``p[t+1] = A p[t] + B (p[t] - p[t-1]) + C action[t] * scale + d`` (scale: action box to pixels) on the
held-out episodes, and the fit's error is printed beside copying ``p[t]``: a small fit error says a
model that reads the last two frames and the action can place the disc to the pixel.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from worldline.data.config import DataConfig
from worldline.data.windows import WindowSampler
from worldline.eval.prediction import episode_ids, model_store


class _Size:  # model_store reads only config.image_size
    def __init__(self, resolution: int):
        self.config = type("cfg", (), {"image_size": (resolution, resolution)})()


def pusher_xy(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, H, W) in [-1, 1] -> centroid (B, 2) of the blue pixels in (x, y) pixels, and whether one was found."""
    img = (frames + 1) / 2
    blue = (img[:, 2] > 0.7) & (img[:, 0] < 0.5) & (img[:, 1] < 0.6)  # (B, H, W)
    ys, xs = torch.meshgrid(torch.arange(img.shape[-2], dtype=torch.float32), torch.arange(img.shape[-1], dtype=torch.float32), indexing="ij")
    n = blue.float().sum((1, 2))
    xy = torch.stack([(blue * xs).sum((1, 2)), (blue * ys).sum((1, 2))], 1) / n.clamp_min(1)[:, None]
    return xy, n > 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a recorded PushT dataset")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--max-windows", type=int, default=2000)
    args = parser.parse_args()
    data_cfg = DataConfig()
    ds, store = model_store(_Size(args.resolution), args.data, data_cfg)
    ids = episode_ids(ds.num_episodes, "val", data_cfg)
    sampler = WindowSampler(store, 3, ids, stride=1)
    pick = np.linspace(0, len(sampler) - 1, min(args.max_windows, len(sampler))).astype(int)
    batch = sampler.batch(pick)
    f, a = batch["frames"], batch["actions"]  # (B, 3, 3, H, W), (B, 3, 2)
    (p0, o0), (p1, o1), (p2, o2) = (pusher_xy(f[:, k]) for k in range(3))
    ok = o0 & o1 & o2
    scale = torch.tensor([args.resolution, args.resolution]) / torch.tensor(ds.action_spec.high, dtype=torch.float32)
    X = torch.cat([p1, p1 - p0, a[:, 1] * scale, torch.ones(len(a), 1)], 1)[ok].double()  # (n, 7)
    Y = p2[ok].double()
    fit = torch.linalg.lstsq(X, Y).solution
    err, copy = (Y - X @ fit).abs(), (Y - X[:, :2]).abs()
    print(f"{int(ok.sum())} held-out transitions of {len(ids)} episodes at {args.resolution}x{args.resolution}")
    print(f"linear fit: median error per axis {err.median():.2f} px, RMS {(Y - X @ fit).square().mean().sqrt():.2f} px")
    print(f"copying p[t]: median error {copy.median():.2f} px, ratio {copy.median() / err.median():.1f}x")


if __name__ == "__main__":
    main()
