"""Stage 1: shot detection (PySceneDetect) and splitting into clip spans.

Frames are decoded once with PyAV, shrunk to ``detect_width`` and fed to a PySceneDetect detector
frame by frame. Shots shorter than ``min_shot_s`` are dropped; longer than ``max_shot_s`` are cut
into equal pieces. The stage writes no files: a clip is a ``[start_s, end_s)`` span of its input
until the transcode stage encodes it.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import cv2
import numpy as np

from worldline.core.errors import WorldlineError
from worldline.curate.config import CurateConfig
from worldline.curate.stage import Resources, Row, Stage
from worldline.data.video import iter_frames, video_info


def make_detector(name: str, threshold: float | None, fps: float):
    """A fresh PySceneDetect detector. ``min_scene_len`` is 0.5 s: a cut closer than that to the
    previous one is a flash or a fade artefact, and such shots are dropped by ``min_shot_s`` anyway."""
    from scenedetect.detectors import AdaptiveDetector, ContentDetector, HashDetector, HistogramDetector

    min_len = max(1, int(round(0.5 * fps)))
    kw = {} if threshold is None else {"threshold": threshold}
    if name == "content":
        return ContentDetector(min_scene_len=min_len, **kw)
    if name == "adaptive":
        kw = {} if threshold is None else {"adaptive_threshold": threshold}
        return AdaptiveDetector(min_scene_len=min_len, **kw)
    if name == "histogram":
        return HistogramDetector(min_scene_len=min_len, **kw)
    if name == "hash":
        return HashDetector(min_scene_len=min_len, **kw)
    raise WorldlineError(f"unknown shot detector {name!r}")


def detect_cuts(path: str | Path, config: CurateConfig) -> tuple[list[int], np.ndarray, float]:
    """Frame indices where a new shot starts (hard cuts), every frame's timestamp, and the fps."""
    from scenedetect.common import FrameTimecode

    info = video_info(path)
    fps = info["fps"] or 25.0
    detector = make_detector(config.detector, config.threshold, fps)
    cuts: list[int] = []
    times: list[float] = []
    size = None
    for i, (t, frame) in enumerate(iter_frames(path, with_time=True)):
        if size is None:
            h, w = frame.shape[:2]
            scale = min(1.0, config.detect_width / w)
            size = (max(2, round(w * scale)), max(2, round(h * scale)))
        small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA) if size != frame.shape[1::-1] else frame
        bgr = np.ascontiguousarray(small[..., ::-1])  # PySceneDetect works on OpenCV's BGR order
        cuts += [c.frame_num for c in detector.process_frame(FrameTimecode(i, fps), bgr)]
        times.append(t)
    if not times:
        raise WorldlineError(f"{path}: the video stream holds no decodable frames")
    cuts += [c.frame_num for c in detector.post_process(FrameTimecode(len(times) - 1, fps))]
    cuts = sorted({c for c in cuts if 0 < c < len(times)})
    return cuts, np.asarray(times), fps


def shot_spans(cuts: list[int], times: np.ndarray, fps: float, min_s: float, max_s: float) -> list[tuple[float, float]]:
    """``[start_s, end_s)`` clip spans: shots between cuts, short ones dropped, long ones cut evenly."""
    bounds = [0, *cuts, len(times)]
    end_time = float(times[-1]) + 1.0 / fps
    spans = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        start = float(times[a])
        end = float(times[b]) if b < len(times) else end_time
        length = end - start
        if length + 0.5 / fps < min_s:
            continue
        pieces = max(1, math.ceil(length / max_s - 1e-9))
        step = length / pieces
        spans += [(start + k * step, start + (k + 1) * step) for k in range(pieces)]
    return spans


def short_shots(cuts: list[int], times: np.ndarray, fps: float, min_s: float) -> int:
    """How many shots :func:`shot_spans` drops for being shorter than ``min_s``."""
    bounds = [0, *cuts, len(times)]
    lengths = [(float(times[b]) if b < len(times) else float(times[-1]) + 1.0 / fps) - float(times[a]) for a, b in zip(bounds[:-1], bounds[1:])]
    return sum(1 for length in lengths if length + 0.5 / fps < min_s)


def clip_id(input_id: str, k: int) -> str:
    return f"{input_id}#{k:04d}"


def clip_relpath(input_id: str, k: int) -> str:
    """Where the clip's mp4 goes under OUT: a readable stem plus a hash of the input's relative
    path, so equal names in different folders never collide."""
    digest = hashlib.sha1(input_id.encode()).hexdigest()[:8]
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(input_id).stem)[:40]
    return f"clips/{stem}-{digest}/{k:04d}.mp4"


class SplitStage(Stage):
    """Input row -> the input row (with probe results and shot count) + one row per clip span."""

    name = "split"
    kind = "input"
    resources = Resources(cpus=1.0)
    batch_size = 1  # inputs vary wildly in length; one per task balances best

    def process(self, row: Row) -> list[Row]:
        path = self.raw_dir / row["input"]
        cfg = self.config
        info = video_info(path)
        if info["width"] < 2 or info["height"] < 2:
            raise WorldlineError(f"{path}: the video stream has no picture size")
        cuts, times, fps = detect_cuts(path, cfg)
        spans = shot_spans(cuts, times, fps, cfg.min_shot_s, cfg.max_shot_s)
        row.update(
            status="ok",
            src_fps=fps,
            src_height=int(info["height"]),
            src_width=int(info["width"]),
            src_duration=float(times[-1] + 1.0 / fps),
            src_frames=len(times),
            cuts=[int(c) for c in cuts],
            clips=len(spans),
            short_shots=short_shots(cuts, times, fps, cfg.min_shot_s),
        )
        clips = []
        for k, (start, end) in enumerate(spans):
            clips.append(
                {
                    "id": clip_id(row["id"], k),
                    "kind": "clip",
                    "input": row["input"],
                    "status": "ok",
                    "done": [],
                    "start_s": start,
                    "end_s": end,
                    "duration_s": end - start,
                    "src_fps": fps,
                    "src_height": int(info["height"]),
                    "src_width": int(info["width"]),
                    "src_bitrate": float(row.get("size_bytes") or 0) * 8 / max(1e-6, float(times[-1] + 1.0 / fps)),
                    "clip_path": clip_relpath(row["id"], k),
                }
            )
        return [row, *clips]
