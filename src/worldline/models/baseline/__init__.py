"""The deterministic latent predictor, registered as model type ``deterministic``."""

from worldline.models.baseline.config import DeterministicConfig
from worldline.models.baseline.model import DeterministicState, DeterministicWorldModel

__all__ = ["DeterministicConfig", "DeterministicState", "DeterministicWorldModel"]
