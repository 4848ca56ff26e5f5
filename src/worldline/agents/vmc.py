"""The V-M-C pipeline (``worldline vmc --env ID``), after Ha & Schmidhuber (2018):

1. record episodes of the real env under an exploration policy into a worldline dataset;
2. train V (VAE) and M (MDN-RNN with reward/done heads) on them with the one trainer;
3. train the linear controller C by CMA-ES inside M's dream, starting from real context clips;
4. evaluate C in the real env against a random policy and C's untrained starting point, same seeds.

Outputs in ``out_dir``: ``data/``, ``model/`` (a training run; ``model/final`` the checkpoint),
``controller/`` (safetensors + JSON), ``cmaes.jsonl``, ``summary.json``, ``cmaes.png``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from worldline.agents.controller import CMAESConfig, LinearController, train_controller
from worldline.agents.dreamer import random_returns, run_episodes
from worldline.agents.filtered_env import frame_tensor
from worldline.core.errors import WorldlineError
from worldline.core.io import atomic_dir, read_json, write_json


class ControllerPlayer:
    """Runs a controller in a real env through V (code of each frame) and M (memory of transitions),
    with the model's ``filter_start``/``filter_step``."""

    def __init__(self, world_model, controller: LinearController):
        self.wm, self.controller = world_model, controller
        self.state = None

    @torch.no_grad()
    def reset(self, frame: np.ndarray) -> None:
        self.state = self.wm.filter_start(frame_tensor(frame))

    @torch.no_grad()
    def act(self) -> tuple[Any, torch.Tensor]:
        feats = self.controller.act(self.state.feat)
        row = self.wm.actions.to_actions(feats)[0].numpy().astype(np.float32)
        return (int(row[0]) if self.controller.kind == "discrete" else row), feats

    @torch.no_grad()
    def observe(self, frame: np.ndarray, feats: torch.Tensor) -> None:
        self.state = self.wm.filter_step(self.state, feats, frame_tensor(frame))


def evaluate_controller(world_model, controller: LinearController, env_id: str, episodes: int, seed: int,
                        max_steps: int, resolution: int = 64) -> list[float]:
    player = ControllerPlayer(world_model, controller)
    last: dict[str, torch.Tensor] = {}

    def act(frame, env):
        if "feats" in last:
            player.observe(frame, last["feats"])
        action, last["feats"] = player.act()
        return action

    def reset(frame):
        last.clear()
        player.reset(frame)

    return run_episodes(env_id, act, episodes, seed, max_steps, resolution, reset)


def save_controller(controller: LinearController, directory: str | Path) -> Path:
    from safetensors.torch import save_file

    with atomic_dir(directory, overwrite=True) as tmp:
        write_json(tmp / "config.json", {"feat_dim": controller.feat_dim, "action_dim": controller.action_dim, "kind": controller.kind})
        save_file({"params": torch.from_numpy(controller.params.astype(np.float32))}, str(tmp / "controller.safetensors"))
    return Path(directory)


def load_controller(directory: str | Path) -> LinearController:
    from safetensors.torch import load_file

    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise WorldlineError(f"{directory}: not a saved controller (no config.json)")
    raw = read_json(directory / "config.json")
    controller = LinearController(int(raw["feat_dim"]), int(raw["action_dim"]), str(raw["kind"]))
    params = load_file(str(directory / "controller.safetensors"))["params"].double().numpy()
    if params.shape != (controller.size,):
        raise WorldlineError(f"{directory}: controller.safetensors holds {params.shape}, the config needs ({controller.size},)")
    controller.params = params
    return controller


def start_sampler(world_model, dataset_path: str | Path, context: int, seed: int) -> Callable[[int, int], object]:
    """``sample(n, generation)``: n states from random real context clips of ``context`` frames."""
    from worldline.data.cache import frame_store
    from worldline.data.format import Dataset
    from worldline.data.windows import WindowSampler

    dataset = Dataset(dataset_path)
    sampler = WindowSampler(frame_store(dataset, progress=False), context, range(dataset.num_episodes))
    if not len(sampler):
        raise WorldlineError(f"{dataset_path}: no episode has {context} frames for a dream context")

    @torch.no_grad()
    def sample(n: int, generation: int):
        batch = sampler.sample(n, generation, seed)
        return world_model.init_state(batch["frames"], batch["actions"])

    return sample


def train_vmc(env_id: str, out_dir: str | Path, *, episodes: int = 20, max_steps: int = 300, policy: str = "smooth",
              preset: str = "vmc", size: str = "small", overrides: list[str] | None = None,
              cmaes: CMAESConfig | None = None, eval_episodes: int = 5, context: int = 4, seed: int = 0,
              resolution: int = 64, progress: bool = True, log: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Run the whole pipeline; returns the summary it writes."""
    from worldline.core.config import apply_overrides, load_preset
    from worldline.core.pretrained import load_pretrained
    from worldline.envs.recorder import record
    from worldline.train.config import RunConfig
    from worldline.train.run import train

    out_dir = Path(out_dir)
    cmaes = cmaes or CMAESConfig(seed=seed)
    t0 = time.perf_counter()
    data = out_dir / "data"
    if not (data / "meta" / "info.json").is_file():
        record(env_id, episodes, data, policy=policy, resolution=resolution, seed=seed, max_steps=max_steps, progress=progress)
    raw = apply_overrides(load_preset(preset, size), [f"data.path={data}", f"train.seed={seed}", *(overrides or [])])
    run_cfg = RunConfig.from_dict(raw)
    if run_cfg.model.type_name() not in ("vmc", "rssm"):
        raise WorldlineError(f"preset {preset!r} is a {run_cfg.model.type_name()!r} model; vmc needs the rssm family")
    final = train(run_cfg, out_dir / "model", progress=progress)
    t_model = time.perf_counter()
    torch.set_num_threads(max(1, run_cfg.train.threads))
    wm = load_pretrained(final)
    wm.requires_grad_(False)

    kind = wm.action_spec.kind
    controller = LinearController(wm.feat_dim, wm.actions.dim, kind)
    rows: list[dict] = []
    logf = (out_dir / "cmaes.jsonl").open("w")

    def emit(row: dict) -> None:
        rows.append(row)
        logf.write(json.dumps(row) + "\n")
        logf.flush()
        if log is not None:
            log(row)

    try:
        train_controller(wm, controller, start_sampler(wm, data, context, seed), cmaes, emit)
    finally:
        logf.close()
    t_cmaes = time.perf_counter()
    save_controller(controller, out_dir / "controller")
    eval_seed = 10_000 + seed  # episodes the dataset never saw
    ours = evaluate_controller(wm, controller, env_id, eval_episodes, eval_seed, max_steps, resolution)
    rand = random_returns(env_id, eval_episodes, eval_seed, max_steps, resolution)
    # CMA-ES's starting point (all-zero weights: the box's centre action), to separate what the search learned
    start = evaluate_controller(wm, LinearController(wm.feat_dim, wm.actions.dim, kind), env_id, eval_episodes,
                                eval_seed, max_steps, resolution)
    summary = {
        "env": env_id, "seed": seed, "episodes_recorded": episodes, "max_steps": max_steps,
        "model_steps": run_cfg.train.steps, "generations": cmaes.generations, "popsize": cmaes.popsize,
        "controller_returns": ours, "controller_mean": float(np.mean(ours)),
        "random_returns": rand, "random_mean": float(np.mean(rand)),
        "initial_controller_returns": start, "initial_controller_mean": float(np.mean(start)),
        "dream_fitness_last": rows[-1]["distribution_mean"] if rows else None,
        "seconds": {"record_and_model": t_model - t0, "cmaes": t_cmaes - t_model, "total": time.perf_counter() - t0},
    }
    write_json(out_dir / "summary.json", summary)
    _plot(rows, out_dir / "cmaes.png")
    return summary


def _plot(rows: list[dict], out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from worldline.core.io import atomic_path

    fig, ax = plt.subplots(figsize=(6, 3.5))
    if rows:
        g = [r["generation"] for r in rows]
        ax.plot(g, [r["best"] for r in rows], label="best candidate")
        ax.plot(g, [r["mean_candidate"] for r in rows], label="mean candidate")
        ax.plot(g, [r["distribution_mean"] for r in rows], label="CMA-ES mean")
    ax.set_xlabel("generation")
    ax.set_ylabel("dream return")
    ax.legend()
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
