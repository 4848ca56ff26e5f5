"""Latent cache: every frame encoded once by a frozen tokenizer, kept on disk as float16 .npy.

A world model that trains in a tokenizer's latent space would otherwise spend most of each step
re-encoding the same frames. The cache is keyed by a hash of the tokenizer (config and weights) and
of the frame store (shape, episode lengths, a sample of frames), so a retrained tokenizer or a
re-recorded dataset gets a fresh cache, and an unchanged pair reuses the old one (memory-mapped).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from worldline.core.contracts import device_of
from worldline.core.errors import WorldlineError
from worldline.core.io import atomic_dir, read_json, write_json

CACHE_VERSION = 1  # bump when the layout of a cache entry changes
FINGERPRINT_FRAMES = 1024  # frames hashed into the frame-store fingerprint (evenly spaced)


def build_latent_store(frame_store, tokenizer, cache_dir: str | os.PathLike, batch_size: int = 256,
                       progress: bool = True, device: str | torch.device | None = None):
    """An EpisodeStore whose "latents" (N, c, h, w) float16 encode ``frame_store``'s "frames"
    (N, H, W, 3) uint8 one frame at a time; actions, rewards and dones are carried over.

    ``device``: where to encode (the tokenizer is moved there and back); default the tokenizer's."""
    from worldline.data.windows import EpisodeStore

    frames = frame_store.arrays.get("frames")
    if frames is None or frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        shape = None if frames is None else (frames.shape, str(frames.dtype))
        raise WorldlineError(f"build_latent_store needs a store with 'frames' (N, H, W, 3) uint8, got {shape}")
    frames_fp = frame_store_fingerprint(frame_store)
    key = cache_key(frames_fp, tokenizer_fingerprint(tokenizer))
    entry = Path(cache_dir) / f"latents-{key}"
    latents = _load(entry, key, len(frames))
    if latents is None:
        meta = {"key": key, "version": CACHE_VERSION, "frames": frames_fp, "num_frames": len(frames)}
        _encode_all(frames, tokenizer, entry, meta, batch_size, progress, device)
        _remove_stale(Path(cache_dir), entry, frames_fp)
        latents = _load(entry, key, len(frames))
        if latents is None:
            raise WorldlineError(f"latent cache {entry} could not be read back after writing it")
    arrays = {name: a for name, a in frame_store.arrays.items() if name != "frames"}
    arrays["latents"] = latents
    info = {**getattr(frame_store, "info", {}), "latent_cache": str(entry)}
    return EpisodeStore(arrays, frame_store.episode_starts, frame_store.episode_lengths, info=info)


def latent_channel_stats(store, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (c,) of a store's "latents" (N, c, ...), accumulated in float64."""
    latents = store.arrays["latents"]
    c = latents.shape[1]
    total, sq, count = np.zeros(c), np.zeros(c), 0
    for i in range(0, len(latents), chunk):
        x = np.asarray(latents[i : i + chunk], dtype=np.float64)
        x = x.reshape(x.shape[0], c, -1)  # (n, c, h*w)
        total += x.sum(axis=(0, 2))
        sq += (x**2).sum(axis=(0, 2))
        count += x.shape[0] * x.shape[2]
    if count == 0:
        raise WorldlineError("latent store is empty: no frames to compute statistics from")
    mean = total / count
    std = np.sqrt(np.maximum(sq / count - mean**2, 0.0))
    return mean, std


def default_cache_dir(frame_store) -> Path:
    """Beside the frame cache when the frames come from one on disk (so a dataset's caches stay
    together), else ``$WORLDLINE_CACHE`` (default ~/.cache/worldline)/latents."""
    source = getattr(frame_store, "info", {}).get("cache") or getattr(frame_store.arrays.get("frames"), "filename", None)
    if source:
        return Path(source).parent / "latents"
    return Path(os.environ.get("WORLDLINE_CACHE", "~/.cache/worldline")).expanduser() / "latents"


# ----------------------------------------------------------------------------------------------
# keys
# ----------------------------------------------------------------------------------------------


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of the tokenizer's config and every weight and buffer, byte for byte."""
    from worldline.core.config import to_dict

    h = hashlib.sha256()
    config = getattr(tokenizer, "config", None)
    h.update(json.dumps(to_dict(config) if config is not None else type(tokenizer).__name__, sort_keys=True).encode())
    for name, t in sorted(tokenizer.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def frame_store_fingerprint(frame_store) -> str:
    """Hash of the frames' shape, the episode layout and an evenly spaced sample of frames."""
    frames = frame_store.arrays["frames"]
    h = hashlib.sha256()
    h.update(f"{frames.shape}:{frames.dtype}".encode())
    h.update(np.asarray(frame_store.episode_starts, dtype=np.int64).tobytes())
    h.update(np.asarray(frame_store.episode_lengths, dtype=np.int64).tobytes())
    for i in np.unique(np.linspace(0, len(frames) - 1, min(FINGERPRINT_FRAMES, len(frames))).astype(np.int64)):
        h.update(np.ascontiguousarray(frames[i]).tobytes())
    return h.hexdigest()


def cache_key(frames_fp: str, tokenizer_fp: str) -> str:
    return hashlib.sha256(f"v{CACHE_VERSION}:{tokenizer_fp}:{frames_fp}".encode()).hexdigest()[:20]


# ----------------------------------------------------------------------------------------------
# read / write
# ----------------------------------------------------------------------------------------------


def _load(entry: Path, key: str, num_frames: int) -> np.ndarray | None:
    """The cached latents (memory-mapped), or None when the entry is missing or does not match."""
    if not (entry / "latents.npy").is_file() or not (entry / "meta.json").is_file():
        return None
    try:
        meta = read_json(entry / "meta.json")
        latents = np.load(entry / "latents.npy", mmap_mode="r", allow_pickle=False)
    except (WorldlineError, ValueError, OSError):
        return None
    if meta.get("key") != key or len(latents) != num_frames:
        return None
    return latents


@torch.no_grad()
def _encode_all(frames: np.ndarray, tokenizer, entry: Path, meta: dict, batch_size: int, progress: bool,
                device: str | torch.device | None) -> None:
    home = device_of(tokenizer)
    device = torch.device(device) if device is not None else home
    was_training = tokenizer.training
    tokenizer.to(device).eval()
    n = len(frames)
    try:
        probe = tokenizer.encode(_to_model(frames[:1], device))  # (1, 1, c, h, w) or ids (1, 1, h, w)
        discrete = bool(getattr(tokenizer, "discrete", False))
        if probe.dim() != (4 if discrete else 5) or probe.shape[1] != 1:
            raise WorldlineError(f"the latent cache needs a per-frame tokenizer, encode gave {tuple(probe.shape)}")
        if discrete and int(getattr(tokenizer, "vocab_size", 0)) > np.iinfo(np.int16).max:
            raise WorldlineError(f"token ids up to {tokenizer.vocab_size} do not fit the cache's int16")
        dtype = np.int16 if discrete else np.float16  # ids are exact in int16; latents lose nothing that matters in float16
        with atomic_dir(entry, overwrite=True) as tmp:
            out = np.lib.format.open_memmap(tmp / "latents.npy", mode="w+", dtype=dtype, shape=(n, *probe.shape[2:]))
            for i in _progress(range(0, n, batch_size), progress, f"encoding {n} frames into the latent cache"):
                z = tokenizer.encode(_to_model(frames[i : i + batch_size], device))  # (b, 1, ...)
                out[i : i + len(z)] = z[:, 0].cpu().numpy().astype(dtype)
            out.flush()
            del out
            write_json(tmp / "meta.json", {**meta, "latent_shape": list(probe.shape[2:]), "dtype": np.dtype(dtype).name})
    finally:
        tokenizer.to(home).train(was_training)


def _remove_stale(cache_dir: Path, keep: Path, frames_fp: str) -> None:
    """Delete entries built from frames that no longer exist (the dataset changed); entries of
    other tokenizers on the same frames stay, so switching back is free."""
    for old in cache_dir.glob("latents-*"):
        if old == keep or not old.is_dir():
            continue
        try:
            stale = read_json(old / "meta.json").get("frames") != frames_fp
        except WorldlineError:
            stale = True
        if stale:
            shutil.rmtree(old, ignore_errors=True)


def _to_model(frames: np.ndarray, device: torch.device) -> torch.Tensor:
    """(n, H, W, 3) uint8 -> (n, 1, 3, H, W) float in [-1, 1]: each frame a 1-frame video."""
    x = torch.from_numpy(np.array(frames)).to(device)  # a copy: memory-mapped frames are read-only
    x = rearrange(x, "n h w c -> n 1 c h w")  # (n, 1, 3, H, W)
    return x.float() / 127.5 - 1.0


def _progress(it, enabled: bool, description: str):
    if not enabled:
        return it
    from rich.progress import track

    return track(it, description=description, transient=True)
