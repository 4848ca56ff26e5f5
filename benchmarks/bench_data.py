"""Data pipeline throughput: dataset write, frame-cache build and training-window sampling.

    python benchmarks/bench_data.py                 # windows/s at batch 32, 8 frames, 64x64
    python benchmarks/bench_data.py --codec         # PSNR the codec costs at 64x64 per CRF / pix_fmt

The floor is 2,000 windows/s (8 frames of 64x64) on 2 CPU cores; the ratio to it is printed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

FLOOR = 2000.0  # windows/s the trainer needs so data never limits a small CPU run


def scene(length: int, seed: int, size: int = 64) -> np.ndarray:
    """(T, size, size, 3) uint8: textured background drifting, two coloured objects moving."""
    rng = np.random.default_rng(seed)
    tex = rng.integers(0, 256, (size // 4, size // 2 + length // 2 + 2, 3)).astype(np.float32)
    tex = np.repeat(np.repeat(tex, 4, 0), 4, 1)
    out = np.empty((length, size, size, 3), np.uint8)
    for t in range(length):
        f = tex[:, 2 * t : 2 * t + size] * 0.5 + 60
        x = (3 * t + seed) % (size - 12)
        f[10:22, x : x + 12] = (230, 40, 40)
        f[40:50, size - 12 - x : size - x] = (40, 220, 60)
        out[t] = f.clip(0, 255)
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def bench_codec() -> None:
    from worldline.data.video import read_video, write_video

    frames = scene(60, 0)
    flat = np.zeros_like(frames)
    flat[...] = (30, 60, 90)
    for t in range(len(flat)):
        x = (5 + t) % 50
        flat[t, 20:30, x : x + 12] = (230, 40, 40)
    print(f"{'content':8s} {'pix_fmt':8s} {'crf':>4s} {'PSNR dB':>8s} {'bytes/frame':>12s}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, clip in (("texture", frames), ("flat", flat)):
            for pix_fmt in ("yuv444p", "yuv420p"):
                for crf in (18, 14, 10, 6):
                    path = Path(tmp) / f"{name}-{pix_fmt}-{crf}.mp4"
                    write_video(path, clip, fps=10, crf=crf, pix_fmt=pix_fmt)
                    got = read_video(path)
                    print(f"{name:8s} {pix_fmt:8s} {crf:4d} {psnr(got, clip):8.2f} {path.stat().st_size / len(clip):12.0f}")


def bench_windows(episodes: int, length: int, batch: int, window: int, seconds: float) -> None:
    from worldline.core.contracts import ActionSpec
    from worldline.data.cache import frame_store
    from worldline.data.format import Dataset, DatasetWriter
    from worldline.data.windows import WindowSampler, split_episodes

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ds"
        clips = [scene(length, e) for e in range(episodes)]
        spec = ActionSpec(kind="continuous", dim=2, low=[-1, -1], high=[1, 1])
        t0 = time.perf_counter()
        with DatasetWriter(out, fps=10, image_shape=(64, 64, 3), action_spec=spec) as w:
            for e, clip in enumerate(clips):
                w.add_episode(clip, np.random.default_rng(e).uniform(-1, 1, (length, 2)))
        t_write = time.perf_counter() - t0
        frames = episodes * length
        ds = Dataset(out)
        t0 = time.perf_counter()
        store = frame_store(ds, progress=False)
        t_cache = time.perf_counter() - t0
        t0 = time.perf_counter()
        store = frame_store(ds, progress=False)
        t_reopen = time.perf_counter() - t0
        train, _ = split_episodes(ds.num_episodes, 0.1, 0)
        sampler = WindowSampler(store, window, train)
        for step in range(3):
            sampler.sample(batch, step, 0)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            b = sampler.sample(batch, n, 0)
            n += 1
        dt = time.perf_counter() - t0
        rate = n * batch / dt
        seq, t0 = 0, time.perf_counter()
        for b in sampler.iter_sequential(batch):
            seq += len(b["episode_index"])
            if time.perf_counter() - t0 > seconds:
                break
        seq_rate = seq / (time.perf_counter() - t0)
        print(f"dataset: {episodes} episodes x {length} frames = {frames} frames of 64x64, {torch.get_num_threads()} torch threads")
        print(f"write (encode + parquet):  {frames / t_write:9.0f} frames/s  ({t_write:.2f} s)")
        print(f"cache build (decode):      {frames / t_cache:9.0f} frames/s  ({t_cache:.2f} s); reopen {t_reopen * 1e3:.1f} ms")
        print(f"sample(): {rate:9.0f} windows/s  (batch {batch}, {window} frames, {n} batches)  ratio to {FLOOR:.0f} floor: {rate / FLOOR:.2f}x")
        print(f"iter_sequential(): {seq_rate:9.0f} windows/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--codec", action="store_true", help="measure codec PSNR instead of throughput")
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the other core trains)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.codec:
        bench_codec()
    else:
        bench_windows(args.episodes, args.length, args.batch, args.window, args.seconds)


if __name__ == "__main__":
    main()
