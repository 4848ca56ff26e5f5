"""Speed of the diffusion world model (wm-diffusion, default size small) at 64x64 with the small tokenizer.

    python benchmarks/bench_diffusion.py [--size small] [--threads 2] [--repeats 5] [--steps 1 2 3] [--no-train] [--no-rollout]

Prints: training throughput (samples/s at the preset's batch and window, synthetic latents), and
step() frames per second at batch 1 (the play loop: sampler + tokenizer decode) for each number of
sampler steps, plus a batched rollout. On CUDA it also times training in bf16 autocast and reports
the model FLOPs utilisation (MFU) against the GPU's dense bf16 peak (--peak-tflops).
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


def build(size: str):
    run = RunConfig.from_dict(load_preset("wm-diffusion", size))
    tok_cfg = RunConfig.from_dict(load_preset("tokenizer-continuous", "small")).model
    with tempfile.TemporaryDirectory() as tmp:
        build_model(tok_cfg).save_pretrained(f"{tmp}/tok")
        cfg = run.model
        cfg.tokenizer_path, cfg.action_space, cfg.image_size = f"{tmp}/tok", ACTIONS, (64, 64)
        cfg.tokenizer = to_dict(tok_cfg)
        model = build_model(cfg)
    return run, model


def train_flops(model, batch: int) -> float:
    """Forward+backward FLOPs of one training step of the DiT: 6 x params x tokens for the matmuls,
    plus attention (12 x layers x L^2 x width per sample, forward and backward)."""
    cfg = model.config
    h, w = model.latent_shape[1:]
    L = model.window() * (h // cfg.patch) * (w // cfg.patch)
    params = sum(p.numel() for p in model.net.blocks.parameters())
    return batch * (6 * params * L + 12 * cfg.depth * L * L * cfg.width)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--horizon", type=int, default=16)
    parser.add_argument("--no-train", action="store_true", help="skip the training throughput")
    parser.add_argument("--no-rollout", action="store_true", help="skip the batched rollout")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU (H100 SXM: 989)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    run, model = build(args.size)
    model = model.to(device)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    B, T = run.train.batch_size, model.window()
    print(f"wm-diffusion/{args.size}: {params / 1e6:.2f}M trainable parameters, latents {model.latent_shape}, "
          f"window {T}, device {device}, {args.threads} thread(s)")

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batch = {"latents": torch.randn(B, T, *model.latent_shape, device=device), "actions": torch.rand(B, T, 2, device=device) * 512}

    def train_step(dtype=None):
        with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
            loss, _ = model.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()

    model.train()
    if not args.no_train:
        s = timed(train_step, args.repeats)
        print(f"train step fp32 (batch {B}, window {T}): {s:.3f} s -> {B / s:.1f} samples/s")
    if device == "cuda" and not args.no_train:
        s = timed(lambda: train_step(torch.bfloat16), args.repeats)
        mfu = train_flops(model, B) / s / (args.peak_tflops * 1e12)
        print(f"train step bf16 (batch {B}, window {T}): {s:.4f} s -> {B / s:.0f} samples/s, MFU {100 * mfu:.1f}%")

    model.eval()
    with torch.no_grad():
        state = model.init_state(torch.rand(1, T, 3, 64, 64, device=device) * 2 - 1)
        action = torch.rand(1, 2, device=device) * 512
        decode = timed(lambda: model.decode(state.z[:, -1:]), args.repeats * 4)
        print(f"tokenizer decode of one frame: {decode * 1000:.1f} ms")
        for steps in args.steps:
            model.set_sampling(steps=steps, sampler="euler")
            s = timed(lambda: model.step(state, action), args.repeats * 4)
            print(f"step() batch 1, {steps} Euler step(s): {s * 1000:.1f} ms -> {1 / s:.1f} frames/s")
        if args.no_rollout:
            return
        model.set_sampling(steps=args.steps[0])
        ctx, acts = torch.rand(32, T, 3, 64, 64, device=device) * 2 - 1, torch.rand(32, args.horizon, 2, device=device) * 512
        s = timed(lambda: model.rollout(ctx, acts), max(1, args.repeats // 2))
        print(f"rollout batch 32 x {args.horizon} frames, {args.steps[0]} step(s): {s:.2f} s -> {32 * args.horizon / s:.0f} frames/s")


if __name__ == "__main__":
    main()
