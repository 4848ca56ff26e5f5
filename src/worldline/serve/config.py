"""What a play server is allowed to do: limits, frame encoding, pacing, and the directories it may
read checkpoints and datasets from."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from worldline.core.errors import WorldlineError
from worldline.serve.codec import ENCODINGS


@dataclasses.dataclass
class ServeConfig:
    allowed_dirs: list[Path] = dataclasses.field(default_factory=lambda: [Path.cwd()])  # checkpoints/datasets a client may name must lie inside one
    episode: int = 0  # the dataset episode a page starts from when it names none
    record_dir: Path | None = None  # where the record button appends episodes (a worldline dataset); None: recording is off
    max_sessions: int = 4  # each session holds a worker thread and its state; past this a client is told to wait
    fps: float | None = None  # target frames/s per session; None: the dataset's (or the real world's) fps, else DEFAULT_FPS; 0: as fast as the model allows
    encoding: str = "jpeg"  # frame pictures on the wire (jpeg, png, webp, raw): see serve/codec.py
    quality: int = 90  # JPEG/WebP quality; at 64x64 lower values smear the small sprites a player watches
    max_message_bytes: int = 64 * 1024  # control messages (actions, commands) are tiny; anything bigger is refused
    max_upload_bytes: int = 8 * 1024 * 1024  # a start message carrying an uploaded image or video
    max_upload_pixels: int = 4096 * 4096  # a small file that decodes to a huge picture is refused before decoding
    max_record_frames: int = 6000  # frames a recording may hold in memory (10 min at 10 fps, ~74 MB at 64x64)
    real_env: bool = True  # step the real world beside the dream where the dataset names a built-in world
    threads: int = 1  # torch threads; generation already runs one thread per session, more only contend on small CPUs

    def __post_init__(self):
        if self.max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {self.max_sessions=}")
        if self.fps is not None and not 0 <= self.fps <= 240:
            raise ValueError(f"fps must be in [0, 240] (0 = as fast as possible), got {self.fps=}")
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}, got {self.encoding=}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"quality must be in [1, 100], got {self.quality=}")
        if self.max_message_bytes < 1024 or self.max_upload_bytes < self.max_message_bytes:
            raise ValueError(f"limits must be max_upload_bytes >= max_message_bytes >= 1024, got {self.max_message_bytes=} {self.max_upload_bytes=}")
        if self.episode < 0:
            raise ValueError(f"episode must be >= 0, got {self.episode=}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads=}")
        self.allowed_dirs = [Path(d).expanduser().resolve() for d in self.allowed_dirs]
        if self.record_dir is not None:
            self.record_dir = Path(self.record_dir).expanduser()


DEFAULT_FPS = 15.0  # when neither the dataset nor the world says how fast the world runs


def allowed_path(path: str | os.PathLike, allowed_dirs: list[Path], what: str) -> Path:
    """``path`` resolved (symlinks followed, so a link cannot point out), if it lies inside one of
    ``allowed_dirs``; otherwise a one-line WorldlineError naming it."""
    if not isinstance(path, (str, os.PathLike)) or not str(path) or "\x00" in str(path):
        raise WorldlineError(f"{what}: expected a path, got {str(path)[:80]!r}")
    resolved = Path(path).expanduser().resolve()
    for root in allowed_dirs:
        if resolved == root or resolved.is_relative_to(root):
            return resolved
    shown = ", ".join(str(d) for d in allowed_dirs) or "none"
    raise WorldlineError(f"{what} {str(path)[:200]} is outside the allowed directories ({shown}); widen them with --allowed-dir")
