"""Stage 6: sharding. Kept clips become worldline datasets (video only, action space ``none``), one
per bucket of resolution, aspect ratio and length, so a training batch never mixes shapes:
``OUT/shards/<H>x<W>_<lo>-<hi>s/`` with lengths binned in powers of two seconds. The whole
``OUT/shards`` directory is rebuilt aside and swapped in at once; a run whose kept set and captions
did not change leaves it untouched (``OUT/shards/curate.json`` holds the fingerprint).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Callable

from worldline.core.io import atomic_dir, read_json, write_json
from worldline.curate.stage import Row

SHARDS = "shards"


def bucket_of(row: Row) -> str:
    """``<H>x<W>_<lo>-<hi>s`` with the clip's length (frames / fps) in [lo, hi), powers of two."""
    seconds = row["frames"] / row["fps"]
    lo = 2 ** math.floor(math.log2(max(seconds, 1e-3)) + 1e-9)
    lo_s = f"{lo:g}"
    return f"{row['height']}x{row['width']}_{lo_s}-{2 * lo:g}s"


def _fingerprint(rows: list[Row]) -> str:
    key = [(r["id"], r["clip_path"], r["caption"], r["bucket"]) for r in rows]
    return hashlib.sha1(json.dumps(key).encode()).hexdigest()


def write_shards(out_dir: str | Path, rows: list[Row], on_clip: Callable[[], None] | None = None) -> dict[str, int]:
    """Write the kept ``rows`` (sorted by id, each with ``bucket``) as datasets; returns clips per bucket."""
    from worldline.core.contracts import ActionSpec
    from worldline.data.format import DatasetWriter
    from worldline.data.video import read_video

    out_dir = Path(out_dir)
    target = out_dir / SHARDS
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["bucket"]] = counts.get(r["bucket"], 0) + 1
    fingerprint = _fingerprint(rows)
    stamp = target / "curate.json"
    if stamp.is_file() and read_json(stamp).get("fingerprint") == fingerprint:
        return counts
    with atomic_dir(target, overwrite=True) as tmp:
        for bucket in sorted(counts):
            members = [r for r in rows if r["bucket"] == bucket]
            first = members[0]
            with DatasetWriter(
                tmp / bucket,
                fps=first["fps"],
                image_shape=(first["height"], first["width"], 3),
                action_spec=ActionSpec(kind="none"),
                env_id="curated",
                mode="create",
            ) as writer:
                for r in members:
                    writer.add_episode(read_video(out_dir / r["clip_path"]), task=r["caption"] or "")
                    if on_clip:
                        on_clip()
        index = {b: [r["id"] for r in rows if r["bucket"] == b] for b in sorted(counts)}
        write_json(tmp / "curate.json", {"fingerprint": fingerprint, "episodes": index})
    return counts
