"""Speed and quality of the Genie family (wm-genie/small) at 64x64 with the small fsq tokenizer.

    python benchmarks/bench_genie.py [--threads 1] [--repeats 5]                  # speed, fresh weights
    python benchmarks/bench_genie.py --ckpt RUN/final --data DATA [--windows 32]  # + quality per MaskGIT steps

Prints: training step time (batch and window of the preset, synthetic data); step() frames/s at
batch 1 (the play loop: MaskGIT passes + cache commit + tokenizer decode) for 1, 2, 4 and 8 MaskGIT
steps per frame, with the share spent in the tokenizer's decoder. With a checkpoint and a dataset:
PSNR at each of 4 predicted frames with latent actions inferred from the real video, with random
latent actions, and their difference (Genie's controllability), per MaskGIT steps setting.
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import torch

from worldline.core.config import build_model, load_preset, to_dict
from worldline.train.config import RunConfig

from common import timed

STEPS = (1, 2, 4, 8)


def fresh_model(tmp: str):
    tok_cfg = RunConfig.from_dict(load_preset("tokenizer-fsq", "small")).model
    build_model(tok_cfg).save_pretrained(f"{tmp}/tok")
    cfg = RunConfig.from_dict(load_preset("wm-genie", "small")).model
    cfg.tokenizer_path, cfg.image_size, cfg.tokenizer = f"{tmp}/tok", (64, 64), to_dict(tok_cfg)
    return build_model(cfg)


def speed(model, repeats: int, batch_size: int) -> None:
    T = model.window()
    batch = {"frames": torch.rand(batch_size, T, 3, 64, 64) * 2 - 1,
             "latents": torch.randint(0, model.tokenizer.vocab_size, (batch_size, T, *model.latent_shape)).float()}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)

    def train_step():
        loss, _ = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()

    model.train()
    t = timed(train_step, repeats)
    print(f"train step (batch {batch_size}, {T} frames): {t * 1000:.0f} ms, {batch_size * T / t:.0f} frames/s")

    model.eval()
    ids = torch.randint(0, model.tokenizer.vocab_size, (1, 1, *model.latent_shape))
    with torch.no_grad():
        t_decode = timed(lambda: model.decode(ids), repeats * 4)
        state = model.init_state(torch.rand(1, T - 1, 3, 64, 64) * 2 - 1)
        action = torch.tensor([[1.0]])
        print(f"tokenizer decode of one frame: {t_decode * 1000:.1f} ms")
        print("| MaskGIT steps/frame | step() ms | frames/s | decoder share |")
        print("|---|---|---|---|")
        for steps in STEPS:
            model.maskgit_steps = steps
            t = timed(lambda: model.step(state.clone(), action), repeats * 4)
            print(f"| {steps} | {t * 1000:.1f} | {1 / t:.1f} | {t_decode / t:.0%} |")
    model.maskgit_steps = model.config.maskgit_steps


def quality(model, data: str, windows: int, context: int, horizon: int, seed: int) -> None:
    from worldline.data.cache import frame_store
    from worldline.data.config import DataConfig
    from worldline.data.format import Dataset
    from worldline.data.windows import WindowSampler
    from worldline.eval.prediction import episode_ids
    from worldline.models.genie.evaluate import controllability

    ds = Dataset(data)
    sampler = WindowSampler(frame_store(ds), context + horizon, episode_ids(ds.num_episodes, "val", DataConfig()))
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(sampler), size=min(windows, len(sampler)), replace=False))
    frames = sampler.batch(chosen)["frames"]
    model.eval()
    print(f"\nquality on {len(chosen)} held-out windows of {data} (context {context}, PSNR in dB per predicted frame)")
    print("| MaskGIT steps/frame | PSNR inferred (t=1..4) | PSNR random (t=1..4) | ΔPSNR t=4 |")
    print("|---|---|---|---|")
    for steps in STEPS:
        model.maskgit_steps = steps
        r = controllability(model, frames, context, horizon, seed)
        fmt = lambda xs: " ".join(f"{x:.2f}" for x in xs)  # noqa: E731
        print(f"| {steps} | {fmt(r['inferred'])} | {fmt(r['random'])} | {r['delta'][-1]:+.2f} |")
    model.maskgit_steps = model.config.maskgit_steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--ckpt", default=None, help="trained genie model (default: fresh small weights, speed only)")
    parser.add_argument("--data", default=None, help="dataset for the quality table (needs --ckpt)")
    parser.add_argument("--windows", type=int, default=32)
    parser.add_argument("--context", type=int, default=2)
    parser.add_argument("--horizon", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    print(f"threads {args.threads}")

    with tempfile.TemporaryDirectory() as tmp:
        if args.ckpt:
            from worldline.core.pretrained import load_pretrained

            model = load_pretrained(args.ckpt)
        else:
            model = fresh_model(tmp)
        if not args.skip_speed:
            speed(model, args.repeats, args.batch_size)
        if args.ckpt and args.data:
            quality(model, args.data, args.windows, args.context, args.horizon, args.seed)


if __name__ == "__main__":
    main()
