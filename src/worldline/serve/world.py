"""What every session of one checkpoint shares: the model (read-only), its dataset, its controls,
and the real world it was recorded from; plus the pictures a session can start from.

The model is seen only through the :class:`WorldModel` contract (init_state / step / State.clone /
action_spec / config.image_size), so every family plays. A checkpoint says it takes text through a
``takes_text`` attribute on the model or a true ``text``/``text_conditioning``/``use_text`` flag
(or a positive ``text_dim``) in its config.
"""

from __future__ import annotations

import base64
import binascii
import io
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from worldline.core.contracts import WorldModel
from worldline.core.errors import WorldlineError
from worldline.serve.config import DEFAULT_FPS
from worldline.serve.controls import build_controls, default_action

EPISODE_CACHE = 4  # decoded episodes kept per world (a 300-frame 64x64 episode is 3.7 MB)
MAX_VIDEO_FRAMES = 600  # an uploaded video is decoded up to this many frames (only the last few are used)
TEXT_FLAGS = ("text", "text_conditioning", "text_conditioned", "use_text")


def takes_text(model: WorldModel) -> bool:
    """Whether ``model`` is text-conditioned (see the module docstring)."""
    flag = getattr(model, "takes_text", None)
    if isinstance(flag, bool):
        return flag
    config = getattr(model, "config", None)
    for name in TEXT_FLAGS:
        value = getattr(config, name, None)
        if isinstance(value, bool):
            return value
    dim = getattr(config, "text_dim", None)
    return isinstance(dim, int) and not isinstance(dim, bool) and dim > 0


class World:
    """A loaded checkpoint (+ optional dataset) that any number of sessions play."""

    def __init__(self, model: WorldModel, dataset=None, name: str = "model", meta: dict[str, Any] | None = None, real_env: bool = True):
        if not isinstance(model, WorldModel):
            raise WorldlineError(f"{name} holds a {type(model).__name__}, not a world model; play needs a world model checkpoint")
        self.model = model.eval().requires_grad_(False)
        self.name = name
        self.meta = meta or {}
        self.spec = model.action_spec
        size = getattr(model.config, "image_size", None)
        if size is None and dataset is not None:
            size = dataset.image_shape[:2]
        self.image_size: tuple[int, int] = tuple(int(v) for v in (size or (64, 64)))  # type: ignore[assignment]
        self.context_frames = max(1, int(getattr(model.config, "context_frames", 1) or 1))
        self.dataset = dataset
        if dataset is not None:
            have, want = dataset.action_spec, self.spec
            if (have.kind, have.dim) != (want.kind, want.dim) or (want.kind == "discrete" and have.n != want.n):
                raise WorldlineError(
                    f"dataset {dataset.root} has a {have.kind} action space (dim {have.dim}, n {have.n}); "
                    f"the model was trained on {want.kind} (dim {want.dim}, n {want.n})"
                )
        self.env_id = self._real_env_id() if real_env else None
        fps = dataset.fps if dataset is not None else None
        if fps is None and self.env_id is not None:
            from worldline.envs.registry import BUILTIN

            fps = float(BUILTIN[self.env_id].fps)
        self.fps = float(fps or DEFAULT_FPS)
        self.takes_text = takes_text(model)
        self.controls = build_controls(self.spec, dataset.env_id if dataset is not None else None)
        self._episodes: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def load(cls, ckpt: str | Path, data: str | Path | None = None, real_env: bool = True) -> "World":
        """Load a checkpoint directory (save_pretrained: JSON + safetensors) and a dataset."""
        from worldline.core.io import read_json
        from worldline.core.pretrained import load_pretrained
        from worldline.data.format import Dataset

        ckpt = Path(ckpt)
        model = load_pretrained(ckpt)
        if not isinstance(model, WorldModel):
            raise WorldlineError(f"{ckpt} holds a {type(model).__name__}, not a world model; play needs a world model checkpoint")
        raw = read_json(ckpt / "config.json")
        meta = dict(((raw.get("extra") or {}).get("run") or {}).get("meta") or {})
        meta["type"] = raw.get("type")
        meta["step"] = (raw.get("extra") or {}).get("step")
        name = ckpt.parent.name if ckpt.name == "final" else ckpt.name
        return cls(model, Dataset(data) if data is not None else None, name=name, meta=meta, real_env=real_env)

    def _real_env_id(self) -> str | None:
        """The built-in world the dataset was recorded from, when it can run here beside the dream."""
        if self.dataset is None or self.dataset.env_id is None or self.image_size[0] != self.image_size[1]:
            return None
        try:
            from worldline.envs.registry import BUILTIN
        except ImportError:  # gymnasium is an optional extra
            return None
        return self.dataset.env_id if self.dataset.env_id in BUILTIN else None

    # ------------------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """What the page shows and builds its controls from."""
        ds = self.dataset
        n_params = sum(p.numel() for p in self.model.parameters())
        return {
            "name": self.name,
            "family": self.meta.get("type") or type(self.model.config).type_name(),
            "preset": "/".join(str(self.meta[k]) for k in ("preset", "size") if self.meta.get(k)) or None,
            "train_step": self.meta.get("step"),
            "parameters": n_params,
            "image_size": list(self.image_size),
            "context_frames": self.context_frames,
            "fps": self.fps,
            "controls": self.controls,
            "text": self.takes_text,
            "real_env": self.env_id,
            "dataset": None if ds is None else {
                "path": str(ds.root),
                "episodes": ds.num_episodes,
                "lengths": [int(n) for n in ds.episode_lengths],
                "env_id": ds.env_id,
            },
        }

    def episode(self, index: Any) -> dict[str, Any]:
        """Episode ``index`` of the dataset: frames (T, H, W, 3) uint8 at the model's size, actions."""
        if self.dataset is None:
            raise WorldlineError("no dataset: start the server with --data DIR to start from an episode")
        if isinstance(index, bool) or not isinstance(index, int):
            raise WorldlineError(f"'episode' must be an integer, got {str(index)[:40]!r}")
        if not 0 <= index < self.dataset.num_episodes:
            raise WorldlineError(f"episode {index} is outside the dataset (0..{self.dataset.num_episodes - 1})")
        with self._lock:
            if index in self._episodes:
                self._episodes.move_to_end(index)
                return self._episodes[index]
        ep = self.dataset.episode(index)
        ep = {"frames": fit_frames(ep["frames"], self.image_size), "actions": ep["actions"], "task": ep["task"]}
        with self._lock:
            self._episodes[index] = ep
            while len(self._episodes) > EPISODE_CACHE:
                self._episodes.popitem(last=False)
        return ep

    def default_action(self) -> list[float]:
        return default_action(self.spec)


# ----------------------------------------------------------------------------------------------
# pictures from clients
# ----------------------------------------------------------------------------------------------


def fit_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(T, h, w, 3) uint8 -> (T, H, W, 3): centre-cropped to the model's aspect and area-resized."""
    H, W = size
    if frames.shape[1:3] == (H, W):
        return frames
    return np.stack([fit_image(Image.fromarray(f), size) for f in frames])


def fit_image(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    H, W = size
    image = image.convert("RGB")
    w, h = image.size
    scale = min(w / W, h / H)
    cw, ch = W * scale, H * scale
    box = ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)
    return np.asarray(image.resize((W, H), Image.Resampling.BOX, box=box))


def _b64(data: Any, what: str) -> bytes:
    if not isinstance(data, str):
        raise WorldlineError(f"'{what}' must be a base64 string (or a data: URL), got {type(data).__name__}")
    if data.startswith("data:"):
        data = data.split(",", 1)[-1]
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise WorldlineError(f"'{what}' is not valid base64") from None


def decode_image(data: Any, size: tuple[int, int], max_pixels: int) -> np.ndarray:
    """An uploaded picture (base64 PNG/JPEG/WebP/...) -> (1, H, W, 3) uint8 at the model's size."""
    raw = _b64(data, "image")
    try:
        image = Image.open(io.BytesIO(raw))
        w, h = image.size  # read from the header: a decompression bomb is refused before decoding
        if w * h > max_pixels:
            raise WorldlineError(f"the uploaded image is {w}x{h}, more than the {max_pixels} pixels allowed")
        image.load()
    except WorldlineError:
        raise
    except Exception as e:  # PIL raises many types for a corrupt file
        raise WorldlineError(f"the uploaded image could not be read ({type(e).__name__}: {str(e)[:80]})") from None
    return fit_image(image, size)[None]


def decode_video(data: Any, size: tuple[int, int], keep: int, max_pixels: int) -> np.ndarray:
    """An uploaded video (base64 mp4/webm/...) -> its last ``keep`` frames (T, H, W, 3) uint8."""
    import av

    raw = _b64(data, "video")
    frames: list[np.ndarray] = []
    try:
        with av.open(io.BytesIO(raw)) as container:
            if not container.streams.video:
                raise WorldlineError("the uploaded video has no video stream")
            stream = container.streams.video[0]
            if (stream.codec_context.width or 0) * (stream.codec_context.height or 0) > max_pixels:
                raise WorldlineError(f"the uploaded video is {stream.codec_context.width}x{stream.codec_context.height}, too large")
            for i, frame in enumerate(container.decode(stream)):
                frames.append(fit_image(frame.to_image(), size))
                frames = frames[-keep:]
                if i + 1 >= MAX_VIDEO_FRAMES:
                    break
    except WorldlineError:
        raise
    except Exception as e:
        raise WorldlineError(f"the uploaded video could not be read ({type(e).__name__}: {str(e)[:80]})") from None
    if not frames:
        raise WorldlineError("the uploaded video holds no decodable frames")
    return np.stack(frames)
