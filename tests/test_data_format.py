"""Dataset format: write/read round trip, append/overwrite/create rules, bad input, crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow.parquet as pq
import pytest
from _data_helpers import SPEC, make_episode, make_frames, psnr, write_dataset

from worldline.core.contracts import ActionSpec
from worldline.core.errors import WorldlineError
from worldline.data import video
from worldline.data.format import Dataset, DatasetWriter


# ----------------------------------------------------------------------------------------------
# video
# ----------------------------------------------------------------------------------------------


def test_video_roundtrip_and_time_range(tmp_path):
    frames = make_frames(20, seed=3, size=64)
    path = video.write_video(tmp_path / "a.mp4", frames, fps=10)
    full = video.read_video(path)
    assert full.shape == frames.shape and full.dtype == np.uint8
    assert psnr(full, frames) > 40  # the codec itself must cost less than 40 dB at 64x64
    part = video.read_video(path, 0.5, 1.2)  # frames 5..11
    assert len(part) == 7
    assert psnr(part, frames[5:12]) > 40
    assert video.video_info(path)["fps"] == pytest.approx(10)


def test_video_seek_lands_on_episode_boundaries(tmp_path):
    a, b = make_frames(13, seed=1), make_frames(9, seed=2)
    w = video.VideoWriter(tmp_path / "two.mp4", fps=15, height=32, width=32)
    w.write(a)
    w.write(b)
    w.close()
    got_b = video.read_video(tmp_path / "two.mp4", 13 / 15, 22 / 15)
    got_a = video.read_video(tmp_path / "two.mp4", 0, 13 / 15)
    assert len(got_a) == 13 and len(got_b) == 9
    assert psnr(got_b, b) > 35 and psnr(got_a, a) > 35


def test_corrupt_truncated_and_streamless_videos_give_one_line_errors(tmp_path):
    good = video.write_video(tmp_path / "good.mp4", make_frames(10, 0), fps=10)
    data = good.read_bytes()
    (tmp_path / "trunc.mp4").write_bytes(data[: len(data) // 3])
    (tmp_path / "junk.mp4").write_bytes(os.urandom(2000))
    import av

    with av.open(str(tmp_path / "audio.mp4"), "w") as c:  # a valid mp4 with no video stream
        s = c.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    for name in ("trunc.mp4", "junk.mp4", "audio.mp4", "missing.mp4"):
        with pytest.raises(WorldlineError) as e:
            video.read_video(tmp_path / name)
        assert name in str(e.value) and "\n" not in str(e.value)


# ----------------------------------------------------------------------------------------------
# round trip
# ----------------------------------------------------------------------------------------------


def test_write_read_roundtrip(tmp_path):
    out = tmp_path / "ds"
    eps = write_dataset(out, [12, 7, 20], frames_per_file=25)  # forces two data/video files
    ds = Dataset(out)
    assert ds.num_episodes == 3 and ds.num_frames == 39 and ds.fps == 10
    assert ds.cameras == ["observation.image"] and ds.image_shape == (32, 32, 3)
    assert ds.episode_lengths.tolist() == [12, 7, 20]
    assert ds.action_spec == SPEC
    assert ds.tasks == ["task 0", "task 1"]
    assert len(ds.data_files()) == 2 and len(ds.video_files()) == 2
    for i, ep in enumerate(eps):
        got = ds.episode(i)
        assert got["frames"].shape == ep["frames"].shape and got["frames"].dtype == np.uint8
        assert psnr(got["frames"], ep["frames"]) > 35
        np.testing.assert_array_equal(got["actions"], ep["actions"])  # actions exact
        np.testing.assert_array_equal(got["rewards"], ep["rewards"])
        np.testing.assert_array_equal(got["dones"], ep["dones"])
        assert got["task"] == f"task {i % 2}"
    table = ds.table()
    assert table.column("index").to_pylist() == list(range(39))
    assert table.column("frame_index").to_pylist()[12:19] == list(range(7))

    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_tasks"] == 2
    assert info["worldline"]["action_space"]["kind"] == "continuous"
    episodes = pq.read_table(out / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    for col in ("dataset_from_index", "videos/observation.image/from_timestamp", "data/file_index"):
        assert col in episodes.column_names
    assert episodes.column("dataset_from_index").to_pylist() == [0, 12, 19]

    stats = ds.stats
    all_actions = np.concatenate([e["actions"] for e in eps])
    np.testing.assert_allclose(stats["action"]["mean"], all_actions.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["action"]["std"], all_actions.std(0), rtol=1e-4)
    np.testing.assert_allclose(stats["action"]["min"], all_actions.min(0))
    assert stats["action"]["count"] == 39
    img = np.asarray(stats["observation.image"]["mean"])
    assert img.shape == (3, 1, 1) and np.all((img > 0) & (img < 1))


def test_discrete_and_video_only_action_spaces(tmp_path):
    spec = ActionSpec(kind="discrete", dim=1, n=4)
    with DatasetWriter(tmp_path / "d", fps=5, image_shape=(16, 16, 3), action_spec=spec, env_id="Grid-v0") as w:
        w.add_episode(make_frames(6, 0, 16), np.array([0, 1, 2, 3, 3, 1]))
    ds = Dataset(tmp_path / "d")
    assert ds.episode(0)["actions"][:, 0].tolist() == [0, 1, 2, 3, 3, 1]
    assert ds.action_spec.n == 4 and ds.env_id == "Grid-v0"
    with DatasetWriter(tmp_path / "v", fps=5, image_shape=(16, 16, 3), action_spec=ActionSpec()) as w:
        w.add_episode(make_frames(4, 0, 16))
    ep = Dataset(tmp_path / "v").episode(0)
    assert ep["actions"].shape == (4, 0) and ep["dones"].tolist() == [False, False, False, True]


def test_multiple_cameras(tmp_path):
    cams = ("observation.image", "observation.images.wrist")
    with DatasetWriter(tmp_path / "m", fps=10, image_shape=(16, 16, 3), action_spec=SPEC, cameras=cams) as w:
        w.add_episode({cams[0]: make_frames(5, 0, 16), cams[1]: make_frames(5, 9, 16)}, np.zeros((5, 2)))
    ds = Dataset(tmp_path / "m")
    assert ds.cameras == list(cams)
    assert psnr(ds.episode_frames(0, cams[1]), make_frames(5, 9, 16)) > 35


def test_proprioception_roundtrip_stats_windows_and_bad_input(tmp_path):
    from worldline.data.cache import frame_store
    from worldline.data.windows import WindowSampler

    names = ("joint_a", "joint_b", "joint_c")
    rng = np.random.default_rng(0)
    states = [(rng.standard_normal((n, 3)) * [1, 10, 100]).astype(np.float32) for n in (6, 5)]
    with DatasetWriter(tmp_path / "p", fps=10, image_shape=(16, 16, 3), action_spec=SPEC, state_names=names) as w:
        for i, s in enumerate(states):
            w.add_episode(**make_episode(len(s), i, 16), states=s)
    ds = Dataset(tmp_path / "p")
    assert ds.state_names == list(names) and ds.info["features"]["observation.state"]["shape"] == [3]
    from worldline.data.stats import summary_text

    info = summary_text(tmp_path / "p")
    assert "observation.state: joint_a, joint_b, joint_c" in info and "stats observation.state" in info
    np.testing.assert_array_equal(ds.arrays()["states"], np.concatenate(states))
    np.testing.assert_array_equal(ds.episode(1)["states"], states[1])
    both = np.concatenate(states)
    np.testing.assert_allclose(ds.stats["observation.state"]["mean"], both.mean(0), rtol=1e-5)
    np.testing.assert_allclose(ds.stats["observation.state"]["std"], both.std(0), rtol=1e-4)
    # the training windows carry the states row for row with the frames
    store = frame_store(ds, progress=False)
    batch = WindowSampler(store, 3, [0, 1]).batch(np.array([0, 4]))
    assert batch["states"].shape == (2, 3, 3)
    np.testing.assert_array_equal(batch["states"][1].numpy(), states[1][:3])  # episode 0 (6 frames) has 4 starts: window 4 is episode 1's first

    with pytest.raises(WorldlineError, match="episode 2: states .* are required"):
        with DatasetWriter(tmp_path / "p", fps=10, image_shape=(16, 16, 3), action_spec=SPEC, state_names=names, mode="append") as w:
            w.add_episode(**make_episode(4, 0, 16))
    with pytest.raises(WorldlineError, match=r"states have shape \(4, 2\)"):
        with DatasetWriter(tmp_path / "p", fps=10, image_shape=(16, 16, 3), action_spec=SPEC, state_names=names, mode="append") as w:
            w.add_episode(**make_episode(4, 0, 16), states=np.zeros((4, 2)))
    bad = np.zeros((4, 3))
    bad[2, 1] = np.nan
    with pytest.raises(WorldlineError, match="episode 2 frame 2: state 'joint_b' is nan"):
        with DatasetWriter(tmp_path / "p", fps=10, image_shape=(16, 16, 3), action_spec=SPEC, state_names=names, mode="append") as w:
            w.add_episode(**make_episode(4, 0, 16), states=bad)
    with pytest.raises(WorldlineError, match="cannot append.*observation.state"):
        DatasetWriter(tmp_path / "p", fps=10, image_shape=(16, 16, 3), action_spec=SPEC, mode="append")
    assert Dataset(tmp_path / "p").num_episodes == 2  # nothing half-written
    with pytest.raises(WorldlineError, match="opened without state_names"):
        with DatasetWriter(tmp_path / "q", fps=10, image_shape=(16, 16, 3), action_spec=SPEC) as w:
            w.add_episode(**make_episode(4, 0, 16), states=np.zeros((4, 3)))
    assert not (tmp_path / "q").exists()


# ----------------------------------------------------------------------------------------------
# modes
# ----------------------------------------------------------------------------------------------


def test_create_refuses_existing_dataset(tmp_path):
    write_dataset(tmp_path / "ds", [5])
    with pytest.raises(WorldlineError, match="--append.*--overwrite"):
        DatasetWriter(tmp_path / "ds", fps=10, image_shape=(32, 32, 3), action_spec=SPEC)
    (tmp_path / "empty").mkdir()
    write_dataset(tmp_path / "empty", [3])  # an empty directory is fine
    assert Dataset(tmp_path / "empty").num_episodes == 1


def test_append_adds_new_files_and_keeps_old_ones(tmp_path):
    out = tmp_path / "ds"
    first = write_dataset(out, [6, 8])
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file() and "meta" not in p.parts}
    second = write_dataset(out, [5, 4], mode="append", seed=10)
    ds = Dataset(out)
    assert ds.num_episodes == 4 and ds.num_frames == 23
    assert ds.episode_lengths.tolist() == [6, 8, 5, 4]
    for p, (mtime, data) in before.items():  # existing data/video files untouched
        assert p.stat().st_mtime_ns == mtime and p.read_bytes() == data
    assert len(ds.data_files()) == 2 and len(ds.video_files()) == 2
    for i, ep in enumerate(first + second):
        np.testing.assert_array_equal(ds.episode(i)["actions"], ep["actions"])
    assert psnr(ds.episode(3)["frames"], second[1]["frames"]) > 35
    assert ds.table().column("index").to_pylist() == list(range(23))
    acts = np.concatenate([e["actions"] for e in first + second])
    np.testing.assert_allclose(ds.stats["action"]["mean"], acts.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ds.stats["action"]["std"], acts.std(0), rtol=1e-4)
    assert ds.stats["action"]["count"] == 23


def test_append_checks_compatibility(tmp_path):
    write_dataset(tmp_path / "ds", [5])
    with pytest.raises(WorldlineError, match="fps"):
        DatasetWriter(tmp_path / "ds", fps=30, image_shape=(32, 32, 3), action_spec=SPEC, mode="append")
    with pytest.raises(WorldlineError, match="shape"):
        DatasetWriter(tmp_path / "ds", fps=10, image_shape=(16, 16, 3), action_spec=SPEC, mode="append")
    with pytest.raises(WorldlineError, match="action space"):
        DatasetWriter(tmp_path / "ds", fps=10, image_shape=(32, 32, 3), action_spec=ActionSpec("discrete", 1, 3), mode="append")
    with pytest.raises(WorldlineError, match="even height and width"):
        DatasetWriter(tmp_path / "odd", fps=10, image_shape=(31, 32, 3), action_spec=SPEC)
    wider = ActionSpec("continuous", 2, low=[-3.0, 0.0], high=[0.5, 2.0])
    with DatasetWriter(tmp_path / "ds", fps=10, image_shape=(32, 32, 3), action_spec=wider, mode="append") as w:
        w.add_episode(**make_episode(3, 0))
    spec = Dataset(tmp_path / "ds").action_spec  # the box grows to cover both writes
    assert spec.low == [-3.0, -1.0] and spec.high == [1.0, 2.0]


def test_overwrite_keeps_old_until_complete(tmp_path):
    out = tmp_path / "ds"
    write_dataset(out, [5, 5])
    w = DatasetWriter(out, fps=10, image_shape=(32, 32, 3), action_spec=SPEC, mode="overwrite")
    w.add_episode(**make_episode(7, 0))
    assert Dataset(out).num_episodes == 2  # still the old dataset while the new one is written
    w.close()
    assert Dataset(out).episode_lengths.tolist() == [7]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind

    with pytest.raises(WorldlineError, match="episode 1"):  # a failed overwrite leaves the old one
        with DatasetWriter(out, fps=10, image_shape=(32, 32, 3), action_spec=SPEC, mode="overwrite") as w:
            w.add_episode(**make_episode(4, 0))
            w.add_episode(make_frames(4, 0), np.full((4, 2), np.nan))
    assert Dataset(out).episode_lengths.tolist() == [7]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# ----------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------


def _writer(tmp_path, **kw):
    return DatasetWriter(tmp_path / "bad", fps=10, image_shape=(32, 32, 3), action_spec=SPEC, **kw)


@pytest.mark.parametrize(
    "frames, actions, rewards, pattern",
    [
        (make_frames(5, 0, 16), np.zeros((5, 2)), None, r"episode 0: frames .* shape \(5, 16, 16, 3\), expected \(T, 32, 32, 3\)"),
        (make_frames(5, 0).astype(np.float32), np.zeros((5, 2)), None, "dtype float32, expected uint8"),
        (make_frames(5, 0), np.zeros((5, 3)), None, r"actions have shape \(5, 3\), expected \(T, 2\)"),
        (make_frames(5, 0), np.zeros((4, 2)), None, "4 actions for 5 frames"),
        (make_frames(5, 0), np.zeros((5, 2)), np.zeros(3), r"rewards have shape \(3,\)"),
        (make_frames(5, 0), np.where(np.arange(10).reshape(5, 2) == 7, np.inf, 0.0), None, "episode 0 frame 3: action column 1 is inf"),
        (make_frames(5, 0), np.where(np.arange(10).reshape(5, 2) == 4, np.nan, 0.0), None, "episode 0 frame 2: action column 0 is nan"),
        (make_frames(5, 0), np.zeros((5, 2)), np.array([0, 0, np.nan, 0, 0]), "episode 0 frame 2: reward is nan"),
        (make_frames(0, 0), np.zeros((0, 2)), None, "at least one frame"),
    ],
)
def test_bad_inputs_raise_one_line_errors(tmp_path, frames, actions, rewards, pattern):
    w = _writer(tmp_path)
    with pytest.raises(WorldlineError, match=pattern) as e:
        w.add_episode(frames, actions, rewards)
    assert "\n" not in str(e.value)
    w.abort()
    assert not (tmp_path / "bad").exists() and not list(tmp_path.iterdir())


def test_bad_discrete_index_names_frame(tmp_path):
    w = DatasetWriter(tmp_path / "d", fps=5, image_shape=(16, 16, 3), action_spec=ActionSpec("discrete", 1, 3))
    with pytest.raises(WorldlineError, match="episode 0 frame 2: discrete action 5.0"):
        w.add_episode(make_frames(4, 0, 16), np.array([0, 1, 5, 2]))
    w.abort()


def test_reader_errors(tmp_path):
    with pytest.raises(WorldlineError, match="is not a worldline dataset: missing meta/info.json"):
        Dataset(tmp_path)
    out = tmp_path / "ds"
    write_dataset(out, [6, 5])
    data_file = out / "data" / "chunk-000" / "file-000.parquet"
    original = pq.read_table(data_file)
    pq.write_table(original.drop(["action"]), data_file)
    with pytest.raises(WorldlineError, match=r"file-000.parquet: missing column 'action'"):
        Dataset(out).episode(0)
    pq.write_table(original, data_file)

    video_file = out / "videos" / "observation.image" / "chunk-000" / "file-000.mp4"
    video.write_video(video_file, make_frames(9, 0), fps=10)  # 9 frames where 11 belong
    ds = Dataset(out)
    ds.episode(0)  # episode 0 (frames 0..5) is still whole
    with pytest.raises(WorldlineError, match=r"episode 1: .* holds 3 frames .* the data has 5 rows"):
        ds.episode(1)


# ----------------------------------------------------------------------------------------------
# crash safety
# ----------------------------------------------------------------------------------------------

_SLOW_APPEND = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    import numpy as np
    import worldline.data.format as fmt
    from _data_helpers import SPEC, make_episode

    stage = {stage!r}
    if stage == "commit":  # stall right before info.json (the commit point), after stats.json changed
        real = fmt.write_json
        def slow(path, obj):
            if str(path).endswith("info.json"):
                print("committing", flush=True)
                time.sleep(60)
            real(path, obj)
        fmt.write_json = slow
    with fmt.DatasetWriter({out!r}, fps=10, image_shape=(32, 32, 3), action_spec=SPEC, mode="append", frames_per_file=8) as w:
        for i in range(4):
            ep = make_episode(6, 50 + i)
            w.add_episode(ep["frames"], ep["actions"], ep["rewards"], ep["dones"])
            print("added", i, flush=True)
            if stage == "episodes" and i == 2:
                time.sleep(60)
    """
)


@pytest.mark.parametrize("stage", ["episodes", "commit"])
def test_sigkill_mid_append_leaves_previous_dataset(tmp_path, stage):
    out = tmp_path / "ds"
    first = write_dataset(out, [6, 7])
    stats_before = Dataset(out).stats
    script = _SLOW_APPEND.format(tests=os.path.dirname(__file__), out=str(out), stage=stage)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    wanted = "added 2" if stage == "episodes" else "committing"
    try:
        for line in proc.stdout:
            if line.startswith(wanted):
                break
        else:
            pytest.fail(f"writer exited early with {proc.wait()}")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # the killed writer left new files beside the dataset, but the dataset reads as before
    assert len(list((out / "videos").rglob("file-*.mp4"))) > 1
    ds = Dataset(out)
    assert ds.num_episodes == 2 and ds.num_frames == 13
    for i, ep in enumerate(first):
        got = ds.episode(i)
        np.testing.assert_array_equal(got["actions"], ep["actions"])
        assert psnr(got["frames"], ep["frames"]) > 35
    np.testing.assert_allclose(ds.stats["action"]["mean"], stats_before["action"]["mean"], rtol=1e-5)
    assert ds.stats["action"]["count"] == 13
    # the next append cleans up the orphans and works
    write_dataset(out, [3], mode="append", seed=7)
    ds = Dataset(out)
    assert ds.episode_lengths.tolist() == [6, 7, 3]
    assert len(list((out / "videos").rglob("file-*.mp4"))) == 2
    assert not [p for p in out.rglob(".*") if p.is_file()]
    assert ds.stats["action"]["count"] == 16
