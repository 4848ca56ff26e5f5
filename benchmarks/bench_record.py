"""Recording speed of the built-in worlds at 64x64, H.264 encoding and dataset writing included.

    python benchmarks/bench_record.py [--frames 1800] [--worlds pusht,breakout,reacher]

Prints frames/s for each world and policy, and the ratio to the floor of 200 frames/s (set for
PushT on 2 CPU cores). The clock covers the whole ``record()`` call: env creation, stepping,
rendering, the policy, the per-episode seeded reset (ALE reloads its ROM there, ~0.2 s), encoding
and the atomic commit. Each world records enough episodes of its default length for ``--frames``
frames (fewer when episodes end early, as random Breakout ones do).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

from worldline.data.format import Dataset
from worldline.envs.recorder import record
from worldline.envs.registry import BUILTIN

FLOOR = 200.0  # frames/s


def bench(env: str, policy: str, frames: int, resolution: int, root: Path) -> tuple[int, float, float]:
    """(frames recorded, wall seconds, CPU seconds of this process)."""
    out = root / f"{env}-{policy}"
    episodes = math.ceil(frames / BUILTIN[env].max_steps)
    start, cpu = time.perf_counter(), time.process_time()
    record(env, episodes, out, policy=policy, resolution=resolution, progress=False)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return Dataset(out).num_frames, seconds, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=1800)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--worlds", default="pusht,breakout,reacher")
    args = parser.parse_args()

    runs = [(w, p) for w in args.worlds.split(",") for p in (("random", "expert") if w == "pusht" else ("random",))]
    print(f"cpu cores: {os.cpu_count()}  load average: {os.getloadavg()[0]:.1f}  resolution: {args.resolution}  frames: {args.frames}")
    print("frames/s is wall clock (shared machines slow it down); cpu frames/s divides by this process's CPU time")
    print(f"{'world':10s} {'policy':8s} {'frames':>7s} {'seconds':>8s} {'frames/s':>9s} {'vs 200/s':>9s} {'cpu frames/s':>13s}")
    with tempfile.TemporaryDirectory() as tmp:
        for world, policy in runs:
            frames, seconds, cpu = bench(world, policy, args.frames, args.resolution, Path(tmp))
            rate = frames / seconds
            print(f"{world:10s} {policy:8s} {frames:7d} {seconds:8.2f} {rate:9.1f} {rate / FLOOR:8.2f}x {frames / cpu:13.1f}")


if __name__ == "__main__":
    main()
