"""The curation pipeline: scan -> split -> transcode -> score (motion, quality, text, content) ->
caption -> hash -> decide (filters, dedup) -> shard, with a resumable parquet manifest.

>>> result = curate("raw/", "curated/", executor="local", workers=2)
>>> result.summary["kept"], result.shards

Compute stages run through an executor; each finished batch is written to the manifest, so a rerun
after a crash skips every row whose stage is marked done. Decisions are made in this process from the
stored scores, which is what ``refilter=True`` redoes with new thresholds and nothing else.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from worldline.core.errors import WorldlineError
from worldline.core.io import write_json
from worldline.curate.annotate import AnnotateStage
from worldline.curate.config import CurateConfig, Thresholds
from worldline.curate.dedup import HashStage, find_duplicates
from worldline.curate.executors import make_executor
from worldline.curate.filters import FILTER_ORDER, ContentStage, MotionStage, QualityStage, TextStage, filter_verdicts
from worldline.curate.manifest import MANIFEST, Manifest
from worldline.curate.shard import SHARDS, bucket_of, write_shards
from worldline.curate.split import SplitStage
from worldline.curate.stage import Chain, Row, Stage, fail
from worldline.curate.transcode import TranscodeStage

STAGES: tuple[type[Stage], ...] = (SplitStage, TranscodeStage, MotionStage, QualityStage, TextStage, ContentStage, AnnotateStage, HashStage)
CLIP_STAGES = frozenset(s.name for s in STAGES if s.kind == "clip")
REMOVED_BY = ("failed", *FILTER_ORDER, "dedup")


@dataclasses.dataclass
class CurateResult:
    out: Path
    manifest: Manifest
    summary: dict[str, Any]
    shards: dict[str, int]  # bucket -> clips

    def kept(self) -> list[Row]:
        return [r for r in self.manifest.clips() if r.get("keep")]


def build_stages(config: CurateConfig, raw_dir: Path, out: Path) -> list[Stage]:
    """The split stage, then every clip stage fused into one chain (see :class:`Chain`)."""
    split, *clip_stages = [cls(config, raw_dir, out) for cls in STAGES]
    return [split, Chain("clips", clip_stages)]


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


def scan_inputs(raw_dir: Path, exclude: Path | None = None) -> list[Row]:
    """One row per non-hidden directory entry under ``raw_dir`` (recursively, links not followed;
    ``exclude``, the output folder when it lies inside ``raw_dir``, is skipped).
    Entries that cannot be inputs (broken links, special files, unreadable or empty files,
    unreadable folders) come back failed at stage ``scan`` with the reason."""
    rows: list[Row] = []

    def add(rel: str, **kw) -> None:
        rows.append({"id": rel, "kind": "input", "input": rel, "status": "pending", "done": [], **kw})

    def on_error(e: OSError) -> None:
        rel = Path(e.filename).relative_to(raw_dir).as_posix() + "/"
        add(rel)
        rows[-1] = fail(rows[-1], "scan", f"unreadable directory ({e.strerror})")

    for folder, dirs, files in os.walk(raw_dir, onerror=on_error):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (exclude is None or (Path(folder) / d).resolve() != exclude))
        base = Path(folder)
        for name in sorted(files) + [d for d in dirs if (base / d).is_symlink()]:
            if name.startswith("."):
                continue
            path = base / name
            rel = path.relative_to(raw_dir).as_posix()
            try:
                st = path.stat()
            except FileNotFoundError:
                add(rel)
                rows[-1] = fail(rows[-1], "scan", f"broken link to {os.readlink(path)}")
                continue
            except OSError as e:
                add(rel)
                rows[-1] = fail(rows[-1], "scan", f"unreadable entry ({e.strerror})")
                continue
            add(rel, size_bytes=int(st.st_size), mtime_ns=int(st.st_mtime_ns))
            if path.is_dir():
                rows[-1] = fail(rows[-1], "scan", "a link to a folder (links to folders are not followed)")
            elif not path.is_file():
                rows[-1] = fail(rows[-1], "scan", "not a regular file")
            elif not os.access(path, os.R_OK):
                rows[-1] = fail(rows[-1], "scan", "permission denied")
            elif st.st_size == 0:
                rows[-1] = fail(rows[-1], "scan", "empty file (0 bytes)")
    return rows


def _merge_inputs(manifest: Manifest, scanned: list[Row]) -> None:
    """Keep finished work for unchanged inputs; forget inputs that changed or disappeared."""
    seen = set()
    for row in scanned:
        seen.add(row["id"])
        old = manifest.rows.get(row["id"])
        unchanged = (
            old is not None
            and old.get("failed_stage") != "scan"
            and row["status"] != "failed"
            and (old.get("size_bytes"), old.get("mtime_ns")) == (row.get("size_bytes"), row.get("mtime_ns"))
        )
        if not unchanged:
            manifest.drop_input(row["id"])
            manifest.update([row])
    for row in manifest.inputs():
        if row["id"] not in seen:
            manifest.drop_input(row["id"])


# ----------------------------------------------------------------------------------------------
# Decisions
# ----------------------------------------------------------------------------------------------


def decide(manifest: Manifest, thresholds: Thresholds) -> None:
    """Set ``keep``, ``removed_by``, ``removed_reason``, ``dup_of`` and ``bucket`` on every clip row."""
    survivors = []
    for row in sorted(manifest.clips(), key=lambda r: r["id"]):
        row.update(keep=False, removed_by="", removed_reason="", dup_of=None, bucket=None)
        if row["status"] == "failed":
            row.update(removed_by="failed", removed_reason=f"{row['failed_stage']}: {row['reason']}")
            continue
        if not CLIP_STAGES <= set(row.get("done") or []):
            row.update(removed_by="failed", removed_reason="not processed (interrupted run)")
            continue
        verdicts = filter_verdicts(row, thresholds)
        stage = next((s for s in FILTER_ORDER if verdicts[s]), None)
        if stage:
            row.update(removed_by=stage, removed_reason="; ".join(f"{s}: {verdicts[s]}" for s in FILTER_ORDER if verdicts[s]))
            continue
        survivors.append(row)
    dups = find_duplicates(survivors, thresholds.dedup_bits)
    for row in survivors:
        if row["id"] in dups:
            kept_id, dist = dups[row["id"]]
            row.update(removed_by="dedup", removed_reason=f"near-duplicate of {kept_id} (pHash distance {dist:.1f} <= {thresholds.dedup_bits:g} bits)", dup_of=kept_id)
        else:
            row.update(keep=True, bucket=bucket_of(row))
    for row in manifest.inputs():
        row["keep"] = None


# ----------------------------------------------------------------------------------------------
# Run
# ----------------------------------------------------------------------------------------------


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=console.quiet,
    )


def _check_config(manifest: Manifest, config: CurateConfig) -> None:
    stored = manifest.meta.get("config")
    if not stored or stored == config.to_dict():
        return
    field = next(k for k in sorted(set(stored) | set(config.to_dict())) if stored.get(k) != config.to_dict().get(k))
    raise WorldlineError(
        f"{manifest.path} was computed with {field}={stored.get(field)!r}, this run asks for {config.to_dict().get(field)!r}; "
        f"use a fresh --out, or --refilter to change thresholds only"
    )


def curate(
    raw_dir: str | os.PathLike,
    out: str | os.PathLike,
    config: CurateConfig | None = None,
    thresholds: Thresholds | None = None,
    executor: Any = "local",
    workers: int = 2,
    refilter: bool = False,
    ray_address: str | None = None,
    console: Console | None = None,
) -> CurateResult:
    """Curate every video under ``raw_dir`` into ``out`` (manifest, clip store, shards, summary).

    ``executor`` is "local", "ray" or an object with ``map(stage, batches)`` and ``close()``.
    ``refilter`` re-applies ``thresholds`` to the stored scores of a finished run without computing
    anything (the stored :class:`CurateConfig` is used; ``config`` is ignored).
    """
    raw_dir, out = Path(raw_dir), Path(out)
    thresholds = thresholds or Thresholds()
    console = console or Console(stderr=True)
    manifest_path = out / MANIFEST
    manifest = Manifest.load(manifest_path)
    t0 = time.perf_counter()
    processed_s = 0.0
    if refilter:
        if not manifest.rows:
            raise WorldlineError(f"--refilter needs a finished run in {out}, found no {MANIFEST}")
        config = CurateConfig(**manifest.meta["config"])
        executor_name = "none"
    else:
        if not raw_dir.is_dir():
            raise WorldlineError(f"raw video folder not found: {raw_dir}")
        config = config or CurateConfig()
        _check_config(manifest, config)
        out.mkdir(parents=True, exist_ok=True)
        manifest.meta["config"] = config.to_dict()
        manifest.meta["raw_dir"] = str(raw_dir.resolve())
        _merge_inputs(manifest, scan_inputs(raw_dir, exclude=out.resolve()))
        manifest.save()
        own = isinstance(executor, str)
        ex = make_executor(executor, workers, ray_address) if own else executor
        executor_name = getattr(ex, "name", type(ex).__name__)
        workers = getattr(ex, "workers", workers)
        try:
            processed_s = _run_stages(manifest, build_stages(config, raw_dir, out), ex, console)
        finally:
            if own:
                ex.close()
    compute_s = time.perf_counter() - t0
    decide(manifest, thresholds)
    manifest.meta["thresholds"] = thresholds.to_dict()
    manifest.save()
    kept = sorted((r for r in manifest.clips() if r["keep"]), key=lambda r: r["id"])
    with _progress(console) as bar:
        task = bar.add_task("shard", total=len(kept), rate="")
        shards = write_shards(out, kept, on_clip=lambda: bar.advance(task))
        bar.update(task, completed=len(kept))
    _remove_orphans(out, manifest)
    summary = _summary(manifest, shards, executor_name, workers, compute_s, time.perf_counter() - t0, processed_s)
    write_json(out / "summary.json", summary)
    console.print(summary_table(summary))
    console.print(
        f"{executor_name} executor, {workers} workers: {summary['processed_clip_seconds']:.1f} clip-s computed in "
        f"{compute_s:.1f} s = [bold]{summary['throughput_clip_s_per_s']:.2f} clip-s/s[/bold]; total {summary['total_s']:.1f} s"
    )
    return CurateResult(out, manifest, summary, shards)


def _run_stages(manifest: Manifest, stages: list[Stage], executor: Any, console: Console) -> float:
    """Run every stage on the rows it has not finished; returns the clip-seconds transcoded."""
    processed_s = 0.0
    with _progress(console) as bar:
        for stage in stages:
            rows = manifest.inputs() if stage.kind == "input" else manifest.clips()
            names = {s.name for s in stage.members}
            todo = [r for r in rows if r["status"] != "failed" and not names <= set(r.get("done") or [])]
            task = bar.add_task(stage.name, total=len(todo), rate="")
            if not todo:
                continue
            batches = [todo[i : i + stage.batch_size] for i in range(0, len(todo), stage.batch_size)]
            started, last_save = time.perf_counter(), 0.0
            try:
                for result in executor.map(stage, batches):
                    if stage.kind == "input":
                        for r in result:
                            if r["kind"] == "input":
                                manifest.drop_input(r["id"])  # replaced whole: the input row and all its clips
                    manifest.update(result)
                    if stage.kind == "clip":
                        processed_s += sum(r["duration_s"] for r in result if r["status"] == "ok")
                    bar.advance(task, sum(1 for r in result if r["kind"] == stage.kind))
                    done = bar.tasks[task].completed
                    bar.update(task, rate=f"{done / max(1e-6, time.perf_counter() - started):.1f}/s")
                    if time.perf_counter() - last_save > 1.0:
                        manifest.save()
                        last_save = time.perf_counter()
            finally:
                manifest.save()  # on an interrupt too: finished batches are kept
    return processed_s


def _remove_orphans(out: Path, manifest: Manifest) -> None:
    """Clip files of inputs that changed or vanished, and temporaries of killed writes."""
    clips = out / "clips"
    if not clips.is_dir():
        return
    live = {r["clip_path"] for r in manifest.clips()}
    for path in clips.rglob("*"):
        if path.is_file() and (path.name.startswith(".") or path.relative_to(out).as_posix() not in live):
            path.unlink()
    for folder in sorted((p for p in clips.iterdir() if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            shutil.rmtree(folder, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# Summary
# ----------------------------------------------------------------------------------------------


def _summary(manifest: Manifest, shards: dict[str, int], executor: str, workers: int, compute_s: float, total_s: float, processed_s: float) -> dict[str, Any]:
    inputs, clips = manifest.inputs(), manifest.clips()
    removed = {k: sum(1 for r in clips if r["removed_by"] == k) for k in REMOVED_BY}
    return {
        "inputs": len(inputs),
        "inputs_failed": sum(1 for r in inputs if r["status"] == "failed"),
        "input_failures": {r["id"]: f"{r['failed_stage']}: {r['reason']}" for r in inputs if r["status"] == "failed"},
        "input_seconds": sum(r.get("src_duration") or 0.0 for r in inputs),
        "short_shots": sum(r.get("short_shots") or 0 for r in inputs),
        "clips": len(clips),
        "clip_seconds": sum(r["duration_s"] for r in clips),
        "removed": removed,
        "kept": sum(1 for r in clips if r["keep"]),
        "kept_seconds": sum(r["duration_s"] for r in clips if r["keep"]),
        "shards": shards,
        "executor": executor,
        "workers": workers,
        "compute_s": compute_s,
        "total_s": total_s,
        "processed_clip_seconds": processed_s,
        "throughput_clip_s_per_s": processed_s / compute_s if processed_s else 0.0,
    }


def summary_table(s: dict[str, Any]) -> Table:
    table = Table(title="curation summary", show_header=True, header_style="bold")
    table.add_column("")
    table.add_column("count", justify="right")
    table.add_column("seconds", justify="right")
    table.add_row("inputs", str(s["inputs"]), f"{s['input_seconds']:.1f}")
    table.add_row("  failed", str(s["inputs_failed"]), "")
    table.add_row("shots too short", str(s["short_shots"]), "")
    table.add_row("clips", str(s["clips"]), f"{s['clip_seconds']:.1f}")
    for stage, n in s["removed"].items():
        table.add_row(f"  removed by {stage}", str(n), "")
    table.add_row("[bold]kept[/bold]", f"[bold]{s['kept']}[/bold]", f"{s['kept_seconds']:.1f}")
    for bucket, n in s["shards"].items():
        table.add_row(f"  {SHARDS}/{bucket}", str(n), "")
    return table
