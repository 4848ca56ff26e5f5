"""Settings of a curation run, in two halves.

:class:`CurateConfig` decides what is *computed* (shots, clip files, scores, hashes, captions); a run
resumed into the same output must use the same values, since stored results depend on them.
:class:`Thresholds` decides what is *kept* from the stored scores; changing it never recomputes
anything (``worldline curate ... --refilter``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

DETECTORS = ("content", "adaptive", "histogram", "hash")
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


@dataclasses.dataclass
class CurateConfig:
    """What the split, transcode, score, caption and hash stages compute."""

    detector: str = "content"  # PySceneDetect detector: content, adaptive, histogram or hash
    threshold: float | None = None  # the detector's cut threshold; None uses PySceneDetect's default
    detect_width: int = 128  # frames are shrunk to this width for shot detection: cuts survive, grain and noise average out
    min_shot_s: float = 2.0  # shorter shots are dropped: too short to learn dynamics from
    max_shot_s: float = 60.0  # longer shots are cut into equal pieces no longer than this
    height: int = 144  # clips are transcoded to this height, width following the aspect ratio (even)
    fps: float = 10.0  # clips are resampled to this frame rate (sample-and-hold), so one dataset fps per bucket
    crf: int = 10  # H.264 quality of the clip store; worldline datasets use the same (see data/video.py)
    preset: str = "medium"  # x264 preset of the clip store; "veryfast" is ~1.3x faster but ~2 dB worse, and clips are re-encoded into shards
    score_frames: int = 12  # frames sampled evenly per clip for the blur/exposure/noise/text scores
    flow_samples: int = 6  # places per clip where flow is measured (two consecutive pairs each, for shake)
    flow_width: int = 128  # optical flow runs at this width: motion statistics need no detail, and it is ~10x cheaper
    hash_frames: int = 5  # frames per clip hashed for deduplication
    content_classifier: str = "worldline.curate.filters:ColourClassifier"  # "module:Class" labelling a clip's content
    captioner: str = "worldline.curate.annotate:DescriptorCaptioner"  # "module:Class" writing a caption per clip

    def __post_init__(self):
        if self.detector not in DETECTORS:
            raise ValueError(f"detector must be one of {', '.join(DETECTORS)}, got {self.detector=}")
        if self.threshold is not None and not self.threshold > 0:
            raise ValueError(f"threshold must be positive, got {self.threshold=}")
        if not self.min_shot_s > 0:
            raise ValueError(f"min_shot_s must be positive, got {self.min_shot_s=}")
        if not self.max_shot_s >= 2 * self.min_shot_s:
            raise ValueError(f"max_shot_s must be at least twice min_shot_s so cut pieces stay long enough, got {self.max_shot_s=} {self.min_shot_s=}")
        if self.height < 16 or self.height % 2:
            raise ValueError(f"height must be even and at least 16, got {self.height=}")
        if self.preset not in X264_PRESETS:
            raise ValueError(f"preset must be one of {', '.join(X264_PRESETS)}, got {self.preset=}")
        if not 0 < self.fps <= 120:
            raise ValueError(f"fps must be in (0, 120], got {self.fps=}")
        for name in ("detect_width", "score_frames", "flow_samples", "flow_width", "hash_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)=}")
        for name in ("content_classifier", "captioner"):
            if ":" not in getattr(self, name):
                raise ValueError(f"{name} must be 'module:Class', got {getattr(self, name)=}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Thresholds:
    """What is kept. Units are chosen so values do not depend on the clip size or frame rate.
    Defaults were set on the planted test media (tests/_curate_media.py); see BENCHMARKS.md."""

    motion_min: float = 0.01  # optical-flow speed (90th percentile) in frame widths per second; below: static
    shake_max: float = 0.25  # median frame-to-frame change of the camera's motion, widths/s; above: shaking camera
    sharpness_min: float = 40.0  # variance of the Laplacian at the clip size; below: blurred
    brightness_min: float = 0.12  # mean luma in [0, 1]; below: underexposed
    brightness_max: float = 0.85  # above: overexposed
    clipped_max: float = 0.5  # fraction of pixels crushed to black or blown to white; above: badly exposed
    noise_max: float = 5.0  # estimated sensor-noise sigma in grey levels (Immerkaer, median); above: noisy
    text_max: float = 0.01  # fraction of the frame covered by persistent text regions; above: text overlay
    content_block: tuple[str, ...] = ()  # content labels to drop, e.g. ("greyscale",)
    dedup_bits: float = 10.0  # mean pHash Hamming distance (of 64 bits) at or below which clips are duplicates

    def __post_init__(self):
        self.content_block = tuple(self.content_block)
        for name in ("motion_min", "shake_max", "sharpness_min", "noise_max", "text_max", "dedup_bits"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)=}")
        if not 0 <= self.brightness_min < self.brightness_max <= 1:
            raise ValueError(f"need 0 <= brightness_min < brightness_max <= 1, got {self.brightness_min=} {self.brightness_max=}")
        if not 0 < self.clipped_max <= 1:
            raise ValueError(f"clipped_max must be in (0, 1], got {self.clipped_max=}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["content_block"] = list(self.content_block)
        return d
