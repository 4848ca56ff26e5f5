"""Config of the deterministic latent predictor (the baseline every real family has to beat)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from worldline.core.config import ModelConfig, from_dict, to_dict
from worldline.core.contracts import ActionSpec
from worldline.core.errors import WorldlineError


@dataclasses.dataclass
class DeterministicConfig(ModelConfig):
    tokenizer_path: str = ""  # pretrained tokenizer dir (e.g. runs/tok/final); its weights are loaded and frozen for training
    tokenizer: dict[str, Any] | None = None  # that tokenizer's config, copied in by bind_dataset so a checkpoint is self-contained
    action_space: ActionSpec = dataclasses.field(default_factory=ActionSpec)  # copied from the dataset by bind_dataset
    image_size: tuple[int, int] = (64, 64)  # (H, W) of the frames the model sees; set from the dataset
    context_frames: int = 4  # latents stacked on channels; 4 frames give velocity and acceleration
    train_horizon: int = 4  # predicted frames per training window (window = context_frames + train_horizon)
    rollout_steps: int = 4  # steps fed back on the model's own predictions in the loss, so long rollouts stay stable
    rollout_weight: float = 1.0  # weight of the rollout loss next to the teacher-forced one
    patch: int = 2  # latents are cut into patch x patch cells stacked on channels: 4x fewer positions, so a CPU budget buys depth
    width: int = 64  # channels of the first U-Net level
    channel_mult: tuple[int, ...] = (1, 2)  # channels per level (x width); one entry = a plain ResNet, no downsampling
    blocks_per_level: int = 2  # residual blocks per level on the way down (and one per level on the way up)
    action_dim: int = 128  # action embedding size fed to every block's FiLM
    correction_gate: float = 0.1  # detail of the last real frame is kept where a prediction stays within ~this of it ([-1, 1] units); 0 disables
    coord_channels: bool = True  # x/y grids as input so absolute actions (e.g. PushT targets) can be mapped to places

    def __post_init__(self):
        if self.context_frames < 1:
            raise ValueError(f"context_frames must be >= 1, got {self.context_frames=}")
        if self.train_horizon < 1:
            raise ValueError(f"train_horizon must be >= 1, got {self.train_horizon=}")
        if not 0 <= self.rollout_steps <= self.train_horizon:
            raise ValueError(f"rollout_steps must be in [0, train_horizon], got {self.rollout_steps=} {self.train_horizon=}")
        if self.correction_gate < 0:
            raise ValueError(f"correction_gate must be >= 0, got {self.correction_gate=}")
        if self.rollout_weight < 0:
            raise ValueError(f"rollout_weight must be >= 0, got {self.rollout_weight=}")
        if self.width < 8 or not self.channel_mult or min(self.channel_mult) < 1:
            raise ValueError(f"width must be >= 8 and channel_mult positive, got {self.width=} {self.channel_mult=}")
        if self.patch < 1:
            raise ValueError(f"patch must be >= 1, got {self.patch=}")
        if self.blocks_per_level < 1:
            raise ValueError(f"blocks_per_level must be >= 1, got {self.blocks_per_level=}")
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise ValueError(f"image_size must be (H, W), got {self.image_size=}")

    def bind_dataset(self, info: dict[str, Any], stats: dict[str, Any]) -> None:
        """Fill the action space and image size from ``meta/info.json`` and embed the tokenizer config."""
        where = "meta/info.json"
        try:
            space = info["worldline"]["action_space"]
        except (KeyError, TypeError):
            raise WorldlineError(f"{where} has no worldline.action_space (not a worldline dataset?)") from None
        self.action_space = from_dict(ActionSpec, space, where=f"{where}: worldline.action_space")
        self.image_size = _image_size(info, where)
        self.embed_tokenizer_config()

    def embed_tokenizer_config(self) -> None:
        """Copy the config of the tokenizer at ``tokenizer_path`` into ``tokenizer``."""
        from worldline.core.pretrained import read_pretrained_config

        if not self.tokenizer_path:
            if self.tokenizer is None:
                raise WorldlineError("model.tokenizer_path is required: a pretrained tokenizer dir (e.g. runs/tok/final)")
            return
        path = Path(self.tokenizer_path)
        if not path.is_dir():
            raise WorldlineError(f"model.tokenizer_path: no such tokenizer directory: {path}")
        self.tokenizer = to_dict(read_pretrained_config(path))


def _image_size(info: dict[str, Any], where: str) -> tuple[int, int]:
    """(H, W) of the default camera (or the first video feature) in a LeRobot ``features`` table."""
    features = info.get("features") if isinstance(info, dict) else None
    if not isinstance(features, dict):
        raise WorldlineError(f"{where} has no 'features' table")
    cameras = [k for k, v in features.items() if isinstance(v, dict) and v.get("dtype") in ("video", "image")]
    if not cameras:
        raise WorldlineError(f"{where} lists no video feature")
    key = "observation.image" if "observation.image" in cameras else cameras[0]
    shape = features[key].get("shape")
    if not isinstance(shape, (list, tuple)) or len(shape) != 3:
        raise WorldlineError(f"{where}: features.{key}.shape must be [H, W, C], got {shape!r}")
    names = features[key].get("names")
    if isinstance(names, (list, tuple)) and len(names) == 3 and names[0] in ("channels", "channel", "c"):
        return int(shape[1]), int(shape[2])  # stored channels-first
    return int(shape[0]), int(shape[1])
