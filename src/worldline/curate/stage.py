"""The unit of work: a stage maps manifest rows (plain dicts) to updated rows.

A stage declares the resources one batch needs (CPUs, for the Ray scheduler and the process pool)
and a batch size (rows per task: large enough to amortise task overhead, small enough to balance
work over workers). Stages are plain picklable objects built from a :class:`CurateConfig`, so the
same stage runs inline, in a process pool or as a Ray task. A row that fails is returned marked
``status="failed"`` with the stage and a one-line reason; the other rows of its batch carry on.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import traceback
from pathlib import Path
from typing import Any

from worldline.core.errors import WorldlineError
from worldline.curate.config import CurateConfig

Row = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Resources:
    cpus: float = 1.0  # CPUs one batch occupies (Ray `num_cpus`)
    memory_mb: int = 0  # a hint for Ray's scheduler; 0: no reservation


class Stage:
    """Base class. Subclasses set ``name``, ``kind`` ("input" or "clip": which rows they consume),
    ``resources`` and ``batch_size``, and implement :meth:`process`."""

    name: str = "stage"
    kind: str = "clip"
    resources: Resources = Resources()
    batch_size: int = 4

    def __init__(self, config: CurateConfig, raw_dir: str | os.PathLike, out_dir: str | os.PathLike):
        self.config = config
        self.raw_dir = Path(raw_dir)
        self.out_dir = Path(out_dir)

    def process(self, row: Row) -> list[Row]:
        """Return the updated row (a split stage returns the input row followed by new clip rows)."""
        raise NotImplementedError

    def run(self, batch: list[Row]) -> list[Row]:
        """Process a batch; a failing row is recorded, never raised."""
        out: list[Row] = []
        for row in batch:
            try:
                rows = self.process(dict(row))
            except WorldlineError as e:
                rows = [fail(row, self.name, str(e))]
            except Exception as e:  # a bug or a library error on odd data: record it, keep the run going
                where = traceback.extract_tb(e.__traceback__)[-1]
                rows = [fail(row, self.name, f"{type(e).__name__}: {e} ({Path(where.filename).name}:{where.lineno})")]
            else:
                rows[0]["done"] = sorted(set(rows[0].get("done") or []) | {self.name})
            out += rows
        return out

    @property
    def members(self) -> list["Stage"]:
        return [self]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(batch_size={self.batch_size}, cpus={self.resources.cpus})"


class Chain(Stage):
    """Consecutive stages fused into one task per batch, as Ray Data fuses map operators: a batch's
    rows go through every member in turn while their decoded clips are still in the worker's cache
    (:func:`worldline.curate.transcode.read_clip`), so a clip is decoded once rather than once per
    stage, and rows cross process boundaries once. A member a row has finished is skipped (resume);
    a row that fails leaves the chain. Resources: the largest member's; batch size: the smallest."""

    def __init__(self, name: str, stages: list[Stage]):
        kinds = {s.kind for s in stages}
        if len(kinds) != 1 or "input" in kinds and len(stages) > 1:
            raise ValueError(f"a chain fuses clip stages only, got {[s.name for s in stages]}")
        self.name = name
        self.kind = stages[0].kind
        self.stages = list(stages)
        self.resources = Resources(max(s.resources.cpus for s in stages), max(s.resources.memory_mb for s in stages))
        self.batch_size = min(s.batch_size for s in stages)

    @property
    def members(self) -> list[Stage]:
        return self.stages

    def run(self, batch: list[Row]) -> list[Row]:
        rows = {r["id"]: r for r in batch}
        for stage in self.stages:
            todo = [r for r in rows.values() if r["status"] != "failed" and stage.name not in (r.get("done") or [])]
            rows.update((r["id"], r) for r in stage.run(todo))
        return list(rows.values())


def fail(row: Row, stage: str, reason: str) -> Row:
    row = dict(row)
    row["status"] = "failed"
    row["failed_stage"] = stage
    row["reason"] = " ".join(str(reason).split())[:300]
    return row


def load_object(spec: str, what: str) -> Any:
    """Instantiate ``"package.module:Class"`` (the plug-in hooks: content classifier, captioner)."""
    module_name, _, attr = spec.partition(":")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise WorldlineError(f"{what} {spec!r} cannot be imported ({e})") from None
    return obj() if isinstance(obj, type) else obj
