"""H.264 video files through PyAV: write (atomic), read a time range with seeking, resize.

Frames are ``(T, H, W, 3)`` uint8 RGB everywhere. Frame ``i`` of a file has presentation time
``i / fps``; a dataset locates an episode inside a file by its ``[from, to)`` timestamps, and every
episode starts on a key frame so reading one seeks straight to it.

Codec choice, measured at 64x64 (``benchmarks/bench_data.py --codec``): with yuv420p the RGB -> YUV
4:2:0 conversion alone costs ~31 dB PSNR on game-like frames with sharp coloured edges, whatever the
CRF (CRF 0 does no better). At 64x64 a chroma sample covers 2x2 pixels of a 64-pixel image, too coarse.
So datasets default to libx264 yuv444p (High 4:4:4 profile, decoded by FFmpeg/PyAV/torchcodec) at
CRF 10: ~50 dB on flat game frames, ~46 dB on fine texture, 60-450 bytes per frame. ``pix_fmt=
"yuv420p"`` is available for files that must play in browsers.
"""

from __future__ import annotations

import contextlib
import os
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np
from PIL import Image

from worldline.core.errors import WorldlineError
from worldline.core.io import atomic_path

DEFAULT_CRF = 10  # keeps the codec's own loss > 40 dB PSNR at 64x64 (see module docstring)
CODEC = "libx264"
DEFAULT_PIX_FMT = "yuv444p"  # no chroma subsampling: 4:2:0 caps PSNR near 31 dB on small frames
PIX_FMTS = ("yuv444p", "yuv420p")


def _rate(fps: float) -> Fraction:
    if not (fps > 0 and np.isfinite(fps)):
        raise WorldlineError(f"fps must be a positive number, got {fps!r}")
    return Fraction(fps).limit_denominator(1001)


def _check_frames(frames: np.ndarray, what: str) -> None:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        shape = getattr(frames, "shape", None)
        dtype = getattr(frames, "dtype", type(frames).__name__)
        raise WorldlineError(f"{what}: frames must be uint8 (T, H, W, 3), got {dtype} {shape}")


class VideoWriter:
    """Streaming H.264 encoder into ``path`` (written as given; wrap in ``atomic_path`` for safety).

    ``write(frames, keyframe=True)`` appends frames; the first of each call is forced to be an IDR
    frame, so a reader can seek to any call's start (one call = one episode in a dataset file).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float,
        height: int,
        width: int,
        crf: int = DEFAULT_CRF,
        pix_fmt: str = DEFAULT_PIX_FMT,
        preset: str = "medium",  # x264 speed/quality trade-off; "veryfast": ~1.3x faster, ~2 dB lower PSNR at CRF 10 (144x256)
    ):
        if pix_fmt not in PIX_FMTS:
            raise WorldlineError(f"pix_fmt must be one of {', '.join(PIX_FMTS)}, got {pix_fmt!r}")
        if height % 2 or width % 2:
            raise WorldlineError(f"{path}: H.264 needs even frame sizes, got {height}x{width}")
        self.path = Path(path)
        self.height, self.width = height, width
        self.frames_written = 0
        rate = _rate(fps)
        self._container = av.open(str(self.path), mode="w", format="mp4")
        self._stream = self._container.add_stream(CODEC, rate=rate)
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, pix_fmt
        self._stream.codec_context.time_base = 1 / rate
        # forced-idr: a forced key frame is an IDR frame, so seeking to an episode start is exact.
        self._stream.options = {"crf": str(int(crf)), "preset": preset, "forced-idr": "1"}

    def write(self, frames: np.ndarray, keyframe: bool = True) -> None:
        _check_frames(frames, str(self.path))
        if frames.shape[1:3] != (self.height, self.width):
            raise WorldlineError(
                f"{self.path}: frames are {frames.shape[1]}x{frames.shape[2]}, the video is {self.height}x{self.width}"
            )
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = self.frames_written
            if keyframe and i == 0:
                frame.pict_type = av.video.frame.PictureType.I
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
            self.frames_written += 1

    def close(self) -> None:
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._container.close()


def write_video(
    path: str | os.PathLike, frames: np.ndarray, fps: float, crf: int = DEFAULT_CRF, pix_fmt: str = DEFAULT_PIX_FMT, preset: str = "medium"
) -> Path:
    """Encode ``frames`` (T, H, W, 3) uint8 as H.264 into ``path`` atomically."""
    _check_frames(frames, str(path))
    with atomic_path(path) as tmp:
        writer = VideoWriter(tmp, fps, frames.shape[1], frames.shape[2], crf, pix_fmt, preset)
        try:
            writer.write(frames)
        except BaseException:
            writer.abort()
            raise
        writer.close()
    return Path(path)


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _open(path: Path) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    if not path.is_file():
        raise WorldlineError(f"missing video file: {path}")
    try:
        container = av.open(str(path), mode="r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise WorldlineError(f"{path}: not a readable video file ({_reason(e)})") from None
    try:
        if not container.streams.video:
            raise WorldlineError(f"{path}: the file has no video stream")
        yield container, container.streams.video[0]
    finally:
        container.close()


def _reason(e: BaseException) -> str:
    return str(getattr(e, "strerror", None) or e).split("\n")[0][:120]


def video_info(path: str | os.PathLike) -> dict:
    """fps, frame count (from the container, may be 0 if unknown), height, width and duration in s."""
    path = Path(path)
    with _open(path) as (container, stream):
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        duration = float(stream.duration * stream.time_base) if stream.duration else (
            container.duration / av.time_base if container.duration else 0.0
        )
        return {
            "fps": float(rate) if rate else 0.0,
            "frames": int(stream.frames or 0),
            "height": stream.codec_context.height,
            "width": stream.codec_context.width,
            "duration": duration,
        }


def iter_frames(
    path: str | os.PathLike, start_s: float | None = None, end_s: float | None = None, with_time: bool = False
) -> Iterator[np.ndarray] | Iterator[tuple[float, np.ndarray]]:
    """Yield (H, W, 3) uint8 frames (or ``(time_s, frame)`` pairs) with timestamps in ``[start_s, end_s)``.

    Timestamps are compared with half a frame of slack, so ``[i / fps, j / fps)`` gives frames
    ``i .. j-1`` exactly despite container time-base rounding. Seeks to the key frame at or before
    ``start_s`` and decodes forward from there.
    """
    path = Path(path)
    with _open(path) as (container, stream):
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate or 30
        half = 0.5 / float(rate)
        lo = None if start_s is None else start_s - half
        hi = None if end_s is None else end_s - half
        stream.thread_type = "AUTO"
        try:
            if lo is not None and lo > 0:
                container.seek(int(lo / stream.time_base), stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                t = frame.time if frame.time is not None else 0.0
                if lo is not None and t < lo:
                    continue
                if hi is not None and t >= hi:
                    break
                image = frame.to_ndarray(format="rgb24")
                yield (t, image) if with_time else image
        except av.FFmpegError as e:
            raise WorldlineError(f"{path}: corrupt video data ({_reason(e)})") from None


def read_video(path: str | os.PathLike, start_s: float | None = None, end_s: float | None = None) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of ``path`` with timestamps in ``[start_s, end_s)`` (all by default)."""
    frames = list(iter_frames(path, start_s, end_s))
    if not frames:
        if start_s is None and end_s is None:
            raise WorldlineError(f"{path}: the video stream holds no decodable frames")
        with _open(Path(path)) as (_, stream):
            h, w = stream.codec_context.height, stream.codec_context.width
        return np.zeros((0, h, w, 3), np.uint8)
    return np.stack(frames)


# ----------------------------------------------------------------------------------------------
# Resizing
# ----------------------------------------------------------------------------------------------


def as_hw(resolution: int | tuple[int, int] | list[int] | None) -> tuple[int, int] | None:
    """``64`` -> (64, 64); ``(48, 64)`` -> (48, 64); None stays None."""
    if resolution is None:
        return None
    if isinstance(resolution, (int, np.integer)):
        resolution = (int(resolution), int(resolution))
    h, w = (int(v) for v in resolution)
    if h < 2 or w < 2:
        raise WorldlineError(f"resolution must be at least 2x2, got {resolution!r}")
    return h, w


def resize_image(image: np.ndarray, size: tuple[int, int], crop: bool = False) -> np.ndarray:
    """Resize one (H, W, 3) uint8 image to ``size`` = (h, w): area averaging (PIL box) when shrinking,
    which avoids aliasing, bicubic when enlarging. ``crop`` first cuts the centre to the target's
    aspect ratio, so nothing is squashed."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    pil = Image.fromarray(image)
    if crop:
        src_h, src_w = image.shape[:2]
        if src_w * h > w * src_h:  # too wide: keep the middle columns
            keep = max(1, round(src_h * w / h))
            left = (src_w - keep) // 2
            pil = pil.crop((left, 0, left + keep, src_h))
        elif src_w * h < w * src_h:  # too tall: keep the middle rows
            keep = max(1, round(src_w * h / w))
            top = (src_h - keep) // 2
            pil = pil.crop((0, top, src_w, top + keep))
    shrink = h <= pil.height and w <= pil.width
    method = Image.Resampling.BOX if shrink else Image.Resampling.BICUBIC
    return np.asarray(pil.resize((w, h), method))


def resize_frames(frames: np.ndarray, size: tuple[int, int], crop: bool = False) -> np.ndarray:
    """:func:`resize_image` on each frame of (T, H, W, 3) uint8."""
    if frames.shape[1:3] == tuple(size):
        return frames
    out = np.empty((len(frames), size[0], size[1], 3), np.uint8)
    for i, image in enumerate(frames):
        out[i] = resize_image(image, size, crop)
    return out
