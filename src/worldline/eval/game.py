"""Are rollouts game-like? Read the game's moving parts off the frames and compare them with the truth.

PSNR says little about a game: in Breakout at 64x64 the ball is one or two pixels, so a model that
freezes the ball and the paddle still scores 32 dB. This suite reads the sprites that make the game
(the paddle, the ball) off real and predicted frames and asks what a player would ask:

- does the controlled sprite go where the actions send it? (paddle error in px, against copy-last
  and against the same model fed shuffled actions);
- is the ball still there, and does it keep moving? (visible and moving fractions, against the
  real frames);
- does it move the right way? (ball position error over the first steps, against copy-last).

A reader is a small class per game keyed by gymnasium id; :data:`READERS` lists them. Readers work on
the recorded frames (any square size; positions are returned in pixels of that size).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
import torch
from einops import rearrange

from worldline.core.errors import WorldlineError

MOVE_PX = 0.5  # a ball that shifts less than this between frames (in 64-px units) counts as frozen


@dataclasses.dataclass
class Sprites:
    paddle_x: np.ndarray  # (T,) the paddle's centre column in px, nan where none is seen
    ball: np.ndarray  # (T, 2) the ball's centre (row, column) in px, nan where none is seen


class BreakoutReader:
    """Paddle and ball of Atari Breakout (ALE/Breakout-v5), read from frames of any square size.

    Geometry of the 210x160 screen: the paddle occupies rows 189-192, the playfield columns 8-151,
    the bricks rows 57-92; the ball and the paddle share one colour, (200, 72, 72). "Redness"
    R - max(G, B) is 128 for them, 90 for the orange bricks and 0 for every other colour on screen,
    so in the band below the bricks it picks out the ball and in the paddle's rows the paddle.
    Positions are redness-weighted centroids, so a sprite blurred over two pixels by the downscale
    (or by a tokenizer) is still placed to a fraction of a pixel.
    """

    env_id = "ALE/Breakout-v5"
    screen = (210, 160)
    paddle_rows = (189, 193)  # [lo, hi) in screen rows
    ball_rows = (94, 188)  # below the bricks, above the paddle
    columns = (8, 152)
    min_redness = 12.0  # per pixel: below this it is blur or tokenizer noise
    min_mass = 0.3  # a sprite must carry this fraction of a full-intensity ball's redness to count

    def read(self, frames: np.ndarray) -> Sprites:
        """(T, S, S, 3) uint8 frames -> the sprites in each."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[1] != frames.shape[2]:
            raise WorldlineError(f"Breakout reader needs (T, S, S, 3) frames, got shape {frames.shape}")
        S = frames.shape[1]
        f = frames.astype(np.float32)
        redness = np.clip(f[..., 0] - np.maximum(f[..., 1], f[..., 2]), 0, None)  # (T, S, S)
        redness[redness < self.min_redness] = 0
        sy, sx = S / self.screen[0], S / self.screen[1]
        c0, c1 = int(np.ceil(self.columns[0] * sx)), int(np.floor(self.columns[1] * sx))
        ball_mass = 128.0 * 8 * sy * sx  # the 2x4-px ball at full intensity, in this frame size
        cols = np.arange(c0, c1, dtype=np.float32)

        p0, p1 = int(np.floor(self.paddle_rows[0] * sy)), int(np.ceil(self.paddle_rows[1] * sy))
        band = redness[:, p0:p1, c0:c1].sum(1)  # (T, C)
        mass = band.sum(1)
        paddle = np.where(mass > self.min_mass * ball_mass, (band * cols).sum(1) / np.maximum(mass, 1e-6), np.nan)

        b0, b1 = int(np.ceil(self.ball_rows[0] * sy)), int(np.floor(self.ball_rows[1] * sy))
        area = redness[:, b0:b1, c0:c1]  # (T, R, C)
        mass = area.sum((1, 2))
        rows = np.arange(b0, b1, dtype=np.float32)
        by = (area.sum(2) * rows).sum(1) / np.maximum(mass, 1e-6)
        bx = (area.sum(1) * cols).sum(1) / np.maximum(mass, 1e-6)
        seen = mass > self.min_mass * ball_mass
        ball = np.where(seen[:, None], np.stack([by, bx], axis=1), np.nan)
        return Sprites(paddle.astype(np.float32), ball.astype(np.float32))


READERS: dict[str, type] = {BreakoutReader.env_id: BreakoutReader, "breakout": BreakoutReader}


def reader_for(env_id: str | None):
    if env_id not in READERS:
        raise WorldlineError(f"game suite: no sprite reader for env {env_id!r} (known: {', '.join(sorted(READERS))})")
    return READERS[env_id]()


def sprite_metrics(real: Sprites, pred: Sprites, size: int, ball_steps: int = 4) -> dict[str, float]:
    """Compare predicted sprites with the real ones over a horizon (arrays of shape (N, H[, 2])).

    Pixel figures are rescaled to 64-px units so they read the same at any resolution.
    ``ball_steps``: the ball's error is taken over the first steps only, before the real ball has had
    time to bounce somewhere no model could know.
    """
    unit = 64.0 / size
    paddle_err = np.abs(pred.paddle_x - real.paddle_x) * unit  # (N, H)
    real_seen = ~np.isnan(real.ball[..., 0])
    pred_seen = ~np.isnan(pred.ball[..., 0])
    both = real_seen & pred_seen
    moved = np.linalg.norm(np.diff(pred.ball, axis=1), axis=-1) * unit  # (N, H-1), nan unless seen twice
    real_moved = np.linalg.norm(np.diff(real.ball, axis=1), axis=-1) * unit
    pairs = ~np.isnan(moved) & ~np.isnan(real_moved) & (real_moved >= MOVE_PX)  # the real ball moved here
    ball_err = np.linalg.norm(pred.ball - real.ball, axis=-1)[:, :ball_steps] * unit
    return {
        "paddle_error_px": _nanmean(np.where(np.isnan(real.paddle_x), np.nan, np.nan_to_num(paddle_err, nan=size * unit))),
        "ball_visible": float(both.sum() / max(real_seen.sum(), 1)),
        "ball_moving": float((moved[pairs] >= MOVE_PX).mean()) if pairs.any() else float("nan"),
        "ball_error_px": _nanmean(ball_err),
        "ball_pairs": int(pairs.sum()),
    }


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


@torch.no_grad()
def evaluate_game(model, dataset_path: str | os.PathLike, *, context: int = 4, horizon: int = 16,
                  max_windows: int = 64, batch_size: int = 16, seed: int = 0, data_cfg=None,
                  progress: bool = True) -> dict[str, Any]:
    """Roll ``model`` out on held-out windows of a game dataset and read the sprites of every frame.

    Rows: the model with the true actions, the model with actions shuffled across windows, the last
    context frame copied (what a frozen model shows), the real frames through the model's tokenizer
    (a tokenizer that erases the ball caps every latent model) and the real frames themselves. Sampling models sample as they are set to (``model.sampling``).
    """
    from worldline.core.contracts import device_of
    from worldline.data.config import DataConfig
    from worldline.eval.metrics import to_uint8_frames
    from worldline.eval.prediction import _derangement, _progress, _reconstruct, _tokenizer_of, _window_sampler, model_store

    data_cfg = data_cfg or DataConfig()
    ds, _ = model_store(model, dataset_path, data_cfg)
    reader = reader_for(ds.env_id)
    if context < 1 or horizon < 2 or max_windows < 2:
        raise WorldlineError(f"game suite needs context >= 1, horizon >= 2 and max_windows >= 2, got {context=} {horizon=} {max_windows=}")
    sampler, _ = _window_sampler(model, dataset_path, context + horizon, "val", data_cfg)
    n = min(max_windows, len(sampler))
    if n < 2:
        raise WorldlineError(f"{dataset_path}: {len(sampler)} held-out window of {context + horizon} frames; the game suite needs 2")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(sampler), size=n, replace=False))
    partner = chosen[_derangement(n, rng)]

    device = device_of(model)
    K, H = context, horizon
    u8 = lambda x: to_uint8_frames(x).cpu().numpy()  # noqa: E731  (B, T, S, S, 3)
    tokenizer = _tokenizer_of(model)
    frames: dict[str, list[np.ndarray]] = {"model": [], "shuffled_actions": [], "copy_last": [], "real": []}
    if tokenizer is not None:
        frames["tokenizer"] = []  # the real frames through the tokenizer: what the model could show at best
    torch.manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        for b in _progress(range(0, n, batch_size), progress, f"game rollouts on {n} windows"):
            batch = sampler.batch(chosen[b : b + batch_size])
            clip, actions = batch["frames"].to(device), batch["actions"].to(device)
            ctx, ctx_actions = clip[:, :K], actions[:, : K - 1]
            shuffled = sampler.batch(partner[b : b + batch_size])["actions"].to(device)[:, K - 1 : K - 1 + H]
            frames["model"].append(u8(model.rollout(ctx, actions[:, K - 1 : K - 1 + H], context_actions=ctx_actions).frames))
            frames["shuffled_actions"].append(u8(model.rollout(ctx, shuffled, context_actions=ctx_actions).frames))
            frames["copy_last"].append(u8(ctx[:, -1:].expand(-1, H, -1, -1, -1)))
            frames["real"].append(u8(clip[:, K : K + H]))
            if tokenizer is not None:
                frames["tokenizer"].append(u8(_reconstruct(tokenizer, clip[:, K : K + H])))
    finally:
        model.train(was_training)
    stacked = {name: np.concatenate(f) for name, f in frames.items()}  # each (n, H, S, S, 3)
    S = stacked["real"].shape[2]
    truth = _read_all(reader, stacked["real"])
    rows = {name: sprite_metrics(truth, _read_all(reader, f), S) for name, f in stacked.items()}
    return {"dataset": str(dataset_path), "env_id": ds.env_id, "windows": int(n), "context": K, "horizon": H, "rows": rows}


def _read_all(reader, frames: np.ndarray) -> Sprites:
    N, H = frames.shape[:2]
    s = reader.read(frames.reshape(N * H, *frames.shape[2:]))
    return Sprites(s.paddle_x.reshape(N, H), s.ball.reshape(N, H, 2))


def format_table(result: dict[str, Any]):
    from rich.table import Table

    table = Table(title=f"{result['env_id']}: sprites over {result['windows']} windows, horizon {result['horizon']}")
    table.add_column("frames")
    for col in ("paddle err px", "ball visible", "ball moving", "ball err px (1-4)"):
        table.add_column(col, justify="right")
    for name, m in result["rows"].items():
        table.add_row(name, f"{m['paddle_error_px']:.2f}", f"{m['ball_visible']:.2f}", f"{m['ball_moving']:.2f}",
                      f"{m['ball_error_px']:.2f}")
    return table
