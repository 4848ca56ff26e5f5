"""Windows, episode splits and the decoded-frame cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _data_helpers import psnr, write_dataset

from worldline.core.errors import WorldlineError
from worldline.data import cache
from worldline.data.format import Dataset
from worldline.data.windows import EpisodeStore, WindowSampler, split_episodes

LENGTHS = [5, 12, 3, 9, 20]


def _store(lengths=LENGTHS, gap: int = 0) -> EpisodeStore:
    """Frames whose pixels encode (episode, frame) so a batch shows where it came from; ``gap`` spare
    rows between episodes check that starts are honoured rather than assumed contiguous."""
    starts = np.cumsum([0] + [n + gap for n in lengths[:-1]])
    n = int(starts[-1] + lengths[-1])
    frames = np.zeros((n, 4, 4, 3), np.uint8)
    actions = np.full((n, 2), -1.0, np.float32)
    for e, (s, length) in enumerate(zip(starts, lengths)):
        frames[s : s + length, ..., 0] = e
        frames[s : s + length, ..., 1] = np.arange(length)[:, None, None]
        frames[s : s + length, ..., 2] = 255
        actions[s : s + length, 0] = e
        actions[s : s + length, 1] = np.arange(length)
    rewards = actions[:, 1].copy()
    dones = np.zeros(n, bool)
    return EpisodeStore({"frames": frames, "actions": actions, "rewards": rewards, "dones": dones}, starts, lengths)


def _decode(batch):
    """(episode, frame) of every (b, t) from the pixel encoding, undoing the [-1, 1] scaling."""
    px = ((batch["frames"][:, :, :, 0, 0] + 1) * 127.5).round().long()  # (B, T, C)
    return px[..., 0], px[..., 1]


@pytest.mark.parametrize("window, stride, gap", [(1, 1, 0), (4, 1, 0), (4, 2, 3), (9, 1, 2)])
def test_windows_never_cross_episodes(window, stride, gap):
    store = _store(gap=gap)
    sampler = WindowSampler(store, window, episodes=range(len(LENGTHS)), stride=stride)
    span = (window - 1) * stride + 1
    assert len(sampler) == sum(max(n - span + 1, 0) for n in LENGTHS)
    batch = sampler.batch(np.arange(len(sampler)))
    ep, frame = _decode(batch)
    assert (ep == ep[:, :1]).all()  # one episode per window
    assert (frame - frame[:, :1] == torch.arange(window) * stride).all()
    assert (ep[:, 0] == batch["episode_index"]).all() and (frame == batch["frame_index"]).all()
    lengths = torch.tensor(LENGTHS)[batch["episode_index"]]
    assert (batch["frame_index"].max(1).values < lengths).all()
    assert (batch["actions"][..., 0] == ep).all() and (batch["actions"][..., 1] == frame).all()
    # every valid window appears exactly once
    pairs = {(int(e), int(f)) for e, f in zip(batch["episode_index"], batch["frame_index"][:, 0])}
    assert len(pairs) == len(sampler)


def test_batch_shapes_dtypes_and_range():
    sampler = WindowSampler(_store(), 3, [1, 3, 4])
    b = sampler.sample(6, step=0, seed=0)
    assert b["frames"].shape == (6, 3, 3, 4, 4) and b["frames"].dtype == torch.float32
    assert b["frames"].is_contiguous()
    assert b["frames"].min() >= -1 and b["frames"].max() == 1.0  # channel 2 is 255 -> exactly 1
    assert b["actions"].shape == (6, 3, 2) and b["actions"].dtype == torch.float32
    assert b["rewards"].shape == (6, 3) and b["rewards"].dtype == torch.float32
    assert b["dones"].shape == (6, 3) and b["dones"].dtype == torch.bool
    assert b["episode_index"].shape == (6,) and b["frame_index"].shape == (6, 3)
    assert set(b["episode_index"].tolist()) <= {1, 3, 4}  # only the episodes asked for


def test_latent_store():
    latents = np.arange(20 * 2 * 3, dtype=np.float16).reshape(20, 2, 3)
    store = EpisodeStore({"latents": latents, "actions": np.zeros((20, 1), np.float32)}, [0, 10], [10, 10])
    b = WindowSampler(store, 4, [0, 1]).batch([0, 7])
    assert "frames" not in b and b["latents"].shape == (2, 4, 2, 3) and b["latents"].dtype == torch.float32
    assert torch.equal(b["latents"][1, 0], torch.from_numpy(latents[10].astype(np.float32)))


def test_sample_is_a_pure_function_and_ranks_are_disjoint():
    sampler = WindowSampler(_store(), 2, range(5))
    a = sampler.sample(8, step=5, seed=1)
    b = WindowSampler(_store(), 2, range(5)).sample(8, step=5, seed=1)  # a fresh sampler: exact resume
    for key in a:
        assert torch.equal(a[key], b[key])
    c = sampler.sample(8, step=6, seed=1)
    d = sampler.sample(8, step=5, seed=2)
    assert not torch.equal(a["frame_index"], c["frame_index"]) or not torch.equal(a["episode_index"], c["episode_index"])
    assert not torch.equal(a["frame_index"], d["frame_index"]) or not torch.equal(a["episode_index"], d["episode_index"])
    world = 4
    per_rank = [set(sampler.sample_indices(8, step=3, seed=0, rank=r, world_size=world).tolist()) for r in range(world)]
    assert all(len(s) == 8 for s in per_rank)
    assert len(set().union(*per_rank)) == 32  # disjoint across ranks
    with pytest.raises(WorldlineError):
        sampler.sample(8, step=0, seed=0, rank=4, world_size=4)


def test_iter_sequential_covers_everything_in_order():
    sampler = WindowSampler(_store(), 4, [0, 1, 3])
    batches = list(sampler.iter_sequential(5))
    assert len(batches) == sampler.num_sequential(5) == -(-len(sampler) // 5)
    starts = [(int(e), int(f)) for b in batches for e, f in zip(b["episode_index"], b["frame_index"][:, 0])]
    assert starts == [(e, f) for e in (0, 1, 3) for f in range(LENGTHS[e] - 3)]
    hop = list(sampler.iter_sequential(100, hop=4))[0]
    assert hop["frame_index"][:, 0].tolist() == [0, 0, 4, 8, 0, 4]


def test_window_longer_than_every_episode_is_a_clear_error():
    sampler = WindowSampler(_store(), 25, range(5))
    assert len(sampler) == 0
    with pytest.raises(WorldlineError, match="no window of 25 frames"):
        sampler.sample(2, 0, 0)
    with pytest.raises(WorldlineError, match="episode 7 is not in the store"):
        WindowSampler(_store(), 2, [7])


def test_split_episodes_deterministic_and_sane():
    train, val = split_episodes(50, 0.1, seed=0)
    assert (train, val) == split_episodes(50, 0.1, seed=0)
    assert len(val) == 5 and sorted(train + val) == list(range(50)) and not set(train) & set(val)
    assert split_episodes(50, 0.1, seed=1)[1] != val
    assert len(split_episodes(2, 0.1, 0)[1]) == 1  # at least one held out
    assert len(split_episodes(3, 0.9, 0)[0]) >= 1  # never all of them
    assert split_episodes(1, 0.5, 0) == ([0], [])
    assert split_episodes(10, 0.0, 0) == (list(range(10)), [])


# ----------------------------------------------------------------------------------------------
# frame cache
# ----------------------------------------------------------------------------------------------


def test_frame_store_decodes_once_and_rebuilds_on_change(tmp_path, monkeypatch):
    out = tmp_path / "ds"
    eps = write_dataset(out, [6, 9])
    store = cache.frame_store(Dataset(out))
    files = list((out / "cache").glob("*.npy"))
    assert len(files) == 1 and files[0].name.startswith("observation.image-32x32-")
    assert isinstance(store["frames"], np.memmap) and store["frames"].shape == (15, 32, 32, 3)
    assert psnr(np.asarray(store.episode(1)["frames"]), eps[1]["frames"]) > 35
    np.testing.assert_array_equal(store["actions"][6:], eps[1]["actions"])

    def boom(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(cache, "_decode_all", boom)
    again = cache.frame_store(out)  # unchanged dataset: memory-mapped, no decoding
    np.testing.assert_array_equal(np.asarray(again["frames"]), np.asarray(store["frames"]))
    monkeypatch.undo()

    write_dataset(out, [4], mode="append", seed=5)
    grown = cache.frame_store(out)
    assert grown["frames"].shape == (19, 32, 32, 3)
    files = list((out / "cache").glob("*.npy"))
    assert len(files) == 1  # the stale cache was replaced

    small = cache.frame_store(out, resolution=16)
    assert small["frames"].shape == (19, 16, 16, 3)
    ref = eps[0]["frames"].reshape(6, 16, 2, 16, 2, 3).mean((2, 4))  # area average
    assert np.abs(small["frames"][:6].astype(float) - ref).mean() < 3
    assert len(list((out / "cache").glob("*.npy"))) == 2  # one per resolution


def test_frame_store_feeds_window_sampler(tmp_path):
    out = tmp_path / "ds"
    write_dataset(out, [6, 9, 7])
    ds = Dataset(out)
    store = cache.frame_store(ds)
    train, val = split_episodes(ds.num_episodes, 0.34, seed=0)
    sampler = WindowSampler(store, 4, train)
    b = sampler.sample(5, step=0, seed=0)
    assert b["frames"].shape == (5, 4, 3, 32, 32)
    assert set(b["episode_index"].tolist()) <= set(train)
    with pytest.raises(WorldlineError, match="no camera 'depth'"):
        cache.frame_store(ds, camera="depth")
