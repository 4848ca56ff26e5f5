"""The one trainer for every trainable part: anything with ``loss(batch) -> (loss, logs)`` and ``window()``.

AdamW with decoupled weight decay on matrices only, linear warm-up then cosine decay, global-norm
gradient clipping, gradient accumulation, an EMA of the weights, bf16 autocast on GPU, optional
``torch.compile``, DDP under ``torchrun``, TensorBoard + ``metrics.jsonl`` logs, a progress bar, and
checkpoints that resume exactly: batches come from ``sampler.sample(batch_size, step, seed, rank,
world_size)``, a pure function of the step, and the RNG states are saved with the weights, so a run
stopped after k steps and resumed draws the same batches and the same noise as one that never stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import queue
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Protocol

import numpy as np
import torch
from torch import nn

from worldline.core.config import save_yaml
from worldline.core.errors import WorldlineError
from worldline.core.io import atomic_file
from worldline.core.pretrained import save_pretrained
from worldline.train import checkpoint as ckpt
from worldline.train import distributed as D
from worldline.train.config import RunConfig, TrainConfig
from worldline.train.ema import EMA

Batch = dict[str, Any]

# Train-config fields that change logging, checkpointing or hardware but not the maths of the run:
# a run may be resumed with new values for them.
RESUMABLE_FIELDS = {"log_every", "eval_every", "eval_batches", "ckpt_every", "keep_last", "device", "threads", "compile"}


class Sampler(Protocol):
    def sample(self, batch_size: int, step: int, seed: int, rank: int = 0, world_size: int = 1) -> Batch: ...


# ----------------------------------------------------------------------------------------------
# Optimiser and schedule
# ----------------------------------------------------------------------------------------------


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices and conv kernels; not biases, norm gains or embedding tables (decaying those
    only pulls them towards zero without regularising anything, as in GPT-2/nanoGPT)."""
    embedding_params = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and id(p) not in embedding_params else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    groups = param_groups(model, cfg.weight_decay)
    if not groups:
        raise WorldlineError(f"{type(model).__name__} has no trainable parameters")
    # The fused CUDA kernel is one launch for all parameters; on CPU the foreach path is the fast one.
    fused = device.type == "cuda"
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=fused)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimiser step ``step`` (0-based): linear warm-up over ``warmup_steps``, then
    a half cosine from ``lr`` down to ``lr * min_lr_ratio`` at the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps - 1)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1.0 + math.cos(math.pi * progress))


def derived_seed(*parts: int) -> int:
    """A 63-bit seed from several integers (seed, rank, ...), well mixed by numpy's SeedSequence."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and python's ``random``."""
    import random

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


# ----------------------------------------------------------------------------------------------
# Batches
# ----------------------------------------------------------------------------------------------


class _Prefetcher:
    """Draws the batches of the next micro-steps on a background thread while the model trains.

    Safe for exact resume because ``sampler.sample`` is a pure function of its arguments."""

    def __init__(self, fn, start: int, depth: int = 2):
        self.fn = fn
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(start,), daemon=True, name="worldline-prefetch")
        self.thread.start()

    def _run(self, index: int) -> None:
        while not self.stop.is_set():
            try:
                item = (index, self.fn(index), None)
            except BaseException as e:  # re-raised in the training thread
                item = (index, None, e)
            while not self.stop.is_set():
                try:
                    self.queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item[2] is not None:
                return
            index += 1

    def next(self, expected: int) -> Batch:
        index, batch, error = self.queue.get()
        if error is not None:
            raise error
        assert index == expected, (index, expected)
        return batch

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


def to_device(batch: Batch, device: torch.device) -> Batch:
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


class _LossModule(nn.Module):
    """``forward(batch) = model.loss(batch)``, so DDP and torch.compile wrap the loss of any model."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: Batch):
        return self.model.loss(batch)


# ----------------------------------------------------------------------------------------------
# Logging
# ----------------------------------------------------------------------------------------------


class _Logger:
    """metrics.jsonl + TensorBoard + a rich progress bar, on rank 0 only."""

    def __init__(self, out_dir: Path, start_step: int, total: int, progress: bool, samples_per_step: int):
        self.path = out_dir / "metrics.jsonl"
        self._truncate(start_step)
        self.file = open(self.path, "a", buffering=1)
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events an interrupted run wrote after its last checkpoint.
        self.tb = SummaryWriter(str(out_dir / "tb"), purge_step=start_step + 1 if start_step > 0 else None)
        self.samples_per_step = samples_per_step
        self.progress = None
        if progress:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("[bold]train"),
                BarColumn(bar_width=20),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
            )
            self.progress.start()
            self.task = self.progress.add_task("train", total=total, completed=start_step, rate="", loss="-")

    def _truncate(self, start_step: int) -> None:
        """Drop lines an interrupted run logged after the checkpoint we resume from (and a torn last line)."""
        if not self.path.is_file():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and row.get("step", 0) <= start_step:
                keep.append(line)
        with atomic_file(self.path, "w") as f:
            f.write("".join(f"{line}\n" for line in keep))

    def log(self, row: dict[str, Any]) -> None:
        self.file.write(json.dumps(row) + "\n")
        for key, value in row.items():
            if key not in ("step", "split", "time") and isinstance(value, (int, float)):
                self.tb.add_scalar(f"{row['split']}/{key}", value, row["step"])

    def advance(self, step: int, loss: float | None = None, steps_per_s: float | None = None) -> None:
        if self.progress is None:
            return
        fields = {}
        if loss is not None:
            fields["loss"] = f"{loss:.4g}"
        if steps_per_s is not None:
            fields["rate"] = f"{steps_per_s:.3g} step/s {steps_per_s * self.samples_per_step:.4g} samples/s"
        self.progress.update(self.task, completed=step, **fields)

    def flush(self) -> None:
        self.file.flush()
        self.tb.flush()

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        self.file.close()
        self.tb.close()


# ----------------------------------------------------------------------------------------------
# Trainer
# ----------------------------------------------------------------------------------------------


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every setting that changes the run (meta and RESUMABLE_FIELDS ignored)."""
    diffs: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in list(a) + [k for k in b if k not in a]:
                sub = f"{path}.{key}" if path else str(key)
                if sub == "meta" or (path == "train" and key in RESUMABLE_FIELDS):
                    continue
                walk(a.get(key, "<unset>"), b.get(key, "<unset>"), sub)
        elif a != b and not (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and list(a) == list(b)):
            diffs.append(f"{path}: {a!r} -> {b!r}")

    walk(old, new, "")
    return diffs


def existing_run_config(out_dir: Path) -> dict[str, Any] | None:
    """The resolved config of the run already in ``out_dir`` (config.yaml, else its newest checkpoint's)."""
    import yaml

    for path in (out_dir / "config.yaml", (ckpt.latest_checkpoint(out_dir / "checkpoints") or out_dir) / ckpt.RUN_CONFIG):
        if path.is_file():
            try:
                return yaml.safe_load(path.read_text())
            except yaml.YAMLError as e:
                raise WorldlineError(f"{path}: not valid YAML ({e.__class__.__name__})") from None
    return None


def check_run_dir(out_dir: str | Path, config: dict[str, Any]) -> None:
    """Raise a one-line WorldlineError if ``out_dir`` holds a run whose config differs from ``config``."""
    out_dir = Path(out_dir)
    old = existing_run_config(out_dir)
    if old is None:
        return
    diffs = config_differences(old, config)
    if diffs:
        more = f" (+{len(diffs) - 3} more)" if len(diffs) > 3 else ""
        raise WorldlineError(
            f"{out_dir} holds a run with a different config ({'; '.join(diffs[:3])}{more}); "
            "pass --overwrite (resume=False) to start over, or choose another output directory"
        )


class Trainer:
    """Train ``model`` with the ``train`` section of ``config``; see the module docstring.

    ``model.loss(batch)`` returns ``(loss, logs)``; log values may be floats or 0-d tensors (tensors
    avoid a device sync per step) and must have the same keys on every rank. ``out_dir`` receives
    config.yaml, metrics.jsonl, tb/, checkpoints/ and final/, written by rank 0 alone.
    """

    def __init__(
        self,
        config: RunConfig,
        model: nn.Module,
        train_sampler: Sampler,
        val_sampler: Sampler | None = None,
        out_dir: str | Path = "runs/train",
        progress: bool = True,
        dist: D.DistInfo | None = None,
    ):
        if not callable(getattr(model, "loss", None)):
            raise WorldlineError(f"{type(model).__name__} has no loss(batch) method, so it cannot be trained")
        if hasattr(model, "config"):
            config = dataclasses.replace(config, model=model.config)
        self.config = config
        self.cfg: TrainConfig = config.train
        self.model = model
        self.train_sampler = train_sampler
        self.val_sampler = val_sampler
        self.out_dir = Path(out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.final_dir = self.out_dir / "final"
        self.progress = progress
        self.dist = dist or D.setup(self.cfg.device)
        self.device = self.dist.device
        self.step = 0
        self.elapsed = 0.0  # training seconds, summed over resumed sessions
        self._stop_signal: str | None = None

        if self.cfg.threads > 0:
            torch.set_num_threads(self.cfg.threads)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls for the fp32 parts
            torch.backends.cudnn.allow_tf32 = True
        self.autocast_dtype = self._autocast_dtype()

        self.model.to(self.device)
        self.optimizer = build_optimizer(self.model, self.cfg, self.device)
        self.ema = EMA(self.model, self.cfg.ema_decay).to(self.device) if self.cfg.ema_decay > 0 else None
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        module: nn.Module = D.wrap_ddp(_LossModule(self.model), self.dist)
        self.ddp = module if self.dist.distributed else None
        self.forward = torch.compile(module) if self.cfg.compile else module

    # ------------------------------------------------------------------ setup

    def _autocast_dtype(self) -> torch.dtype | None:
        precision = self.cfg.precision
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        return torch.bfloat16 if precision == "bf16" else None

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def run_config_dict(self) -> dict[str, Any]:
        return self.config.to_dict()

    def _clear_run(self) -> None:
        import shutil

        for name in ("checkpoints", "tb", "final"):
            shutil.rmtree(self.out_dir / name, ignore_errors=True)
        for name in ("metrics.jsonl", "config.yaml"):
            (self.out_dir / name).unlink(missing_ok=True)

    def _prepare_out_dir(self, resume: bool) -> None:
        """Rank 0: refuse a run dir that holds a different run (unless told to start over)."""
        new = self.run_config_dict()
        if resume:
            check_run_dir(self.out_dir, new)
        else:
            self._clear_run()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        save_yaml(self.out_dir / "config.yaml", new)

    # ------------------------------------------------------------------ state

    def _gather_rng(self) -> list[dict[str, Any]]:
        blobs = D.gather_bytes(ckpt.rng_to_bytes(ckpt.capture_rng()), self.dist)
        return [ckpt.rng_from_bytes(b) for b in blobs]

    def save_checkpoint(self) -> Path | None:
        """Collective in DDP (RNG states are gathered); only rank 0 writes."""
        rng = self._gather_rng()
        if not self.dist.is_main:
            return None
        return ckpt.save_checkpoint(
            self.ckpt_dir,
            self.step,
            self.model,
            self.optimizer,
            ema=self.ema,
            rng=rng,
            run_config=self.run_config_dict(),
            trainer={"elapsed": self.elapsed, "world_size": self.dist.world_size},
            keep_last=self.cfg.keep_last,
        )

    def load_checkpoint(self, path: Path) -> None:
        state = ckpt.load_checkpoint(path)
        try:
            missing, unexpected = self.model.load_state_dict(state.model_state, strict=False)
        except RuntimeError as e:  # tensor shapes differ: the run's config changed since this checkpoint
            detail = next((line.strip() for line in str(e).splitlines() if "size mismatch" in line), str(e).splitlines()[0])
            raise WorldlineError(f"{path} does not match the model (config changed since it was saved? "
                                 f"start a new --out or pass --no-resume): {detail}") from None
        if missing or unexpected:
            raise WorldlineError(f"{path} does not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
        if state.optimizer_state is not None:
            try:
                self.optimizer.load_state_dict(state.optimizer_state)
            except (ValueError, KeyError) as e:
                raise WorldlineError(f"{path}: optimizer state does not match the model ({e})") from None
        if self.ema is not None:
            if state.ema_state is None:
                raise WorldlineError(f"{path} has no EMA weights but train.ema_decay={self.cfg.ema_decay}")
            try:
                self.ema.load_state_dict(*state.ema_state)
            except KeyError as e:
                raise WorldlineError(f"{path}: {e}") from None
        saved_world = int(state.trainer.get("world_size", 1))
        if len(state.rng) == self.dist.world_size and saved_world == self.dist.world_size:
            ckpt.restore_rng(state.rng[self.dist.rank])
        else:
            # A different number of processes draws different batches anyway; start fresh streams.
            seed_everything(derived_seed(self.cfg.seed, self.dist.rank, state.step))
            if self.dist.is_main:
                print(f"note: {path} was written by {saved_world} process(es), resuming on {self.dist.world_size}: not bitwise exact")
        self.step = state.step
        self.elapsed = float(state.trainer.get("elapsed", 0.0))

    # ------------------------------------------------------------------ steps

    def micro_batch(self, index: int) -> Batch:
        """Micro-batch ``index`` (= step * grad_accum + micro) of this rank: a pure function of it."""
        return self.train_sampler.sample(
            self.cfg.batch_size, step=index, seed=self.cfg.seed, rank=self.dist.rank, world_size=self.dist.world_size
        )

    def _host_batch(self, index: int) -> Batch:
        batch = self.micro_batch(index)
        if self.device.type == "cuda":  # page-locked, so the copy to the GPU overlaps compute
            batch = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        return batch

    def train_step(self, prefetch: _Prefetcher) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, float]:
        """One optimiser step over ``grad_accum`` micro-batches -> (mean loss, mean logs, grad norm, lr)."""
        cfg = self.cfg
        lr = lr_at(self.step, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total = torch.zeros((), device=self.device)
        logs_sum: dict[str, torch.Tensor] = {}
        for micro in range(cfg.grad_accum):
            batch = to_device(prefetch.next(self.step * cfg.grad_accum + micro), self.device)
            last = micro == cfg.grad_accum - 1
            sync = contextlib.nullcontext() if (self.ddp is None or last) else self.ddp.no_sync()
            with sync:
                with self._autocast():
                    loss, logs = self.forward(batch)
                (loss / cfg.grad_accum).backward()
            total += loss.detach().float()
            for k, v in (logs or {}).items():  # 0-d tensors stay on the device: no sync per step
                v = v.detach().float() if isinstance(v, torch.Tensor) else torch.tensor(float(v), device=self.device)
                logs_sum[k] = logs_sum[k] + v if k in logs_sum else v
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        return total / cfg.grad_accum, {k: v / cfg.grad_accum for k, v in logs_sum.items()}, grad_norm.detach(), lr

    @torch.no_grad()
    def evaluate(self) -> dict[str, float] | None:
        """Mean loss/logs over ``eval_batches`` fixed validation batches, with the EMA weights if any.

        The RNG is forked and seeded, so validation neither disturbs the training stream (resume stays
        exact whatever eval_every is) nor varies its own noise from one pass to the next."""
        if self.val_sampler is None or self.cfg.eval_batches < 1:
            return None
        if hasattr(self.val_sampler, "__len__") and len(self.val_sampler) == 0:
            return None
        devices = [self.device] if self.device.type == "cuda" else []
        self.model.eval()
        sums: dict[str, float] = {}
        ema = self.ema.applied(self.model) if self.ema is not None else contextlib.nullcontext()
        try:
            with ema, torch.random.fork_rng(devices=devices, device_type=self.device.type):
                torch.manual_seed(derived_seed(self.cfg.seed, self.dist.rank, 0x5EED))
                for i in range(self.cfg.eval_batches):
                    batch = self.val_sampler.sample(
                        self.cfg.batch_size, step=i, seed=self.cfg.seed, rank=self.dist.rank, world_size=self.dist.world_size
                    )
                    with self._autocast():
                        loss, logs = self.model.loss(to_device(batch, self.device))
                    row = {**{k: float(v) for k, v in (logs or {}).items()}, "loss": float(loss)}
                    for k, v in row.items():
                        sums[k] = sums.get(k, 0.0) + v
        finally:
            self.model.train()
        keys = sorted(sums)
        values = D.all_reduce_mean(torch.tensor([sums[k] / self.cfg.eval_batches for k in keys]), self.dist)
        return dict(zip(keys, values.tolist()))

    # ------------------------------------------------------------------ fit

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """First SIGINT/SIGTERM: finish the current step, checkpoint, stop. Second SIGINT: stop now."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self._stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._stop_signal = signal.Signals(signum).name

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def fit(self, resume: bool = True, max_steps: int | None = None) -> Path:
        """Train to ``train.steps`` (or stop early after ``max_steps``) and return ``OUT/final``.

        With ``resume`` it continues from the newest complete checkpoint in ``OUT/checkpoints``;
        without it, an existing run in ``OUT`` is deleted first."""
        cfg = self.cfg
        ok, error = True, None
        if self.dist.is_main:
            try:
                self._prepare_out_dir(resume)
            except WorldlineError as e:
                ok, error = False, e
        if not D.broadcast_bool(ok, self.dist):
            raise error if error is not None else WorldlineError(f"rank 0 refused the run directory {self.out_dir}")

        latest = ckpt.latest_checkpoint(self.ckpt_dir) if resume else None
        if latest is not None:
            self.load_checkpoint(latest)
        else:
            seed_everything(derived_seed(cfg.seed, self.dist.rank))
            self.step = 0
        target = cfg.steps if max_steps is None else min(cfg.steps, self.step + max_steps)
        if self.step >= cfg.steps and self.final_dir.is_dir():
            D.barrier(self.dist)
            return self.final_dir

        samples_per_step = cfg.batch_size * cfg.grad_accum * self.dist.world_size
        logger = _Logger(self.out_dir, self.step, cfg.steps, self.progress, samples_per_step) if self.dist.is_main else None
        prefetch = _Prefetcher(self._host_batch, self.step * cfg.grad_accum)
        self.model.train()
        saved_at = self.step if latest is not None else -1
        stop = False
        window_logs: dict[str, torch.Tensor] = {}
        window_steps = 0
        loss_acc = torch.zeros((), device=self.device)
        norm_acc = torch.zeros((), device=self.device)
        t_window = time.perf_counter()
        try:
            with self._signals():
                while self.step < target:
                    loss, logs, grad_norm, lr = self.train_step(prefetch)
                    loss_acc += loss
                    norm_acc += grad_norm.float()
                    for k, v in logs.items():
                        window_logs[k] = window_logs[k] + v if k in window_logs else v
                    window_steps += 1

                    # Ranks agree on stopping at log steps only, so every rank takes the same branches.
                    if self.dist.distributed:
                        stop = self.step % cfg.log_every == 0 and D.any_rank(self._stop_signal is not None, self.dist)
                    else:
                        stop = self._stop_signal is not None
                    if self.step % cfg.log_every == 0 or self.step == target or stop:
                        now = time.perf_counter()
                        dt = now - t_window
                        self.elapsed += dt
                        keys = sorted(window_logs)
                        packed = torch.stack([loss_acc, norm_acc, *(window_logs[k].to(self.device) for k in keys)])
                        packed = D.all_reduce_mean(packed, self.dist).cpu() / window_steps
                        window_loss, window_norm = float(packed[0]), float(packed[1])
                        if not math.isfinite(window_loss):
                            raise WorldlineError(
                                f"training loss became {window_loss} at step {self.step}; lower train.lr "
                                f"(now {cfg.lr}) or raise train.warmup_steps; the last good checkpoint is kept"
                            )
                        steps_per_s = window_steps / max(dt, 1e-9)
                        if logger is not None:
                            row = {"step": self.step, "split": "train"}
                            row.update({k: float(v) for k, v in zip(keys, packed[2:].tolist())})
                            row.update({
                                "loss": window_loss,
                                "lr": lr,
                                "grad_norm": window_norm,
                                "steps_per_s": steps_per_s,
                                "samples_per_s": steps_per_s * samples_per_step,
                                "time": round(self.elapsed, 3),
                            })
                            logger.log(row)
                            logger.advance(self.step, window_loss, steps_per_s)
                        window_logs, window_steps = {}, 0
                        loss_acc.zero_()
                        norm_acc.zero_()
                        t_window = time.perf_counter()
                    elif logger is not None:
                        logger.advance(self.step)

                    # validation and checkpoint time is left out of the training rate and "time"
                    t_pause = time.perf_counter()
                    if cfg.eval_every and self.step % cfg.eval_every == 0:
                        val = self.evaluate()
                        if val is not None and logger is not None:
                            logger.log({"step": self.step, "split": "val", **val, "time": round(self.elapsed, 3)})
                    if self.step % cfg.ckpt_every == 0 or self.step == target or stop:
                        self.save_checkpoint()
                        saved_at = self.step
                        if logger is not None:
                            logger.flush()
                    t_window += time.perf_counter() - t_pause
                    if stop:
                        break
        finally:
            prefetch.close()
            if logger is not None:
                logger.close()
        if saved_at != self.step:
            self.save_checkpoint()
        if stop:
            if self.dist.is_main:
                print(f"stopped by {self._stop_signal or 'a signal to another rank'} at step {self.step}; checkpoint saved, run again to resume")
            raise KeyboardInterrupt(f"stopped at step {self.step}")
        if self.step >= cfg.steps and self.dist.is_main:
            self.export(self.final_dir)
        D.barrier(self.dist)
        return self.final_dir

    def export(self, directory: Path) -> Path:
        """save_pretrained of the model (EMA weights when ema_decay > 0) with the run config and step."""
        extra = {"run": self.run_config_dict(), "step": self.step}
        ema = self.ema.applied(self.model) if self.ema is not None else contextlib.nullcontext()
        with ema:
            return save_pretrained(self.model, directory, extra=extra)
