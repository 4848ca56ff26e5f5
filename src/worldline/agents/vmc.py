"""The V-M-C pipeline (``worldline vmc --env ID``), after Ha & Schmidhuber (2018):

1. record episodes of the real env under an exploration policy into a worldline dataset (on
   CarRacing-v3, ``driver,driver,smooth``: M's reward head only learns what tiles pay if the data
   visits them, see ``worldline.agents.carracing``);
2. train V (VAE) and M (MDN-RNN with reward/done heads) on them with the one trainer, and check the
   reward head on the held-out episodes (``reward_check``) before anything trusts it;
3. train the linear controller C by CMA-ES inside M's dream, starting from real context clips;
4. evaluate C in the real env against a random policy, C's untrained starting point (the centre
   action) and C's bias alone (the constant action it settled on), all on the same seeds.

Outputs in ``out_dir``: ``data/``, ``model/`` (a training run; ``model/final`` the checkpoint),
``controller/`` (safetensors + JSON), ``cmaes.jsonl``, ``summary.json``, ``cmaes.png``.
"""

from __future__ import annotations

import dataclasses
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


@torch.no_grad()
def reward_check(world_model, dataset_path: str | Path, episodes: list[int], window: int = 20) -> dict[str, float]:
    """How well M's reward head reads the recorded rewards of ``episodes`` (teacher-forced: V's mean
    codes of the real frames, M's memory of the real actions), before any controller trusts it.

    ``corr``: correlation of predicted and true reward per step; ``corr_window``: of their sums over
    consecutive ``window`` steps (what a dream's return adds up); ``pred_positive`` / ``pred_other``:
    mean prediction on steps whose true reward is > 0 (CarRacing: a new tile) and on the rest, with
    ``true_positive`` / ``true_other`` beside them (None where there are no such steps).
    """
    from worldline.data.format import Dataset

    if not episodes:
        raise WorldlineError(f"{dataset_path}: reward_check needs at least one episode")
    dataset = Dataset(dataset_path)
    wm = world_model
    preds, trues, sums_p, sums_t = [], [], [], []
    for e in episodes:
        ep = dataset.episode(e)
        frames = torch.cat([frame_tensor(f) for f in ep["frames"]])  # (T, 3, H, W)
        z = torch.cat([wm.encode(chunk[None])[0][0] for chunk in frames.split(64)])  # (T, L)
        feats = wm.actions(torch.from_numpy(np.asarray(ep["actions"], np.float32))[None])[0]  # (T, A)
        hc, hs = None, []
        for t in range(len(z)):
            hc = wm.memory(z[t : t + 1], feats[t : t + 1], hc)
            hs.append(hc[0])
        h = torch.cat(hs)  # (T, R): h[t] follows action t, the state the reward of step t is read from
        pred = wm.predict_reward(torch.cat([z, h], -1)).numpy()
        true = np.asarray(ep["rewards"], np.float64)
        preds.append(pred)
        trues.append(true)
        n = len(true) // window * window
        sums_p.append(pred[:n].reshape(-1, window).sum(1))  # (T // window,)
        sums_t.append(true[:n].reshape(-1, window).sum(1))
    p, t = np.concatenate(preds), np.concatenate(trues)
    sp, st = np.concatenate(sums_p), np.concatenate(sums_t)

    def corr(a, b):
        return float(np.corrcoef(a, b)[0, 1]) if len(a) > 1 and a.std() > 0 and b.std() > 0 else 0.0

    pos = t > 0
    return {"episodes": len(episodes), "steps": int(len(t)), "corr": corr(p, t), "corr_window": corr(sp, st),
            "window": window, "positive_share": float(pos.mean()),
            "pred_positive": float(p[pos].mean()) if pos.any() else None,
            "true_positive": float(t[pos].mean()) if pos.any() else None,
            "pred_other": float(p[~pos].mean()) if (~pos).any() else None,
            "true_other": float(t[~pos].mean()) if (~pos).any() else None}


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
              resolution: int = 64, temperature: float | None = None, model: str | Path | None = None,
              progress: bool = True, log: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Run the whole pipeline; returns the summary it writes.

    Each stage reuses what ``out_dir`` already holds: a recorded ``data/`` is kept, and a finished V+M
    run in ``model/`` with the same config is resumed (so finished, not retrained): CMA-ES can be
    re-run on one model with other search settings. ``model`` (a saved V+M, e.g. a checkpoint of
    ``model/checkpoints``) skips the training; ``data/`` is still read for dream starts and the check.
    ``temperature`` replaces M's sampling temperature in the dream only (the paper's trick: > 1 makes
    a dream harder to exploit). Before the search, the reward head is checked on the held-out
    episodes (``reward_check``, in the summary)."""
    from worldline.core.config import apply_overrides, load_preset
    from worldline.core.pretrained import load_pretrained
    from worldline.data.format import Dataset
    from worldline.data.windows import split_episodes
    from worldline.envs.recorder import record
    from worldline.train.config import RunConfig
    from worldline.train.run import train

    if temperature is not None and not temperature > 0:
        raise WorldlineError(f"temperature must be > 0, got {temperature}")
    out_dir = Path(out_dir)
    cmaes = cmaes or CMAESConfig(seed=seed)
    t0, c0 = time.perf_counter(), time.process_time()
    data = out_dir / "data"
    if not (data / "meta" / "info.json").is_file():
        record(env_id, episodes, data, policy=policy, resolution=resolution, seed=seed, max_steps=max_steps, progress=progress)
    raw = apply_overrides(load_preset(preset, size), [f"data.path={data}", f"train.seed={seed}", *(overrides or [])])
    run_cfg = RunConfig.from_dict(raw)
    if run_cfg.model.type_name() not in ("vmc", "rssm"):
        raise WorldlineError(f"preset {preset!r} is a {run_cfg.model.type_name()!r} model; vmc needs the rssm family")
    if model is None:
        final = train(run_cfg, out_dir / "model", progress=progress)
    elif not (Path(model) / "config.json").is_file():
        raise WorldlineError(f"model {model}: not a saved world model (no config.json)")
    else:
        final = Path(model)
    t_model, c_model = time.perf_counter(), time.process_time()
    torch.set_num_threads(max(1, run_cfg.train.threads))
    wm = load_pretrained(final)
    wm.requires_grad_(False)
    _, val_ids = split_episodes(Dataset(data).num_episodes, run_cfg.data.val_fraction, run_cfg.data.split_seed)
    check = reward_check(wm, data, val_ids) if wm.has_reward_head and val_ids else None
    if log is not None and check is not None:
        log({"reward_check": check})
    if temperature is not None:
        wm.config.temperature = float(temperature)

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
    t_cmaes, c_cmaes = time.perf_counter(), time.process_time()
    save_controller(controller, out_dir / "controller")
    eval_seed = 10_000 + seed  # episodes the dataset never saw
    ours = evaluate_controller(wm, controller, env_id, eval_episodes, eval_seed, max_steps, resolution)
    rand = random_returns(env_id, eval_episodes, eval_seed, max_steps, resolution)
    # CMA-ES's starting point (all-zero weights: the box's centre action), to separate what the search learned
    start = evaluate_controller(wm, LinearController(wm.feat_dim, wm.actions.dim, kind), env_id, eval_episodes,
                                eval_seed, max_steps, resolution)
    # the controller's bias alone (its weights zeroed): the constant action the search settled on, to
    # separate reacting to what V and M see from finding a good constant action
    bias_only = LinearController(wm.feat_dim, wm.actions.dim, kind)
    bias_only.params[controller.action_dim * controller.feat_dim :] = controller.params[controller.action_dim * controller.feat_dim :]
    constant = evaluate_controller(wm, bias_only, env_id, eval_episodes, eval_seed, max_steps, resolution)
    summary = {
        "env": env_id, "seed": seed, "episodes_recorded": Dataset(data).num_episodes, "max_steps": max_steps,
        "model": str(final), "model_steps": run_cfg.train.steps if model is None else None,
        "cmaes": dataclasses.asdict(cmaes), "generations": cmaes.generations, "popsize": cmaes.popsize, "temperature": wm.config.temperature, "reward_check": check,
        "eval_seeds": [eval_seed, eval_seed + eval_episodes - 1],
        "controller_returns": ours, "controller_mean": float(np.mean(ours)), "controller_std": float(np.std(ours)),
        "random_returns": rand, "random_mean": float(np.mean(rand)), "random_std": float(np.std(rand)),
        "initial_controller_returns": start, "initial_controller_mean": float(np.mean(start)),
        "initial_controller_std": float(np.std(start)),
        "bias_only_returns": constant, "bias_only_mean": float(np.mean(constant)), "bias_only_std": float(np.std(constant)),
        "dream_fitness_last": rows[-1]["distribution_mean"] if rows else None,
        "seconds": {"record_and_model": t_model - t0, "cmaes": t_cmaes - t_model, "total": time.perf_counter() - t0,
                    "record_and_model_cpu": c_model - c0, "check_and_cmaes_cpu": c_cmaes - c_model, "eval_cpu": time.process_time() - c_cmaes},
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
