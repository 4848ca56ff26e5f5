"""The JEPA family: V-JEPA encoder pretraining (``jepa_encoder``) and the V-JEPA 2-AC world model (``jepa``)."""

from worldline.models.jepa.config import JEPAConfig, JEPAEncoderConfig
from worldline.models.jepa.model import JEPAState, JEPAWorldModel
from worldline.models.jepa.pretrain import JEPAEncoderPretrainer

__all__ = ["JEPAConfig", "JEPAEncoderConfig", "JEPAEncoderPretrainer", "JEPAState", "JEPAWorldModel"]
