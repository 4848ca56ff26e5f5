"""Training throughput of presets: optimiser steps/s and samples/s through the real Trainer.

Runs on a synthetic EpisodeStore of moving squares (no dataset needed). A world-model preset that
trains on a frozen tokenizer gets a freshly initialised one (from ``--tokenizer-preset``), whose
latent cache is built before timing starts. The first ``--warmup`` steps (allocation, compile) are
left out of the rate.

    python benchmarks/bench_train.py --preset tokenizer-continuous --size small --steps 20
    python benchmarks/bench_train.py --preset wm-deterministic tokenizer-continuous --set train.batch_size=32
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from worldline.core.config import apply_overrides, build_model, list_presets, load_preset
from worldline.core.contracts import describe
from worldline.core.errors import WorldlineError
from worldline.data.windows import EpisodeStore, WindowSampler, split_episodes
from worldline.train.config import RunConfig
from worldline.train.trainer import Trainer, seed_everything


def synthetic_store(episodes: int, length: int, size: int, cache: Path, seed: int = 0) -> tuple[EpisodeStore, dict]:
    """Coloured squares moving by a 2-D continuous action on a gradient, plus a matching info.json."""
    rng = np.random.default_rng(seed)
    n = episodes * length
    yy, xx = np.mgrid[0:size, 0:size] / size
    frames = np.empty((n, size, size, 3), np.uint8)
    actions = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    side = max(2, size // 8)
    for e in range(episodes):
        background = (np.stack([xx, yy, (xx + yy) / 2], -1) * rng.uniform(60, 180, 3)).astype(np.uint8)
        pos = rng.uniform(0, size - side, 2)
        colour = rng.integers(120, 256, 3)
        for t in range(length):
            row = e * length + t
            frames[row] = background
            y, x = pos.astype(int)
            frames[row, y : y + side, x : x + side] = colour
            pos = np.clip(pos + actions[row, ::-1] * side / 2, 0, size - side)
    store = EpisodeStore(
        {"frames": frames, "actions": actions, "rewards": np.zeros(n, np.float32), "dones": np.zeros(n, bool)},
        np.arange(episodes) * length,
        np.full(episodes, length),
        info={"cache": str(cache / "frames.npy")},  # latent caches land beside it, in the temp dir
    )
    info = {
        "fps": 10,
        "features": {"observation.image": {"dtype": "video", "shape": [size, size, 3], "names": ["height", "width", "channels"]}},
        "worldline": {"action_space": {"kind": "continuous", "dim": 2, "low": [-1.0, -1.0], "high": [1.0, 1.0]}},
    }
    return store, info


def resolve(preset: str, size: str, overrides: list[str]) -> RunConfig:
    return RunConfig.from_dict(apply_overrides(load_preset(preset, size), overrides))


def pretrained_tokenizer(preset: str, size: str, info: dict, directory: Path) -> str:
    """A randomly initialised tokenizer of ``preset`` saved as a pretrained dir (speed does not depend on training)."""
    cfg = resolve(preset, size, [])
    cfg.model.bind_dataset(info, {})
    seed_everything(0)
    build_model(cfg.model).save_pretrained(directory)
    return str(directory)


def bench(preset: str, args: argparse.Namespace, tmp: Path) -> dict:
    store, info = synthetic_store(args.episodes, args.length, args.resolution, tmp)
    cfg = resolve(preset, args.size, args.set)
    model_cfg = cfg.model
    if hasattr(model_cfg, "tokenizer_path") and not model_cfg.tokenizer_path:
        model_cfg.tokenizer_path = pretrained_tokenizer(args.tokenizer_preset, args.size, info, tmp / f"tok-{preset}")
    if callable(getattr(model_cfg, "bind_dataset", None)):
        model_cfg.bind_dataset(info, {})
    train = dataclasses.replace(
        cfg.train, steps=args.warmup + args.steps, log_every=1, eval_every=0, ckpt_every=10**9, device=args.device
    )
    cfg = dataclasses.replace(cfg, train=train)

    seed_everything(0)
    model = build_model(model_cfg)
    if callable(getattr(model, "prepare_for_training", None)):
        model.prepare_for_training()
    if getattr(model, "uses_latents", False):
        store = model.latent_store(store)
    train_ids, _ = split_episodes(store.num_episodes, 0.0, 0)
    sampler = WindowSampler(store, int(model.window()), train_ids)
    out = tmp / f"run-{preset}"
    trainer = Trainer(cfg, model, sampler, None, out, progress=False)
    start = time.perf_counter()
    trainer.fit(resume=False)
    wall = time.perf_counter() - start
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    timed = [r for r in rows if r["split"] == "train" and r["step"] > args.warmup]
    seconds = sum(1.0 / r["steps_per_s"] for r in timed)
    samples_per_step = cfg.train.batch_size * cfg.train.grad_accum
    return {
        "preset": f"{preset}/{args.size}",
        "model": describe(model),
        "device": str(trainer.device),
        "precision": str(trainer.autocast_dtype or torch.float32).replace("torch.", ""),
        "batch": f"{cfg.train.batch_size}x{cfg.train.grad_accum}",
        "window": int(model.window()),
        "steps_per_s": len(timed) / seconds,
        "samples_per_s": len(timed) * samples_per_step / seconds,
        "ms_per_step_median": 1000 * statistics.median(1.0 / r["steps_per_s"] for r in timed),
        "wall_s": wall,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", nargs="+", default=None, help="preset names (default: every preset)")
    p.add_argument("--size", default="small")
    p.add_argument("--steps", type=int, default=20, help="timed optimiser steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--resolution", type=int, default=64, help="synthetic frame size (square)")
    p.add_argument("--episodes", type=int, default=16)
    p.add_argument("--length", type=int, default=48, help="frames per synthetic episode")
    p.add_argument("--device", default="auto")
    p.add_argument("--tokenizer-preset", default="tokenizer-continuous", help="tokenizer for world-model presets")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--set", nargs="*", default=[], help="overrides, e.g. train.batch_size=32 train.compile=true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    presets = args.preset or sorted(list_presets())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, cuda={torch.cuda.is_available()}")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        for preset in presets:
            try:
                r = bench(preset, args, Path(tmp))
            except WorldlineError as e:
                print(f"{preset}: skipped ({e})")
                continue
            results.append(r)
            print(
                f"{r['preset']:<32} {r['model']:<42} {r['device']:>6} {r['precision']:>8} batch {r['batch']:<6} "
                f"T={r['window']:<3} {r['steps_per_s']:8.2f} steps/s {r['samples_per_s']:9.1f} samples/s "
                f"(median {r['ms_per_step_median']:.1f} ms/step)",
                flush=True,
            )
    if not results:
        raise SystemExit("no preset could be benchmarked")


if __name__ == "__main__":
    main()
