"""``train(run_config, out_dir)``: dataset -> model -> windows -> Trainer, the flow every component shares.

1. open the dataset and let the model config fill its dataset-derived fields (``bind_dataset``);
2. build the model and let it get ready (``prepare_for_training``: e.g. load and freeze a tokenizer);
3. load the decoded-frame cache, or the model's latent cache when it trains on latents;
4. split episodes with the one ``split_episodes`` call every stage uses, and window them;
5. hand everything to :class:`~worldline.train.trainer.Trainer`.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path

import torch
import torch.distributed

from worldline.core.config import build_model
from worldline.core.errors import WorldlineError
from worldline.train import distributed as D
from worldline.train.config import RunConfig
from worldline.train.trainer import Trainer, check_run_dir, seed_everything


def train(run_config: RunConfig, out_dir: str | os.PathLike, resume: bool = True, progress: bool = True) -> Path:
    """Train ``run_config`` into ``out_dir`` and return ``out_dir/final`` (a save_pretrained dir).

    With ``resume`` (default), a run already in ``out_dir`` with the same config continues from its
    newest checkpoint, and one with a different config is refused; ``resume=False`` starts over.
    Under ``torchrun`` every process calls this; rank 0 alone writes.
    """
    from worldline.data.cache import frame_store
    from worldline.data.format import Dataset
    from worldline.data.windows import WindowSampler, split_episodes

    cfg = copy.deepcopy(run_config)
    out_dir = Path(out_dir)
    if not cfg.data.path:
        raise WorldlineError("data.path is empty: pass the dataset directory (--data DIR)")
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    owns_group = not torch.distributed.is_initialized()
    info = D.setup(cfg.train.device)
    try:
        # 1. dataset-derived config fields
        dataset = Dataset(cfg.data.path)
        bind = getattr(cfg.model, "bind_dataset", None)
        if callable(bind):
            bind(dataset.info, dataset.stats)

        # 2. model; seeded so every rank (and every rerun) starts from the same initial weights
        seed_everything(cfg.train.seed)
        model = build_model(cfg.model)
        prepare = getattr(model, "prepare_for_training", None)
        if callable(prepare):
            prepare()
        cfg = dataclasses.replace(cfg, model=getattr(model, "config", cfg.model))
        if cfg.train.init_from:
            _init_from(model, cfg.train.init_from)
        if resume and info.is_main:
            check_run_dir(out_dir, cfg.to_dict())  # before the (possibly long) cache build

        # 3. frames (or the model's latents), cached on disk by rank 0 first
        with D.rank_zero_first(info):
            store = frame_store(dataset, cfg.data.camera, progress=progress and info.is_main)
            if getattr(model, "uses_latents", False):
                store = model.latent_store(store)

        # 4. held-out episodes, windows of the length the model asks for
        train_ids, val_ids = split_episodes(dataset.num_episodes, cfg.data.val_fraction, cfg.data.split_seed)
        window = int(model.window())
        train_sampler = WindowSampler(store, window, train_ids, cfg.data.stride)
        if len(train_sampler) == 0:
            raise WorldlineError(
                f"{cfg.data.path}: no training episode is long enough for a window of {window} frames "
                f"at data.stride={cfg.data.stride}"
            )
        val_sampler = WindowSampler(store, window, val_ids, cfg.data.stride) if len(val_ids) else None

        # 5. train
        trainer = Trainer(cfg, model, train_sampler, val_sampler, out_dir, progress=progress, dist=info)
        return trainer.fit(resume=resume)
    finally:
        if owns_group:
            D.cleanup()


def _init_from(model, directory: str) -> None:
    """Start from the weights of a trained model of the same type (a checkpoint resumed later overrides them)."""
    from worldline.core.pretrained import WEIGHTS_NAME, load_weights, read_pretrained_config

    other = read_pretrained_config(directory)
    if type(other) is not type(model.config):
        raise WorldlineError(f"train.init_from={directory} holds a {type(other).type_name()} model, "
                             f"this run trains a {type(model.config).type_name()} model")
    load_weights(model, Path(directory) / WEIGHTS_NAME)
