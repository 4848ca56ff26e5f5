"""Speed of the deterministic baseline (wm-deterministic/small) at 64x64 with the small tokenizer.

    python benchmarks/bench_baseline.py [--threads 1] [--repeats 5]

Prints: training step time (batch and window of the preset, on synthetic latents), predicted frames
per second of a batched rollout (latent steps + decoding) and of step() at batch 1 (the play loop).
Weights are freshly initialised: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from worldline.core.config import build_model, load_preset, to_dict
from worldline.core.contracts import ActionSpec
from worldline.train.config import RunConfig

from common import timed

ACTIONS = ActionSpec(kind="continuous", dim=2, low=[0.0, 0.0], high=[512.0, 512.0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--horizon", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    run = RunConfig.from_dict(load_preset("wm-deterministic", "small"))
    tok_cfg = RunConfig.from_dict(load_preset("tokenizer-continuous", "small")).model
    with tempfile.TemporaryDirectory() as tmp:
        build_model(tok_cfg).save_pretrained(f"{tmp}/tok")
        cfg = run.model
        cfg.tokenizer_path, cfg.action_space, cfg.image_size = f"{tmp}/tok", ACTIONS, (64, 64)
        cfg.tokenizer = to_dict(tok_cfg)
        model = build_model(cfg)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    B, T = run.train.batch_size, model.window()
    print(f"wm-deterministic/small: {params / 1e6:.2f}M trainable parameters, latents {model.latent_shape}, "
          f"{args.threads} thread(s)")

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    batch = {"latents": torch.randn(B, T, *model.latent_shape), "actions": torch.rand(B, T, 2) * 512}

    def train_step():
        loss, _ = model.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    s = timed(train_step, args.repeats)
    print(f"train step (batch {B}, window {T}): {s:.3f} s -> {run.train.steps} steps in {s * run.train.steps / 60:.1f} min")

    model.eval()
    H = args.horizon
    with torch.no_grad():
        for b in (1, 32):
            ctx, acts = torch.rand(b, 4, 3, 64, 64) * 2 - 1, torch.rand(b, H, 2) * 512
            s = timed(lambda: model.rollout(ctx, acts), args.repeats)
            print(f"rollout batch {b:>2} x {H} frames: {s:.3f} s -> {b * H / s:.0f} predicted frames/s")
        state = model.init_state(torch.rand(1, 4, 3, 64, 64) * 2 - 1)
        action = torch.rand(1, 2) * 512
        s = timed(lambda: model.step(state, action), args.repeats * 4)
        print(f"step() at batch 1 (play): {s * 1000:.1f} ms -> {1 / s:.0f} frames/s")


if __name__ == "__main__":
    main()
