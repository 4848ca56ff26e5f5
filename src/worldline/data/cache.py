"""Decoded-frame cache: decode a camera's video once, memory-map it for every epoch after.

``DIR/cache/<camera>-<H>x<W>-<fingerprint>.npy`` holds all frames (N, H, W, 3) uint8 in global row
order. The fingerprint hashes the size and mtime of every data/video file and of ``info.json``, so an
append or overwrite makes a new cache file (the stale one is deleted). Files are written aside and
renamed, so a killed build leaves no half cache. If the dataset directory is read-only the cache goes
to ``$WORLDLINE_CACHE`` (default ``~/.cache/worldline``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from worldline.core.errors import WorldlineError
from worldline.core.io import atomic_path
from worldline.data.format import Dataset
from worldline.data.video import as_hw, resize_frames
from worldline.data.windows import EpisodeStore


def fingerprint(dataset: Dataset, camera: str, extra: str = "") -> str:
    """Hash of (path, size, mtime) of every file the camera's frames come from, plus ``extra``."""
    files = [dataset.root / "meta" / "info.json", *dataset.data_files(), *dataset.video_files(camera)]
    parts = []
    for p in files:
        try:
            st = p.stat()
        except FileNotFoundError:
            raise WorldlineError(f"missing file: {p}") from None
        parts.append([str(p.relative_to(dataset.root)), st.st_size, st.st_mtime_ns])
    payload = json.dumps({"files": parts, "camera": camera, "extra": extra}, sort_keys=True).encode()
    return hashlib.sha1(payload).hexdigest()[:16]


def cache_dir(dataset: Dataset) -> Path:
    """``DIR/cache`` if writable, else a per-dataset folder under ``$WORLDLINE_CACHE``."""
    local = dataset.root / "cache"
    with contextlib.suppress(OSError):
        local.mkdir(exist_ok=True)
        if os.access(local, os.W_OK):
            return local
    base = Path(os.environ.get("WORLDLINE_CACHE", Path.home() / ".cache" / "worldline"))
    key = hashlib.sha1(str(dataset.root.resolve()).encode()).hexdigest()[:12]
    out = base / f"{dataset.root.name}-{key}"
    out.mkdir(parents=True, exist_ok=True)
    return out


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def _decode_all(dataset: Dataset, camera: str, size: tuple[int, int], dest: Path, progress: bool) -> None:
    """Decode every episode of ``camera`` (resized to ``size``) into the .npy file ``dest``."""
    h, w = size
    lengths = dataset.episode_lengths
    starts = dataset.episode_starts
    out = np.lib.format.open_memmap(dest, mode="w+", dtype=np.uint8, shape=(dataset.num_frames, h, w, 3))
    bar = None
    if progress and dataset.num_episodes > 1:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(
            TextColumn(f"decoding {camera} episodes"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True
        )
        bar.start()
        task = bar.add_task("decode", total=dataset.num_episodes)
    try:
        for i in range(dataset.num_episodes):
            frames = resize_frames(dataset.episode_frames(i, camera), (h, w))
            out[starts[i] : starts[i] + lengths[i]] = frames
            if bar is not None:
                bar.advance(task)
        out.flush()
    finally:
        if bar is not None:
            bar.stop()
        del out


def frame_store(
    dataset: Dataset | str | os.PathLike,
    camera: str | None = None,
    resolution: int | tuple[int, int] | None = None,
    progress: bool = True,
) -> EpisodeStore:
    """An :class:`EpisodeStore` with ``frames`` (memory-mapped uint8), actions, rewards, dones (and
    proprioceptive ``states`` where the dataset has them) of every episode; decodes the video on first use (or after the dataset changed), then memory-maps."""
    if not isinstance(dataset, Dataset):
        dataset = Dataset(dataset)
    camera = camera or dataset.default_camera
    if camera not in dataset.cameras:
        raise WorldlineError(f"{dataset.root}: no camera {camera!r} (cameras: {', '.join(dataset.cameras)})")
    native = dataset.feature_shape(camera)[:2]
    size = as_hw(resolution) or (int(native[0]), int(native[1]))
    fp = fingerprint(dataset, camera, extra=f"{size[0]}x{size[1]}")
    folder = cache_dir(dataset)
    prefix = f"{_safe(camera)}-{size[0]}x{size[1]}-"
    path = folder / f"{prefix}{fp}.npy"
    if not path.is_file():
        with atomic_path(path) as tmp:
            _decode_all(dataset, camera, size, tmp, progress)
        for old in folder.glob(f"{prefix}*.npy"):
            if old != path:
                with contextlib.suppress(FileNotFoundError):
                    old.unlink()
    try:
        frames = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise WorldlineError(f"{path}: unreadable frame cache ({e}); delete it to rebuild") from None
    if frames.shape != (dataset.num_frames, size[0], size[1], 3) or frames.dtype != np.uint8:
        raise WorldlineError(f"{path}: frame cache has shape {frames.shape} {frames.dtype}; delete it to rebuild")
    arrays = dataset.arrays()
    carried = {k: arrays[k] for k in ("actions", "rewards", "dones", "states") if k in arrays}
    return EpisodeStore(
        {"frames": frames, **carried},
        dataset.episode_starts,
        dataset.episode_lengths,
        info={"dataset": str(dataset.root), "camera": camera, "resolution": list(size), "fps": dataset.fps, "cache": str(path)},
    )
