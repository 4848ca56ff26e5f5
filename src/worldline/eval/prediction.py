"""Prediction quality of a world model on held-out episodes, against the baselines that keep it honest.

For windows of ``context + horizon`` frames the model sees the context and the real actions and
predicts the horizon. Per horizon step we report PSNR and SSIM of:

- ``model``: the world model with the real actions;
- ``copy_last``: the last context frame repeated (a model that predicts nothing must beat no one);
- ``shuffled_actions``: the same model with the future actions of another window (a derangement over
  the evaluated windows): the gap to ``model`` is how much the model uses its actions;
- ``tokenizer``: the tokenizer's reconstruction of the real future, the ceiling of a latent model.

Time convention (LeRobot): ``actions[t]`` is taken at frame t and leads to frame t + 1. So the model
gets ``actions[K-1 : K-1+H]`` to predict frames ``K .. K+H-1`` and ``actions[:K-1]`` as context actions.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import torch
from einops import rearrange
from torch import Tensor

from worldline.core.contracts import device_of
from worldline.core.errors import WorldlineError
from worldline.eval.metrics import psnr, sharpness, ssim

PSNR_CAP_DB = 100.0  # identical frames score this instead of +inf, so means stay finite and JSON is valid
METHODS = ("model", "copy_last", "shuffled_actions", "tokenizer")
CHUNK = 256  # frames per tokenizer call for the reconstruction ceiling


def evaluate_prediction(model, dataset_path: str | os.PathLike, *, context: int = 4, horizon: int = 16,
                        episodes: str | Sequence[int] = "val", max_windows: int = 256, batch_size: int = 32,
                        seed: int = 0, data_cfg=None, progress: bool = True) -> dict[str, Any]:
    """Per-step PSNR/SSIM of ``model`` and its baselines on up to ``max_windows`` windows of the
    ``episodes`` ("val", "train", "all" or a list of indices) of the split in ``data_cfg``. ``seed``
    picks the windows and seeds the model's own sampling (diffusion noise, token sampling), so a
    repeated evaluation gives the same figures; the caller's random state is left as it was."""
    from worldline.data.config import DataConfig

    if context < 1 or horizon < 1:
        raise WorldlineError(f"context and horizon must be >= 1, got context={context} horizon={horizon}")
    if max_windows < 1 or batch_size < 1:
        raise WorldlineError(f"max_windows and batch_size must be >= 1, got {max_windows} and {batch_size}")
    data_cfg = data_cfg or DataConfig()
    sampler, ids = _window_sampler(model, dataset_path, context + horizon, episodes, data_cfg)
    n = min(max_windows, len(sampler))
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(sampler), size=n, replace=False))
    partner = chosen[_derangement(n, rng)]  # the window whose actions each window gets in the shuffled run

    device = device_of(model)
    tokenizer = _tokenizer_of(model)
    was_training = model.training
    model.eval()
    totals = {m: {"psnr": np.zeros(horizon), "ssim": np.zeros(horizon), "sharpness": np.zeros(horizon)} for m in METHODS}
    teacher = getattr(model, "teacher_forced_metrics", None)  # token models: accuracy/CE of the horizon's true tokens
    teacher_sums: dict[str, float] = {}
    K, H = context, horizon
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[device] if torch.device(device).type == "cuda" else []):
            torch.manual_seed(seed)
            for b in _progress(range(0, n, batch_size), progress, f"prediction on {n} windows"):
                batch = sampler.batch(chosen[b : b + batch_size])
                frames, actions = batch["frames"].to(device), batch["actions"].to(device)
                ctx, target = frames[:, :K], frames[:, K : K + H]  # (B, K, C, H, W), (B, H, C, H, W)
                ctx_actions, future = actions[:, : K - 1], actions[:, K - 1 : K - 1 + H]
                shuffled = sampler.batch(partner[b : b + batch_size])["actions"].to(device)[:, K - 1 : K - 1 + H]

                extra = _proprio(model, batch, K)
                preds = {
                    "model": model.rollout(ctx, future, context_actions=ctx_actions, **extra).frames,
                    "copy_last": ctx[:, -1:].expand_as(target),
                    "shuffled_actions": model.rollout(ctx, shuffled, context_actions=ctx_actions, **extra).frames,
                }
                if tokenizer is not None:
                    preds["tokenizer"] = _reconstruct(tokenizer, frames)[:, K : K + H]
                if teacher is not None:
                    for key, value in teacher(frames[:, : K + H], actions[:, : K + H], start=K).items():
                        teacher_sums[key] = teacher_sums.get(key, 0.0) + value * len(frames)
                for name, pred in preds.items():
                    if pred.shape != target.shape:
                        raise WorldlineError(f"{name} predicted shape {tuple(pred.shape)}, expected {tuple(target.shape)}")
                    totals[name]["psnr"] += psnr(pred, target).clamp(max=PSNR_CAP_DB).sum(0).double().cpu().numpy()
                    totals[name]["ssim"] += ssim(pred, target).sum(0).double().cpu().numpy()
                    totals[name]["sharpness"] += sharpness(pred, target).sum(0).double().cpu().numpy()
    finally:
        model.train(was_training)

    result: dict[str, Any] = {
        "dataset": str(dataset_path),
        "model_type": getattr(model, "type_name", type(model).__name__),
        "episodes": episodes if isinstance(episodes, str) else "list",
        "episode_ids": [int(i) for i in ids],
        "num_windows": int(n),
        "context": K,
        "horizon": H,
        "psnr_cap_db": PSNR_CAP_DB,
    }
    for name in METHODS:
        if name == "tokenizer" and tokenizer is None:
            result[name] = None
            continue
        p, s, sharp = (totals[name][k] / n for k in ("psnr", "ssim", "sharpness"))
        result[name] = {"psnr": [float(v) for v in p], "ssim": [float(v) for v in s], "sharpness": [float(v) for v in sharp],
                        "psnr_mean": float(p.mean()), "ssim_mean": float(s.mean()), "sharpness_mean": float(sharp.mean())}
    if teacher_sums:
        result["teacher_forced"] = {key: total / n for key, total in teacher_sums.items()}
    m, c, sh = result["model"], result["copy_last"], result["shuffled_actions"]
    result["beats_copy_last"] = {  # 1-based horizon steps where the model is better than repeating the last frame
        "psnr_steps": [t + 1 for t in range(H) if m["psnr"][t] > c["psnr"][t]],
        "ssim_steps": [t + 1 for t in range(H) if m["ssim"][t] > c["ssim"][t]],
    }
    result["action_gain"] = {  # true over shuffled actions: the mean over the horizon, and step by step
        "psnr_db": m["psnr_mean"] - sh["psnr_mean"], "ssim": m["ssim_mean"] - sh["ssim_mean"],
        "psnr_db_steps": [a - b for a, b in zip(m["psnr"], sh["psnr"])],
    }
    return result


def format_table(result: dict[str, Any]):
    """A rich Table of ``result``: per horizon step, ``PSNR dB / SSIM`` of every method, then the means.
    The model's numbers are green where they beat copy-last-frame, red where they do not."""
    from rich.table import Table

    methods = [m for m in METHODS if result.get(m)]
    labels = {"model": "model", "copy_last": "copy-last", "shuffled_actions": "shuffled actions", "tokenizer": "tokenizer"}
    table = Table(title=f"prediction on {result['num_windows']} held-out windows (context {result['context']}, "
                        f"horizon {result['horizon']}, {result['model_type']}): PSNR dB / SSIM")
    table.add_column("step", justify="right")
    for m in methods:
        table.add_column(labels[m], justify="right")

    def cell(m: str, pick) -> str:
        p, s = pick(result[m]["psnr"]), pick(result[m]["ssim"])
        text_p, text_s = f"{p:.2f}", f"{s:.3f}"
        if m == "model":
            colour = lambda ok: "green" if ok else "red"  # noqa: E731
            text_p = f"[{colour(p > pick(result['copy_last']['psnr']))}]{text_p}[/]"
            text_s = f"[{colour(s > pick(result['copy_last']['ssim']))}]{text_s}[/]"
        return f"{text_p} / {text_s}"

    for t in range(result["horizon"]):
        table.add_row(str(t + 1), *[cell(m, lambda xs, t=t: xs[t]) for m in methods])
    table.add_row("mean", *[cell(m, lambda xs: float(np.mean(xs))) for m in methods], style="bold")
    captions = []
    if all("sharpness_mean" in result[m] for m in methods):  # results saved before sharpness was measured lack it
        captions.append("sharpness (fine detail / the real frames', 1 = as sharp, below = blurred), mean: "
                        + ", ".join(f"{labels[m]} {result[m]['sharpness_mean']:.2f}" for m in methods))
    steps = result.get("action_gain", {}).get("psnr_db_steps")  # results saved before it was measured lack it
    if steps:
        t = min(8, len(steps))
        captions.append(f"true over shuffled actions, PSNR: {steps[t - 1]:+.2f} dB at step {t}, "
                        f"{float(np.mean(steps)):+.2f} dB over the horizon")
    if result.get("teacher_forced"):
        captions.append("teacher-forced on the horizon: " + ", ".join(f"{k} {v:.4f}" for k, v in result["teacher_forced"].items()))
    table.caption = "\n".join(captions) or None
    return table


# ----------------------------------------------------------------------------------------------
# helpers shared with eval/rollout.py
# ----------------------------------------------------------------------------------------------


def episode_ids(num_episodes: int, episodes: str | Sequence[int], data_cfg) -> list[int]:
    """Resolve "val" / "train" / "all" / explicit indices with the run's split (held-out means held-out)."""
    from worldline.data.windows import split_episodes

    if isinstance(episodes, str):
        if episodes == "all":
            return list(range(num_episodes))
        if episodes not in ("val", "train"):
            raise WorldlineError(f"episodes must be 'val', 'train', 'all' or a list of indices, got {episodes!r}")
        train_ids, val_ids = split_episodes(num_episodes, data_cfg.val_fraction, data_cfg.split_seed)
        ids = [int(i) for i in (val_ids if episodes == "val" else train_ids)]
        if not ids:
            raise WorldlineError(f"the split (val_fraction={data_cfg.val_fraction}) leaves no {episodes} episodes "
                                 f"among {num_episodes}")
        return ids
    ids = [int(i) for i in episodes]
    bad = [i for i in ids if not 0 <= i < num_episodes]
    if bad:
        raise WorldlineError(f"episode {bad[0]} does not exist (the dataset has {num_episodes} episodes)")
    return ids


def model_store(model, dataset_path: str | os.PathLike, data_cfg):
    """(Dataset, frame store at the model's resolution) for ``dataset_path``."""
    from worldline.data.cache import frame_store
    from worldline.data.format import Dataset

    ds = Dataset(dataset_path)
    size = getattr(getattr(model, "config", None), "image_size", None)
    resolution = None
    if size is not None and tuple(size) != tuple(ds.image_shape[:2]):
        resolution = tuple(int(v) for v in size)
    return ds, frame_store(ds, data_cfg.camera, resolution=resolution)


def _window_sampler(model, dataset_path, window: int, episodes, data_cfg):
    from worldline.data.windows import WindowSampler

    ds, store = model_store(model, dataset_path, data_cfg)
    _check_action_space(model, ds, dataset_path)
    ids = episode_ids(ds.num_episodes, episodes, data_cfg)
    sampler = WindowSampler(store, window, ids, stride=data_cfg.stride)
    if len(sampler) == 0:
        longest = max(int(ds.episode_lengths[i]) for i in ids)
        raise WorldlineError(f"{dataset_path}: no {episodes if isinstance(episodes, str) else 'chosen'} episode is long "
                             f"enough for a window of {window} frames (stride {data_cfg.stride}; longest has {longest})")
    return sampler, ids


def _check_action_space(model, ds, dataset_path) -> None:
    """The dataset's actions must be the kind the model was trained on: a discrete game's true actions
    would otherwise pass as, say, a Genie model's latent-action indices and be scored silently."""
    want, have = getattr(model, "action_spec", None), ds.action_spec
    if want is None or want.kind == "none":
        return
    key = lambda s: (s.kind, s.dim, s.n if s.kind == "discrete" else 0)  # noqa: E731
    if key(want) != key(have):
        show = lambda s: f"{s.kind} n={s.n}" if s.kind == "discrete" else f"{s.kind} dim={s.dim}"  # noqa: E731
        raise WorldlineError(f"{dataset_path}: its actions ({show(have)}) are not the model's ({show(want)}); "
                             f"a latent-action model evaluates on a dataset labelled by `worldline genie label`")


def _proprio(model, batch, K: int) -> dict:
    """``{"context_proprio": ...}`` for a model that reads proprioception, else ``{}``."""
    if not getattr(model, "uses_proprio", False):
        return {}
    if "states" not in batch:
        raise WorldlineError("the model reads proprioception, the dataset has no observation.state")
    return {"context_proprio": batch["states"][:, :K].to(device_of(model))}


def _derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A permutation with no fixed point (for n >= 2): each window gets another window's actions."""
    if n < 2:
        return np.arange(n)
    order = rng.permutation(n)
    out = np.empty(n, dtype=np.int64)
    out[order] = np.roll(order, -1)  # order[k] takes order[k+1]: a single cycle, never itself
    return out


def _reconstruct(tokenizer, frames: Tensor) -> Tensor:
    """decode(encode(frames)) (B, T, C, H, W): frame by frame for a tokenizer with temporal
    compression 1 (as the latent models use it), else as one clip."""
    if tokenizer.compression[0] != 1:
        return tokenizer.decode(tokenizer.encode(frames))[:, : frames.shape[1]].clamp(-1, 1)
    B = frames.shape[0]
    flat = rearrange(frames, "b t c h w -> (b t) 1 c h w")  # (B*T, 1, C, H, W)
    out = torch.cat([tokenizer.decode(tokenizer.encode(flat[i : i + CHUNK])) for i in range(0, len(flat), CHUNK)])
    return rearrange(out, "(b t) 1 c h w -> b t c h w", b=B).clamp(-1, 1)


def _tokenizer_of(model):
    from worldline.core.contracts import Tokenizer

    tok = getattr(model, "tokenizer", None)
    return tok if isinstance(tok, Tokenizer) else None


def _progress(it, enabled: bool, description: str):
    if not enabled:
        return it
    from rich.progress import track

    return track(it, description=description, transient=True)
