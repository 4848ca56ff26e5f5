"""Import other people's data into a worldline dataset (always written through :class:`DatasetWriter`,
so an import is atomic and ``mode`` has the usual create/append/overwrite meaning).

Sources:

* a folder of videos (``.mp4 .mov .mkv .webm .avi``): one episode per file, no actions
  (``ActionSpec(kind="none")``), centre-cropped and resized to ``resolution`` (default 64x64). The
  dataset fps is ``fps`` if given, else the first file's; files at another rate are resampled to it.
* a LeRobot dataset directory, v2.0/v2.1 (``meta/episodes.jsonl``, one parquet and one mp4 per episode)
  or v3.0 (episodes packed into files, located through ``meta/episodes``). One camera is imported as
  ``observation.image``; both ``video`` and ``image`` (PNG in parquet) features are read.
* an array file, ``.npz`` or ``.h5``/``.hdf5``, in one of these layouts:

  - padded batch: ``frames`` (E, T, H, W, 3) uint8, ``actions`` (E, T, A) or (E, T), optional
    ``rewards`` (E, T), ``dones`` (E, T), ``lengths`` (E,) (valid steps per episode, default T);
  - flat: ``frames`` (N, H, W, 3), ``actions`` (N, A) or (N,), ``episode_lengths`` (E,) summing to N
    (without it the file is one episode), optional ``rewards``/``dones`` (N,);
  - HDF5 only, one group per episode (groups in natural name order: ``ep_2`` before ``ep_10``), each
    holding ``frames`` (T, H, W, 3), ``actions`` (T, A) and optional ``rewards``/``dones``.

  ``images`` or ``observations`` are accepted in place of ``frames``. Integer actions become a
  discrete space with ``n = max + 1`` (or the file's ``num_actions`` entry/attribute); float actions a
  continuous box whose low/high are the data's min/max; a file without ``actions`` is video only. An
  ``env_id`` attribute (HDF5) or entry (npz) is carried into ``meta/info.json``.
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from worldline.core.contracts import ActionSpec
from worldline.core.errors import WorldlineError
from worldline.core.io import read_json
from worldline.data.format import DEFAULT_CAMERA, Dataset, DatasetWriter, list_column, state_names_of
from worldline.data.video import as_hw, iter_frames, resize_image, video_info

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")
ARRAY_SUFFIXES = (".npz", ".h5", ".hdf5")
FRAME_KEYS = ("frames", "images", "observations")


def _progress(total: int, label: str, enabled: bool = True):
    """A rich progress bar (rate + ETA) over ``total`` episodes, or a silent stand-in."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=True,
    )


def _natural_key(name: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _even(size: tuple[int, int], where: str) -> tuple[int, int]:
    if size[0] % 2 or size[1] % 2:
        raise WorldlineError(f"{where}: frames are {size[0]}x{size[1]}; H.264 needs even sizes, pass a resolution")
    return size


# ----------------------------------------------------------------------------------------------
# Folder of videos
# ----------------------------------------------------------------------------------------------


def _resample(times: np.ndarray, fps: float) -> np.ndarray:
    """Indices of the decoded frames shown at times 0, 1/fps, 2/fps, ... (the latest frame at or
    before each target time), so a 30 fps file becomes 10 fps by keeping every third frame."""
    if not len(times):
        return np.zeros(0, np.int64)
    t0 = times[0]
    n = int(np.floor((times[-1] - t0) * fps + 1e-6)) + 1
    targets = t0 + np.arange(n) / fps
    return np.clip(np.searchsorted(times, targets + 1e-6, side="right") - 1, 0, len(times) - 1)


def load_video(path: Path, size: tuple[int, int], fps: float | None = None) -> np.ndarray:
    """Decode ``path`` frame by frame, centre-crop + resize each to ``size``, resample to ``fps``."""
    times, frames = [], []
    for t, image in iter_frames(path, with_time=True):
        times.append(t)
        frames.append(resize_image(image, size, crop=True))
    if not frames:
        raise WorldlineError(f"{path}: the video stream holds no decodable frames")
    stack = np.stack(frames)
    if fps is None:
        return stack
    return stack[_resample(np.asarray(times), fps)]


def import_video_folder(
    src: str | os.PathLike,
    out: str | os.PathLike,
    resolution: int | tuple[int, int] = 64,
    fps: float | None = None,
    mode: str = "create",
    progress: bool = True,
) -> Path:
    """One video-only episode per video file in ``src`` (sorted by name), resized to ``resolution``."""
    src = Path(src)
    if src.is_file() and src.suffix.lower() in VIDEO_SUFFIXES:
        files = [src]
    elif src.is_dir():
        files = sorted((p for p in src.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()), key=lambda p: _natural_key(p.name))
    else:
        raise WorldlineError(f"video folder not found: {src}")
    if not files:
        raise WorldlineError(f"{src}: no video files ({', '.join(VIDEO_SUFFIXES)})")
    size = _even(as_hw(resolution) or (64, 64), "resolution")
    first = video_info(files[0])
    rate = float(fps) if fps else first["fps"]
    if not rate:
        raise WorldlineError(f"{files[0]}: the file does not say its frame rate; pass fps")
    with DatasetWriter(out, fps=rate, image_shape=(*size, 3), action_spec=ActionSpec(), mode=mode) as writer:
        with _progress(len(files), "importing videos", progress) as bar:
            task = bar.add_task("videos", total=len(files))
            for path in files:
                own = video_info(path)["fps"]
                resample = fps is not None or abs(own - rate) > 1e-3
                writer.add_episode(load_video(path, size, rate if resample else None), task=path.stem)
                bar.advance(task)
    return Path(out)


# ----------------------------------------------------------------------------------------------
# LeRobot
# ----------------------------------------------------------------------------------------------


def _decode_image_cell(cell: Any, where: str) -> np.ndarray:
    """A LeRobot ``image`` feature cell ({bytes, path} PNG/JPEG, or a nested list) -> (H, W, 3) uint8."""
    if isinstance(cell, dict) and cell.get("bytes") is not None:
        return np.asarray(Image.open(io.BytesIO(cell["bytes"])).convert("RGB"))
    if isinstance(cell, dict) and cell.get("path"):
        return np.asarray(Image.open(cell["path"]).convert("RGB"))
    array = np.asarray(cell)
    if array.ndim == 3:
        if array.shape[0] == 3 and array.shape[-1] != 3:
            array = np.moveaxis(array, 0, -1)  # (3, H, W) -> (H, W, 3)
        if array.dtype != np.uint8:
            array = (array * 255 if array.max() <= 1.0 else array).clip(0, 255).astype(np.uint8)
        return array
    raise WorldlineError(f"{where}: cannot decode image cell of type {type(cell).__name__}")


def _frames_at(path: Path, from_s: float, timestamps: np.ndarray, fps: float, episode: int) -> list[np.ndarray]:
    """The decoded frames nearest to ``from_s + timestamps`` (LeRobot locates frames by time)."""
    half = 0.5 / fps
    wanted = from_s + timestamps
    times, frames = [], []
    for t, image in iter_frames(path, float(wanted.min()) - half, float(wanted.max()) + 2 * half, with_time=True):
        times.append(t)
        frames.append(image)
    if not frames:
        raise WorldlineError(f"episode {episode}: {path} has no frames at {wanted.min():.3f}..{wanted.max():.3f} s")
    times = np.asarray(times)
    nearest = np.abs(times[None, :] - wanted[:, None]).argmin(1)
    off = np.abs(times[nearest] - wanted)
    if off.max() > half + 1e-4:
        k = int(off.argmax())
        raise WorldlineError(f"episode {episode}: {path} has no frame within half a frame of {wanted[k]:.3f} s")
    return [frames[i] for i in nearest]


def _lerobot_action_spec(info: dict, actions: list[np.ndarray]) -> ActionSpec:
    feature = info["features"].get("action")
    if not feature:
        return ActionSpec()
    dim = int(np.prod(feature.get("shape", [1])))
    names = feature.get("names")
    if isinstance(names, dict):  # v2 style {"motors": [...]}
        names = next(iter(names.values()), None)
    if not (isinstance(names, list) and len(names) == dim and all(isinstance(n, str) for n in names)):
        names = None
    allv = np.concatenate(actions) if actions else np.zeros((0, dim), np.float32)
    low = allv.min(0).tolist() if len(allv) else None
    high = allv.max(0).tolist() if len(allv) else None
    return ActionSpec(kind="continuous", dim=dim, low=low, high=high, names=names)


def _pick_camera(info: dict, camera: str | None, src: Path) -> tuple[str, str]:
    """(camera key, 'video' | 'image') to import."""
    visual = {k: f["dtype"] for k, f in info["features"].items() if f.get("dtype") in ("video", "image")}
    if not visual:
        raise WorldlineError(f"{src}: the dataset has no video or image feature")
    if camera is None:
        camera = DEFAULT_CAMERA if DEFAULT_CAMERA in visual else next(iter(visual))
    if camera not in visual:
        raise WorldlineError(f"{src}: no camera {camera!r} (cameras: {', '.join(visual)})")
    return camera, visual[camera]


def _column(table, name: str, n: int, dtype, default) -> np.ndarray:
    if name not in table.column_names:
        return np.full(n, default, dtype)
    return table.column(name).to_numpy(zero_copy_only=False).astype(dtype).reshape(n)


def _actions(table, dim: int, where: Path, name: str = "action") -> np.ndarray:
    """A fixed-width vector column (``action``, ``observation.state``) -> (T, dim) float32."""
    if name not in table.column_names:
        raise WorldlineError(f"{where}: missing column {name!r}")
    return list_column(table.column(name), dim, where, name)


def _lerobot_v2_episodes(src: Path, info: dict, camera: str, kind: str) -> list[dict]:
    """Where each episode of a v2.x dataset lives: its own parquet and (for video features) mp4."""
    path = src / "meta" / "episodes.jsonl"
    if not path.is_file():
        raise WorldlineError(f"{src} is not a LeRobot v2 dataset: missing meta/episodes.jsonl")
    try:
        episodes = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise WorldlineError(f"{path}: not valid JSON lines ({e.msg} at line {e.lineno})") from None
    chunks = int(info.get("chunks_size", 1000))
    out = []
    for ep in sorted(episodes, key=lambda e: int(e["episode_index"])):
        index = int(ep["episode_index"])
        chunk = index // chunks
        data = src / info["data_path"].format(episode_chunk=chunk, episode_index=index)
        video = None
        if kind == "video":
            video = src / info["video_path"].format(episode_chunk=chunk, episode_index=index, video_key=camera)
        out.append({"index": index, "data": data, "video": video, "from_s": 0.0, "task": (ep.get("tasks") or [""])[0]})
    return out


def _lerobot_v3_episodes(src: Path, camera: str, kind: str) -> list[dict]:
    ds = Dataset(src)
    out = []
    for i in range(ds.num_episodes):
        meta = ds.episode_meta(i)
        video, from_s = (ds.episode_video(i, camera)[:2] if kind == "video" else (None, 0.0))
        out.append({"index": i, "data": ds.episode_data_file(i), "video": video, "from_s": from_s, "task": meta.get("tasks", "")})
    return out


def import_lerobot(
    src: str | os.PathLike,
    out: str | os.PathLike,
    camera: str | None = None,
    resolution: int | tuple[int, int] | None = None,
    mode: str = "create",
    progress: bool = True,
) -> Path:
    """Convert a LeRobot v2.x or v3.0 dataset (one camera, stored as ``observation.image``; its
    ``observation.state``, the robot's proprioception, comes along)."""
    src = Path(src)
    info_path = src / "meta" / "info.json"
    if not info_path.is_file():
        raise WorldlineError(f"{src} is not a LeRobot dataset: missing meta/info.json")
    info = read_json(info_path)
    version = str(info.get("codebase_version", ""))
    for key in ("fps", "features", "data_path"):
        if key not in info:
            raise WorldlineError(f"{info_path}: missing field {key!r}")
    camera, kind = _pick_camera(info, camera, src)
    if version.startswith("v2"):
        episodes = _lerobot_v2_episodes(src, info, camera, kind)
    elif version.startswith("v3"):
        episodes = _lerobot_v3_episodes(src, camera, kind)
    else:
        raise WorldlineError(f"{info_path}: unsupported codebase_version {version!r} (v2.0, v2.1 and v3.0 are)")
    if not episodes:
        raise WorldlineError(f"{src}: the dataset has no episodes")
    fps = float(info["fps"])
    feature = info["features"].get("action")
    dim = int(np.prod(feature.get("shape", [1]))) if feature else 0

    tables: dict[Path, Any] = {}

    def rows(ep: dict):
        table = tables.get(ep["data"])
        if table is None:
            if not ep["data"].is_file():
                raise WorldlineError(f"missing file: {ep['data']}")
            table = pq.read_table(ep["data"])
            for col in ("timestamp", "episode_index"):
                if col not in table.column_names:
                    raise WorldlineError(f"{ep['data']}: missing column {col!r}")
            tables.clear()  # v3 packs many episodes per file: keep only the current one
            tables[ep["data"]] = table
        mask = table.column("episode_index").to_numpy() == ep["index"]
        return table.filter(mask)

    actions = [_actions(rows(ep), dim, ep["data"]) for ep in episodes] if dim else []
    spec = _lerobot_action_spec(info, actions)
    shape = info["features"][camera].get("shape", [0, 0, 3])
    names = info["features"][camera].get("names") or []
    native = (int(shape[0]), int(shape[1])) if names[:1] != ["channels"] else (int(shape[1]), int(shape[2]))
    size = _even(as_hw(resolution) or native, f"{src} camera {camera}")

    state_names = state_names_of(info)  # proprioception comes along
    with DatasetWriter(out, fps=fps, image_shape=(*size, 3), action_spec=spec, mode=mode, state_names=state_names) as writer:
        with _progress(len(episodes), f"importing {src.name}", progress) as bar:
            task = bar.add_task("episodes", total=len(episodes))
            for k, ep in enumerate(episodes):
                table = rows(ep)
                n = table.num_rows
                if n == 0:
                    raise WorldlineError(f"{ep['data']}: no rows for episode {ep['index']}")
                if kind == "video":
                    timestamps = table.column("timestamp").to_numpy().astype(np.float64)
                    frames = _frames_at(ep["video"], ep["from_s"], timestamps, fps, ep["index"])
                else:
                    if camera not in table.column_names:
                        raise WorldlineError(f"{ep['data']}: missing column {camera!r}")
                    frames = [_decode_image_cell(c, str(ep["data"])) for c in table.column(camera).to_pylist()]
                frames = np.stack([resize_image(f, size, crop=True) for f in frames])
                writer.add_episode(
                    frames,
                    actions[k] if dim else None,
                    rewards=_column(table, "next.reward", n, np.float32, 0.0),
                    dones=_column(table, "next.done", n, bool, False) if "next.done" in table.column_names else None,
                    task=ep["task"],
                    states=_actions(table, len(state_names), ep["data"], "observation.state") if state_names else None,
                )
                bar.advance(task)
    return Path(out)


# ----------------------------------------------------------------------------------------------
# npz / HDF5 arrays
# ----------------------------------------------------------------------------------------------


class _Arrays:
    """Uniform access to the arrays of an npz file, an HDF5 root or an HDF5 group."""

    def __init__(self, mapping: Any, attrs: dict | None = None):
        self.mapping = mapping
        self.attrs = attrs or {}

    def has(self, key: str) -> bool:
        return key in self.mapping

    def get(self, key: str):
        return self.mapping[key]

    def frames_key(self, where: str) -> str:
        for key in FRAME_KEYS:
            if key in self.mapping:
                return key
        raise WorldlineError(f"{where}: no frames array (looked for {', '.join(FRAME_KEYS)})")

    def scalar(self, key: str):
        if key in self.attrs:
            return self.attrs[key]
        if key in self.mapping:
            value = np.asarray(self.mapping[key])
            return value.item() if value.size == 1 else None
        return None


def _episodes_from(arrays: _Arrays, where: str) -> Iterator[dict[str, np.ndarray]]:
    """Yield episodes {frames, actions?, rewards?, dones?} from a padded or flat layout."""
    fkey = arrays.frames_key(where)
    frames = arrays.get(fkey)
    ndim = len(frames.shape)
    optional = [k for k in ("actions", "rewards", "dones") if arrays.has(k)]
    if ndim == 5:  # padded (E, T, H, W, 3)
        e, t = frames.shape[:2]
        lengths = np.asarray(arrays.get("lengths")) if arrays.has("lengths") else np.full(e, t)
        if lengths.shape != (e,) or lengths.min() < 1 or lengths.max() > t:
            raise WorldlineError(f"{where}: 'lengths' must be ({e},) values in 1..{t}, got {lengths.tolist()[:5]}")
        for key in optional:
            if tuple(arrays.get(key).shape[:2]) != (e, t):
                raise WorldlineError(f"{where}: '{key}' has shape {tuple(arrays.get(key).shape)}, expected ({e}, {t}, ...) like '{fkey}'")
        for i in range(e):
            n = int(lengths[i])
            yield {"frames": np.asarray(frames[i, :n]), **{k: np.asarray(arrays.get(k)[i, :n]) for k in optional}}
    elif ndim == 4:  # flat (N, H, W, 3)
        n = frames.shape[0]
        lengths = np.asarray(arrays.get("episode_lengths")) if arrays.has("episode_lengths") else np.array([n])
        if lengths.ndim != 1 or lengths.sum() != n or lengths.min() < 1:
            raise WorldlineError(f"{where}: 'episode_lengths' must be positive and sum to {n} frames, got sum {int(lengths.sum())}")
        for key in optional:
            if arrays.get(key).shape[0] != n:
                raise WorldlineError(f"{where}: '{key}' has {arrays.get(key).shape[0]} rows, '{fkey}' has {n}")
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        for s, length in zip(starts, lengths):
            yield {"frames": np.asarray(frames[s : s + length]), **{k: np.asarray(arrays.get(k)[s : s + length]) for k in optional}}
    else:
        raise WorldlineError(f"{where}: '{fkey}' has shape {tuple(frames.shape)}; expected (E, T, H, W, 3) or (N, H, W, 3)")


def _array_action_spec(action_arrays: list[np.ndarray], declared_n: Any, where: str) -> ActionSpec:
    if not action_arrays:
        return ActionSpec()
    first = action_arrays[0]
    if np.issubdtype(first.dtype, np.integer) or first.dtype == bool:
        biggest = max(int(a.max()) for a in action_arrays if a.size)
        if min(int(a.min()) for a in action_arrays if a.size) < 0:
            raise WorldlineError(f"{where}: integer actions must be indices >= 0")
        n = int(declared_n) if declared_n is not None else biggest + 1
        if any(a.ndim > 1 and a.shape[-1] != 1 for a in action_arrays):
            raise WorldlineError(f"{where}: integer actions must be one index per step, got shape {first.shape}")
        return ActionSpec(kind="discrete", dim=1, n=n)
    flat = np.concatenate([a.reshape(len(a), -1) for a in action_arrays]).astype(np.float64)
    dim = flat.shape[1]
    finite = np.where(np.isfinite(flat), flat, np.nan)
    return ActionSpec(kind="continuous", dim=dim, low=np.nanmin(finite, 0).tolist(), high=np.nanmax(finite, 0).tolist())


def _open_arrays(src: Path) -> tuple[list[Callable[[], Iterator[dict]]], dict, Callable[[], None]]:
    """(episode-source callables, attributes, close) for an npz or HDF5 file."""
    suffix = src.suffix.lower()
    if suffix == ".npz":
        try:
            npz = np.load(src, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise WorldlineError(f"{src}: unreadable npz file ({str(e).splitlines()[0][:120]})") from None
        arrays = _Arrays(npz)
        attrs = {k: arrays.scalar(k) for k in ("env_id", "num_actions", "fps") if arrays.scalar(k) is not None}
        return [lambda: _episodes_from(arrays, str(src))], attrs, npz.close
    import h5py

    try:
        h5 = h5py.File(src, "r")
    except OSError as e:
        raise WorldlineError(f"{src}: unreadable HDF5 file ({str(e).splitlines()[0][:120]})") from None
    attrs = {k: (v.decode() if isinstance(v, bytes) else v.item() if hasattr(v, "item") else v) for k, v in h5.attrs.items()}
    root = _Arrays(h5, attrs)
    if any(k in h5 for k in FRAME_KEYS):
        for k in ("env_id", "num_actions", "fps"):
            if k not in attrs and root.scalar(k) is not None:
                attrs[k] = root.scalar(k)
        return [lambda: _episodes_from(root, str(src))], attrs, h5.close
    groups = sorted((k for k in h5 if isinstance(h5[k], h5py.Group)), key=_natural_key)
    if not groups:
        raise WorldlineError(f"{src}: no frames array and no episode groups (see worldline.data.importers for layouts)")
    sources = []
    for name in groups:
        group = _Arrays(h5[name])
        where = f"{src}:{name}"

        def one(group=group, where=where):
            fkey = group.frames_key(where)
            if len(group.get(fkey).shape) != 4:
                raise WorldlineError(f"{where}: '{fkey}' has shape {tuple(group.get(fkey).shape)}, expected (T, H, W, 3)")
            return _episodes_from(group, where)

        sources.append(one)
    return sources, attrs, h5.close


def import_arrays(
    src: str | os.PathLike,
    out: str | os.PathLike,
    fps: float | None = 10,
    resolution: int | tuple[int, int] | None = None,
    mode: str = "create",
    progress: bool = True,
) -> Path:
    """Convert an ``.npz`` or ``.h5``/``.hdf5`` file of frames + actions (layouts in the module doc).
    ``fps=None`` takes the file's ``fps`` attribute/entry, else 10."""
    src = Path(src)
    if not src.is_file():
        raise WorldlineError(f"file not found: {src}")
    if src.suffix.lower() not in ARRAY_SUFFIXES:
        raise WorldlineError(f"{src}: expected one of {', '.join(ARRAY_SUFFIXES)}")
    sources, attrs, close = _open_arrays(src)
    try:
        # first pass over the small arrays only: the action space needs every episode's actions
        actions, count, first_shape = [], 0, None
        for source in sources:
            for ep in source():
                count += 1
                first_shape = first_shape or ep["frames"].shape[1:]
                if "actions" in ep:
                    actions.append(np.asarray(ep["actions"]))
                elif actions:
                    raise WorldlineError(f"{src}: episode {count - 1} has no actions but others do")
        if not count:
            raise WorldlineError(f"{src}: no episodes")
        if actions and len(actions) != count:
            raise WorldlineError(f"{src}: episode 0 has no actions but others do")
        spec = _array_action_spec(actions, attrs.get("num_actions"), str(src))
        if first_shape is None or len(first_shape) != 3 or first_shape[-1] != 3:
            raise WorldlineError(f"{src}: frames must be (…, H, W, 3) RGB, got (…, {', '.join(map(str, first_shape or ()))})")
        size = _even(as_hw(resolution) or (int(first_shape[0]), int(first_shape[1])), str(src))
        env_id = attrs.get("env_id")
        fps = fps or float(attrs.get("fps") or 10)
        with DatasetWriter(out, fps=fps, image_shape=(*size, 3), action_spec=spec, env_id=env_id, mode=mode) as writer:
            with _progress(count, f"importing {src.name}", progress) as bar:
                task = bar.add_task("episodes", total=count)
                for source in sources:
                    for ep in source():
                        frames = ep["frames"]
                        if frames.dtype != np.uint8:
                            raise WorldlineError(f"{src}: frames have dtype {frames.dtype}, expected uint8")
                        if frames.shape[1:3] != size:
                            frames = np.stack([resize_image(f, size, crop=True) for f in frames])
                        a = ep.get("actions")
                        if a is not None:
                            a = a.reshape(len(a), -1)  # (T,) or (T, A) -> (T, A)
                        writer.add_episode(frames, a, ep.get("rewards"), ep.get("dones"))
                        bar.advance(task)
    finally:
        close()
    return Path(out)


# ----------------------------------------------------------------------------------------------
# Dispatcher
# ----------------------------------------------------------------------------------------------


def import_any(src: str | os.PathLike, out: str | os.PathLike, **kw) -> Path:
    """Import by what ``src`` is: a LeRobot directory (``meta/info.json``), a folder of videos or one
    video file, or an ``.npz``/``.h5``/``.hdf5`` file. ``kw`` go to the matching importer."""
    src = Path(src)
    if not src.exists():
        raise WorldlineError(f"import source not found: {src}")
    kw = {k: v for k, v in kw.items() if v is not None}  # unset CLI options fall back to each importer's default

    def call(fn, allowed):
        unknown = set(kw) - set(allowed)
        if unknown:
            raise WorldlineError(f"{fn.__name__} does not take {', '.join(sorted(unknown))} (it takes {', '.join(allowed)})")
        return fn(src, out, **kw)

    if src.is_dir() and (src / "meta" / "info.json").is_file():
        return call(import_lerobot, ("camera", "resolution", "mode", "progress"))
    if (src.is_dir() and any(p.suffix.lower() in VIDEO_SUFFIXES for p in src.iterdir())) or src.suffix.lower() in VIDEO_SUFFIXES:
        return call(import_video_folder, ("resolution", "fps", "mode", "progress"))
    if src.is_file() and src.suffix.lower() in ARRAY_SUFFIXES:
        return call(import_arrays, ("fps", "resolution", "mode", "progress"))
    raise WorldlineError(
        f"cannot import {src}: expected a LeRobot dataset directory, a folder of videos ({', '.join(VIDEO_SUFFIXES)}) "
        f"or an array file ({', '.join(ARRAY_SUFFIXES)})"
    )
