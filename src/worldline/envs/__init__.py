"""Worlds to record (built-in PushT, Breakout, Reacher, or any gymnasium id), the policies that
drive them, and the recorder that writes their episodes as a worldline dataset.

Importing this package is light; gymnasium and the env packages load with the submodules.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BUILTIN", "WorldInfo", "make_env", "make_policy", "available_policies", "record", "run_episode"]

_WHERE = {
    "BUILTIN": "registry",
    "WorldInfo": "registry",
    "make_env": "registry",
    "make_policy": "policies",
    "available_policies": "policies",
    "record": "recorder",
    "run_episode": "recorder",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"worldline.envs.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'worldline.envs' has no attribute {name!r}")
