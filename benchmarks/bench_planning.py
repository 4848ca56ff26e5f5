"""Planning speed: seconds per decision of CEM, MPPI and the gradient planner on a JEPA world model.

    python benchmarks/bench_planning.py [--ckpt RUN/final] [--threads 1] [--repeats 3]

Without --ckpt a freshly initialised jepa-ac/small model (PushT action space, frameskip 5) is timed:
speed does not depend on the weights. One decision = one planner call at the preset's defaults used
by `worldline plan` (horizon 5 model steps = 25 env steps). Also prints the time of one batched
imagine call (the unit every sampling planner pays per iteration) and ratios to CEM.
"""

from __future__ import annotations

import argparse

import torch

from worldline.core.config import build_model, load_preset
from worldline.core.contracts import ActionSpec
from worldline.planning import CEM, MPPI, GoalCost, GradientPlanner, expand_state
from worldline.train.config import RunConfig

from common import timed

ACTIONS = ActionSpec(kind="continuous", dim=2, low=[0.0, 0.0], high=[512.0, 512.0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default=None, help="a trained world model (default: fresh jepa-ac/small)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--horizon", type=int, default=5)
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.ckpt:
        from worldline.core.pretrained import load_pretrained

        model = load_pretrained(args.ckpt)
    else:
        small = load_preset("jepa-ac", "small")
        small["model"]["encoder"] = {**load_preset("jepa-encoder", "small")["model"]}
        cfg = RunConfig.from_dict(small).model
        cfg.action_space = ACTIONS
        model = build_model(cfg)
    model.eval()
    H, W = model.config.image_size
    frames = torch.rand(1, 2, 3, H, W) * 2 - 1
    with torch.no_grad():
        state = model.init_state(frames)
        goal = model.embed(frames[:, -1:])[:, 0]
    A = model.action_spec.dim
    print(f"model: {type(model).__name__}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
          f"action dim {A}, horizon {args.horizon}, threads {args.threads}")

    many = expand_state(state, args.samples)
    actions = torch.rand(args.samples, args.horizon, A) * 512
    with torch.no_grad():
        t_imagine = timed(lambda: model.imagine(many, actions), args.repeats)
    print(f"imagine {args.samples} x {args.horizon} steps: {t_imagine * 1e3:.0f} ms "
          f"({args.samples * args.horizon / t_imagine:.0f} model steps/s)")

    n, it = args.samples, args.iterations
    planners = {
        f"cem {n}x{it}": CEM(samples=n, iterations=it, elites=max(2, n // 8), keep_elites=min(8, n // 8), seed=0),
        f"mppi {n}x{it}": MPPI(samples=n, iterations=it, seed=0),
        "gradient 8 starts x 10 steps": GradientPlanner(starts=8, steps=10, seed=0, cost=GoalCost(kind="l2")),
    }
    results = {}
    for name, planner in planners.items():
        results[name] = timed(lambda p=planner: p.plan(model, state, goal, args.horizon), args.repeats)
    base = results[f"cem {n}x{it}"]
    for name, t in results.items():
        print(f"{name:<32} {t:7.3f} s/decision  ({t / base:.2f}x cem)")


if __name__ == "__main__":
    main()
