"""Stage 2: transcode each clip span to an H.264 mp4 at the run's height and frame rate (PyAV).

The clip store (``OUT/clips/``) is what every later stage reads and what the shards are built from,
so a re-filter never decodes the raw video again. Files are written atomically: a killed run leaves
no half clip, and a resumed one rewrites only clips whose row is not marked done.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np

from worldline.core.errors import WorldlineError
from worldline.curate.stage import Resources, Row, Stage
from worldline.data.video import DEFAULT_PIX_FMT, iter_frames, read_video, resize_frames, write_video


def target_size(height: int, src_h: int, src_w: int) -> tuple[int, int]:
    """(h, w) with h = ``height`` and w following the aspect ratio, rounded to an even number."""
    w = max(2, int(round(src_w * height / src_h / 2)) * 2)
    return height, w


def resample(times: np.ndarray, start: float, end: float, fps: float) -> np.ndarray:
    """Index into ``times`` of the frame shown at each output time ``start + k / fps`` (sample and
    hold: the latest source frame at or before it, with half a source frame of slack)."""
    n = max(1, int(np.floor((end - start) * fps + 1e-6)))
    want = start + np.arange(n) / fps
    slack = 0.5 * (np.median(np.diff(times)) if len(times) > 1 else 1.0 / fps)
    idx = np.searchsorted(times, want + slack, side="right") - 1
    return np.clip(idx, 0, len(times) - 1)


_CACHE: OrderedDict[tuple, np.ndarray] = OrderedDict()
CACHE_CLIPS = 16  # decoded clips kept per worker: a fused batch (at most this many rows) decodes each clip once


def read_clip(path) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of a transcoded clip, read-only, from a small per-process cache keyed
    by path, size and modification time (a rewritten clip is decoded afresh)."""
    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    frames = read_video(path)
    if len(frames) < 2:
        raise WorldlineError(f"{path}: a clip needs at least 2 frames, it holds {len(frames)}")
    frames.flags.writeable = False
    _CACHE[key] = frames
    while len(_CACHE) > CACHE_CLIPS:
        _CACHE.popitem(last=False)
    return frames


class TranscodeStage(Stage):
    name = "transcode"
    resources = Resources(cpus=1.0)
    batch_size = 4

    def process(self, row: Row) -> list[Row]:
        cfg = self.config
        src = self.raw_dir / row["input"]
        pairs = list(iter_frames(src, row["start_s"], row["end_s"], with_time=True))
        if not pairs:
            raise WorldlineError(f"{src}: no decodable frames in [{row['start_s']:.2f}, {row['end_s']:.2f}) s")
        times = np.array([t for t, _ in pairs])
        idx = resample(times, row["start_s"], row["end_s"], cfg.fps)
        size = target_size(cfg.height, *pairs[0][1].shape[:2])
        frames = resize_frames(np.stack([pairs[i][1] for i in idx]), size)
        write_video(self.out_dir / row["clip_path"], frames, cfg.fps, crf=cfg.crf, pix_fmt=DEFAULT_PIX_FMT, preset=cfg.preset)
        row.update(frames=len(frames), height=size[0], width=size[1], fps=cfg.fps)
        return [row]
