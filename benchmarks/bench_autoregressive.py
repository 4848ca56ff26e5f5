"""Speed of the autoregressive world model's step() at 64x64: no cache, KV cache, and the fast path
with each drafter (previous-frame tokens, Medusa heads).

    python benchmarks/bench_autoregressive.py [--ckpt RUN/final --data DATASET] [--size small] [--threads 2]
        [--steps 16] [--device cpu|cuda] [--compile] [--bf16]

Prints frames/s and tokens/s of ``step()`` at batch 1 (the play loop: decode the next frame's tokens
and the frame itself) for each decoding mode, and the speed-ups of the fast path. The fast path's
speed depends on how often the drafts are right, so pass a trained checkpoint and a dataset
(context frames and actions come from its held-out episodes); without them a freshly initialised
model of ``--size`` runs on random frames (its untrained drafts say nothing about acceptance).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from worldline.core.config import build_model, load_preset, to_dict
from worldline.core.contracts import ActionSpec
from worldline.train.config import RunConfig

ACTIONS = ActionSpec(kind="continuous", dim=2, low=[0.0, 0.0], high=[512.0, 512.0])


def load_model(args, tmp: str):
    if args.ckpt:
        from worldline.core.pretrained import load_pretrained

        return load_pretrained(args.ckpt)
    run = RunConfig.from_dict(load_preset("wm-autoregressive", args.size))
    tok_cfg = RunConfig.from_dict(load_preset("tokenizer-fsq", "small")).model
    build_model(tok_cfg).save_pretrained(f"{tmp}/tok")
    cfg = run.model
    cfg.tokenizer_path, cfg.action_space, cfg.image_size, cfg.tokenizer = f"{tmp}/tok", ACTIONS, (64, 64), to_dict(tok_cfg)
    return build_model(cfg)


def episode(model, args):
    """Context frames (1, K, 3, 64, 64) and actions (1, K - 1 + steps, A)."""
    K = model.config.context_frames
    if not args.data:
        g = torch.Generator().manual_seed(0)
        frames = torch.rand(1, K, 3, 64, 64, generator=g) * 2 - 1
        return frames, torch.rand(1, K - 1 + args.steps, model.action_spec.dim, generator=g) * 512
    from worldline.data.config import DataConfig
    from worldline.data.windows import WindowSampler
    from worldline.eval.prediction import episode_ids, model_store

    ds, store = model_store(model, args.data, DataConfig())
    sampler = WindowSampler(store, K + args.steps, episode_ids(ds.num_episodes, "val", DataConfig()))
    batch = sampler.batch([len(sampler) // 2])
    return batch["frames"][:, :K], batch["actions"][:, : K - 1 + args.steps]


def run_mode(model, mode: str, frames, actions, steps: int, device: str) -> tuple[float, float, float]:
    """Wall seconds and CPU seconds of this process per step(), and forward passes per frame. On a
    shared machine the CPU time is the better guide to what a quiet machine would do."""
    model.decode_mode = mode
    K = frames.shape[1]
    calls = {"n": 0}
    forward = model.net.forward

    def counting(*a, **k):
        calls["n"] += 1
        return forward(*a, **k)

    model.net.forward = counting
    try:
        with torch.no_grad():
            state = model.init_state(frames, actions[:, : K - 1])
            state, _ = model.step(state, actions[:, K - 1])  # warm-up
            calls["n"] = 0
            sync(device)
            t, cpu = time.perf_counter(), time.process_time()
            for i in range(steps):
                state, frame = model.step(state, actions[:, K - 1 + i])
            sync(device)
            return (time.perf_counter() - t) / steps, (time.process_time() - cpu) / steps, calls["n"] / steps
    finally:
        model.net.forward = forward


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default="")
    parser.add_argument("--data", default="")
    parser.add_argument("--size", default="small")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile the transformer (GPU)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    parser.add_argument("--modes", default="nocache,cached,fast")
    parser.add_argument("--drafters", default="previous,medusa", help="drafters the fast mode is run with")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(args, tmp).eval().to(args.device)
        frames, actions = episode(model, args)
        frames, actions = frames.to(args.device), actions.to(args.device)
        if args.compile:
            model.net.forward = torch.compile(model.net.forward, dynamic=True)
        n_params = sum(p.numel() for p in model.net.parameters())
        N = model.net.tokens_per_frame
        print(f"autoregressive {'checkpoint ' + args.ckpt if args.ckpt else args.size + ' (fresh weights)'}: "
              f"{n_params / 1e6:.2f}M parameters, {N} tokens/frame, context {model.config.context_frames} frames, "
              f"{len(model.net.draft_heads)} draft heads; device {args.device}, threads {args.threads}"
              f"{', compiled' if args.compile else ''}{', bf16' if args.bf16 else ''}")
        times = {}
        runs = []
        for mode in args.modes.split(","):
            runs += [(mode, d) for d in args.drafters.split(",")] if mode == "fast" else [(mode, None)]
        for mode, drafter in runs:
            if drafter == "medusa" and not len(model.net.draft_heads):
                continue
            if drafter is not None:
                model.config.drafter = drafter
            with torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.bf16):
                sec, cpu, passes = run_mode(model, mode, frames, actions, args.steps, args.device)
            name = f"fast/{drafter}" if drafter else mode
            times[name] = sec
            print(f"  {name:14s} {1 / sec:7.2f} frames/s  {N / sec:8.1f} tokens/s  (per CPU-second of this process: "
                  f"{1 / cpu:7.2f} frames, {N / cpu:8.1f} tokens)  {passes:5.1f} forward passes/frame "
                  f"({N / passes:.2f} tokens/pass)")
        for fast in [name for name in times if name.startswith("fast")]:
            for other in ("cached", "nocache"):
                if other in times:
                    print(f"  {fast} speed-up over {other}: {times[other] / times[fast]:.2f}x")
        if "cached" in times and "nocache" in times:
            print(f"  KV cache speed-up over no cache: {times['nocache'] / times['cached']:.2f}x")


if __name__ == "__main__":
    main()
