"""Configs of the recurrent state-space family: the DreamerV3 RSSM and the V-M-C model."""

from __future__ import annotations

import dataclasses
from typing import Any

from worldline.core.config import ModelConfig, from_dict
from worldline.core.contracts import ActionSpec
from worldline.core.errors import WorldlineError


@dataclasses.dataclass
class PixelWorldModelConfig(ModelConfig):
    """Fields every pixel-space model of the family shares (no tokenizer: they learn their own encoder)."""

    action_space: ActionSpec = dataclasses.field(default_factory=ActionSpec)  # copied from the dataset by bind_dataset
    image_size: tuple[int, int] = (64, 64)  # (H, W); the conv encoder halves it 4 times, so a multiple of 16
    depth: int = 32  # channels of the first conv layer (x1, x2, x4, x8 down the encoder), DreamerV3's "S" is 32
    reward_head: bool = True  # predict reward and episode continuation (agents need it; a video-only dataset cannot train it)

    def __post_init__(self):
        if len(self.image_size) != 2 or min(self.image_size) < 16 or any(s % 16 for s in self.image_size):
            raise ValueError(f"image_size must be (H, W), multiples of 16, got {self.image_size=}")
        if self.depth < 1:
            raise ValueError(f"depth must be >= 1, got {self.depth=}")

    def bind_dataset(self, info: dict[str, Any], stats: dict[str, Any]) -> None:
        """Fill the action space and image size from ``meta/info.json``; refuse a dataset without
        rewards when the reward head is on (its rewards would read as zeros and train nothing)."""
        from worldline.models.latent import image_size_of

        where = "meta/info.json"
        try:
            space = info["worldline"]["action_space"]
        except (KeyError, TypeError):
            raise WorldlineError(f"{where} has no worldline.action_space (not a worldline dataset?)") from None
        self.action_space = from_dict(ActionSpec, space, where=f"{where}: worldline.action_space")
        self.image_size = image_size_of(info, where)
        if self.reward_head and not ({"next.reward", "next.done"} <= set(info.get("features", {}))):
            raise WorldlineError(
                f"{where}: the dataset has no next.reward/next.done features, which the {type(self).type_name()} "
                "reward and continue heads train on; record it with rewards or pass --set model.reward_head=false"
            )
        self.__post_init__()


@dataclasses.dataclass
class RSSMConfig(PixelWorldModelConfig):
    """DreamerV3's world model (Hafner et al. 2023), sizes named after its S/M/L presets."""

    deter: int = 512  # GRU state: the part of the memory that is carried exactly from step to step
    stoch: int = 32  # categorical latent variables per step (32 x 32 classes in DreamerV3)
    classes: int = 32  # classes per categorical latent
    hidden: int = 512  # width of every MLP (input, prior, posterior, heads)
    unimix: float = 0.01  # uniform mixed into every categorical, so KL and log-probs never meet a zero
    free_bits: float = 1.0  # nats of KL per step below which the KL terms stop pulling (avoids posterior collapse onto the prior)
    kl_dyn: float = 0.5  # weight of KL(sg(post) || prior): trains the prior to predict
    kl_rep: float = 0.1  # weight of KL(post || sg(prior)): keeps the representation predictable, kept small so it does not erase information
    reward_bins: int = 255  # two-hot bins over symlog(reward) in [-20, 20]
    sequence_length: int = 32  # frames per training window; the GRU sees this much history in training
    head_layers: int = 2  # hidden layers of the reward and continue MLPs

    def __post_init__(self):
        super().__post_init__()
        for name in ("deter", "stoch", "classes", "hidden", "sequence_length", "head_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)=}")
        if self.classes < 2:
            raise ValueError(f"classes must be >= 2, got {self.classes=}")
        if not 0 <= self.unimix < 1:
            raise ValueError(f"unimix must be in [0, 1), got {self.unimix=}")
        if self.free_bits < 0 or self.kl_dyn < 0 or self.kl_rep < 0:
            raise ValueError(f"free_bits, kl_dyn, kl_rep must be >= 0, got {self.free_bits=} {self.kl_dyn=} {self.kl_rep=}")
        if self.reward_bins < 2:
            raise ValueError(f"reward_bins must be >= 2, got {self.reward_bins=}")
        if self.sequence_length < 2:
            raise ValueError(f"sequence_length must be >= 2 (a transition), got {self.sequence_length=}")


@dataclasses.dataclass
class VMCConfig(PixelWorldModelConfig):
    """Ha & Schmidhuber's World Models (2018): V = VAE, M = MDN-RNN; C (the controller) lives in agents/."""

    latent: int = 32  # VAE latent z, 32 for CarRacing in the paper
    rnn: int = 256  # LSTM hidden units of the memory, 256 for CarRacing
    mixtures: int = 5  # Gaussians per latent dimension in the MDN
    kl_tolerance: float = 0.5  # nats per latent dimension the VAE's KL may use for free, as in the paper
    temperature: float = 1.0  # MDN sampling temperature in the dream; higher makes the dream harder to exploit
    sequence_length: int = 32  # frames per training window of the memory
    vae_weight: float = 1.0  # the V loss next to the M loss (trained jointly here, on a detached z)

    def __post_init__(self):
        super().__post_init__()
        for name in ("latent", "rnn", "mixtures", "sequence_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)=}")
        if self.sequence_length < 2:
            raise ValueError(f"sequence_length must be >= 2 (a transition), got {self.sequence_length=}")
        if self.kl_tolerance < 0 or self.temperature <= 0 or self.vae_weight <= 0:
            raise ValueError(f"kl_tolerance >= 0, temperature > 0, vae_weight > 0 needed, got {self.kl_tolerance=} {self.temperature=} {self.vae_weight=}")
