"""The recurrent state-space family: DreamerV3's RSSM (type ``rssm``) and Ha & Schmidhuber's V-M-C
model (type ``vmc``), both learning from pixels with reward and continue heads for agents."""

from worldline.models.rssm.config import RSSMConfig, VMCConfig
from worldline.models.rssm.model import RSSMState, RSSMWorldModel
from worldline.models.rssm.vmc import VMCState, VMCWorldModel

__all__ = ["RSSMConfig", "RSSMState", "RSSMWorldModel", "VMCConfig", "VMCState", "VMCWorldModel"]
