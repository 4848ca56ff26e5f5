"""The page's controls, built from a checkpoint's :class:`ActionSpec`, and the check of every action
a client sends.

- discrete: each action gets keys. Names made of the words NOOP/UP/DOWN/LEFT/RIGHT/FIRE (Atari's
  ``UPLEFTFIRE``) become the set of arrow keys and Space they name, so holding Up and Left plays
  ``UPLEFT``; other names and unnamed actions (Genie latent actions) get number keys, then letters.
  NOOP (or action 0) is what plays while no key is held.
- continuous, absolute position (PushT: the disc's target in [0, 512]^2): the mouse position over
  the frame is the action (``pointer`` mode).
- continuous, otherwise: one key pair per dimension (arrows, then WASD, IJKL, ...) that drive it to
  its low/high bound while held, plus a drag over the frame for the first two dimensions and a
  slider per dimension.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch

from worldline.core.contracts import ActionSpec
from worldline.core.errors import WorldlineError

DIRECTION_KEYS = {"UP": "ArrowUp", "DOWN": "ArrowDown", "LEFT": "ArrowLeft", "RIGHT": "ArrowRight", "FIRE": "Space"}
SPARE_KEYS = [f"Digit{i}" for i in (1, 2, 3, 4, 5, 6, 7, 8, 9, 0)] + [f"Key{c}" for c in "QWERTYUIOPZXCVBNM"]
AXIS_KEYS = [  # (towards low, towards high) per continuous dimension
    ("ArrowLeft", "ArrowRight"), ("ArrowDown", "ArrowUp"), ("KeyA", "KeyD"), ("KeyS", "KeyW"),
    ("KeyJ", "KeyL"), ("KeyK", "KeyI"), ("KeyZ", "KeyX"), ("KeyC", "KeyV"),
]
UNBOUNDED = 1.0  # the value a key drives an axis to when the space has no bounds (actions are then ~unit scale)
_TOKEN = re.compile("NOOP|UP|DOWN|LEFT|RIGHT|FIRE")


def _name_keys(name: str) -> list[str] | None:
    """Keys a discrete action name spells out (``UPLEFT`` -> ArrowUp + ArrowLeft), [] for NOOP,
    None when the name is not made of direction words."""
    compact = re.sub(r"[^A-Z]", "", name.upper())
    tokens = _TOKEN.findall(compact)
    if not compact or "".join(tokens) != compact:
        return None
    return sorted({DIRECTION_KEYS[t] for t in tokens if t != "NOOP"})


def is_pointer(spec: ActionSpec, env_id: str | None = None) -> bool:
    """An absolute 2-D position: the mouse over the frame is the natural control."""
    names = [n.lower() for n in spec.names or []]
    return spec.kind == "continuous" and spec.dim == 2 and spec.low is not None and (env_id == "pusht" or names == ["x", "y"])


def build_controls(spec: ActionSpec, env_id: str | None = None) -> dict[str, Any]:
    """The JSON the page builds its controls from (see the module docstring)."""
    out: dict[str, Any] = {"kind": spec.kind, "dim": spec.dim, "default": default_action(spec)}
    if spec.kind == "discrete":
        names = spec.names if spec.names and len(spec.names) == spec.n else [str(i) for i in range(spec.n)]
        actions, spare, used = [], iter(SPARE_KEYS), set()
        for i, name in enumerate(names):
            keys = _name_keys(name)
            if keys is not None and tuple(keys) in used:
                keys = None  # two names for one key set: the second gets its own key
            if keys is None:
                keys = [next(spare, None)]
                keys = [] if keys == [None] else keys
            used.add(tuple(keys))
            actions.append({"index": i, "name": name, "keys": keys})
        out["actions"] = actions
    elif spec.kind == "continuous":
        out["mode"] = "pointer" if is_pointer(spec, env_id) else "keys"
        axes = []
        for d in range(spec.dim):
            low, high = _bounds(spec, d)
            neg, pos = AXIS_KEYS[d] if d < len(AXIS_KEYS) else (None, None)
            name = spec.names[d] if spec.names and d < len(spec.names) else f"a{d}"
            axes.append({"name": name, "low": low, "high": high, "neg": neg, "pos": pos})
        out["axes"] = axes
    return out


def _bounds(spec: ActionSpec, d: int) -> tuple[float, float]:
    if spec.low is None or spec.high is None:
        return -UNBOUNDED, UNBOUNDED
    return float(spec.low[d]), float(spec.high[d])


def default_action(spec: ActionSpec) -> list[float]:
    """The action played while nothing is pressed: NOOP (or index 0), the middle of a box (0 when
    the box contains it, e.g. torques), nothing for an action-free model."""
    if spec.kind == "discrete":
        names = [n.upper() for n in spec.names or []]
        return [float(names.index("NOOP"))] if "NOOP" in names else [0.0]
    if spec.kind == "continuous":
        out = []
        for d in range(spec.dim):
            low, high = _bounds(spec, d)
            out.append(0.0 if low <= 0.0 <= high else (low + high) / 2)
        return out
    return []


def parse_action(spec: ActionSpec, message: dict[str, Any]) -> torch.Tensor:
    """The action a client message names -> (1, A) float tensor, or a one-line WorldlineError.

    ``{"name": "LEFT"}`` (discrete), ``{"action": 2}`` or ``{"action": [2]}`` (discrete index),
    ``{"action": [x, y]}`` (continuous, inside the box)."""
    if spec.kind == "none":
        if message.get("action") not in (None, []) or "name" in message:
            raise WorldlineError("this model takes no actions")
        return torch.zeros(1, 0)
    if "name" in message:
        if spec.kind != "discrete":
            raise WorldlineError(f"action names are for discrete action spaces; this one is {spec.kind}: send 'action': [..{spec.dim} numbers]")
        name = message["name"]
        names = spec.names or [str(i) for i in range(spec.n)]
        if not isinstance(name, str) or name not in names:
            shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
            raise WorldlineError(f"unknown action name {str(name)[:40]!r} (known: {shown})")
        return torch.tensor([[float(names.index(name))]])
    if "action" not in message:
        raise WorldlineError("an action message needs 'action' (numbers) or 'name' (a discrete action's name)")
    value = message["action"]
    if spec.kind == "discrete" and not isinstance(value, list):
        value = [value]
    if not isinstance(value, list) or len(value) != spec.dim:
        raise WorldlineError(f"'action' must be a list of {spec.dim} numbers for this {spec.kind} action space, got {str(value)[:60]}")
    row = []
    for d, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise WorldlineError(f"action[{d}] = {str(v)[:30]} is not a finite number")
        row.append(float(v))
    if spec.kind == "discrete":
        i = row[0]
        if i != int(i) or not 0 <= i < spec.n:
            raise WorldlineError(f"discrete action {value[0]} is outside the space: an index in 0..{spec.n - 1}")
    elif spec.low is not None and spec.high is not None:
        for d, v in enumerate(row):
            low, high = _bounds(spec, d)
            slack = 1e-6 * max(1.0, abs(low), abs(high))
            if not low - slack <= v <= high + slack:
                raise WorldlineError(f"action[{d}] = {v:g} is outside the space [{low:g}, {high:g}]")
    return torch.tensor([row], dtype=torch.float32)  # (1, A)
