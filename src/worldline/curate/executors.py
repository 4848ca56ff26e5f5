"""Executors run a stage over batches of rows and yield each batch's result as it completes.

- :class:`LocalExecutor`: a process pool (``spawn``: safe after torch or Ray were imported) of
  ``workers`` processes, or inline in this process when ``workers == 1`` (no start-up cost).
- :class:`RayExecutor`: one Ray task per batch, scheduled with the stage's declared resources, on a
  local Ray instance (``ray.init(num_cpus=workers)``) or a cluster (``address``; RAW_DIR and OUT must
  then be on storage every node sees). Ray is optional: ``pip install 'worldline[ray]'``.

Both call the same :meth:`Stage.run`, so they compute the same rows; only the order in which batches
finish differs, and the pipeline sorts rows by id.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import time
from typing import Iterator

from worldline.core.errors import WorldlineError
from worldline.curate.stage import Row, Stage


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core; OpenCV's own threads would oversubscribe


def _run(stage: Stage, batch: list[Row]) -> list[Row]:
    return stage.run(batch)


def _warm(_: int) -> int:
    import worldline.curate.pipeline  # noqa: F401  (the stages' imports: cv2, av, scenedetect)

    time.sleep(0.2)  # hold this worker so the other warm-up task lands on another one
    return os.getpid()


class LocalExecutor:
    name = "local"

    def __init__(self, workers: int = 2):
        if workers < 1:
            raise WorldlineError(f"--workers must be at least 1, got {workers}")
        self.workers = workers
        self._pool: cf.ProcessPoolExecutor | None = None

    def start(self) -> "LocalExecutor":
        """Start the worker processes and import the stages' modules in each (otherwise the first
        batches pay for it); benchmarks call this to time start-up apart from work."""
        if self.workers > 1 and self._pool is None:
            ctx = multiprocessing.get_context("spawn")
            self._pool = cf.ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker)
            list(self._pool.map(_warm, range(self.workers)))
        return self

    def map(self, stage: Stage, batches: list[list[Row]]) -> Iterator[list[Row]]:
        if self.workers == 1 or len(batches) == 1:
            _init_worker()
            for batch in batches:
                yield stage.run(batch)
            return
        self.start()
        futures = [self._pool.submit(_run, stage, b) for b in batches]
        try:
            for f in cf.as_completed(futures):
                yield f.result()
        finally:
            for f in futures:
                f.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class RayExecutor:
    name = "ray"

    def __init__(self, workers: int = 2, address: str | None = None):
        try:
            import ray
        except ImportError:
            raise WorldlineError("--executor ray needs Ray: pip install 'worldline[ray]' (or 'ray[data]')") from None
        self.ray = ray
        self.workers = workers
        if not ray.is_initialized():
            if address:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
            self._owns = True
        else:
            self._owns = False
        self._remote = ray.remote(_run_ray)

    def map(self, stage: Stage, batches: list[list[Row]]) -> Iterator[list[Row]]:
        ray = self.ray
        stage_ref = ray.put(stage)
        opts = {"num_cpus": stage.resources.cpus}
        if stage.resources.memory_mb:
            opts["memory"] = stage.resources.memory_mb * 2**20
        pending = list(batches[::-1])
        running: list = []
        limit = 2 * max(1, self.workers)  # bounded in flight: memory stays flat on long inputs lists
        try:
            while pending or running:
                while pending and len(running) < limit:
                    running.append(self._remote.options(**opts).remote(stage_ref, pending.pop()))
                done, running = ray.wait(running, num_returns=1)
                yield ray.get(done[0])
        finally:
            for ref in running:
                ray.cancel(ref)

    def close(self) -> None:
        if self._owns and self.ray.is_initialized():
            self.ray.shutdown()


def _run_ray(stage: Stage, batch: list[Row]) -> list[Row]:
    _init_worker()
    return stage.run(batch)


def make_executor(name: str, workers: int = 2, address: str | None = None):
    if name == "local":
        return LocalExecutor(workers)
    if name == "ray":
        return RayExecutor(workers, address)
    raise WorldlineError(f"--executor must be local or ray, got {name!r}")


def default_workers() -> int:
    return min(2, os.cpu_count() or 1)
