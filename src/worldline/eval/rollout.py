"""Rollout videos: the real episode beside the model's prediction, as mp4 and gif, with per-step metrics.

Each frame of a video is ``real | predicted``. Both panels show the same real context frames first
(grey frame); then the right panel shows predictions (red frame) while the left keeps the truth.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from einops import rearrange
from PIL import Image

from worldline.core.contracts import device_of
from worldline.core.errors import WorldlineError
from worldline.core.io import atomic_path, write_json
from worldline.eval.metrics import psnr, ssim, to_uint8_frames

BORDER = 2  # pixels of the coloured frame around each panel
SEPARATOR = 4  # white pixels between the panels
CONTEXT_COLOUR = (128, 128, 128)
PREDICTED_COLOUR = (220, 40, 40)


def write_rollouts(model, dataset_path: str | os.PathLike, out_dir: str | os.PathLike, episodes: Sequence[int],
                   context: int, horizon: int, start: int = 0, *, data_cfg=None, fps: float | None = None) -> list[Path]:
    """Roll ``model`` out on each episode from frame ``start``: writes ``episode_XXXX.{gif,mp4,json}``
    into ``out_dir`` and returns the gif paths (the mp4 and the metrics JSON sit beside each)."""
    from worldline.data.config import DataConfig
    from worldline.data.video import write_video
    from worldline.eval.prediction import PSNR_CAP_DB, episode_ids, model_store

    if context < 1 or horizon < 1 or start < 0:
        raise WorldlineError(f"context and horizon must be >= 1 and start >= 0, got {context=} {horizon=} {start=}")
    data_cfg = data_cfg or DataConfig()
    ds, store = model_store(model, dataset_path, data_cfg)
    ids = episode_ids(ds.num_episodes, list(episodes), data_cfg)
    fps = fps or float(ds.fps)
    out_dir = Path(out_dir)
    device = device_of(model)
    K, H, span = context, horizon, context + horizon

    was_training = model.training
    model.eval()
    written = []
    try:
        for ep in ids:
            first, length = int(store.episode_starts[ep]), int(store.episode_lengths[ep])
            if start + span > length:
                raise WorldlineError(f"episode {ep} has {length} frames, too few for start {start} + context {K} "
                                     f"+ horizon {H}")
            rows = slice(first + start, first + start + span)
            real_u8 = np.array(store.arrays["frames"][rows])  # (span, H, W, 3), a copy: torch wants writable memory
            actions = torch.from_numpy(np.asarray(store.arrays["actions"][rows], dtype=np.float32))[None].to(device)
            real = rearrange(torch.from_numpy(real_u8).to(device), "t h w c -> 1 t c h w").float() / 127.5 - 1  # (1, span, 3, H, W)
            extra = {}
            if getattr(model, "uses_proprio", False):
                if "states" not in store.arrays:
                    raise WorldlineError("the model reads proprioception, the dataset has no observation.state")
                extra["context_proprio"] = torch.from_numpy(np.asarray(store.arrays["states"][rows][:K], np.float32))[None].to(device)
            with torch.no_grad():
                pred = model.rollout(real[:, :K], actions[:, K - 1 : K - 1 + H], context_actions=actions[:, : K - 1], **extra).frames
            target = real[:, K:]
            copy = real[:, K - 1 : K].expand_as(target)
            metrics = {
                "episode": ep, "start": start, "context": K, "horizon": H, "fps": fps,
                "psnr": psnr(pred, target)[0].clamp(max=PSNR_CAP_DB).tolist(),
                "ssim": ssim(pred, target)[0].tolist(),
                "copy_last_psnr": psnr(copy, target)[0].clamp(max=PSNR_CAP_DB).tolist(),
                "copy_last_ssim": ssim(copy, target)[0].tolist(),
            }
            pred_u8 = to_uint8_frames(pred[0]).cpu().numpy()  # (H, H, W, 3)
            video = side_by_side(real_u8, np.concatenate([real_u8[:K], pred_u8]), K)

            stem = out_dir / f"episode_{ep:04d}"
            scale = gif_scale(video.shape[1])
            big = upscale(video, scale)
            write_video(stem.with_suffix(".mp4"), big, fps, pix_fmt="yuv420p")  # upscaled first, so 4:2:0 plays anywhere without smearing
            write_gif(stem.with_suffix(".gif"), big, fps)
            write_json(stem.with_suffix(".json"), metrics)
            written.append(stem.with_suffix(".gif"))
    finally:
        model.train(was_training)
    return written


def side_by_side(real: np.ndarray, predicted: np.ndarray, context: int) -> np.ndarray:
    """(T, H, W, 3) real and predicted uint8 -> (T, H + 2b, 2(W + 2b) + sep, 3) ``real | predicted``;
    each panel framed grey, the predicted panel red after the context. Sizes are kept even (H.264)."""
    T, H, W, _ = real.shape
    b = BORDER
    ph, pw = H + 2 * b, W + 2 * b
    height, width = ph + ph % 2, 2 * pw + SEPARATOR
    width += width % 2
    out = np.full((T, height, width, 3), 255, dtype=np.uint8)
    for t in range(T):
        for x0, frame, colour in ((0, real[t], CONTEXT_COLOUR),
                                  (pw + SEPARATOR, predicted[t], CONTEXT_COLOUR if t < context else PREDICTED_COLOUR)):
            out[t, :ph, x0 : x0 + pw] = colour
            out[t, b : b + H, x0 + b : x0 + b + W] = frame
    return out


def gif_scale(height: int) -> int:
    """Nearest-neighbour upscale so small frames are visible in a report: x4 up to 96 px, down to x2."""
    return 4 if height <= 96 else 3 if height <= 160 else 2


def upscale(frames: np.ndarray, scale: int) -> np.ndarray:
    """(T, H, W, 3) -> (T, H*s, W*s, 3), nearest neighbour (pixels stay crisp)."""
    return frames.repeat(scale, axis=1).repeat(scale, axis=2)


def write_gif(path: str | os.PathLike, frames: np.ndarray, fps: float) -> Path:
    """(T, H, W, 3) uint8 -> looping gif, atomically."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise WorldlineError(f"{path}: gif frames must be uint8 (T, H, W, 3) with T >= 1, got {frames.dtype} {frames.shape}")
    images = [Image.fromarray(f) for f in frames]
    duration = max(20, int(round(1000 / fps)))  # ms per frame; browsers clamp anything below 20 ms
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0)
    return Path(path)
