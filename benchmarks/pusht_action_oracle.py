"""How much PushT's actions can be worth to a world model's PSNR: an oracle on the real env.

    python benchmarks/pusht_action_oracle.py [--states 12] [--resolution 64]

Two copies of the env play the same expert episode up to a random step; from there one follows the
expert's next 16 actions and the other the same actions moved to another place of the arena. The
PSNR between their frames is what a perfect model would score with shuffled-like actions against
the truth, i.e. the room there is for "true actions beat shuffled ones"; copy-last is printed beside.
"""

from __future__ import annotations

import argparse

import numpy as np

from worldline.envs.policies import make_policy
from worldline.envs.registry import make_env

HORIZONS = (1, 4, 8, 16)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean() / 255**2
    return float(10 * np.log10(1 / max(mse, 1e-10)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--states", type=int, default=12)
    parser.add_argument("--resolution", type=int, default=64)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    moved, copy_last = {h: [] for h in HORIZONS}, {h: [] for h in HORIZONS}
    for ep in range(args.states):
        env, _ = make_env("pusht", args.resolution)
        twin, _ = make_env("pusht", args.resolution)
        policy = make_policy("expert", env, seed=ep)
        obs, info = env.reset(seed=ep)
        twin.reset(seed=ep)
        policy.reset(ep)
        for _ in range(int(rng.integers(5, 150))):
            action = policy(obs, info)
            obs, _, _, _, info = env.step(action)
            twin.step(action)
        last = env.render()
        offset = rng.uniform(0, 512, size=2)
        start = None
        for t in range(max(HORIZONS)):
            action = policy(obs, info)
            start = action if start is None else start
            obs, _, _, _, info = env.step(action)
            twin.step(np.clip(action + offset - start, 0, 512).astype(np.float32))
            if t + 1 in moved:
                truth = env.render()
                moved[t + 1].append(psnr(truth, twin.render()))
                copy_last[t + 1].append(psnr(truth, last))
        env.close()
        twin.close()
    for h in HORIZONS:
        print(f"step {h:2d}: truth vs moved-action future {np.mean(moved[h]):.2f} dB, copy-last {np.mean(copy_last[h]):.2f} dB")


if __name__ == "__main__":
    main()
