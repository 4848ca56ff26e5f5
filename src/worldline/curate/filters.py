"""Stage 3: filters. Each stage stores scores only; :func:`filter_verdicts` turns stored scores into
keep/drop decisions under the run's :class:`Thresholds`, so re-filtering never recomputes a score.

- motion: Farneback optical flow (OpenCV) on frames shrunk to ``flow_width``. ``motion`` is the 90th
  percentile of flow speed in frame widths per second (static clips: ~0); ``shake`` is how much the
  camera's motion (the median flow vector) changes from one frame pair to the next, in widths/s: a
  pan moves steadily (~0), a shaking camera jumps in a new direction every frame.
- quality: ``sharpness`` = variance of the Laplacian (blur); ``brightness`` = mean luma and the
  fractions of crushed/blown pixels (exposure); ``noise`` = Immerkaer's noise sigma, taken as a
  median of the filter response so that edges (sparse) do not count as noise.
- text: a rendered-text detector built from OpenCV primitives (see :func:`text_mask`); ``text_area``
  is the fraction of the frame covered by text regions that persist over the clip, as overlays do.
- content: a pluggable classifier (``"module:Class"``, called on frames, returning ``(label, score)``);
  the default labels a clip ``greyscale`` or ``colour`` by colourfulness.
"""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np

from worldline.curate.config import Thresholds
from worldline.curate.stage import Resources, Row, Stage, load_object
from worldline.curate.transcode import read_clip


def _grey(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def _sample(n: int, k: int) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, min(n, k)).round().astype(int))


# ----------------------------------------------------------------------------------------------
# Motion
# ----------------------------------------------------------------------------------------------


def motion_scores(frames: np.ndarray, fps: float, samples: int = 8, width: int = 128) -> dict[str, float]:
    """``motion``: the 90th percentile of flow speed (so a fixed camera on a moving subject counts
    as motion), averaged over samples; ``shake``: the median change of the camera's (median) flow
    vector between consecutive frame pairs. Both in frame widths per second. A steady pan has a
    constant camera vector (shake ~0); a shaking camera changes it every frame."""
    h, w = frames.shape[1:3]
    size = (width, max(8, round(h * width / w)))
    speeds, jerks = [], []
    for t in _sample(max(1, len(frames) - 2), samples):
        grey = [cv2.resize(_grey(frames[min(t + d, len(frames) - 1)]), size, interpolation=cv2.INTER_AREA) for d in range(3)]
        camera = []
        for a, b in zip(grey[:-1], grey[1:]):
            # 3-level pyramid and a 15 px window (OpenCV's suggested values) follow motions of several px per frame
            flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)  # (h, w, 2) pixels
            speeds.append(float(np.percentile(np.linalg.norm(flow, axis=2), 90)))
            camera.append(np.median(flow.reshape(-1, 2), axis=0))  # (2,)
        jerks.append(float(np.linalg.norm(camera[1] - camera[0])))
    scale = fps / width  # pixels per frame -> widths per second
    return {"motion": float(np.mean(speeds) * scale), "shake": float(np.median(jerks) * scale)}


class MotionStage(Stage):
    name = "motion"
    resources = Resources(cpus=1.0)
    batch_size = 4

    def process(self, row: Row) -> list[Row]:
        frames = read_clip(self.out_dir / row["clip_path"])
        row.update(motion_scores(frames, row["fps"], self.config.flow_samples, self.config.flow_width))
        return [row]


# ----------------------------------------------------------------------------------------------
# Visual quality
# ----------------------------------------------------------------------------------------------

_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)  # annihilates planes; its squares sum to 36


def quality_scores(frames: np.ndarray, k: int = 12) -> dict[str, float]:
    sharp, bright, dark_f, blown_f, noise = [], [], [], [], []
    for t in _sample(len(frames), k):
        g = _grey(frames[t])
        sharp.append(float(cv2.Laplacian(g, cv2.CV_64F).var()))
        bright.append(float(g.mean()) / 255.0)
        dark_f.append(float((g <= 16).mean()))
        blown_f.append(float((g >= 240).mean()))
        r = cv2.filter2D(g.astype(np.float32), -1, _IMMERKAER)[1:-1, 1:-1]
        noise.append(float(np.median(np.abs(r))) / (0.6745 * 6.0))  # Gaussian: median|r| = 0.6745 * 6 sigma
    return {
        "sharpness": float(np.median(sharp)),
        "brightness": float(np.mean(bright)),
        "dark_fraction": float(np.mean(dark_f)),
        "blown_fraction": float(np.mean(blown_f)),
        "noise": float(np.median(noise)),
    }


class QualityStage(Stage):
    name = "quality"
    resources = Resources(cpus=1.0)
    batch_size = 8

    def process(self, row: Row) -> list[Row]:
        frames = read_clip(self.out_dir / row["clip_path"])
        row.update(quality_scores(frames, self.config.score_frames))
        return [row]


# ----------------------------------------------------------------------------------------------
# Text overlays
# ----------------------------------------------------------------------------------------------


def _edges(grey: np.ndarray) -> np.ndarray:
    """Strong edges: the morphological gradient (stroke outlines) above Otsu's threshold."""
    grad = cv2.morphologyEx(grey, cv2.MORPH_GRADIENT, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
    return cv2.threshold(grad, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)[1] > 0


def text_mask(edges: np.ndarray) -> np.ndarray:
    """Boolean mask of text-line regions in an (H, W) boolean edge map.

    A wide horizontal closing merges the letters of a line into one blob; a blob is a text line if
    it is line-shaped (4-30% of the frame high, at least twice as wide as high, 8% of the width) and
    dense with strokes: at least 38% of its pixels are edges and a row crosses at least one stroke
    per line-height of width. On the planted media, text lines measure 0.40-0.64 fill and 1.3-2.1
    crossings, natural blobs at most 0.33 fill or 0.6 crossings (tests/_curate_media.py).
    """
    h, w = edges.shape
    e = edges.astype(np.uint8) * 255
    lines = cv2.morphologyEx(e, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (max(3, w // 40), 1)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(lines, connectivity=8)
    mask = np.zeros((h, w), bool)
    for i in range(1, n):
        x, y, bw, bh, _area = stats[i]
        if not (0.04 * h <= bh <= 0.3 * h and bw >= 2 * bh and bw >= 0.08 * w):
            continue
        box = edges[y : y + bh, x : x + bw]
        crossings = np.diff(box.astype(np.int8), axis=1).clip(0).sum(axis=1).mean() / bw * bh
        if box.mean() >= 0.38 and crossings >= 1.0:
            mask[y : y + bh, x : x + bw] |= labels[y : y + bh, x : x + bw] == i
    return mask


def text_scores(frames: np.ndarray, k: int = 12) -> dict[str, float]:
    """``text_area``: fraction of the frame covered by text lines found in the edges that persist in
    at least 70% of the sampled frames. Overlays stay put while the scene moves, so persistence
    removes the scene's own edges before the shape test (in a static shot everything persists and
    the shape test alone decides). ``text_frames``: fraction of frames whose own edges hold text."""
    edges = np.stack([_edges(_grey(frames[t])) for t in _sample(len(frames), k)])  # (k, H, W)
    persistent = edges.mean(axis=0) >= 0.7
    return {
        "text_area": float(text_mask(persistent).mean()),
        "text_frames": float(np.mean([text_mask(e).any() for e in edges])),
    }


class TextStage(Stage):
    name = "text"
    resources = Resources(cpus=1.0)
    batch_size = 8

    def process(self, row: Row) -> list[Row]:
        frames = read_clip(self.out_dir / row["clip_path"])
        row.update(text_scores(frames, self.config.score_frames))
        return [row]


# ----------------------------------------------------------------------------------------------
# Content type (hook)
# ----------------------------------------------------------------------------------------------


class ContentClassifier(Protocol):
    """Plug-in: ``(T, H, W, 3)`` uint8 frames -> ``(label, score)``. A real one (a CLIP zero-shot
    head, a scene classifier) is named with ``--content-classifier module:Class``."""

    def __call__(self, frames: np.ndarray) -> tuple[str, float]: ...


class ColourClassifier:
    """Offline default: ``greyscale`` when the colourfulness of Hasler & Suesstrunk (2003) is below 5
    (their "not colourful" level is about 15 on 0-100+), else ``colour``. The score is the colourfulness."""

    limit = 5.0

    def __call__(self, frames: np.ndarray) -> tuple[str, float]:
        f = frames[_sample(len(frames), 6)].astype(np.float32)
        rg = f[..., 0] - f[..., 1]
        yb = 0.5 * (f[..., 0] + f[..., 1]) - f[..., 2]
        c = float(np.sqrt(rg.std() ** 2 + yb.std() ** 2) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2))
        return ("greyscale" if c < self.limit else "colour"), c


class ContentStage(Stage):
    name = "content"
    resources = Resources(cpus=1.0)
    batch_size = 8

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self._classifier = None

    def process(self, row: Row) -> list[Row]:
        if self._classifier is None:
            self._classifier = load_object(self.config.content_classifier, "content classifier")
        frames = read_clip(self.out_dir / row["clip_path"])
        label, score = self._classifier(frames)
        row.update(content_label=str(label), content_score=float(score))
        return [row]

    def __getstate__(self):
        return {**self.__dict__, "_classifier": None}  # rebuilt in each worker


# ----------------------------------------------------------------------------------------------
# Decisions
# ----------------------------------------------------------------------------------------------

FILTER_ORDER = ("motion", "quality", "text", "content")


def filter_verdicts(row: Row, th: Thresholds) -> dict[str, str]:
    """For each filter, "" (keep) or the reason it drops the clip, from the stored scores."""
    v = {name: "" for name in FILTER_ORDER}
    if row["motion"] < th.motion_min:
        v["motion"] = f"static (motion {row['motion']:.4f} < {th.motion_min:g} widths/s)"
    elif row["shake"] > th.shake_max:
        v["motion"] = f"shaking (shake {row['shake']:.3f} > {th.shake_max:g} widths/s)"
    q = []
    if row["sharpness"] < th.sharpness_min:
        q.append(f"blurred (sharpness {row['sharpness']:.1f} < {th.sharpness_min:g})")
    if row["brightness"] < th.brightness_min or row["dark_fraction"] > th.clipped_max:
        q.append(f"underexposed (brightness {row['brightness']:.3f}, {row['dark_fraction']:.0%} crushed)")
    if row["brightness"] > th.brightness_max or row["blown_fraction"] > th.clipped_max:
        q.append(f"overexposed (brightness {row['brightness']:.3f}, {row['blown_fraction']:.0%} blown)")
    if row["noise"] > th.noise_max:
        q.append(f"noisy (noise sigma {row['noise']:.1f} > {th.noise_max:g})")
    v["quality"] = "; ".join(q)
    if row["text_area"] > th.text_max:
        v["text"] = f"text overlay ({row['text_area']:.1%} of the frame > {th.text_max:.1%})"
    if row["content_label"] in th.content_block:
        v["content"] = f"content {row['content_label']!r} is blocked (score {row['content_score']:.1f})"
    return v
