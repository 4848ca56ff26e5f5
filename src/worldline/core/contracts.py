"""The shapes every family agrees on (see ARCHITECTURE.md, "Contracts").

Video is ``(B, T, C, H, W)`` float in [-1, 1] inside models and uint8 on disk. Actions are
``(B, T, A)`` float; a discrete action space is one integer-index column (A = 1) that the model
embeds. ``actions[:, t]`` is the action taken at frame t, which leads to frame t + 1 (the recorder's
convention, LeRobot's too), so the first action a rollout takes is the one chosen at the last
context frame. Planners, the play server and agents see a world model only through :class:`WorldModel`.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from worldline.core.errors import WorldlineError
from worldline.core.pretrained import PretrainedMixin

Batch = dict[str, Tensor]
"""A training batch: ``frames`` (B,T,C,H,W) float [-1,1]; ``actions`` (B,T,A) float; optional
``rewards`` (B,T), ``dones`` (B,T) bool, ``episode_index`` (B,), ``frame_index`` (B,T)."""


@dataclasses.dataclass
class ActionSpec:
    """The action space a model was trained with (copied from the dataset's ``meta/info.json``)."""

    kind: str = "none"  # "discrete" (one integer column), "continuous" (box) or "none" (video only)
    dim: int = 0  # columns in the action tensor: 1 for discrete, the box size for continuous
    n: int = 0  # number of discrete actions
    low: list[float] | None = None  # box bounds, used to scale continuous actions to [-1, 1]
    high: list[float] | None = None
    names: list[str] | None = None  # human names of discrete actions / box dimensions

    def __post_init__(self):
        if self.kind not in ("discrete", "continuous", "none"):
            raise ValueError(f"action kind must be discrete, continuous or none, got {self.kind=}")
        if self.kind == "discrete" and (self.dim != 1 or self.n < 1):
            raise ValueError(f"a discrete action space has dim 1 and n >= 1, got {self.dim=} {self.n=}")
        if self.kind == "continuous" and self.dim < 1:
            raise ValueError(f"a continuous action space needs dim >= 1, got {self.dim=}")

    def check(self, actions: Tensor, name: str = "actions") -> None:
        """Raise a clear error for actions of the wrong size, NaNs or out-of-range indices."""
        if self.kind == "none":
            return
        if actions.shape[-1] != self.dim:
            raise WorldlineError(f"{name} have {actions.shape[-1]} columns, the model expects {self.dim} ({self.kind})")
        if not torch.isfinite(actions).all():
            raise WorldlineError(f"{name} contain NaN or infinite values")
        if self.kind == "discrete":
            bad = (actions < 0) | (actions >= self.n) | (actions != actions.round())
            if bad.any():
                raise WorldlineError(f"{name} hold a discrete index outside 0..{self.n - 1}: {actions[bad][0].item()}")


@dataclasses.dataclass
class Rollout:
    """Predicted future: ``frames`` (B, H, C, Hp, Wp) in [-1, 1] (context excluded) and, where the
    family has them, the ``latents`` it predicted."""

    frames: Tensor
    latents: Tensor | None = None


class State(abc.ABC):
    """A family's recurrent rollout state. ``clone`` makes an independent copy (play branches)."""

    @abc.abstractmethod
    def clone(self) -> "State": ...


class Tokenizer(PretrainedMixin, nn.Module, abc.ABC):
    """Causal video tokenizer: the first latent frame depends on the first frame only."""

    discrete: bool = False

    @abc.abstractmethod
    def encode(self, frames: Tensor) -> Tensor:
        """(B, T, C, H, W) in [-1, 1] -> (B, t, c, h, w) continuous or (B, t, h, w) int64 ids."""

    @abc.abstractmethod
    def decode(self, latents: Tensor) -> Tensor:
        """Inverse of :meth:`encode` -> (B, T, C, H, W) in [-1, 1]."""

    @abc.abstractmethod
    def loss(self, batch: Batch) -> tuple[Tensor, dict[str, float]]: ...

    @property
    @abc.abstractmethod
    def compression(self) -> tuple[int, int, int]:
        """(temporal, height, width) compression factors."""

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames for a ``num_frames`` video: 1 + (T - 1) / ct, as the first frame stands alone."""
        ct = self.compression[0]
        if (num_frames - 1) % ct:
            raise WorldlineError(f"a tokenizer with temporal compression {ct} needs 1 + {ct}k frames, got {num_frames}")
        return 1 + (num_frames - 1) // ct

    def forward(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        return self.loss(batch)


class WorldModel(PretrainedMixin, nn.Module, abc.ABC):
    """Action-conditioned predictor of how a world evolves (see ARCHITECTURE.md)."""

    action_spec: ActionSpec

    @abc.abstractmethod
    def loss(self, batch: Batch) -> tuple[Tensor, dict[str, float]]: ...

    @abc.abstractmethod
    def window(self) -> int:
        """Frames per training window (context + predicted); the dataset delivers these."""

    @abc.abstractmethod
    def init_state(self, context_frames: Tensor, context_actions: Tensor | None = None, text: list[str] | None = None) -> State: ...

    @abc.abstractmethod
    def step(self, state: State, action: Tensor) -> tuple[State, Tensor]:
        """Advance one frame: ``action`` (B, A) -> (new state, frame (B, C, H, W) in [-1, 1])."""

    def rollout(self, context_frames: Tensor, actions: Tensor, text: list[str] | None = None, context_actions: Tensor | None = None) -> Rollout:
        """Predict ``actions.shape[1]`` frames after the context; families may override for speed."""
        state = self.init_state(context_frames, context_actions, text)
        frames = []
        for t in range(actions.shape[1]):
            state, frame = self.step(state, actions[:, t])
            frames.append(frame)
        return Rollout(frames=torch.stack(frames, dim=1))

    @abc.abstractmethod
    def embed(self, frames: Tensor) -> Tensor:
        """(B, T, C, H, W) -> latent trajectory z (B, T, ...) for planners."""

    @abc.abstractmethod
    def imagine(self, state: State, actions: Tensor) -> Tensor:
        """Latent trajectory (B, H, ...) predicted from ``state`` under ``actions`` (B, H, A)."""

    def decode(self, z: Tensor) -> Tensor:
        raise WorldlineError(f"{type(self).__name__} has no pixel decoder")

    def forward(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        return self.loss(batch)

    # input checks the contract methods share (frames against ``config.image_size``, actions against ``action_spec``)

    def check_frames(self, frames: Tensor, name: str) -> None:
        H, W = self.config.image_size
        if frames.dim() != 5 or frames.shape[2] != 3 or frames.shape[1] < 1 or frames.shape[0] < 1:
            raise WorldlineError(f"{name} must be (B, T, 3, H, W) with T >= 1, got shape {tuple(frames.shape)}")
        if tuple(frames.shape[-2:]) != (H, W):
            raise WorldlineError(f"{name} are {frames.shape[-2]}x{frames.shape[-1]}, this model was trained on {H}x{W}")
        if not torch.isfinite(frames).all():
            raise WorldlineError(f"{name} contain NaN or infinite values")

    def check_actions(self, actions: Tensor, batch: int, name: str) -> None:
        if actions.dim() != 3 or actions.shape[0] != batch:
            raise WorldlineError(f"{name} must be (B={batch}, T, A), got shape {tuple(actions.shape)}")
        if self.action_spec.kind == "none" and actions.shape[-1] != 0:
            raise WorldlineError(f"{name} have {actions.shape[-1]} columns, this model takes no actions")
        self.action_spec.check(actions.detach(), name)

    def check_action(self, action: Tensor, batch: int) -> None:
        """One step's action (B, A), as ``step`` takes it."""
        if action.dim() != 2:
            raise WorldlineError(f"action must be (B, A), got shape {tuple(action.shape)}")
        self.check_actions(action[:, None], batch, "action")


class Planner(Protocol):
    def plan(self, world_model: WorldModel, state: State, goal_z: Tensor, horizon: int) -> Tensor:
        """Actions (B, horizon, A) that drive ``state`` towards ``goal_z``."""
        ...


def describe(module: Any) -> str:
    n = sum(p.numel() for p in module.parameters()) if isinstance(module, nn.Module) else 0
    return f"{type(module).__name__} ({n / 1e6:.2f}M parameters)"


def device_of(module: nn.Module) -> torch.device:
    """The device a module's parameters live on (CPU for a module without parameters)."""
    return next((p.device for p in module.parameters()), torch.device("cpu"))
