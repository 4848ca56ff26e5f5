"""The latent diffusion world model (DiT + EDM), registered as model type ``diffusion``."""

from worldline.models.diffusion.config import DiffusionConfig
from worldline.models.diffusion.model import DiffusionState, DiffusionWorldModel

__all__ = ["DiffusionConfig", "DiffusionState", "DiffusionWorldModel"]
