"""The Genie family (latent actions from unlabeled video + MaskGIT dynamics), model type ``genie``."""

from worldline.models.genie.config import GenieConfig
from worldline.models.genie.model import GenieState, GenieWorldModel

__all__ = ["GenieConfig", "GenieState", "GenieWorldModel"]
