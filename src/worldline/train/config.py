"""The run config: what ``worldline train`` builds from a preset, ``--set`` overrides and the CLI."""

from __future__ import annotations

import dataclasses
from typing import Any

from worldline.core.config import ModelConfig, from_dict, model_config_from_dict, to_dict
from worldline.data.config import DataConfig


@dataclasses.dataclass
class TrainConfig:
    steps: int = 1000
    """Optimiser steps (each of grad_accum micro-batches)."""
    batch_size: int = 16  # per process and micro-batch
    grad_accum: int = 1  # micro-batches per optimiser step, to reach large batches on small machines
    lr: float = 3e-4  # peak learning rate after warm-up
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.01  # AdamW, applied to matrices only (not norms, biases, embeddings)
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    ema_decay: float = 0.0  # EMA of weights used for eval/export; 0 disables
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU; or fp32 / bf16
    compile: bool = False  # torch.compile the model (pays off on GPU for long runs)
    seed: int = 0
    init_from: str = ""  # a save_pretrained dir (e.g. runs/x/final) whose weights start the run: fine-tuning with a changed loss or data
    log_every: int = 10  # steps between logged training metrics
    eval_every: int = 200  # steps between validation passes; 0 disables
    eval_batches: int = 4  # validation batches per pass
    ckpt_every: int = 500  # steps between checkpoints (a final one is always written)
    keep_last: int = 2  # checkpoints kept (older ones deleted)
    device: str = "auto"  # auto: cuda if available, else cpu
    threads: int = 0  # torch CPU threads; 0 keeps torch's default

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps=}")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError(f"batch_size and grad_accum must be >= 1, got {self.batch_size=} {self.grad_accum=}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay=}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be auto, fp32 or bf16, got {self.precision=}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr=}")
        if self.keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {self.keep_last=}")


@dataclasses.dataclass
class RunConfig:
    model: ModelConfig
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)  # preset name/size, free-form notes

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        data = dict(data)
        unknown = set(data) - {"model", "train", "data", "meta"}
        if unknown:
            from worldline.core.errors import WorldlineError

            raise WorldlineError(f"unknown config section(s) {sorted(unknown)} (known: model, train, data, meta)")
        return cls(
            model=model_config_from_dict(data.get("model"), "model"),
            train=from_dict(TrainConfig, data.get("train", {}), "train"),
            data=from_dict(DataConfig, data.get("data", {}), "data"),
            meta=dict(data.get("meta", {})),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"model": to_dict(self.model), "train": to_dict(self.train), "data": to_dict(self.data), "meta": self.meta}
