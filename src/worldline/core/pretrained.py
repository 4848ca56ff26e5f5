"""save_pretrained / from_pretrained: safetensors weights + JSON config, nothing pickled."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from worldline import __version__
from worldline.core.config import ModelConfig, build_model, model_config_from_dict, to_dict
from worldline.core.errors import WorldlineError
from worldline.core.io import atomic_dir, read_json, write_json

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def state_dict_for_save(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies; tied tensors are cloned so safetensors accepts them."""
    out, seen = {}, {}
    for key, t in module.state_dict().items():
        t = t.detach().to("cpu")
        ptr = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)) if t.numel() else None
        if ptr is not None and ptr in seen:
            t = t.clone()
        elif ptr is not None:
            seen[ptr] = key
        out[key] = t.contiguous()
    return out


def save_pretrained(module: torch.nn.Module, directory: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write ``config.json`` (with its ``type``) and ``model.safetensors`` atomically."""
    directory = Path(directory)
    config = to_dict(module.config)
    payload = {"worldline_version": __version__, **config}
    if extra:
        payload["extra"] = extra
    with atomic_dir(directory, overwrite=True) as tmp:
        write_json(tmp / CONFIG_NAME, payload)
        save_file(state_dict_for_save(module), str(tmp / WEIGHTS_NAME), metadata={"type": config["type"]})
    return directory


def read_pretrained_config(directory: str | os.PathLike) -> ModelConfig:
    directory = Path(directory)
    if not directory.is_dir():
        raise WorldlineError(f"checkpoint directory not found: {directory}")
    raw = read_json(directory / CONFIG_NAME)
    raw.pop("worldline_version", None)
    raw.pop("extra", None)
    return model_config_from_dict(raw, where=str(directory / CONFIG_NAME))


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a missing or unreadable file is a one-line WorldlineError."""
    path = Path(path)
    if not path.is_file():
        raise WorldlineError(f"missing weights file: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise WorldlineError(f"{path}: unreadable safetensors file ({e})") from None


def load_weights(module: torch.nn.Module, path: str | os.PathLike, strict: bool = True) -> None:
    path = Path(path)
    state = read_weights(path)
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as e:  # tensor shapes differ: weights of another config (e.g. another tokenizer's vocabulary)
        detail = next((line.strip() for line in str(e).splitlines() if "size mismatch" in line), str(e).splitlines()[0])
        raise WorldlineError(f"{path} does not match the {type(module).__name__} config: {detail}") from None
    if strict and (missing or unexpected):
        raise WorldlineError(
            f"{path} does not match the {type(module).__name__} config: "
            f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}"
        )


def load_pretrained(directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> torch.nn.Module:
    """Build whichever registered component ``directory`` holds and load its weights."""
    directory = Path(directory)
    config = read_pretrained_config(directory)
    module = build_model(config)
    load_weights(module, directory / WEIGHTS_NAME)
    return module.to(map_location).eval()


class PretrainedMixin:
    """``save_pretrained``/``from_pretrained`` for registered modules that keep their ``config``."""

    config: ModelConfig

    def save_pretrained(self, directory: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
        return save_pretrained(self, directory, extra)  # type: ignore[arg-type]

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu"):
        module = load_pretrained(directory, map_location)
        if not isinstance(module, cls):
            raise WorldlineError(
                f"{directory} holds a {type(module).__name__} ({module.type_name!r}), not a {cls.__name__}"
            )
        return module
