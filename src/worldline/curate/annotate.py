"""Stage 4: annotation. A captioner is a plug-in (``"module:Class"``) called on a clip's frames and
its stored scores, returning one caption string, which becomes the episode's task text in the shards.

The offline default, :class:`DescriptorCaptioner`, describes measured motion, brightness and colour
in words and says so in the caption itself (``"[descriptors] ..."``), so nobody mistakes it for a
vision-language model's caption. A real VLM captioner plugs in with ``--captioner module:Class``.
"""

from __future__ import annotations

from typing import Any, Protocol

import cv2
import numpy as np

from worldline.curate.stage import Resources, Row, Stage, load_object
from worldline.curate.transcode import read_clip

DESCRIPTOR_TAG = "[descriptors]"


class Captioner(Protocol):
    def __call__(self, frames: np.ndarray, scores: dict[str, Any]) -> str: ...


_HUES = ((15, "red"), (35, "orange"), (70, "yellow"), (160, "green"), (250, "blue"), (290, "purple"), (335, "pink"), (360, "red"))


class DescriptorCaptioner:
    """Words for measured quantities: camera/scene motion, brightness, dominant colour."""

    def __call__(self, frames: np.ndarray, scores: dict[str, Any]) -> str:
        motion = scores.get("motion") or 0.0
        speed = "still" if motion < 0.01 else "slow" if motion < 0.05 else "moderate" if motion < 0.2 else "fast"
        brightness = scores.get("brightness")
        light = "" if brightness is None else "dark" if brightness < 0.3 else "bright" if brightness > 0.65 else "mid-lit"
        mid = frames[len(frames) // 2]
        hsv = cv2.cvtColor(mid, cv2.COLOR_RGB2HSV_FULL).reshape(-1, 3).astype(np.float32)  # (H*W, 3), hue in 0..255
        coloured = hsv[(hsv[:, 1] > 60) & (hsv[:, 2] > 40)]
        if len(coloured) < 0.05 * len(hsv):
            colour = "muted colours"
        else:
            hue = float(np.median(coloured[:, 0])) * 360.0 / 256.0
            colour = f"mostly {next(name for limit, name in _HUES if hue < limit)}"
        parts = [f"{speed} motion", light, colour]
        return f"{DESCRIPTOR_TAG} " + ", ".join(p for p in parts if p)


class AnnotateStage(Stage):
    name = "caption"
    resources = Resources(cpus=1.0)
    batch_size = 8

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self._captioner = None

    def process(self, row: Row) -> list[Row]:
        if self._captioner is None:
            self._captioner = load_object(self.config.captioner, "captioner")
        frames = read_clip(self.out_dir / row["clip_path"])
        row["caption"] = str(self._captioner(frames, row))
        return [row]

    def __getstate__(self):
        return {**self.__dict__, "_captioner": None}
