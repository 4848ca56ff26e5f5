"""How well a tokenizer reconstructs video: PSNR / SSIM per frame and encode+decode throughput.

Two entry points: :func:`evaluate_tokenizer` over training-style batches (a ``WindowSampler`` of
held-out episodes, or any iterable of batches), and :func:`evaluate_on_videos` over a folder of real
video files, decoded with PyAV, centre-cropped to the tokenizer's aspect ratio and resized to its
resolution.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from worldline.core.contracts import device_of
from worldline.core.errors import WorldlineError
from worldline.eval import metrics

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm")


def _frames_of(item: Any) -> Tensor:
    if isinstance(item, Tensor):
        return item
    if isinstance(item, dict) and "frames" in item:
        return item["frames"]
    raise WorldlineError(f"expected a batch dict with 'frames' or a (B, T, C, H, W) tensor, got {type(item).__name__}")


@torch.no_grad()
def reconstruct(tokenizer, frames: Tensor) -> Tensor:
    """encode -> decode, the round trip every metric here measures."""
    return tokenizer.decode(tokenizer.encode(frames))


@torch.no_grad()
def evaluate_tokenizer(
    tokenizer,
    sampler_or_batches: Any,
    max_batches: int | None = None,
    batch_size: int = 16,
) -> dict[str, float]:
    """Mean per-frame PSNR (dB) and SSIM of ``decode(encode(frames))``, and frames/s of the round trip.

    ``sampler_or_batches``: a ``WindowSampler`` (read in order with ``iter_sequential(batch_size)``),
    or an iterable of batches (dicts with ``frames``) or of (B, T, C, H, W) tensors in [-1, 1].
    """
    if hasattr(sampler_or_batches, "iter_sequential"):
        batches: Iterable = sampler_or_batches.iter_sequential(batch_size)
    else:
        batches = sampler_or_batches
    was_training = tokenizer.training
    tokenizer.eval()
    device = device_of(tokenizer)
    psnrs, ssims, frames, seconds = [], [], 0, 0.0
    try:
        for i, item in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            x = _frames_of(item).to(device)
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            y = reconstruct(tokenizer, x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds += time.perf_counter() - start
            psnrs.append(metrics.psnr(y, x).flatten().cpu())
            ssims.append(metrics.ssim(y, x).flatten().cpu())
            frames += x.shape[0] * x.shape[1]
    finally:
        tokenizer.train(was_training)
    if not frames:
        raise WorldlineError("evaluate_tokenizer got no batches to evaluate")
    psnr = torch.cat(psnrs).clamp(max=100)  # identical frames give inf; 100 dB stands in for 'exact'
    return {
        "psnr": psnr.mean().item(),
        "ssim": torch.cat(ssims).mean().item(),
        "fps_encode_decode": frames / max(seconds, 1e-9),
        "frames": frames,
    }


# ----------------------------------------------------------------------------------------------
# Real video files
# ----------------------------------------------------------------------------------------------


def read_clip(path: str | Path, num_frames: int) -> np.ndarray:
    """The first ``num_frames`` frames of a video file as (T, H, W, 3) uint8 (decoding stops there)."""
    import av

    path = Path(path)
    frames = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise WorldlineError(f"{path}: no video stream")
            for frame in container.decode(video=0):
                frames.append(frame.to_ndarray(format="rgb24"))
                if len(frames) == num_frames:
                    break
    except (av.error.FFmpegError, OSError) as e:  # type: ignore[attr-defined]
        raise WorldlineError(f"{path}: cannot decode video ({e})") from None
    if not frames:
        raise WorldlineError(f"{path}: no frames decoded")
    return np.stack(frames)


def to_model_frames(clip: np.ndarray, size: tuple[int, int]) -> Tensor:
    """(T, H, W, 3) uint8 -> (1, T, 3, h, w) float in [-1, 1]: centre crop to the aspect of ``size``,
    then an antialiased area-preserving resize (so downscaled detail averages instead of aliasing)."""
    x = torch.from_numpy(clip).float().div(127.5).sub(1)
    x = rearrange(x, "t h w c -> t c h w")
    H, W = x.shape[-2:]
    h, w = size
    if H * w > W * h:  # too tall: crop rows
        ch = round(W * h / w)
        top = (H - ch) // 2
        x = x[:, :, top : top + ch]
    elif H * w < W * h:  # too wide: crop columns
        cw = round(H * w / h)
        left = (W - cw) // 2
        x = x[:, :, :, left : left + cw]
    x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False).clamp(-1, 1)
    return rearrange(x, "t c h w -> 1 t c h w")


def evaluate_on_videos(
    tokenizer,
    folder: str | Path,
    max_clips: int = 8,
    resolution: tuple[int, int] | int | None = None,
    num_frames: int | None = None,
) -> dict[str, Any]:
    """Reconstruction quality on the real video files in ``folder`` (searched recursively, sorted).

    Each file contributes one clip of its first ``num_frames`` frames (default: the smallest valid
    length ``1 + ct*k`` >= 9, so temporal compression is exercised), resized to ``resolution``
    (default: the tokenizer's ``image_size``). Returns :func:`evaluate_tokenizer`'s dict plus
    ``clips`` and ``per_clip`` (file name and PSNR of each).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise WorldlineError(f"video folder not found: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    if not files:
        raise WorldlineError(f"no video files ({', '.join(VIDEO_SUFFIXES)}) in {folder}")
    if max_clips < 1:
        raise WorldlineError(f"max_clips must be >= 1, got {max_clips}")
    if resolution is None:
        resolution = tuple(tokenizer.config.image_size)
    elif isinstance(resolution, int):
        resolution = (resolution, resolution)
    s = tokenizer.compression[1]
    if resolution[0] % s or resolution[1] % s:
        raise WorldlineError(f"resolution {resolution} is not divisible by the tokenizer's spatial compression {s}")
    ct = tokenizer.compression[0]
    if num_frames is None:
        num_frames = 1 + ct * -(-8 // ct)
    tokenizer.latent_frames(num_frames)

    per_clip, results = [], []
    for path in files[:max_clips]:
        clip = read_clip(path, num_frames)
        if len(clip) < num_frames:  # a short file: keep the longest valid prefix
            clip = clip[: 1 + (len(clip) - 1) // ct * ct]
        x = to_model_frames(clip, resolution)
        r = evaluate_tokenizer(tokenizer, [x])
        per_clip.append({"file": path.name, "psnr": r["psnr"], "ssim": r["ssim"], "frames": r["frames"]})
        results.append(r)
    total = sum(r["frames"] for r in results)
    seconds = sum(r["frames"] / r["fps_encode_decode"] for r in results)
    return {
        "psnr": sum(r["psnr"] * r["frames"] for r in results) / total,
        "ssim": sum(r["ssim"] * r["frames"] for r in results) / total,
        "fps_encode_decode": total / max(seconds, 1e-9),
        "frames": total,
        "clips": len(results),
        "per_clip": per_clip,
    }


# ----------------------------------------------------------------------------------------------
# The `worldline eval --suite tokenizer` entry points
# ----------------------------------------------------------------------------------------------


def evaluate_dataset(tokenizer, dataset_path: str | Path, *, data_cfg=None, max_windows: int = 512,
                     batch_size: int = 16, episodes: str = "val") -> dict[str, Any]:
    """:func:`evaluate_tokenizer` on the held-out episodes of a dataset (the split training used),
    windows of the tokenizer's training length read in order, at most ``max_windows`` of them."""
    from worldline.data.config import DataConfig
    from worldline.eval.prediction import _window_sampler

    data_cfg = data_cfg or DataConfig()
    sampler, ids = _window_sampler(tokenizer, dataset_path, tokenizer.window(), episodes, data_cfg)
    hop = max(1, len(sampler) // max(1, max_windows))  # spread the windows over every held-out episode
    batches = sampler.iter_sequential(batch_size, hop=hop)
    result = evaluate_tokenizer(tokenizer, batches, max_batches=-(-max_windows // batch_size))
    return {**result, "episodes": [int(i) for i in ids], "split": episodes}


def format_table(result: dict[str, Any]):
    """A rich table of :func:`evaluate_dataset` / :func:`evaluate_on_videos` results by source."""
    from rich.table import Table

    table = Table("source", "PSNR (dB)", "SSIM", "frames", "encode+decode frames/s", title="tokenizer reconstruction")
    for source, r in result.items():
        table.add_row(source, f"{r['psnr']:.2f}", f"{r['ssim']:.4f}", str(r["frames"]), f"{r['fps_encode_decode']:.0f}")
    return table
