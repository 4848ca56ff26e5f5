"""The worldline dataset: LeRobot v3 layout, written atomically, read with clear errors.

```
DIR/meta/info.json                              fps, totals, path templates, features, "worldline" block
DIR/meta/stats.json                             per feature min/max/mean/std/count
DIR/meta/tasks.parquet                          task_index, task
DIR/meta/episodes/chunk-000/file-000.parquet    one row per episode: length, data file, video file + [from, to) s
DIR/data/chunk-XXX/file-YYY.parquet             one row per frame: index, episode_index, frame_index, timestamp,
                                                action list<float32>, [observation.state list<float32>],
                                                next.reward, next.done, task_index
DIR/videos/<camera>/chunk-XXX/file-YYY.mp4      H.264, several episodes back to back, each starting on a key frame
```

Atomicity. ``create`` and ``overwrite`` build the whole dataset in a hidden sibling directory and
rename it into place on close (an overwritten dataset stays intact until then). ``append`` writes new
episodes into new data/video files only (each renamed into place once complete), then rewrites the
meta files atomically with ``info.json`` last. ``info.json`` is the commit: a reader trusts only the
episodes below its ``total_episodes``, so a writer killed at any point leaves the previous dataset
loadable and unchanged; the next append removes the orphaned files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from worldline import __version__
from worldline.core.contracts import ActionSpec
from worldline.core.errors import WorldlineError
from worldline.core.io import atomic_dir, atomic_path, read_json, write_json
from worldline.data import stats as stats_mod
from worldline.data.video import DEFAULT_CRF, DEFAULT_PIX_FMT, VideoWriter, read_video

CODEBASE_VERSION = "v3.0"
DEFAULT_CAMERA = "observation.image"
CHUNKS_SIZE = 1000  # files per chunk directory, as LeRobot
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_FILE = "meta/episodes/chunk-000/file-000.parquet"
FRAMES_PER_FILE = 20_000  # episodes are packed into one data/video file until it holds this many frames

REQUIRED_FRAME_COLUMNS = ("index", "episode_index", "frame_index", "timestamp")
STATE = "observation.state"  # proprioception (LeRobot's name): the robot's own joint/effector readings per frame
REQUIRED_EPISODE_COLUMNS = ("episode_index", "length", "dataset_from_index", "dataset_to_index", "data/chunk_index", "data/file_index")
_OWN_FILE = re.compile(r"^file-(\d+)\.(parquet|mp4)$")


def _video_columns(cam: str) -> tuple[str, ...]:
    return tuple(f"videos/{cam}/{c}" for c in ("chunk_index", "file_index", "from_timestamp", "to_timestamp"))


def _features(fps: float, image_shape: tuple[int, int, int], cameras: Sequence[str], spec: ActionSpec, crf: int, pix_fmt: str,
              state_names: Sequence[str] = ()) -> dict:
    h, w, c = image_shape
    feats: dict[str, Any] = {}
    for cam in cameras:
        feats[cam] = {
            "dtype": "video",
            "shape": [h, w, c],
            "names": ["height", "width", "channels"],
            "info": {
                "video.height": h,
                "video.width": w,
                "video.codec": "h264",
                "video.pix_fmt": pix_fmt,
                "video.crf": crf,
                "video.is_depth_map": False,
                "video.fps": fps,
                "video.channels": c,
                "has_audio": False,
            },
        }
    feats["action"] = {"dtype": "float32", "shape": [spec.dim], "names": spec.names if spec.kind == "continuous" else None}
    if state_names:
        feats[STATE] = {"dtype": "float32", "shape": [len(state_names)], "names": list(state_names)}
    feats["next.reward"] = {"dtype": "float32", "shape": [1], "names": None}
    feats["next.done"] = {"dtype": "bool", "shape": [1], "names": None}
    for key, dtype in (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"), ("index", "int64"), ("task_index", "int64")):
        feats[key] = {"dtype": dtype, "shape": [1], "names": None}
    return feats


# ----------------------------------------------------------------------------------------------
# Reader
# ----------------------------------------------------------------------------------------------


class Dataset:
    """Read a worldline (LeRobot v3) dataset directory. Metadata loads eagerly (small); frame rows
    load on first use; video decodes per episode on demand."""

    def __init__(self, path: str | os.PathLike):
        self.root = Path(path)
        if not self.root.is_dir():
            raise WorldlineError(f"dataset directory not found: {self.root}")
        info_path = self.root / "meta" / "info.json"
        if not info_path.is_file():
            raise WorldlineError(f"{self.root} is not a worldline dataset: missing meta/info.json")
        self.info: dict[str, Any] = read_json(info_path)
        version = str(self.info.get("codebase_version", ""))
        if not version.startswith("v3"):
            raise WorldlineError(
                f"{info_path}: codebase_version {version!r} is not v3.0; convert it with `worldline data import {self.root} OUT`"
            )
        for key in ("fps", "total_episodes", "total_frames", "features", "data_path"):
            if key not in self.info:
                raise WorldlineError(f"{info_path}: missing field {key!r}")
        self.cameras: list[str] = [k for k, f in self.info["features"].items() if f.get("dtype") == "video"]
        self._episodes = self._read_episodes()
        self._arrays: dict[str, np.ndarray] | None = None
        self._table: pa.Table | None = None
        self._stats: dict[str, Any] | None = None
        self._tasks: list[str] | None = None

    # -- metadata ------------------------------------------------------------------------------

    @property
    def fps(self) -> float:
        return float(self.info["fps"])

    @property
    def num_episodes(self) -> int:
        return int(self.info["total_episodes"])

    @property
    def num_frames(self) -> int:
        return int(self.info["total_frames"])

    @property
    def env_id(self) -> str | None:
        return self.info.get("worldline", {}).get("env_id")

    @property
    def action_spec(self) -> ActionSpec:
        block = self.info.get("worldline", {}).get("action_space")
        if block is not None:
            return ActionSpec(**block)
        action = self.info["features"].get("action")
        if not action:
            return ActionSpec()
        return ActionSpec(kind="continuous", dim=int(np.prod(action["shape"])), names=action.get("names"))

    @property
    def state_names(self) -> list[str]:
        """Names of the proprioceptive channels (``observation.state``); empty if the dataset has none."""
        return state_names_of(self.info)

    def feature_shape(self, camera: str) -> tuple[int, ...]:
        if camera not in self.info["features"]:
            raise WorldlineError(f"{self.root}: no feature {camera!r} (cameras: {', '.join(self.cameras)})")
        return tuple(int(v) for v in self.info["features"][camera]["shape"])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, 3) of the default camera."""
        return self.feature_shape(self.default_camera)  # type: ignore[return-value]

    @property
    def default_camera(self) -> str:
        if not self.cameras:
            raise WorldlineError(f"{self.root}: the dataset has no video feature")
        return DEFAULT_CAMERA if DEFAULT_CAMERA in self.cameras else self.cameras[0]

    @property
    def episode_lengths(self) -> np.ndarray:
        return self._episodes["length"].copy()

    @property
    def episode_starts(self) -> np.ndarray:
        """Global frame row of each episode's first frame."""
        return self._episodes["dataset_from_index"].copy()

    @property
    def tasks(self) -> list[str]:
        """Task strings by task_index."""
        if self._tasks is None:
            self._tasks = self._read_tasks()
        return self._tasks

    def _read_tasks(self) -> list[str]:
        path = self.root / "meta" / "tasks.parquet"
        if not path.is_file():
            return []
        table = _read_parquet(path)
        names = table.column_names
        task_col = "task" if "task" in names else ("__index_level_0__" if "__index_level_0__" in names else None)
        if task_col is None or "task_index" not in names:
            raise WorldlineError(f"{path}: missing column 'task'")
        order = np.argsort(table.column("task_index").to_numpy())
        tasks = table.column(task_col).to_pylist()
        return [tasks[i] for i in order]

    @property
    def stats(self) -> dict[str, Any]:
        """``meta/stats.json``; recomputed (not written) if it does not match the committed frames,
        which only happens when a writer was killed between writing it and ``info.json``."""
        if self._stats is None:
            path = self.root / "meta" / "stats.json"
            stats = read_json(path) if path.is_file() else None
            count = (stats or {}).get("action", {}).get("count")
            if stats is None or (count is not None and int(np.asarray(count).reshape(-1)[0]) != self.num_frames):
                stats = stats_mod.compute_stats(self)
            self._stats = stats
        return self._stats

    def _read_episodes(self) -> dict[str, np.ndarray]:
        files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            raise WorldlineError(f"{self.root}: missing meta/episodes/chunk-000/file-000.parquet")
        required = REQUIRED_EPISODE_COLUMNS + tuple(c for cam in self.cameras for c in _video_columns(cam))
        tables = []
        for f in files:
            table = _read_parquet(f)
            for col in required:
                if col not in table.column_names:
                    raise WorldlineError(f"{f}: missing column {col!r}")
            keep = list(required) + (["tasks"] if "tasks" in table.column_names else [])
            tables.append(table.select(keep))
        table = pa.concat_tables(tables, promote_options="default")
        cols = {name: table.column(name).to_numpy() for name in required}
        if "tasks" in table.column_names:
            cols["tasks"] = np.array([(t or [""])[0] for t in table.column("tasks").to_pylist()], dtype=object)
        # the last row for an episode index wins; rows at or past total_episodes are uncommitted
        n = self.num_episodes
        keep = np.full(n, -1, np.int64)
        ids = cols["episode_index"].astype(np.int64)
        for row, e in enumerate(ids):
            if 0 <= e < n:
                keep[e] = row
        missing = np.flatnonzero(keep < 0)
        if len(missing):
            raise WorldlineError(f"{self.root}: meta/episodes has no row for episode {missing[0]} (total_episodes {n})")
        out = {name: col[keep] for name, col in cols.items()}
        out["length"] = out["length"].astype(np.int64)
        out["dataset_from_index"] = out["dataset_from_index"].astype(np.int64)
        if int(out["length"].sum()) != self.num_frames:
            raise WorldlineError(
                f"{self.root}: episode lengths sum to {int(out['length'].sum())}, info.json total_frames is {self.num_frames}"
            )
        return out

    # -- files ---------------------------------------------------------------------------------

    def data_file(self, chunk: int, file: int) -> Path:
        return self.root / self.info["data_path"].format(chunk_index=int(chunk), file_index=int(file))

    def video_file(self, camera: str, chunk: int, file: int) -> Path:
        template = self.info.get("video_path") or VIDEO_PATH
        return self.root / template.format(video_key=camera, chunk_index=int(chunk), file_index=int(file))

    def data_files(self) -> list[Path]:
        pairs = zip(self._episodes["data/chunk_index"], self._episodes["data/file_index"])
        return [self.data_file(c, f) for c, f in dict.fromkeys((int(c), int(f)) for c, f in pairs)]

    def video_files(self, camera: str | None = None) -> list[Path]:
        out = []
        for cam in [camera] if camera else self.cameras:
            pairs = zip(self._episodes[f"videos/{cam}/chunk_index"], self._episodes[f"videos/{cam}/file_index"])
            out += [self.video_file(cam, c, f) for c, f in dict.fromkeys((int(c), int(f)) for c, f in pairs)]
        return out

    def episode_video(self, i: int, camera: str | None = None) -> tuple[Path, float, float]:
        """(mp4 path, from_timestamp, to_timestamp) of episode ``i``'s video for ``camera``."""
        self._check_index(i)
        cam = camera or self.default_camera
        if cam not in self.cameras:
            raise WorldlineError(f"{self.root}: no camera {cam!r} (cameras: {', '.join(self.cameras)})")
        e = self._episodes
        path = self.video_file(cam, e[f"videos/{cam}/chunk_index"][i], e[f"videos/{cam}/file_index"][i])
        return path, float(e[f"videos/{cam}/from_timestamp"][i]), float(e[f"videos/{cam}/to_timestamp"][i])

    def episode_meta(self, i: int) -> dict[str, Any]:
        """Episode ``i``'s row of ``meta/episodes`` (length, data/video file indices, timestamps)."""
        self._check_index(i)
        return {k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in self._episodes.items()}

    def episode_data_file(self, i: int) -> Path:
        self._check_index(i)
        return self.data_file(self._episodes["data/chunk_index"][i], self._episodes["data/file_index"][i])

    def _check_index(self, i: int) -> None:
        if not 0 <= i < self.num_episodes:
            raise WorldlineError(f"{self.root}: episode {i} out of range (0..{self.num_episodes - 1})")

    # -- frame rows ----------------------------------------------------------------------------

    def table(self) -> pa.Table:
        """Every committed frame row, sorted by ``index``."""
        if self._table is None:
            tables = []
            for f in self.data_files():
                table = _read_parquet(f)
                for col in REQUIRED_FRAME_COLUMNS + (("action",) if self.action_spec.kind != "none" else ()):
                    if col not in table.column_names:
                        raise WorldlineError(f"{f}: missing column {col!r}")
                tables.append(table)
            table = pa.concat_tables(tables, promote_options="default") if tables else pa.table({})
            index = table.column("index").to_numpy()
            if len(index) and np.any(np.diff(index) < 0):
                table = table.sort_by("index")
                index = table.column("index").to_numpy()
            if len(index) < self.num_frames or (len(index) and not np.array_equal(index[: self.num_frames], np.arange(self.num_frames))):
                raise WorldlineError(
                    f"{self.root}: data files hold {len(index)} frame rows, not the rows 0..{self.num_frames - 1} that meta/episodes describes"
                )
            self._table = table.slice(0, self.num_frames)
        return self._table

    def arrays(self) -> dict[str, np.ndarray]:
        """Frame-row columns as numpy: actions (N, A) f32, rewards (N,) f32, dones (N,) bool,
        episode_index, frame_index, task_index (N,) int64, and states (N, P) f32 where the dataset has
        ``observation.state``. Missing reward/done/task columns (common in LeRobot datasets) read as
        0 / False / 0."""
        if self._arrays is None:
            table = self.table()
            n = table.num_rows
            dim = self.action_spec.dim
            if "action" in table.column_names and dim:
                actions = list_column(table.column("action"), dim, self.root)
            else:
                actions = np.zeros((n, dim), np.float32)
            names = table.column_names
            arrays = {
                "actions": actions,
                "rewards": table.column("next.reward").to_numpy().astype(np.float32) if "next.reward" in names else np.zeros(n, np.float32),
                "dones": table.column("next.done").to_numpy(zero_copy_only=False).astype(bool) if "next.done" in names else np.zeros(n, bool),
                "episode_index": table.column("episode_index").to_numpy().astype(np.int64),
                "frame_index": table.column("frame_index").to_numpy().astype(np.int64),
                "task_index": table.column("task_index").to_numpy().astype(np.int64) if "task_index" in names else np.zeros(n, np.int64),
            }
            if self.state_names:
                if STATE not in names:
                    raise WorldlineError(f"{self.root}: meta/info.json lists {STATE!r}, the data files have no such column")
                arrays["states"] = list_column(table.column(STATE), len(self.state_names), self.root, STATE)
            counts = np.bincount(arrays["episode_index"], minlength=self.num_episodes)[: self.num_episodes]
            bad = np.flatnonzero(counts != self._episodes["length"])
            if len(bad):
                e = int(bad[0])
                raise WorldlineError(f"{self.root}: episode {e} has {counts[e]} frame rows, meta/episodes says {self._episodes['length'][e]}")
            self._arrays = arrays
        return self._arrays

    def episode_frames(self, i: int, camera: str | None = None) -> np.ndarray:
        """(T, H, W, 3) uint8 frames of episode ``i``; the count must match its rows."""
        path, t0, t1 = self.episode_video(i, camera)
        frames = read_video(path, t0, t1)
        length = int(self._episodes["length"][i])
        if len(frames) != length:
            raise WorldlineError(f"episode {i}: {path} holds {len(frames)} frames in [{t0:.3f}, {t1:.3f}) s, the data has {length} rows")
        return frames

    def episode(self, i: int, camera: str | None = None) -> dict[str, Any]:
        """frames (T, H, W, 3) uint8, actions (T, A) f32, rewards (T,), dones (T,), task str, and states
        (T, P) f32 where the dataset has them."""
        self._check_index(i)
        a = self.arrays()
        lo = int(self._episodes["dataset_from_index"][i])
        hi = lo + int(self._episodes["length"][i])
        tasks = self.tasks
        task_index = int(a["task_index"][lo]) if hi > lo else 0
        out = {
            "frames": self.episode_frames(i, camera),
            "actions": a["actions"][lo:hi].copy(),
            "rewards": a["rewards"][lo:hi].copy(),
            "dones": a["dones"][lo:hi].copy(),
            "task": tasks[task_index] if task_index < len(tasks) else "",
        }
        if "states" in a:
            out["states"] = a["states"][lo:hi].copy()
        return out

    def __len__(self) -> int:
        return self.num_episodes

    def __repr__(self) -> str:
        return f"Dataset({str(self.root)!r}, episodes={self.num_episodes}, frames={self.num_frames}, fps={self.fps:g})"


def state_names_of(info: dict) -> list[str]:
    """Channel names of ``observation.state`` in a (worldline or LeRobot) ``meta/info.json``: its
    names (a list, or a dict holding one list, as LeRobot's ``{"motors": [...]}``), ``state_i`` where
    it names none; empty without the feature."""
    feature = info.get("features", {}).get(STATE)
    if not feature:
        return []
    dim = int(np.prod(feature.get("shape", [1])))
    names = feature.get("names")
    if isinstance(names, dict) and len(names) == 1:
        names = next(iter(names.values()))
    if isinstance(names, list) and len(names) == dim and len({str(n) for n in names}) == dim:
        return [str(n) for n in names]
    return [f"state_{i}" for i in range(dim)]


def _read_parquet(path: Path) -> pa.Table:
    if not path.is_file():
        raise WorldlineError(f"missing file: {path}")
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise WorldlineError(f"{path}: unreadable parquet file ({str(e).splitlines()[0][:120]})") from None


def list_column(column: pa.ChunkedArray, dim: int, where: Path, name: str = "action") -> np.ndarray:
    """A list<float> column of fixed width ``dim`` -> (N, dim) float32."""
    array = column.combine_chunks()
    if pa.types.is_fixed_size_list(array.type) or pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        values = array.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    else:
        values = array.to_numpy(zero_copy_only=False).astype(np.float32)
    if values.size != len(array) * dim:
        raise WorldlineError(f"{where}: column {name!r} does not have {dim} values in every row")
    return values.reshape(len(array), dim)  # (N, dim)


# ----------------------------------------------------------------------------------------------
# Writer
# ----------------------------------------------------------------------------------------------


def _check_finite(values: np.ndarray, message) -> None:
    """Raise ``message(frame, column)`` for the first NaN/inf of a (T, C) array."""
    bad = ~np.isfinite(values)
    if bad.any():
        t, col = np.argwhere(bad)[0]
        raise WorldlineError(message(int(t), int(col)))


class DatasetWriter:
    """Write episodes into a dataset directory (see the module docstring for the atomicity rules).

    >>> with DatasetWriter(out, fps=10, image_shape=(64, 64, 3), action_spec=spec) as w:
    ...     w.add_episode(frames, actions, rewards, dones, task="push the T")

    ``state_names`` (one per channel) make the dataset carry proprioception: every episode then
    needs ``states`` (T, P), stored as ``observation.state``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        fps: float,
        image_shape: Sequence[int] = (64, 64, 3),
        action_spec: ActionSpec,
        env_id: str | None = None,
        cameras: Sequence[str] = (DEFAULT_CAMERA,),
        mode: str = "create",
        crf: int = DEFAULT_CRF,
        pix_fmt: str = DEFAULT_PIX_FMT,
        frames_per_file: int = FRAMES_PER_FILE,
        state_names: Sequence[str] = (),
    ):
        if mode not in ("create", "append", "overwrite"):
            raise WorldlineError(f"mode must be create, append or overwrite, got {mode!r}")
        if not (isinstance(fps, (int, float)) and fps > 0 and np.isfinite(fps)):
            raise WorldlineError(f"fps must be a positive number, got {fps!r}")
        image_shape = tuple(int(v) for v in image_shape)
        if len(image_shape) != 3 or image_shape[2] != 3 or min(image_shape) < 1:
            raise WorldlineError(f"image_shape must be (H, W, 3), got {image_shape}")
        if image_shape[0] % 2 or image_shape[1] % 2:
            raise WorldlineError(f"image_shape {image_shape}: H.264 needs an even height and width")
        if not cameras or len(set(cameras)) != len(cameras):
            raise WorldlineError(f"cameras must be distinct names, got {list(cameras)}")
        if isinstance(action_spec, dict):
            action_spec = ActionSpec(**action_spec)
        self.root = Path(path)
        self.fps = float(fps)
        self.image_shape = image_shape
        self.action_spec = action_spec
        self.env_id = env_id
        self.cameras = list(cameras)
        self.state_names = [str(n) for n in state_names]
        if len(set(self.state_names)) != len(self.state_names) or not all(self.state_names):
            raise WorldlineError(f"state_names must be distinct non-empty names, got {self.state_names}")
        self.mode = mode
        self.crf, self.pix_fmt = int(crf), pix_fmt
        self.frames_per_file = int(frames_per_file)
        self._stack = contextlib.ExitStack()
        self._closed = False
        self._created: list[Path] = []  # files renamed into place by this writer (removed on failure in append)

        existing = self.root.is_dir() and any(self.root.iterdir())
        if self.root.exists() and not self.root.is_dir():
            raise WorldlineError(f"{self.root} exists and is not a directory")
        if mode == "create" and existing:
            raise WorldlineError(
                f"{self.root} already exists and is not empty; pass --append to add episodes or --overwrite to replace it"
            )
        self._base: Dataset | None = None
        if mode == "append" and existing:
            self._base = Dataset(self.root)
            self._check_compatible(self._base)
            self._dir = self.root
            self._clean_orphans(self._base)
        else:
            # an empty directory or mode="overwrite": the old one stays until the new one is complete
            self._dir = self._stack.enter_context(atomic_dir(self.root, overwrite=True))

        base = self._base
        self._episode_offset = base.num_episodes if base else 0
        self._frame_offset = base.num_frames if base else 0
        self._tasks: dict[str, int] = {t: i for i, t in enumerate(base.tasks)} if base else {}
        self._episode_rows: list[dict[str, Any]] = []
        self._next_file = self._first_free_file_index() if base else 0
        self._file: dict[str, Any] | None = None
        self._stats = stats_mod.StatsAccumulator(action_spec.dim, self.cameras, len(self.state_names))

    # -- public --------------------------------------------------------------------------------

    @property
    def num_episodes(self) -> int:
        """Episodes in the dataset once this writer closes (existing + added)."""
        return self._episode_offset + len(self._episode_rows)

    def add_episode(
        self,
        frames: np.ndarray | Mapping[str, np.ndarray],
        actions: np.ndarray | None = None,
        rewards: np.ndarray | None = None,
        dones: np.ndarray | None = None,
        task: str = "",
        states: np.ndarray | None = None,
    ) -> int:
        """Validate and write one episode; returns its episode index."""
        if self._closed:
            raise WorldlineError(f"{self.root}: the writer is closed")
        index = self.num_episodes
        videos, actions, rewards, dones = self._validate(index, frames, actions, rewards, dones)
        states = self._validate_states(index, states, len(actions))
        length = len(actions)
        if self._file is not None and self._file["frames"] + length > self.frames_per_file:
            self._finish_file()
        if self._file is None:
            self._open_file()
        f = self._file
        assert f is not None
        start = self._frame_offset + sum(r["length"] for r in self._episode_rows)
        row: dict[str, Any] = {
            "episode_index": index,
            "tasks": [task],
            "length": length,
            "data/chunk_index": f["chunk"],
            "data/file_index": f["index"],
            "dataset_from_index": start,
            "dataset_to_index": start + length,
        }
        for cam in self.cameras:
            f["videos"][cam].write(videos[cam], keyframe=True)
            row[f"videos/{cam}/chunk_index"] = f["chunk"]
            row[f"videos/{cam}/file_index"] = f["index"]
            row[f"videos/{cam}/from_timestamp"] = f["frames"] / self.fps
            row[f"videos/{cam}/to_timestamp"] = (f["frames"] + length) / self.fps
        row["meta/episodes/chunk_index"] = 0
        row["meta/episodes/file_index"] = 0
        task_index = self._tasks.setdefault(task, len(self._tasks))
        frame_index = np.arange(length, dtype=np.int64)
        f["columns"].append(
            {
                "index": start + frame_index,
                "episode_index": np.full(length, index, np.int64),
                "frame_index": frame_index,
                "timestamp": (frame_index / self.fps).astype(np.float32),
                "action": actions,
                "next.reward": rewards,
                "next.done": dones,
                "task_index": np.full(length, task_index, np.int64),
                **({"state": states} if states is not None else {}),
            }
        )
        f["frames"] += length
        self._episode_rows.append(row)
        self._stats.add_episode(videos, actions, rewards, dones, states)
        return index

    def close(self) -> Path:
        """Finish the open file, write the meta files (``info.json`` last) and commit."""
        if self._closed:
            return self.root
        try:
            if not self._episode_rows:
                if self._base is None:
                    raise WorldlineError(f"no episodes were added; nothing written to {self.root}")
            else:
                if self._file is not None:
                    self._finish_file()
                self._write_meta()
        except BaseException as e:
            self.abort(e)
            raise
        self._closed = True
        self._stack.close()
        return self.root

    def abort(self, exc: BaseException | None = None) -> None:
        """Drop everything this writer wrote; the previous dataset (if any) stays as it was."""
        if self._closed:
            return
        self._closed = True
        if self._file is not None:
            for writer in self._file["videos"].values():
                writer.abort()
            for tmp in self._file["tmp"].values():
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            self._file = None
        if self._base is not None:
            for p in self._created:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
        exc = exc or RuntimeError("aborted")
        with contextlib.suppress(BaseException):
            self._stack.__exit__(type(exc), exc, exc.__traceback__)

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.close()
        else:
            self.abort(exc)

    # -- validation ----------------------------------------------------------------------------

    def _validate(self, index, frames, actions, rewards, dones):
        where = f"episode {index}"
        if not isinstance(frames, Mapping):
            if len(self.cameras) != 1:
                raise WorldlineError(f"{where}: pass frames as a dict camera -> array for cameras {self.cameras}")
            frames = {self.cameras[0]: frames}
        if set(frames) != set(self.cameras):
            raise WorldlineError(f"{where}: frames for cameras {sorted(frames)}, the dataset has {self.cameras}")
        videos = {}
        length = None
        for cam in self.cameras:
            v = frames[cam]
            if not isinstance(v, np.ndarray):
                v = np.asarray(v)
            if v.dtype != np.uint8:
                raise WorldlineError(f"{where}: frames of {cam!r} have dtype {v.dtype}, expected uint8")
            if v.ndim != 4 or tuple(v.shape[1:]) != self.image_shape:
                raise WorldlineError(
                    f"{where}: frames of {cam!r} have shape {tuple(v.shape)}, expected (T, {', '.join(map(str, self.image_shape))})"
                )
            if length is not None and len(v) != length:
                raise WorldlineError(f"{where}: camera {cam!r} has {len(v)} frames, another camera has {length}")
            length = len(v)
            videos[cam] = v
        if not length:
            raise WorldlineError(f"{where}: an episode needs at least one frame")
        spec = self.action_spec
        if actions is None:
            if spec.kind != "none":
                raise WorldlineError(f"{where}: actions are required for a {spec.kind} action space")
            actions = np.zeros((length, 0), np.float32)
        actions = np.asarray(actions)
        if actions.ndim == 1 and spec.dim == 1:
            actions = actions[:, None]  # (T,) -> (T, 1)
        if actions.ndim != 2 or actions.shape[1] != spec.dim:
            raise WorldlineError(f"{where}: actions have shape {tuple(actions.shape)}, expected (T, {spec.dim}) for a {spec.kind} action space")
        if len(actions) != length:
            raise WorldlineError(f"{where}: {len(actions)} actions for {length} frames")
        if not np.issubdtype(actions.dtype, np.number) and actions.dtype != bool:
            raise WorldlineError(f"{where}: actions have dtype {actions.dtype}, expected numbers")
        actions = actions.astype(np.float32)
        _check_finite(actions, lambda t, col: f"{where} frame {t}: action column {col} is {actions[t, col]} (NaN/inf not allowed)")
        if spec.kind == "discrete":
            bad = (actions < 0) | (actions >= spec.n) | (actions != np.round(actions))
            if bad.any():
                t = np.argwhere(bad)[0][0]
                raise WorldlineError(f"{where} frame {t}: discrete action {actions[t, 0]} is not an index in 0..{spec.n - 1}")
        if rewards is None:
            rewards = np.zeros(length, np.float32)
        rewards = np.asarray(rewards, dtype=np.float32)
        if rewards.shape not in ((length,), (length, 1)):
            raise WorldlineError(f"{where}: rewards have shape {tuple(np.shape(rewards))}, expected ({length},)")
        rewards = rewards.reshape(length)
        bad = ~np.isfinite(rewards)
        if bad.any():
            t = int(np.flatnonzero(bad)[0])
            raise WorldlineError(f"{where} frame {t}: reward is {rewards[t]} (NaN/inf not allowed)")
        if dones is None:
            dones = np.zeros(length, bool)
            dones[-1] = True
        dones = np.asarray(dones)
        if dones.shape not in ((length,), (length, 1)):
            raise WorldlineError(f"{where}: dones have shape {tuple(dones.shape)}, expected ({length},)")
        return videos, actions, rewards, dones.reshape(length).astype(bool)

    def _validate_states(self, index: int, states, length: int) -> np.ndarray | None:
        where = f"episode {index}"
        P = len(self.state_names)
        if not P:
            if states is not None:
                raise WorldlineError(f"{where}: states given, but the dataset was opened without state_names")
            return None
        if states is None:
            raise WorldlineError(f"{where}: states (T, {P}) are required: the dataset has {STATE} {self.state_names}")
        states = np.asarray(states)
        if states.shape != (length, P) or not np.issubdtype(states.dtype, np.number):
            raise WorldlineError(f"{where}: states have shape {tuple(states.shape)} {states.dtype}, expected ({length}, {P}) numbers")
        states = states.astype(np.float32)
        _check_finite(states, lambda t, col: f"{where} frame {t}: state {self.state_names[col]!r} is {states[t, col]} (NaN/inf not allowed)")
        return states

    def _check_compatible(self, base: Dataset) -> None:
        def mismatch(field, have, want):
            raise WorldlineError(f"cannot append to {self.root}: {field} is {have} there, the new episodes have {want}")

        if abs(base.fps - self.fps) > 1e-6:
            mismatch("fps", base.fps, self.fps)
        if base.cameras != self.cameras:
            mismatch("cameras", base.cameras, self.cameras)
        for cam in self.cameras:
            if base.feature_shape(cam) != self.image_shape:
                mismatch(f"{cam} shape", base.feature_shape(cam), self.image_shape)
        have, want = base.action_spec, self.action_spec
        if (have.kind, have.dim, have.n) != (want.kind, want.dim, want.n):
            mismatch("the action space", f"{have.kind} dim {have.dim} n {have.n}", f"{want.kind} dim {want.dim} n {want.n}")
        if base.state_names != self.state_names:
            mismatch(STATE, base.state_names or "absent", self.state_names or "absent")
        if base.env_id and self.env_id and base.env_id != self.env_id:
            mismatch("env_id", base.env_id, self.env_id)
        self.env_id = self.env_id or base.env_id
        low, high = want.low if want.low is not None else have.low, want.high if want.high is not None else have.high
        if have.low is not None and want.low is not None:  # the union of both boxes covers every episode
            low = np.minimum(have.low, want.low).tolist()
        if have.high is not None and want.high is not None:
            high = np.maximum(have.high, want.high).tolist()
        self.action_spec = dataclasses.replace(want, low=low, high=high, names=have.names or want.names)

    # -- files ---------------------------------------------------------------------------------

    def _first_free_file_index(self) -> int:
        """One past every file index used on disk, so new files never overwrite an existing one."""
        highest = -1
        for sub in ["data", *(f"videos/{cam}" for cam in self.cameras)]:
            for p in (self._dir / sub).glob("chunk-*/file-*"):
                m = _OWN_FILE.match(p.name)
                if m:
                    chunk = int(p.parent.name.split("-")[-1])
                    highest = max(highest, chunk * CHUNKS_SIZE + int(m.group(1)))
        return highest + 1

    def _clean_orphans(self, base: Dataset) -> None:
        """Remove data/video files and temporaries that no committed episode references (left by a
        writer that was killed before its commit)."""
        referenced = {p.resolve() for p in base.data_files()}
        for cam in base.cameras:
            referenced |= {p.resolve() for p in base.video_files(cam)}
        for sub in ["data", *(f"videos/{cam}" for cam in base.cameras)]:
            for p in (self.root / sub).glob("chunk-*/*"):
                orphan_file = _OWN_FILE.match(p.name) and p.resolve() not in referenced
                temporary = p.name.startswith(".file-") and ".tmp" in p.name
                if p.is_file() and (orphan_file or temporary):
                    p.unlink()
        for p in (self.root / "meta").rglob(".*.tmp*"):
            if p.is_file():
                p.unlink()

    def _open_file(self) -> None:
        counter = self._next_file
        self._next_file += 1
        chunk, index = divmod(counter, CHUNKS_SIZE)
        h, w, _ = self.image_shape
        f: dict[str, Any] = {"chunk": chunk, "index": index, "frames": 0, "columns": [], "videos": {}, "tmp": {}, "final": {}}
        for cam in self.cameras:
            final = self._dir / VIDEO_PATH.format(video_key=cam, chunk_index=chunk, file_index=index)
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = final.with_name(f".{final.stem}.tmp{os.getpid()}.mp4")
            f["tmp"][cam], f["final"][cam] = tmp, final
            f["videos"][cam] = VideoWriter(tmp, self.fps, h, w, self.crf, self.pix_fmt)
        self._file = f

    def _finish_file(self) -> None:
        f = self._file
        assert f is not None
        for cam in self.cameras:
            f["videos"][cam].close()
            os.replace(f["tmp"][cam], f["final"][cam])
            self._created.append(f["final"][cam])
        cols = f["columns"]
        cat = {k: np.concatenate([c[k] for c in cols]) for k in cols[0]}
        def list_col(values: np.ndarray) -> pa.ListArray:  # (N, dim) -> list<float32>
            offsets = np.arange(len(values) + 1, dtype=np.int32) * values.shape[1]
            return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values.reshape(-1), pa.float32()))

        columns = {
            "index": pa.array(cat["index"], pa.int64()),
            "episode_index": pa.array(cat["episode_index"], pa.int64()),
            "frame_index": pa.array(cat["frame_index"], pa.int64()),
            "timestamp": pa.array(cat["timestamp"], pa.float32()),
            "action": list_col(cat["action"].reshape(len(cat["index"]), self.action_spec.dim)),
            "next.reward": pa.array(cat["next.reward"], pa.float32()),
            "next.done": pa.array(cat["next.done"], pa.bool_()),
            "task_index": pa.array(cat["task_index"], pa.int64()),
        }
        if "state" in cat:
            columns[STATE] = list_col(cat["state"])
        table = pa.table(columns)
        final = self._dir / DATA_PATH.format(chunk_index=f["chunk"], file_index=f["index"])
        with atomic_path(final) as tmp:
            pq.write_table(table, tmp)
        self._created.append(final)
        self._file = None

    def _write_meta(self) -> None:
        meta = self._dir / "meta"
        base = self._base
        rows = self._episode_rows
        if base is not None:
            old = _read_parquet(self.root / EPISODES_FILE).to_pylist() if (self.root / EPISODES_FILE).is_file() else []
            old = [r for r in old if int(r["episode_index"]) < base.num_episodes]
            rows = old + rows
        episodes = pa.Table.from_pylist(rows)
        with atomic_path(self._dir / EPISODES_FILE) as tmp:
            pq.write_table(episodes, tmp)
        tasks = sorted(self._tasks.items(), key=lambda kv: kv[1])
        with atomic_path(meta / "tasks.parquet") as tmp:
            pq.write_table(pa.table({"task_index": pa.array([i for _, i in tasks], pa.int64()), "task": [t for t, _ in tasks]}), tmp)
        new_stats = self._stats.to_dict()
        if base is not None:
            new_stats = stats_mod.merge_stats(base.stats, new_stats)
        write_json(meta / "stats.json", new_stats)
        total_frames = self._frame_offset + sum(r["length"] for r in self._episode_rows)
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": None,
            "fps": self.fps if self.fps != int(self.fps) else int(self.fps),
            "total_episodes": self.num_episodes,
            "total_frames": total_frames,
            "total_tasks": len(self._tasks),
            "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 500,
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH,
            "splits": {"train": f"0:{self.num_episodes}"},
            "features": _features(self.fps, self.image_shape, self.cameras, self.action_spec, self.crf, self.pix_fmt, self.state_names),
            "worldline": {
                "env_id": self.env_id,
                "action_space": dataclasses.asdict(self.action_spec),
                "created_by": f"worldline {__version__}",
                "frames_per_file": self.frames_per_file,
            },
        }
        write_json(meta / "info.json", info)


def summary(path: str | os.PathLike):
    """A rich renderable describing the dataset at ``path`` (for ``worldline data info``)."""
    return stats_mod.summary(path)
