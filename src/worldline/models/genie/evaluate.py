"""What a Genie model's latent actions mean: labels, the true-vs-latent confusion table, and
controllability (Genie's delta-PSNR). No weights here; everything goes through the model's methods.

- ``label_episode``: one latent action per frame of a video (frame t's is the code of t -> t+1, the
  dataset convention for actions); the last frame repeats the one before, having no successor.
- ``confusion`` / ``purity``: counts of (true action, latent action) pairs. ``true_to_latent`` is the
  share of transitions whose latent action is the most common one for their true action ("each true
  action maps mostly to one latent action"); ``latent_to_true`` the converse (a code means one thing);
  ``one_to_one`` the share covered by :func:`propose_layout`'s pairs, where no code serves two actions
  (``true_to_latent`` alone rewards a collapse: every transition on one code scores 1.0).
- ``propose_layout``: a key per true action: the latent code it most often maps to, each code used once.
- ``controllability``: PSNR of frames generated with the latent actions the LAM infers from the real
  video, minus PSNR with uniformly random latent actions, per horizon step (Genie, Sec. 4, delta_t PSNR).
"""

from __future__ import annotations

import numpy as np
import torch
from einops import rearrange

from worldline.core.errors import WorldlineError
from worldline.eval.metrics import psnr


def to_model_frames(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (1, T, 3, H, W) float in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).float() / 127.5 - 1.0
    return rearrange(x, "t h w c -> 1 t c h w")  # (1, T, 3, H, W)


def label_episode(model, frames: np.ndarray) -> np.ndarray:
    """Latent action per frame (T,) int64 of an episode's frames (T, H, W, 3) uint8."""
    if len(frames) < 2:
        raise WorldlineError(f"an episode of {len(frames)} frame is too short to label: the latent action model needs 2 or more")
    ids = model.infer_latent_actions(to_model_frames(frames))[0].cpu().numpy()  # (T-1,)
    return np.concatenate([ids, ids[-1:]]).astype(np.int64)


def confusion(true: np.ndarray, latent: np.ndarray, n_true: int, n_latent: int) -> np.ndarray:
    """(n_true, n_latent) int64 counts of each (true action, latent action) pair."""
    true, latent = np.asarray(true, np.int64).reshape(-1), np.asarray(latent, np.int64).reshape(-1)
    if true.shape != latent.shape:
        raise WorldlineError(f"{len(true)} true actions but {len(latent)} latent ones")
    if len(true) and (true.min() < 0 or true.max() >= n_true):
        raise WorldlineError(f"true action {int(true[(true < 0) | (true >= n_true)][0])} is outside 0..{n_true - 1}")
    table = np.zeros((n_true, n_latent), np.int64)
    np.add.at(table, (true, latent), 1)
    return table


def purity(table: np.ndarray) -> dict[str, float]:
    total = max(int(table.sum()), 1)
    return {
        "true_to_latent": float(table.max(axis=1).sum() / total),
        "latent_to_true": float(table.max(axis=0).sum() / total),
        "one_to_one": float(sum(table[a, z] for a, z, _ in propose_layout(table)) / total),
    }


def codebook_usage(table: np.ndarray) -> dict[str, float]:
    """Codes used, and the perplexity of the code distribution (n = all equally used)."""
    share = table.sum(axis=0) / max(int(table.sum()), 1)
    nz = share[share > 0]
    return {"codes_used": int((share > 0).sum()), "codes": int(len(share)), "perplexity": float(np.exp(-(nz * np.log(nz)).sum()))}


def propose_layout(table: np.ndarray) -> list[tuple[int, int, float]]:
    """(true action, latent code, share of that action's transitions) per true action, greedily
    pairing the largest counts first so that no code serves two actions; an action whose codes are
    all taken (or that never occurs) gets no key."""
    table = table.astype(np.float64)
    rows = table.sum(axis=1, keepdims=True)
    share = np.divide(table, rows, out=np.zeros_like(table), where=rows > 0)
    pairs, used_true, used_code = [], set(), set()
    for flat in np.argsort(-table, axis=None, kind="stable"):
        a, z = divmod(int(flat), table.shape[1])
        if a in used_true or z in used_code or table[a, z] == 0:
            continue
        pairs.append((a, z, float(share[a, z])))
        used_true.add(a)
        used_code.add(z)
    return sorted(pairs)


@torch.no_grad()
def controllability(model, frames: torch.Tensor, context: int, horizon: int, seed: int = 0) -> dict[str, list[float]]:
    """Per-step PSNR (horizon,) with inferred and with random latent actions, and their difference,
    on windows ``frames`` (B, context + horizon, 3, H, W) in [-1, 1]."""
    if model.config.real_actions:
        raise WorldlineError("controllability compares latent actions; this genie model was trained to play with real actions")
    B, T = frames.shape[:2]
    if context < 1 or horizon < 1 or T < context + horizon:
        raise WorldlineError(f"need windows of context + horizon = {context + horizon} frames, got {T}")
    n = model.config.num_latent_actions
    inferred = model.infer_latent_actions(frames[:, : context + horizon])[:, context - 1 :]  # (B, horizon)
    g = torch.Generator().manual_seed(seed)
    random = torch.randint(0, n, inferred.shape, generator=g).to(inferred.device)
    target = frames[:, context : context + horizon]
    out = {}
    for name, acts in (("inferred", inferred), ("random", random)):
        pred = model.rollout(frames[:, :context], acts[..., None].float()).frames  # (B, horizon, 3, H, W)
        out[name] = psnr(pred, target).mean(dim=0).tolist()
    out["delta"] = [a - b for a, b in zip(out["inferred"], out["random"])]
    return out
