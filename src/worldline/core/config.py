"""Typed configs, the component registry, named presets and command-line overrides.

Every trainable component has one ``@dataclass`` config, registered with its module under a ``type``
name (``--set model.type=fsq`` switches component). Configs are built from plain dicts with
``dacite`` in strict mode, so a misspelled key or a value of the wrong type is an error that names
the key, never silently ignored. ``__post_init__`` validates values and raises ``ValueError``.

Presets are YAML files in ``worldline/presets``: a ``base`` run config and ``sizes`` that override
it (every preset has a tiny ``debug`` size for tests). Resolution order: base <- size <- ``--set``.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Callable, TypeVar

import dacite
import yaml

from worldline.core.errors import WorldlineError

T = TypeVar("T")
PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"


# ----------------------------------------------------------------------------------------------
# Component registry
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ModelConfig:
    """Base of every registered component config (tokenizers and world models)."""

    @classmethod
    def type_name(cls) -> str:
        for name, (config_cls, _) in MODELS.items():
            if config_cls is cls:
                return name
        raise KeyError(f"{cls.__name__} is not registered")


MODELS: dict[str, tuple[type[ModelConfig], type]] = {}


def register_model(name: str, config_cls: type[ModelConfig]) -> Callable[[type], type]:
    """Register ``model_cls`` (built as ``model_cls(config)``) under the type name ``name``."""

    def deco(model_cls: type) -> type:
        if name in MODELS and MODELS[name][1] is not model_cls:
            raise KeyError(f"model type {name!r} registered twice")
        MODELS[name] = (config_cls, model_cls)
        model_cls.config_class = config_cls
        model_cls.type_name = name
        return model_cls

    return deco


def _import_families() -> None:
    """Import the packages that register model types (kept lazy so `import worldline` stays light)."""
    import worldline.models  # noqa: F401
    import worldline.tokenizers  # noqa: F401


def model_types() -> list[str]:
    _import_families()
    return sorted(MODELS)


def lookup_model(name: str) -> tuple[type[ModelConfig], type]:
    _import_families()
    if name not in MODELS:
        raise WorldlineError(f"unknown model type {name!r} (known: {', '.join(sorted(MODELS))})")
    return MODELS[name]


def model_config_from_dict(data: dict[str, Any], where: str = "model") -> ModelConfig:
    """Build a registered component config from a dict that carries its ``type``."""
    if not isinstance(data, dict) or "type" not in data:
        raise WorldlineError(f"config {where!r} needs a 'type' (one of: {', '.join(model_types())})")
    data = dict(data)
    config_cls, _ = lookup_model(data.pop("type"))
    return from_dict(config_cls, data, where=where)


def build_model(config: ModelConfig):
    """Instantiate the module registered for ``config``'s class."""
    _import_families()
    for config_cls, model_cls in MODELS.values():
        if type(config) is config_cls:
            return model_cls(config)
    raise WorldlineError(f"no model registered for config {type(config).__name__}")


# ----------------------------------------------------------------------------------------------
# dict <-> dataclass
# ----------------------------------------------------------------------------------------------


def to_dict(config: Any) -> dict[str, Any]:
    """Plain-JSON dict of a config; registered component configs carry their ``type`` first."""
    out: dict[str, Any] = {}
    if isinstance(config, ModelConfig) and type(config) is not ModelConfig:
        out["type"] = type(config).type_name()
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Strictly build dataclass ``cls`` from ``data``: unknown keys and wrong types raise
    :class:`WorldlineError` naming ``where.key``; ``ValueError`` from ``__post_init__`` too."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise WorldlineError(f"config {where!r} must be a mapping, got {data!r}")
    known = _field_names(cls)
    for key in data:
        if key not in known:
            raise WorldlineError(f"unknown config key '{where}.{key}' (known: {', '.join(known)})")
    try:
        return dacite.from_dict(cls, data, config=dacite.Config(strict=True, cast=[tuple], type_hooks={float: _as_float}))
    except dacite.WrongTypeError as e:
        raise WorldlineError(
            f"config '{where}.{e.field_path}': expected {_type_str(e.field_type)}, got {e.value!r}"
        ) from None
    except dacite.MissingValueError as e:
        raise WorldlineError(f"config '{where}.{e.field_path}' is required") from None
    except dacite.UnexpectedDataError as e:
        raise WorldlineError(f"unknown config key(s) {sorted(e.keys)} in '{where}'") from None
    except dacite.DaciteError as e:
        raise WorldlineError(f"config {where!r}: {e}") from None
    except ValueError as e:
        raise WorldlineError(f"config {where!r}: {e}") from None


def _as_float(value: Any) -> Any:
    """Accept ints and numeric strings ('1e-3', which YAML 1.1 reads as text) for float fields."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _type_str(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return " | ".join(_type_str(a) for a in typing.get_args(tp))
    return str(tp).replace("typing.", "")


def field_help(cls: type) -> dict[str, str]:
    """Field docs for ``--help``: the ``#`` comment or docstring literal right after each field."""
    import inspect

    try:
        source = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    helps: dict[str, str] = {}
    names = set(_field_names(cls))
    for i, line in enumerate(source):
        stripped = line.strip()
        name = stripped.split(":", 1)[0].strip()
        if name not in names or ":" not in stripped:
            continue
        if "#" in stripped:
            helps[name] = stripped.split("#", 1)[1].strip()
        elif i + 1 < len(source) and source[i + 1].strip().startswith('"""'):
            helps[name] = source[i + 1].strip().strip('"')
    return helps


# ----------------------------------------------------------------------------------------------
# Presets and overrides
# ----------------------------------------------------------------------------------------------


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Recursive merge; a changed ``type`` replaces the whole sub-dict (different component)."""
    out = copy.deepcopy(base)
    for key, value in (over or {}).items():
        if (
            isinstance(value, dict)
            and isinstance(out.get(key), dict)
            and value.get("type", out[key].get("type")) == out[key].get("type")
        ):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def list_presets() -> dict[str, dict[str, Any]]:
    """name -> {'description', 'sizes'} for every preset file."""
    found = {}
    for path in sorted(PRESET_DIR.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text()) or {}
        found[path.stem] = {"description": raw.get("description", ""), "sizes": list(raw.get("sizes", {}))}
    return found


def load_preset(name: str, size: str = "small") -> dict[str, Any]:
    """The run-config dict of preset ``name`` at ``size`` (before overrides)."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise WorldlineError(f"unknown preset {name!r} (known: {', '.join(list_presets())})")
    raw = yaml.safe_load(path.read_text()) or {}
    sizes = raw.get("sizes", {})
    if size not in sizes:
        raise WorldlineError(f"preset {name!r} has no size {size!r} (sizes: {', '.join(sizes)})")
    base = {k: v for k, v in raw.items() if k not in ("description", "sizes")}
    resolved = deep_merge(base, sizes[size] or {})
    resolved.setdefault("meta", {})
    resolved["meta"] = {"preset": name, "size": size, **resolved["meta"]}
    return resolved


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'model.depth=4'`` -> (['model', 'depth'], 4); values are parsed as YAML scalars/lists."""
    if "=" not in text:
        raise WorldlineError(f"override {text!r} must look like key.path=value")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise WorldlineError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return path, value


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides to a config dict; an unknown top-level section errors."""
    out = copy.deepcopy(config)
    for text in overrides or []:
        path, value = parse_override(text)
        node = out
        for i, part in enumerate(path[:-1]):
            if part not in node or not isinstance(node[part], dict):
                if part in node:
                    raise WorldlineError(f"override {text!r}: '{'.'.join(path[: i + 1])}' is not a section")
                node[part] = {}
            node = node[part]
        node[path[-1]] = value
    return out


def save_yaml(path: str | Path, data: dict[str, Any]) -> None:
    from worldline.core.io import atomic_file

    with atomic_file(path, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)
