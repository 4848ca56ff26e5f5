"""Stage 5: deduplication with perceptual hashes.

Each clip gets a 64-bit pHash (DCT of a 32x32 grey thumbnail, the 8x8 lowest frequencies but DC
against their median) of ``hash_frames`` evenly spaced frames. Two clips are compared frame by frame,
each frame against its aligned frame and the two next to it (shot boundaries found in a re-encoded
copy can move by a frame); their distance is the mean of those best Hamming distances. Clips within
``dedup_bits`` are linked, and every connected group keeps one clip: the one from the source with the
most pixels, then the highest bit rate (the least re-encoded copy), then the first id.
"""

from __future__ import annotations

import cv2
import numpy as np

from worldline.curate.stage import Resources, Row, Stage
from worldline.curate.transcode import read_clip

_POP = np.array([bin(i).count("1") for i in range(256)], np.uint8)


def phash(frame: np.ndarray) -> int:
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:8, :8].reshape(-1)  # (64,) lowest frequencies
    bits = low > np.median(low[1:])
    return int(np.packbits(bits).view(">u8")[0])


def clip_hashes(frames: np.ndarray, k: int) -> list[int]:
    idx = np.linspace(0, len(frames) - 1, k).round().astype(int)
    return [phash(frames[i]) for i in idx]


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit distance between uint64 arrays (broadcast)."""
    x = np.bitwise_xor(a, b)
    return _POP[x.view(np.uint8).reshape(*x.shape, 8)].sum(axis=-1)


def clip_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over frames of the best Hamming distance within +-1 aligned frames (both ways)."""
    d = hamming(a[:, None], b[None, :]).astype(np.float32)  # (k, k)
    k = len(a)
    band = np.abs(np.arange(k)[:, None] - np.arange(k)[None, :]) <= 1
    d = np.where(band, d, np.inf)
    return float(0.5 * (d.min(axis=1).mean() + d.min(axis=0).mean()))


def find_duplicates(rows: list[Row], max_bits: float) -> dict[str, tuple[str, float]]:
    """clip id -> (id of the clip kept instead, distance) for every clip removed as a duplicate."""
    if len(rows) < 2:
        return {}
    hashes = np.array([r["phash"] for r in rows], np.uint64)  # (N, k)
    n = len(rows)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    k = hashes.shape[1]
    band = np.abs(np.arange(k)[:, None] - np.arange(k)[None, :]) <= 1  # (k, k) aligned frame +-1
    dist: dict[tuple[int, int], float] = {}
    for i in range(n - 1):
        d = hamming(hashes[i][None, :, None], hashes[i + 1 :, None, :]).astype(np.float32)  # (N-i-1, k, k)
        d = np.where(band, d, np.inf)
        mean = 0.5 * (d.min(axis=2).mean(axis=1) + d.min(axis=1).mean(axis=1))  # (N-i-1,)
        for j in np.flatnonzero(mean <= max_bits):
            dist[(i, i + 1 + int(j))] = float(mean[j])
            parent[root(i)] = root(i + 1 + int(j))
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    removed: dict[str, tuple[str, float]] = {}
    for members in groups.values():
        if len(members) == 1:
            continue
        best = min(members, key=lambda i: (-rows[i]["src_height"] * rows[i]["src_width"], -rows[i]["src_bitrate"], rows[i]["id"]))
        for i in members:
            if i != best:
                d = dist.get((min(i, best), max(i, best)))
                if d is None:
                    d = clip_distance(hashes[i], hashes[best])
                removed[rows[i]["id"]] = (rows[best]["id"], d)
    return removed


class HashStage(Stage):
    name = "hash"
    resources = Resources(cpus=1.0)
    batch_size = 16

    def process(self, row: Row) -> list[Row]:
        frames = read_clip(self.out_dir / row["clip_path"])
        row["phash"] = clip_hashes(frames, self.config.hash_frames)
        return [row]
