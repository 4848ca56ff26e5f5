"""Encode+decode throughput of the small tokenizer presets at 64x64 (frames/s), plus one-frame latency.

    python benchmarks/bench_tokenizer.py [--threads 2] [--batch 16] [--repeats 5]

Weights are freshly initialised: speed does not depend on them. Prints one row per preset.
"""

from __future__ import annotations

import argparse

import torch

from worldline.core.config import build_model, load_preset
from worldline.train.config import RunConfig

from common import timed

PRESETS = [
    ("tokenizer-continuous", "small"),  # 1x4x4
    ("tokenizer-fsq", "small"),  # 1x8x8
    ("tokenizer-fsq", "small-t4"),  # 4x8x8
]


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16, help="videos per call")
    parser.add_argument("--frames", type=int, default=9, help="frames per video (1 + 4k so 4x fits)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"threads={args.threads} batch={args.batch}x{args.frames} frames at {args.size}x{args.size}")
    print(f"{'preset':<34} {'compression':>11} {'latent':>16} {'params':>8} {'enc+dec fps':>12} {'1-frame ms':>11}")
    for name, size in PRESETS:
        cfg = RunConfig.from_dict(load_preset(name, size)).model
        tok = build_model(cfg).eval()
        x = torch.rand(args.batch, args.frames, 3, args.size, args.size) * 2 - 1
        seconds = timed(lambda: tok.decode(tok.encode(x)), args.repeats)
        fps = args.batch * args.frames / seconds
        one = torch.rand(1, 1, 3, args.size, args.size) * 2 - 1
        latency = timed(lambda: tok.decode(tok.encode(one)), args.repeats) * 1e3
        ct, s, _ = tok.compression
        latent = "x".join(str(d) for d in tok.latent_shape(args.frames, args.size, args.size))
        params = sum(p.numel() for p in tok.parameters()) / 1e6
        print(f"{name + ':' + size:<34} {f'{ct}x{s}x{s}':>11} {latent:>16} {params:>7.2f}M {fps:>12.1f} {latency:>11.1f}")


if __name__ == "__main__":
    main()
