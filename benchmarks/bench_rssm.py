"""Speed of the rssm family at 64x64 on CPU: imagination and DreamEnv.

    python benchmarks/bench_rssm.py [--threads 1] [--repeats 5] [--batch 256] [--horizon 15]

Prints, for wm-rssm/small and vmc/small (freshly initialised: speed does not depend on weights):
- imagined steps/s of a batch of rollouts in latent space with an actor choosing actions (what
  behaviour learning and CMA-ES do), and the same with a decoded frame per step;
- one Dreamer update (world model + actor-critic, batch 16 x 16) in seconds;
- DreamEnv env steps/s at batch 1 with frame, latent and state observations (the gymnasium loop;
  state observations skip decoding the frame), and FilteredEnv steps/s: real CartPole-v1 frames
  filtered through the model (render + encoder + posterior per step).
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch

from worldline.agents.config import ActorCriticConfig
from worldline.agents.controller import LinearController, dream_fitness
from worldline.agents.dream_env import DreamEnv
from worldline.agents.dreamer import train_step
from worldline.agents.filtered_env import FilteredEnv
from worldline.agents.imagination import ImaginationTrainer
from worldline.agents.networks import ActorCritic
from worldline.core.config import build_model, load_preset
from worldline.core.contracts import ActionSpec
from worldline.train.config import RunConfig

from common import timed

SPEC = ActionSpec(kind="discrete", dim=1, n=2)


def model(preset: str):
    cfg = RunConfig.from_dict(load_preset(preset, "small")).model
    torch.manual_seed(0)
    return build_model(dataclasses.replace(cfg, action_space=SPEC)).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--horizon", type=int, default=15)
    parser.add_argument("--env-steps", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    B, H = args.batch, args.horizon
    clips = np.random.default_rng(0).integers(0, 256, (4, 4, 64, 64, 3), dtype=np.uint8)
    print(f"threads={args.threads} batch={B} horizon={H}")

    for preset in ("wm-rssm", "vmc"):
        wm = model(preset)
        with torch.no_grad():
            starts = wm.init_state(torch.rand(B, 2, 3, 64, 64) * 2 - 1)
        if preset == "wm-rssm":
            agent = ActorCritic(wm.feat_dim, "discrete", 2, ActorCriticConfig(hidden=128, horizon=H))
            dream = lambda: ImaginationTrainer(agent).dream(wm, starts)  # noqa: E731
        else:
            controller = LinearController(wm.feat_dim, 2, "discrete")
            params = np.zeros((1, controller.size))
            dream = lambda: dream_fitness(wm, controller, params, starts, H)  # noqa: E731
        t = timed(dream, args.repeats)
        print(f"{preset:8s} imagination: {B * H / t:9.0f} imagined steps/s  ({B} rollouts x {H} steps in {t * 1e3:.0f} ms)")

        def with_frames():
            with torch.no_grad():
                z = wm.imagine(starts, torch.zeros(B, H, 1))
                wm.decode(z)
        t = timed(with_frames, max(1, args.repeats // 2))
        print(f"{preset:8s} imagine+decode: {B * H / t:6.0f} frames/s")

        if preset == "wm-rssm":
            w = dataclasses.replace(wm.config, sequence_length=16)
            wm16 = build_model(w)
            trainer = ImaginationTrainer(ActorCritic(wm16.feat_dim, "discrete", 2, ActorCriticConfig(hidden=128)))
            opt = torch.optim.Adam(wm16.parameters(), 3e-4)
            g = torch.Generator().manual_seed(0)
            batch = {"frames": torch.rand(16, 16, 3, 64, 64, generator=g) * 2 - 1,
                     "actions": torch.randint(0, 2, (16, 16, 1), generator=g).float(),
                     "rewards": torch.ones(16, 16), "dones": torch.zeros(16, 16, dtype=torch.bool),
                     "is_first": torch.zeros(16, 16, dtype=torch.bool)}
            t = timed(lambda: train_step(wm16, opt, trainer, batch, 100.0), max(1, args.repeats // 2))
            print(f"{preset:8s} dreamer update (16 x 16 windows, model + agent): {t:.2f} s")

        for obs in ("frame", "latent", "state"):
            env = DreamEnv(wm, clips, context_frames=4, observation=obs, max_steps=10**6)
            env.reset(seed=0)

            def run():
                for _ in range(args.env_steps):
                    env.step(0)
            t = timed(run, max(1, args.repeats // 2))
            print(f"{preset:8s} DreamEnv ({obs:6s} obs): {args.env_steps / t:7.1f} env steps/s")

        real = FilteredEnv("CartPole-v1", wm)
        real.reset(seed=0)

        def run_real():
            for i in range(args.env_steps):
                if any(real.step(i % 2)[2:4]):
                    real.reset()
        t = timed(run_real, max(1, args.repeats // 2))
        print(f"{preset:8s} FilteredEnv (CartPole-v1 pixels -> state): {args.env_steps / t:7.1f} env steps/s")


if __name__ == "__main__":
    main()
