"""Training checkpoints: safetensors + JSON, written atomically, the last N kept.

A checkpoint directory ``OUT/checkpoints/step-000500/`` holds

```
model.safetensors           training (non-EMA) weights; with config.json it loads with load_pretrained
config.json                 the model config with its type, as save_pretrained writes it
config.yaml                 the resolved run config
trainer_state.safetensors   optimizer tensors ("optim/..."), EMA weights ("ema/<param>"),
                            torch RNG states as uint8 ("rng/<rank>/torch_cpu", "rng/<rank>/cuda")
trainer_state.json          step, the optimizer's scalar structure (tensors replaced by references),
                            EMA counters, numpy/python RNG states per rank, elapsed time
```

The directory is built beside its final name and renamed into place in one step (``atomic_dir``), so
a process killed while writing leaves only a hidden ``.step-*.tmp-*`` sibling, which is ignored and
swept up by the next save. Nothing is pickled.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from worldline import __version__
from worldline.core.config import save_yaml, to_dict
from worldline.core.errors import WorldlineError
from worldline.core.io import atomic_dir, read_json, write_json
from worldline.core.pretrained import CONFIG_NAME, WEIGHTS_NAME, state_dict_for_save

STATE_JSON = "trainer_state.json"
STATE_TENSORS = "trainer_state.safetensors"
RUN_CONFIG = "config.yaml"
FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"^step-(\d+)$")


def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


# ----------------------------------------------------------------------------------------------
# Nested state <-> (JSON structure, flat tensor dict)
# ----------------------------------------------------------------------------------------------


def flatten_state(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-able copy of ``obj`` whose tensors are moved into ``tensors`` under ``prefix/...`` keys and
    replaced by ``{"__tensor__": key}``. Dicts with non-string keys (optimizer state is keyed by
    parameter index) and tuples are tagged so :func:`unflatten_state` restores them exactly."""
    if isinstance(obj, torch.Tensor):
        key = prefix
        tensors[key] = obj.detach().to("cpu").contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: flatten_state(v, f"{prefix}/{k}", tensors) for k, v in obj.items()}
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"cannot store a state key of type {type(k).__name__} at {prefix}")
            items.append([k, flatten_state(v, f"{prefix}/{k}", tensors)])
        return {"__dict__": items}
    if isinstance(obj, tuple):
        return {"__tuple__": [flatten_state(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [flatten_state(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    raise TypeError(f"cannot store a value of type {type(obj).__name__} at {prefix}")


def unflatten_state(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {k: unflatten_state(v, tensors) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(unflatten_state(v, tensors) for v in obj["__tuple__"])
        return {k: unflatten_state(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unflatten_state(v, tensors) for v in obj]
    return obj


# ----------------------------------------------------------------------------------------------
# RNG states
# ----------------------------------------------------------------------------------------------


def capture_rng() -> dict[str, Any]:
    """This process's RNG states: torch CPU (+ current CUDA device) as uint8 tensors, numpy and
    python's as JSON-able lists."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch_cpu": torch.get_rng_state(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch_cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def rng_to_bytes(state: dict[str, Any]) -> bytes:
    """Wire format for gathering every rank's RNG state on rank 0 (JSON, tensors as base64)."""
    out = {}
    for k, v in state.items():
        out[k] = {"b64": base64.b64encode(v.numpy().tobytes()).decode()} if isinstance(v, torch.Tensor) else v
    return json.dumps(out).encode()


def rng_from_bytes(data: bytes) -> dict[str, Any]:
    raw = json.loads(data.decode())
    out = {}
    for k, v in raw.items():
        if isinstance(v, dict) and "b64" in v:
            out[k] = torch.frombuffer(bytearray(base64.b64decode(v["b64"])), dtype=torch.uint8).clone()
        else:
            out[k] = v
    return out


# ----------------------------------------------------------------------------------------------
# Save / list / load
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Checkpoint:
    """A checkpoint read back from disk."""

    path: Path
    step: int
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any] | None
    ema_state: tuple[dict[str, torch.Tensor], dict[str, Any]] | None
    rng: list[dict[str, Any]]  # one per rank of the run that wrote it
    trainer: dict[str, Any]  # elapsed time, samples seen, world size, ...
    run_config: dict[str, Any] | None


def save_checkpoint(
    root: str | os.PathLike,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    ema: Any | None = None,
    rng: list[dict[str, Any]] | None = None,
    run_config: dict[str, Any] | None = None,
    trainer: dict[str, Any] | None = None,
    keep_last: int | None = None,
) -> Path:
    """Write ``root/step-XXXXXX`` atomically, then delete all but the newest ``keep_last``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    sweep_stale(root)
    tensors: dict[str, torch.Tensor] = {}
    state: dict[str, Any] = {"format": FORMAT_VERSION, "worldline_version": __version__, "step": step}
    state["optimizer"] = flatten_state(optimizer.state_dict(), "optim", tensors) if optimizer is not None else None
    if ema is not None:
        ema_tensors, ema_scalars = ema.state_dict()
        for name, t in ema_tensors.items():
            tensors[f"ema/{name}"] = t.detach().to("cpu").contiguous()
        state["ema"] = ema_scalars
    else:
        state["ema"] = None
    state["rng"] = []
    for r, rank_state in enumerate(rng or [capture_rng()]):
        entry = {}
        for key, value in rank_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"rng/{r}/{key}"] = value.to("cpu").contiguous()
                entry[key] = {"__tensor__": f"rng/{r}/{key}"}
            else:
                entry[key] = value
        state["rng"].append(entry)
    state["trainer"] = dict(trainer or {})

    model_config = to_dict(model.config) if hasattr(model, "config") else {}
    path = root / step_dir_name(step)
    with atomic_dir(path, overwrite=True) as tmp:
        save_file(state_dict_for_save(model), str(tmp / WEIGHTS_NAME), metadata={"type": str(model_config.get("type", ""))})
        write_json(tmp / CONFIG_NAME, {"worldline_version": __version__, **model_config, "extra": {"step": step}})
        save_file(tensors, str(tmp / STATE_TENSORS))
        write_json(tmp / STATE_JSON, state)
        if run_config is not None:
            save_yaml(tmp / RUN_CONFIG, run_config)
    if keep_last is not None:
        prune(root, keep_last)
    return path


def list_checkpoints(root: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root``, oldest first (hidden half-written ones are skipped)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / STATE_JSON).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def prune(root: str | os.PathLike, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` checkpoints; each is first renamed to a hidden name so
    a kill mid-delete never leaves a half-deleted ``step-*`` that looks complete."""
    for _, path in list_checkpoints(root)[:-keep_last]:
        doomed = path.with_name(f".{path.name}.del-{os.getpid()}")
        os.replace(path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)


def sweep_stale(root: str | os.PathLike) -> None:
    """Remove hidden leftovers of killed writes/deletes (``.step-*.tmp-*``, ``.step-*.del-*``, ``.old-*``)."""
    root = Path(root)
    if not root.is_dir():
        return
    for p in root.iterdir():
        if p.name.startswith(".step-") and any(tag in p.name for tag in (".tmp-", ".del-", ".old-")):
            shutil.rmtree(p, ignore_errors=True)


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WorldlineError(f"checkpoint file missing: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise WorldlineError(f"{path}: unreadable safetensors file ({e})") from None


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint directory; any missing or corrupt file is a one-line WorldlineError."""
    path = Path(path)
    state = read_json(path / STATE_JSON)
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION or "step" not in state:
        raise WorldlineError(f"{path / STATE_JSON}: not a worldline trainer state (format {FORMAT_VERSION})")
    tensors = _load_tensors(path / STATE_TENSORS)
    model_state = _load_tensors(path / WEIGHTS_NAME)
    try:
        optimizer_state = unflatten_state(state["optimizer"], tensors) if state.get("optimizer") is not None else None
        ema_state = None
        if state.get("ema") is not None:
            ema_tensors = {k[len("ema/") :]: v for k, v in tensors.items() if k.startswith("ema/")}
            ema_state = (ema_tensors, state["ema"])
        rng = [unflatten_state(entry, tensors) for entry in state.get("rng", [])]
    except KeyError as e:
        raise WorldlineError(f"{path / STATE_TENSORS}: missing tensor {e}") from None
    run_config = None
    if (path / RUN_CONFIG).is_file():
        import yaml

        run_config = yaml.safe_load((path / RUN_CONFIG).read_text())
    return Checkpoint(
        path=path,
        step=int(state["step"]),
        model_state=model_state,
        optimizer_state=optimizer_state,
        ema_state=ema_state,
        rng=rng,
        trainer=dict(state.get("trainer") or {}),
        run_config=run_config,
    )
