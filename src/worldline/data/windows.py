"""Training windows: fixed-length clips cut from episodes, gathered in one vectorised step.

An :class:`EpisodeStore` holds per-frame arrays aligned by global frame row (decoded frames in a
memory-mapped ``.npy``, or latents, plus actions/rewards/dones). A :class:`WindowSampler` lists every
window start that keeps the whole window inside one episode and turns a batch of starts into a
``(B, T)`` row-index matrix, so a batch is one numpy gather per array, never a per-window loop.

``sample(batch_size, step, seed, rank, world_size)`` draws from a generator seeded by
``(seed, step)`` only, so resuming at step ``s`` sees exactly the batches it would have seen, and
DDP ranks take disjoint slices of one global draw.
"""

from __future__ import annotations

import hashlib
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
from einops import rearrange

from worldline.core.contracts import Batch
from worldline.core.errors import WorldlineError


class EpisodeStore:
    """Per-frame arrays of a set of episodes, aligned by global frame row.

    ``arrays``: ``"frames"`` (N, H, W, C) uint8 and/or ``"latents"`` (N, ...) float16/32, with
    ``"actions"`` (N, A) f32, ``"rewards"`` (N,) f32, ``"dones"`` (N,) bool. Episode ``e`` occupies rows
    ``episode_starts[e] : episode_starts[e] + episode_lengths[e]``.
    """

    def __init__(
        self,
        arrays: Mapping[str, np.ndarray],
        episode_starts: Sequence[int] | np.ndarray,
        episode_lengths: Sequence[int] | np.ndarray,
        info: dict | None = None,
    ):
        self.arrays = dict(arrays)
        self.episode_starts = np.asarray(episode_starts, np.int64)
        self.episode_lengths = np.asarray(episode_lengths, np.int64)
        self.info = dict(info or {})  # free-form provenance: dataset path, camera, resolution, fps
        if self.episode_starts.shape != self.episode_lengths.shape or self.episode_starts.ndim != 1:
            raise WorldlineError(
                f"episode_starts {self.episode_starts.shape} and episode_lengths {self.episode_lengths.shape} must be equal 1-D"
            )
        if not self.arrays:
            raise WorldlineError("an EpisodeStore needs at least one array")
        if np.any(self.episode_lengths < 0) or np.any(self.episode_starts < 0):
            raise WorldlineError("episode starts and lengths must be non-negative")
        end = int((self.episode_starts + self.episode_lengths).max()) if len(self.episode_starts) else 0
        for key, value in self.arrays.items():
            if len(value) < end:
                raise WorldlineError(f"EpisodeStore array {key!r} has {len(value)} rows, the episodes need {end}")

    @property
    def num_episodes(self) -> int:
        return len(self.episode_lengths)

    @property
    def num_frames(self) -> int:
        return int(self.episode_lengths.sum())

    def __contains__(self, key: str) -> bool:
        return key in self.arrays

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def episode(self, e: int) -> dict[str, np.ndarray]:
        """Every array's rows of episode ``e`` (views into the store)."""
        lo = int(self.episode_starts[e])
        hi = lo + int(self.episode_lengths[e])
        return {k: v[lo:hi] for k, v in self.arrays.items()}

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}={tuple(v.shape)}:{v.dtype}" for k, v in self.arrays.items())
        return f"EpisodeStore(episodes={self.num_episodes}, frames={self.num_frames}, {shapes})"


def split_episodes(num_episodes: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic (train_ids, val_ids), both sorted.

    Episodes are ranked by a hash of ``(seed, episode)`` (independent of numpy's generators, so the
    split never changes across library versions) and the lowest ``round(val_fraction * E)`` are held
    out, at least one when ``val_fraction > 0`` and ``E >= 2``, never all of them.
    """
    if num_episodes < 0:
        raise WorldlineError(f"num_episodes must be >= 0, got {num_episodes}")
    if not 0 <= val_fraction < 1:
        raise WorldlineError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = int(round(val_fraction * num_episodes))
    if val_fraction > 0 and num_episodes >= 2:
        n_val = min(max(n_val, 1), num_episodes - 1)
    elif num_episodes < 2:
        n_val = 0

    def rank(e: int) -> bytes:
        return hashlib.blake2b(f"worldline-split:{seed}:{e}".encode(), digest_size=8).digest()

    order = sorted(range(num_episodes), key=rank)
    val = sorted(order[:n_val])
    held = set(val)
    return [e for e in range(num_episodes) if e not in held], val


class WindowSampler:
    """Windows of ``window`` frames, ``stride`` apart, that lie inside one of ``episodes``.

    ``len(sampler)`` is the number of valid window starts. Batches are dicts of torch tensors:
    ``frames`` float32 (B, T, C, H, W) in [-1, 1] (if the store has frames), ``latents`` float32
    (B, T, ...) (if it has latents), ``actions`` (B, T, A), ``states`` (B, T, P) (proprioception, if it
    has them), ``rewards`` (B, T), ``dones`` (B, T) bool,
    ``episode_index`` (B,), ``frame_index`` (B, T).
    """

    def __init__(self, store: EpisodeStore, window: int, episodes: Sequence[int], stride: int = 1):
        if window < 1:
            raise WorldlineError(f"window must be >= 1, got {window}")
        if stride < 1:
            raise WorldlineError(f"stride must be >= 1, got {stride}")
        self.store = store
        self.window = int(window)
        self.stride = int(stride)
        self.episodes = np.asarray(list(episodes), np.int64)
        if len(self.episodes) and (self.episodes.min() < 0 or self.episodes.max() >= store.num_episodes):
            bad = self.episodes[(self.episodes < 0) | (self.episodes >= store.num_episodes)][0]
            raise WorldlineError(f"episode {bad} is not in the store (0..{store.num_episodes - 1})")
        span = (self.window - 1) * self.stride + 1  # frames one window covers
        counts = np.maximum(store.episode_lengths[self.episodes] - span + 1, 0)  # valid starts per episode
        self._start_episode = np.repeat(self.episodes, counts)  # (S,) episode of each window start
        firsts = np.repeat(np.cumsum(counts) - counts, counts)  # (S,) position of each episode's first start
        self._start_frame = np.arange(int(counts.sum()), dtype=np.int64) - firsts  # (S,) frame within episode
        self._offsets = np.arange(self.window, dtype=np.int64) * self.stride  # (T,)
        self.span = span

    def __len__(self) -> int:
        return len(self._start_frame)

    def _check_nonempty(self) -> None:
        if not len(self):
            longest = int(self.store.episode_lengths[self.episodes].max()) if len(self.episodes) else 0
            raise WorldlineError(
                f"no window of {self.window} frames (stride {self.stride}, {self.span} frames) fits in the "
                f"{len(self.episodes)} episode(s) given (longest has {longest} frames)"
            )

    def rows(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(episode (B,), frame_index (B, T), global row (B, T)) of window starts ``indices``."""
        indices = np.asarray(indices, np.int64)
        episode = self._start_episode[indices]  # (B,)
        frame = self._start_frame[indices][:, None] + self._offsets[None, :]  # (B, T)
        row = self.store.episode_starts[episode][:, None] + frame  # (B, T)
        return episode, frame, row

    def batch(self, indices: Sequence[int] | np.ndarray) -> Batch:
        """The windows starting at positions ``indices`` (0 <= i < len(self)) as a Batch."""
        self._check_nonempty()
        indices = np.asarray(indices, np.int64)
        if indices.ndim != 1 or (len(indices) and (indices.min() < 0 or indices.max() >= len(self))):
            raise WorldlineError(f"window indices must be a 1-D array in 0..{len(self) - 1}")
        episode, frame, row = self.rows(indices)
        flat = row.reshape(-1)  # (B*T,) sorted per window, fast to gather from a memmap
        b, t = row.shape
        out: Batch = {}
        arrays = self.store.arrays
        if "frames" in arrays:
            x = torch.from_numpy(np.ascontiguousarray(arrays["frames"][flat]))  # (B*T, H, W, C) uint8
            x = rearrange(x, "(b t) h w c -> b t c h w", b=b, t=t)
            # one strided uint8 -> float copy into a contiguous buffer, then in-place scaling: the
            # fastest of the orders measured (the float tensor is 4x the bytes, touch it least)
            frames = torch.empty(x.shape, dtype=torch.float32)
            out["frames"] = frames.copy_(x).mul_(1 / 127.5).sub_(1.0)
        if "latents" in arrays:
            z = torch.from_numpy(np.ascontiguousarray(arrays["latents"][flat])).float()  # (B*T, ...)
            out["latents"] = z.reshape(b, t, *z.shape[1:])  # (B, T, ...)
        if "actions" in arrays:
            a = torch.from_numpy(np.ascontiguousarray(arrays["actions"][flat], dtype=np.float32))
            out["actions"] = a.reshape(b, t, -1)  # (B, T, A)
        if "states" in arrays:
            p = torch.from_numpy(np.ascontiguousarray(arrays["states"][flat], dtype=np.float32))
            out["states"] = p.reshape(b, t, -1)  # (B, T, P)
        if "rewards" in arrays:
            r = torch.from_numpy(np.ascontiguousarray(arrays["rewards"][flat], dtype=np.float32))
            out["rewards"] = r.reshape(b, t)  # (B, T)
        if "dones" in arrays:
            d = torch.from_numpy(np.ascontiguousarray(arrays["dones"][flat], dtype=bool))
            out["dones"] = d.reshape(b, t)  # (B, T)
        out["episode_index"] = torch.from_numpy(episode)
        out["frame_index"] = torch.from_numpy(np.ascontiguousarray(frame))
        return out

    def sample_indices(self, batch_size: int, step: int, seed: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
        """Window indices of :meth:`sample` (a pure function of its arguments)."""
        self._check_nonempty()
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise WorldlineError(f"need batch_size >= 1 and 0 <= rank < world_size, got {batch_size=} {rank=} {world_size=}")
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(step), 0x57494E44])))
        total = batch_size * world_size
        # without replacement across the global batch when possible, so ranks never share a window
        picks = rng.choice(len(self), size=total, replace=total > len(self))
        return picks[rank * batch_size : (rank + 1) * batch_size]

    def sample(self, batch_size: int, step: int, seed: int, rank: int = 0, world_size: int = 1) -> Batch:
        """A random batch determined by ``(batch_size, step, seed, rank, world_size)`` alone: exact
        resume from a step counter, and DDP ranks draw disjoint windows of one global batch."""
        return self.batch(self.sample_indices(batch_size, step, seed, rank, world_size))

    def iter_sequential(self, batch_size: int, hop: int = 1, drop_last: bool = False) -> Iterator[Batch]:
        """Every ``hop``-th window start in order (episode by episode), in batches, for evaluation.
        ``hop=window`` gives non-overlapping windows."""
        self._check_nonempty()
        if batch_size < 1 or hop < 1:
            raise WorldlineError(f"batch_size and hop must be >= 1, got {batch_size=} {hop=}")
        keep = np.flatnonzero(self._start_frame % hop == 0)
        for lo in range(0, len(keep), batch_size):
            chunk = keep[lo : lo + batch_size]
            if drop_last and len(chunk) < batch_size:
                return
            yield self.batch(chunk)

    def num_sequential(self, batch_size: int, hop: int = 1, drop_last: bool = False) -> int:
        """How many batches :meth:`iter_sequential` yields."""
        n = int(np.count_nonzero(self._start_frame % hop == 0))
        return n // batch_size if drop_last else -(-n // batch_size)
