"""The manifest: one parquet file (``OUT/manifest.parquet``) with a row for every input and every clip.

A row holds each stage's outputs (probe results, spans, scores, hashes, caption), the stages it has
finished (``done``), its status (``ok`` / ``failed`` with ``failed_stage`` and ``reason``) and the
decisions of the last filtering (``keep``, ``removed_by``, ``removed_reason``, ``dup_of``, ``bucket``).
It is rewritten atomically after every finished batch, so a crashed run resumes from it, and it
stores the :class:`CurateConfig` it was computed with (schema metadata), so a resume with different
compute settings is refused instead of mixing results.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from worldline.core.errors import WorldlineError
from worldline.core.io import atomic_path
from worldline.curate.stage import Row

MANIFEST = "manifest.parquet"

COLUMNS: dict[str, pa.DataType] = {
    # identity and state
    "id": pa.string(),  # input: path relative to RAW_DIR; clip: "<input>#<k>"
    "kind": pa.string(),  # "input" or "clip"
    "input": pa.string(),
    "status": pa.string(),  # "pending", "ok" or "failed"
    "failed_stage": pa.string(),
    "reason": pa.string(),
    "done": pa.list_(pa.string()),  # stages finished for this row
    # input probe
    "size_bytes": pa.int64(),
    "mtime_ns": pa.int64(),
    "src_fps": pa.float64(),
    "src_height": pa.int64(),
    "src_width": pa.int64(),
    "src_duration": pa.float64(),
    "src_frames": pa.int64(),
    "src_bitrate": pa.float64(),
    "cuts": pa.list_(pa.int64()),  # frame indices of detected hard cuts
    "clips": pa.int64(),
    "short_shots": pa.int64(),  # shots dropped for being shorter than min_shot_s
    # clip span and file
    "start_s": pa.float64(),
    "end_s": pa.float64(),
    "duration_s": pa.float64(),
    "clip_path": pa.string(),  # relative to OUT
    "frames": pa.int64(),
    "height": pa.int64(),
    "width": pa.int64(),
    "fps": pa.float64(),
    # scores
    "motion": pa.float64(),
    "shake": pa.float64(),
    "sharpness": pa.float64(),
    "brightness": pa.float64(),
    "dark_fraction": pa.float64(),
    "blown_fraction": pa.float64(),
    "noise": pa.float64(),
    "text_area": pa.float64(),
    "text_frames": pa.float64(),
    "content_label": pa.string(),
    "content_score": pa.float64(),
    "caption": pa.string(),
    "phash": pa.list_(pa.uint64()),
    # decisions (recomputed by every run and by --refilter)
    "keep": pa.bool_(),
    "removed_by": pa.string(),  # "length", "motion", "quality", "text", "content", "dedup" or ""
    "removed_reason": pa.string(),
    "dup_of": pa.string(),
    "bucket": pa.string(),
}
SCHEMA = pa.schema([pa.field(k, t) for k, t in COLUMNS.items()])


class Manifest:
    """Rows by id, in insertion order; ``save`` writes them atomically."""

    def __init__(self, path: str | os.PathLike, rows: list[Row] | None = None, meta: dict[str, Any] | None = None):
        self.path = Path(path)
        self.rows: dict[str, Row] = {r["id"]: r for r in rows or []}
        self.meta: dict[str, Any] = dict(meta or {})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Manifest":
        path = Path(path)
        if not path.is_file():
            return cls(path)
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as e:
            raise WorldlineError(f"{path}: unreadable manifest ({str(e).splitlines()[0][:120]}); move it away to start afresh") from None
        raw = (table.schema.metadata or {}).get(b"worldline.curate")
        meta = json.loads(raw) if raw else {}
        return cls(path, table.to_pylist(), meta)

    def save(self) -> None:
        rows = [{k: r.get(k) for k in COLUMNS} for r in self.rows.values()]
        table = pa.Table.from_pylist(rows, schema=SCHEMA).replace_schema_metadata({"worldline.curate": json.dumps(self.meta)})
        with atomic_path(self.path) as tmp:
            pq.write_table(table, tmp)

    def update(self, rows: list[Row]) -> None:
        for r in rows:
            self.rows[r["id"]] = r

    def inputs(self) -> list[Row]:
        return [r for r in self.rows.values() if r["kind"] == "input"]

    def clips(self) -> list[Row]:
        return [r for r in self.rows.values() if r["kind"] == "clip"]

    def drop_input(self, input_id: str) -> None:
        """Forget an input and its clips (the file changed or vanished)."""
        self.rows = {k: r for k, r in self.rows.items() if r["input"] != input_id}


def read_manifest(path: str | os.PathLike) -> pa.Table:
    """The manifest as a pyarrow table (``.to_pandas()`` for a DataFrame), for inspection."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    if not path.is_file():
        raise WorldlineError(f"no curation manifest at {path}")
    return pq.read_table(path)
