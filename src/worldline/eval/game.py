"""Are rollouts game-like? Read the game's moving parts off the frames and compare them with the truth.

PSNR says little about a game: in Breakout at 64x64 the ball is one or two pixels, so a model that
freezes the ball and the paddle still scores 32 dB. This suite reads the sprites that make the game
off real and predicted frames and asks what a player would ask:

- does the sprite the player controls go where the actions send it? (its position error, against
  copy-last and against the same model fed shuffled actions);
- are the other moving sprites still there, and do they keep moving? (visible and moving fractions);
- do they move the right way? (their position error over the first steps, against copy-last).

A reader is a small class per game keyed by gymnasium id (:data:`READERS`). It returns named tracks,
each (T, 2) (row, column) in pixels of the frame, nan where the sprite is not seen, and says which
track the player controls. Readers work on frames of any square size.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from worldline.core.errors import WorldlineError

MOVE_PX = 0.5  # a sprite that shifts less than this between frames (in 64-px units) counts as frozen
EARLY_STEPS = 4  # free sprites are scored over the first steps only, before a bounce no model could know

Tracks = dict[str, np.ndarray]  # name -> (..., T, 2) positions (row, column), nan where unseen


def _check(frames: np.ndarray, game: str) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[1] != frames.shape[2]:
        raise WorldlineError(f"{game} reader needs (T, S, S, 3) frames, got shape {frames.shape}")
    return frames.astype(np.float32)


def _centroids(weight: np.ndarray, rows: np.ndarray, cols: np.ndarray, min_mass: float) -> np.ndarray:
    """Weight (T, R, C) over a region -> (T, 2) weighted centre, nan where the mass is below ``min_mass``."""
    mass = weight.sum((1, 2))
    y = (weight.sum(2) * rows).sum(1) / np.maximum(mass, 1e-6)
    x = (weight.sum(1) * cols).sum(1) / np.maximum(mass, 1e-6)
    return np.where((mass > min_mass)[:, None], np.stack([y, x], axis=1), np.nan).astype(np.float32)


def _region(size: int, screen: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]):
    """Screen rows/cols [lo, hi) -> the pixel rows/cols of a size x size frame that lie inside them."""
    sy, sx = size / screen[0], size / screen[1]
    r = np.arange(int(np.ceil(rows[0] * sy)), int(np.floor(rows[1] * sy)), dtype=np.float32)
    c = np.arange(int(np.ceil(cols[0] * sx)), int(np.floor(cols[1] * sx)), dtype=np.float32)
    return r, c, sy * sx


class BreakoutReader:
    """Paddle (controlled) and ball of Atari Breakout (ALE/Breakout-v5).

    Geometry of the 210x160 screen: the paddle occupies rows 189-192, the playfield columns 8-151,
    the bricks rows 57-92; the ball and the paddle share one colour, (200, 72, 72). "Redness"
    R - max(G, B) is 128 for them, 90 for the orange bricks and 0 for every other colour on screen,
    so in the band below the bricks it picks out the ball and in the paddle's rows the paddle.
    Positions are redness-weighted centroids, so a sprite blurred over two pixels by the downscale
    (or by a tokenizer) is still placed to a fraction of a pixel.
    """

    env_ids = ("ALE/Breakout-v5", "breakout")
    controlled = "paddle"
    screen = (210, 160)
    paddle_rows = (189, 193)  # [lo, hi) in screen rows
    ball_rows = (94, 188)  # below the bricks, above the paddle
    columns = (8, 152)
    min_redness = 12.0  # per pixel: below this it is blur or tokenizer noise
    min_mass = 0.3  # a sprite must carry this share of a full-intensity ball's redness to count

    def read(self, frames: np.ndarray) -> Tracks:
        """(T, S, S, 3) uint8 frames -> {"paddle", "ball"} tracks (T, 2)."""
        f = _check(frames, "Breakout")
        S = f.shape[1]
        redness = np.clip(f[..., 0] - np.maximum(f[..., 1], f[..., 2]), 0, None)  # (T, S, S)
        redness[redness < self.min_redness] = 0
        rows, cols, area = _region(S, self.screen, self.ball_rows, self.columns)
        ball_mass = 128.0 * 8 * area  # the 2x4-px ball at full intensity, in this frame size
        r0, c0 = int(rows[0]), int(cols[0])
        ball = _centroids(redness[:, r0 : r0 + len(rows), c0 : c0 + len(cols)], rows, cols, self.min_mass * ball_mass)
        sy = S / self.screen[0]
        p0, p1 = int(np.floor(self.paddle_rows[0] * sy)), int(np.ceil(self.paddle_rows[1] * sy))
        prow = np.arange(p0, p1, dtype=np.float32)
        paddle = _centroids(redness[:, p0:p1, c0 : c0 + len(cols)], prow, cols, self.min_mass * ball_mass)
        paddle[:, 0] = np.where(np.isnan(paddle[:, 0]), np.nan, (self.paddle_rows[0] + self.paddle_rows[1]) / 2 * sy - 0.5)
        return {"paddle": paddle, "ball": ball}


class BoxingReader:
    """The player's (white, controlled) and the opponent's (black) boxer of Atari Boxing (ALE/Boxing-v5).

    Inside the ring (screen rows 28-184, columns 27-132 of 210x160) there are three colours: the green
    canvas (110, 156, 66), the white boxer (214, 214, 214) and the black one. "Whiteness"
    (min(R, G, B) - 66) and "darkness" (156 - max(R, G, B)) are 0 on the canvas and the ring ropes and
    largest on each boxer; the scores and clock, drawn in the same colours, lie outside the ring.
    """

    env_ids = ("ALE/Boxing-v5", "boxing")
    controlled = "player"
    screen = (210, 160)
    rows = (28, 184)
    columns = (27, 133)
    min_mass = 40.0  # screen pixels of full colour: a boxer has ~300, an arm alone ~30

    def read(self, frames: np.ndarray) -> Tracks:
        """(T, S, S, 3) uint8 frames -> {"player", "opponent"} tracks (T, 2)."""
        f = _check(frames, "Boxing")
        rows, cols, area = _region(f.shape[1], self.screen, self.rows, self.columns)
        r0, c0 = int(rows[0]), int(cols[0])
        f = f[:, r0 : r0 + len(rows), c0 : c0 + len(cols)]
        white = np.clip((f.min(-1) - 66.0) / (214 - 66), 0, 1)
        dark = np.clip((156.0 - f.max(-1)) / 156, 0, 1)
        white[white < 0.1], dark[dark < 0.1] = 0, 0  # blur at the canvas' edge
        m = self.min_mass * area
        return {"player": _centroids(white, rows, cols, m), "opponent": _centroids(dark, rows, cols, m)}


READERS: dict[str, type] = {env_id: cls for cls in (BreakoutReader, BoxingReader) for env_id in cls.env_ids}


def reader_for(env_id: str | None):
    if env_id not in READERS:
        raise WorldlineError(f"game suite: no sprite reader for env {env_id!r} (known: {', '.join(sorted(READERS))})")
    return READERS[env_id]()


def track_metrics(real: np.ndarray, pred: np.ndarray, size: int, steps: int | None = None) -> dict[str, float]:
    """Predicted positions (N, H, 2) against the real ones: error (64-px units, frames where both are
    seen, the first ``steps`` steps when given), share of the real sightings also seen in the
    prediction, and share of the steps where the real sprite moved in which the predicted one moved too."""
    unit = 64.0 / size
    real_seen, pred_seen = ~np.isnan(real[..., 0]), ~np.isnan(pred[..., 0])
    err = np.linalg.norm(pred - real, axis=-1) * unit  # (N, H), nan unless both are seen
    if steps is not None:
        err = err[:, :steps]
    moved = np.linalg.norm(np.diff(pred, axis=1), axis=-1) * unit  # (N, H-1)
    real_moved = np.linalg.norm(np.diff(real, axis=1), axis=-1) * unit
    live = ~np.isnan(real_moved) & (real_moved >= MOVE_PX)  # steps where the real sprite moved
    return {
        "error_px": float(np.nanmean(err)) if np.isfinite(err).any() else float("nan"),
        "visible": float((real_seen & pred_seen).sum() / max(real_seen.sum(), 1)),
        "moving": float((np.nan_to_num(moved[live], nan=0.0) >= MOVE_PX).mean()) if live.any() else float("nan"),
    }


def game_metrics(reader, real: Tracks, pred: Tracks, size: int) -> dict[str, dict[str, float]]:
    """Every track of a reader: the controlled one over the whole horizon, the others over the first steps."""
    return {name: track_metrics(real[name], pred[name], size, None if name == reader.controlled else EARLY_STEPS)
            for name in real}


@torch.no_grad()
def evaluate_game(model, dataset_path: str | os.PathLike, *, context: int = 4, horizon: int = 16,
                  max_windows: int = 64, batch_size: int = 16, seed: int = 0, data_cfg=None,
                  progress: bool = True) -> dict[str, Any]:
    """Roll ``model`` out on held-out windows of a game dataset and read the sprites of every frame.

    Rows: the model with the true actions, the model with actions shuffled across windows, the last
    context frame copied (what a frozen model shows), the real frames through the model's tokenizer
    (a tokenizer that erases the ball caps every latent model) and the real frames themselves.
    Sampling models sample as they are set to (``model.sampling``).
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
    rows = {name: game_metrics(reader, truth, _read_all(reader, f), S) for name, f in stacked.items()}
    return {"dataset": str(dataset_path), "env_id": ds.env_id, "controlled": reader.controlled, "windows": int(n),
            "context": K, "horizon": H, "rows": rows}


def _read_all(reader, frames: np.ndarray) -> Tracks:
    """(N, H, S, S, 3) -> tracks (N, H, 2)."""
    N, H = frames.shape[:2]
    return {name: t.reshape(N, H, 2) for name, t in reader.read(frames.reshape(N * H, *frames.shape[2:])).items()}


def format_table(result: dict[str, Any]):
    from rich.table import Table

    table = Table(title=f"{result['env_id']}: sprites over {result['windows']} windows, horizon {result['horizon']} "
                        f"(error in 64-px units; {result['controlled']} is the controlled one)")
    table.add_column("frames")
    tracks = list(next(iter(result["rows"].values())))
    for t in tracks:
        span = "" if t == result["controlled"] else f" 1-{EARLY_STEPS}"
        for col in (f"{t} err{span}", f"{t} visible", f"{t} moving"):
            table.add_column(col, justify="right")
    for name, m in result["rows"].items():
        table.add_row(name, *[f"{m[t][k]:.2f}" for t in tracks for k in ("error_px", "visible", "moving")])
    return table
