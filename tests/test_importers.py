"""Importers: folder of videos, LeRobot v2.1 and v3, npz and HDF5; all through DatasetWriter."""

from __future__ import annotations

import io
import json

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _data_helpers import make_frames, psnr, write_dataset
from PIL import Image

from worldline.core.errors import WorldlineError
from worldline.data import video
from worldline.data.format import Dataset
from worldline.data.format import summary as format_summary
from worldline.data.importers import import_any, import_arrays, import_lerobot, import_video_folder
from worldline.data.stats import summary, summary_text


def _wide_video(length: int, seed: int) -> np.ndarray:
    """(T, 48, 96, 3): a 48x48 picture in the middle, magenta bars left and right (cropped away)."""
    frames = np.zeros((length, 48, 96, 3), np.uint8)
    frames[:] = (255, 0, 255)
    frames[:, :, 24:72] = make_frames(length, seed, size=48)
    return frames


def test_import_video_folder(tmp_path):
    src = tmp_path / "videos"
    src.mkdir()
    clips = {"clip_2.mp4": _wide_video(12, 1), "clip_10.mp4": _wide_video(8, 2)}
    for name, frames in clips.items():
        video.write_video(src / name, frames, fps=20, pix_fmt="yuv420p")
    (src / "notes.txt").write_text("not a video")
    out = import_any(src, tmp_path / "ds", resolution=24, progress=False)
    ds = Dataset(out)
    assert ds.num_episodes == 2 and ds.fps == 20 and ds.image_shape == (24, 24, 3)
    assert ds.action_spec.kind == "none"
    assert ds.episode_lengths.tolist() == [12, 8]  # natural order: clip_2 before clip_10
    ep = ds.episode(0)
    assert ep["task"] == "clip_2" and ep["actions"].shape == (12, 0)
    ref = clips["clip_2.mp4"][:, :, 24:72].reshape(12, 24, 2, 24, 2, 3).mean((2, 4))  # crop + area resize
    assert psnr(ep["frames"], ref.round().astype(np.uint8)) > 25  # yuv420p source, then our codec
    magenta = (ep["frames"][..., 0] > 200) & (ep["frames"][..., 1] < 60) & (ep["frames"][..., 2] > 200)
    assert magenta.mean() < 0.02  # the side bars were cropped, not squashed in

    half = import_video_folder(src, tmp_path / "ds10", resolution=24, fps=10, progress=False)
    assert Dataset(half).fps == 10 and Dataset(half).episode_lengths.tolist() == [6, 4]


def test_corrupt_video_in_folder_is_one_line_error_and_writes_nothing(tmp_path):
    src = tmp_path / "videos"
    src.mkdir()
    video.write_video(src / "a.mp4", make_frames(5, 0), fps=10)
    (src / "b.mp4").write_bytes((src / "a.mp4").read_bytes()[:300])
    with pytest.raises(WorldlineError) as e:
        import_video_folder(src, tmp_path / "ds", resolution=32, progress=False)
    assert "b.mp4" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "ds").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["videos"]  # no staging directory left
    (tmp_path / "empty").mkdir()
    with pytest.raises(WorldlineError, match="no video files"):
        import_video_folder(tmp_path / "empty", tmp_path / "x", progress=False)


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _lerobot_v21(root, lengths, fps=15):
    """A hand-built LeRobot v2.1 dataset: one parquet + one mp4 per episode, a video camera
    ``observation.images.top`` and an image camera ``observation.images.wrist`` (PNG in parquet)."""
    rng = np.random.default_rng(0)
    (root / "meta").mkdir(parents=True)
    info = {
        "codebase_version": "v2.1",
        "robot_type": "so100",
        "total_episodes": len(lengths),
        "total_frames": sum(lengths),
        "total_tasks": 1,
        "total_videos": len(lengths),
        "total_chunks": 1,
        "chunks_size": 1000,
        "fps": fps,
        "splits": {"train": f"0:{len(lengths)}"},
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
        "features": {
            "action": {"dtype": "float32", "shape": [3], "names": {"motors": ["x", "y", "grip"]}},
            "observation.state": {"dtype": "float32", "shape": [3], "names": None},
            "observation.images.top": {"dtype": "video", "shape": [32, 32, 3], "names": ["height", "width", "channel"]},
            "observation.images.wrist": {"dtype": "image", "shape": [16, 16, 3], "names": ["height", "width", "channel"]},
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
            "frame_index": {"dtype": "int64", "shape": [1], "names": None},
            "episode_index": {"dtype": "int64", "shape": [1], "names": None},
            "index": {"dtype": "int64", "shape": [1], "names": None},
            "task_index": {"dtype": "int64", "shape": [1], "names": None},
        },
    }
    (root / "meta" / "info.json").write_text(json.dumps(info))
    (root / "meta" / "tasks.jsonl").write_text(json.dumps({"task_index": 0, "task": "pick the cube"}) + "\n")
    lines, episodes, start = [], [], 0
    for e, n in enumerate(lengths):
        lines.append(json.dumps({"episode_index": e, "tasks": ["pick the cube"], "length": n}))
        frames = make_frames(n, e)
        wrist = make_frames(n, 10 + e, size=16)
        actions = rng.uniform(-1, 1, (n, 3)).astype(np.float32)
        states = rng.standard_normal((n, 3)).astype(np.float32)
        table = pa.table(
            {
                "action": pa.FixedSizeListArray.from_arrays(pa.array(actions.reshape(-1)), 3),
                "observation.state": pa.FixedSizeListArray.from_arrays(pa.array(states.reshape(-1)), 3),
                "observation.images.wrist": [{"bytes": _png(w), "path": None} for w in wrist],
                "timestamp": pa.array(np.arange(n, dtype=np.float32) / fps),
                "frame_index": pa.array(np.arange(n)),
                "episode_index": pa.array(np.full(n, e)),
                "index": pa.array(start + np.arange(n)),
                "task_index": pa.array(np.zeros(n, np.int64)),
            }
        )
        (root / "data" / "chunk-000").mkdir(parents=True, exist_ok=True)
        pq.write_table(table, root / "data" / "chunk-000" / f"episode_{e:06d}.parquet")
        video.write_video(root / "videos" / "chunk-000" / "observation.images.top" / f"episode_{e:06d}.mp4", frames, fps, pix_fmt="yuv420p")
        episodes.append({"frames": frames, "wrist": wrist, "actions": actions, "states": states})
        start += n
    (root / "meta" / "episodes.jsonl").write_text("\n".join(lines) + "\n")
    return episodes


def test_import_lerobot_v21(tmp_path):
    src = tmp_path / "lerobot"
    episodes = _lerobot_v21(src, [9, 6])
    out = import_any(src, tmp_path / "ds", fps=None, resolution=None, progress=False)  # as the CLI calls it
    ds = Dataset(out)
    assert ds.num_episodes == 2 and ds.fps == 15 and ds.cameras == ["observation.image"]
    spec = ds.action_spec
    assert spec.kind == "continuous" and spec.dim == 3 and spec.names == ["x", "y", "grip"]
    assert ds.state_names == ["state_0", "state_1", "state_2"]  # the source names none
    all_actions = np.concatenate([e["actions"] for e in episodes])
    np.testing.assert_allclose(spec.low, all_actions.min(0), rtol=1e-6)
    for i, ep in enumerate(episodes):
        got = ds.episode(i)
        np.testing.assert_array_equal(got["actions"], ep["actions"])
        np.testing.assert_array_equal(got["states"], ep["states"])  # proprioception comes along
        assert got["task"] == "pick the cube"
        assert psnr(got["frames"], ep["frames"]) > 28  # yuv420p source

    wrist = import_any(src, tmp_path / "wrist", camera="observation.images.wrist", progress=False)
    got = Dataset(wrist).episode(1)["frames"]
    assert got.shape == (6, 16, 16, 3) and psnr(got, episodes[1]["wrist"]) > 35
    with pytest.raises(WorldlineError, match="no camera 'nope'"):
        import_lerobot(src, tmp_path / "x", camera="nope", progress=False)


def test_import_lerobot_v3_roundtrip(tmp_path):
    eps = write_dataset(tmp_path / "v3", [7, 11, 5], frames_per_file=15)
    out = import_lerobot(tmp_path / "v3", tmp_path / "copy", resolution=16, progress=False)
    ds = Dataset(out)
    assert ds.episode_lengths.tolist() == [7, 11, 5] and ds.image_shape == (16, 16, 3)
    for i, ep in enumerate(eps):
        got = ds.episode(i)
        np.testing.assert_array_equal(got["actions"], ep["actions"])
        np.testing.assert_array_equal(got["rewards"], ep["rewards"])
        np.testing.assert_array_equal(got["dones"], ep["dones"])
        assert got["task"] == f"task {i % 2}"
        ref = ep["frames"].reshape(-1, 16, 2, 16, 2, 3).mean((2, 4)).round().astype(np.uint8)
        assert psnr(got["frames"], ref) > 33


def test_import_npz_flat_and_padded(tmp_path):
    frames = np.concatenate([make_frames(6, 0), make_frames(4, 1)])
    actions = np.arange(10) % 3
    np.savez(tmp_path / "flat.npz", frames=frames, actions=actions, episode_lengths=np.array([6, 4]), env_id="Toy-v0")
    ds = Dataset(import_any(tmp_path / "flat.npz", tmp_path / "a", fps=5, progress=False))
    assert ds.episode_lengths.tolist() == [6, 4] and ds.fps == 5 and ds.env_id == "Toy-v0"
    assert ds.action_spec.kind == "discrete" and ds.action_spec.n == 3
    assert ds.episode(1)["actions"][:, 0].tolist() == [0, 1, 2, 0]

    padded = np.stack([make_frames(8, 0), make_frames(8, 1)])
    acts = np.random.default_rng(0).uniform(-2, 2, (2, 8, 2)).astype(np.float32)
    np.savez(tmp_path / "pad.npz", frames=padded, actions=acts, rewards=np.ones((2, 8)), lengths=np.array([8, 5]))
    ds = Dataset(import_arrays(tmp_path / "pad.npz", tmp_path / "b", progress=False))
    assert ds.episode_lengths.tolist() == [8, 5] and ds.action_spec.kind == "continuous"
    np.testing.assert_array_equal(ds.episode(1)["actions"], acts[1, :5])
    assert ds.episode(0)["rewards"].tolist() == [1.0] * 8

    np.savez(tmp_path / "bad.npz", frames=padded, actions=acts[:, :5])
    with pytest.raises(WorldlineError, match=r"'actions' has shape \(2, 5, 2\), expected \(2, 8"):
        import_arrays(tmp_path / "bad.npz", tmp_path / "c", progress=False)
    bad_acts = acts.copy()
    bad_acts[1, 3, 0] = np.nan
    np.savez(tmp_path / "nan.npz", frames=padded, actions=bad_acts)
    with pytest.raises(WorldlineError, match="episode 1 frame 3: action column 0 is nan"):
        import_arrays(tmp_path / "nan.npz", tmp_path / "d", progress=False)
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()


def test_import_hdf5_layouts(tmp_path):
    with h5py.File(tmp_path / "groups.h5", "w") as f:
        f.attrs["env_id"] = "Grid-v0"
        f.attrs["num_actions"] = 5
        for i, n in [(10, 4), (2, 6)]:  # natural order puts ep_2 first
            g = f.create_group(f"ep_{i}")
            g["frames"] = make_frames(n, i)
            g["actions"] = np.full(n, i % 5, np.int64)
            g["dones"] = np.arange(n) == n - 1
    ds = Dataset(import_any(tmp_path / "groups.h5", tmp_path / "g", fps=None, resolution=None, progress=False))
    assert ds.episode_lengths.tolist() == [6, 4] and ds.env_id == "Grid-v0" and ds.fps == 10
    assert ds.action_spec.n == 5 and ds.episode(1)["actions"][:, 0].tolist() == [0, 0, 0, 0]
    assert psnr(ds.episode(0)["frames"], make_frames(6, 2)) > 35

    with h5py.File(tmp_path / "batch.hdf5", "w") as f:
        f["images"] = np.stack([make_frames(5, 0), make_frames(5, 1)])
        f["actions"] = np.zeros((2, 5, 4), np.float32)
    ds = Dataset(import_arrays(tmp_path / "batch.hdf5", tmp_path / "h", resolution=16, progress=False))
    assert ds.image_shape == (16, 16, 3) and ds.action_spec.dim == 4 and ds.num_frames == 10

    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(WorldlineError, match="junk.h5: unreadable HDF5 file"):
        import_arrays(tmp_path / "junk.h5", tmp_path / "j", progress=False)


def test_import_any_rejects_unknown_and_summary(tmp_path):
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(WorldlineError, match="cannot import"):
        import_any(tmp_path / "x.csv", tmp_path / "o")
    write_dataset(tmp_path / "ds", [5, 6, 7])
    text = summary_text(tmp_path / "ds")
    assert isinstance(format_summary(tmp_path / "ds"), type(summary(tmp_path / "ds")))
    for needle in ("episodes", "3", "fps", "10", "observation.image 32x32x3", "continuous, dim 2", "2 train / 1 val", "size on disk"):
        assert needle in text
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(summary(tmp_path / "ds"))
    assert "continuous, dim 2" in console.export_text()
