"""The autoregressive token world model, registered as model type ``autoregressive``."""

from worldline.models.autoregressive.config import AutoregressiveConfig
from worldline.models.autoregressive.decoding import Sampling
from worldline.models.autoregressive.model import ARState, AutoregressiveWorldModel

__all__ = ["ARState", "AutoregressiveConfig", "AutoregressiveWorldModel", "Sampling"]
