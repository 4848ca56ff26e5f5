"""What a JEPA world model's embedding encodes: held-out linear-probe R^2 of the env's state columns.

    python benchmarks/jepa_probe.py --ckpt RUN/final --env reacher [--frames 2000] [--policy random]

Plays the env with a scripted policy (seeds 500000 on, never recorded), embeds every frame with the
model (``embed``: what its planner compares) and fits a ridge regression from the flattened
embeddings to each state column (``diagnostics.collect_states``): pusht agent and block position,
reacher fingertip and target, tested on held-out whole episodes. A planner can only steer what the embedding encodes; on Reacher an
embedding that reads the target (which never moves within an episode) better than the fingertip has
spent itself on the scene rather than on the arm. Also prints the per-channel spread (0: collapsed).
"""

from __future__ import annotations

import argparse

import torch

from worldline.core.pretrained import load_pretrained
from worldline.models.jepa.diagnostics import channel_spread, collect_states, linear_probe_r2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="a trained jepa world model (a run's final/ or a checkpoint)")
    parser.add_argument("--env", default="reacher", choices=["pusht", "reacher", "reacher-pos"])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--policy", default="random", help="scripted policy that plays the env (random covers the most states)")
    parser.add_argument("--episode-steps", type=int, default=50, help="env steps per episode (Reacher: 50 random steps sweep the arm widely)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_pretrained(args.ckpt).eval()
    frames, states, names, episodes = collect_states(args.env, args.frames, args.policy, model.config.image_size[0], seed=500_000,
                                                     episode_steps=args.episode_steps)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1  # (n, 3, H, W) in [-1, 1]
    with torch.no_grad():
        z = torch.cat([model.embed(x[i : i + 200][None])[0] for i in range(0, len(x), 200)]).flatten(1)  # (n, N*D)
    r2 = linear_probe_r2(z, states, groups=episodes)
    print(f"{args.ckpt} on {args.env} ({len(x)} frames, {args.policy} policy): embedding {tuple(z.shape[1:])}, "
          f"channel spread {channel_spread(z):.3f}")
    for name, r in zip(names, r2):
        print(f"  R^2 {name:<9} {r:6.3f}")


if __name__ == "__main__":
    main()
