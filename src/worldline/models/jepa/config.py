"""Configs of the JEPA family: the V-JEPA encoder pretraining run and the V-JEPA 2-AC world model."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from worldline.core.config import ModelConfig, to_dict
from worldline.core.contracts import ActionSpec
from worldline.core.errors import WorldlineError


@dataclasses.dataclass
class JEPAEncoderConfig(ModelConfig):
    """V-JEPA masked latent prediction: a ViT context encoder, its EMA target and a narrow predictor."""

    image_size: tuple[int, int] = (64, 64)  # (H, W) trained at; RoPE has no learned positions, so any size divisible by the patch works later
    frames: int = 4  # clip length per training window; tubes span it, so the encoder learns motion, not only stills
    tubelet: int = 1  # frames per patch in time; 1 keeps per-frame embeddings exact for the action-conditioned predictor
    patch: int = 8  # pixels per patch side: 64x64 frames give an 8x8 grid
    dim: int = 128  # encoder width = embedding size the planners compare
    depth: int = 4
    heads: int = 4  # head_dim 32 splits into 3D RoPE parts (t 12, h 10, w 10)
    mlp_ratio: float = 4.0
    pred_dim: int = 64  # the masked predictor is narrower than the encoder (V-JEPA: 384 vs 1024): it must not do the encoder's job
    pred_depth: int = 2
    pred_heads: int = 4
    mask_ratio: float = 0.75  # fraction of the spatial grid hidden from the context encoder (V-JEPA hides ~90% of a 16x16 grid; an 8x8 grid needs more context)
    mask_scale: tuple[float, float] = (0.1, 0.3)  # area of each masked block as a fraction of the grid; several blocks are unioned up to mask_ratio
    mask_aspect: tuple[float, float] = (0.5, 2.0)  # height/width range of a block
    ema_start: float = 0.996  # target momentum at step 0 (BYOL/I-JEPA schedule) ...
    ema_end: float = 1.0  # ... rising linearly to this at ema_steps
    ema_steps: int = 2000  # updates over which the momentum rises; set near train.steps
    var_weight: float = 0.0  # VICReg variance hinge on the context tokens: on small, mostly-background scenes the L1 alone is met by near-constant tokens (PushT: worse than predicting each position's mean target)
    pred_abs_pos: bool = False  # add fixed sin-cos (t, row, col) embeddings to the predictor's tokens: RoPE alone gives identical mask queries only relative offsets, and on mostly-background scenes the predictor then cannot even learn each position's mean target
    var_target: float = 1.0  # per-channel std across the batch's tokens the hinge asks for (LayerNorm'd tokens have unit scale)

    def __post_init__(self):
        H, W = self.image_size
        if H % self.patch or W % self.patch:
            raise ValueError(f"image_size must be divisible by the patch, got {self.image_size=} {self.patch=}")
        if self.frames % self.tubelet:
            raise ValueError(f"frames must be a multiple of the tubelet, got {self.frames=} {self.tubelet=}")
        if self.dim % self.heads or (self.dim // self.heads) % 2 or self.dim // self.heads < 6:
            raise ValueError(f"dim/heads must be an even head size >= 6 for 3D RoPE, got {self.dim=} {self.heads=}")
        if self.pred_dim % self.pred_heads or (self.pred_dim // self.pred_heads) % 2:
            raise ValueError(f"pred_dim/pred_heads must be an even head size, got {self.pred_dim=} {self.pred_heads=}")
        if not 0 < self.mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in (0, 1), got {self.mask_ratio=}")
        if not 0 < self.mask_scale[0] <= self.mask_scale[1] <= 1:
            raise ValueError(f"mask_scale must be 0 < lo <= hi <= 1, got {self.mask_scale=}")
        if not 0 < self.mask_aspect[0] <= self.mask_aspect[1]:
            raise ValueError(f"mask_aspect must be 0 < lo <= hi, got {self.mask_aspect=}")
        if not 0 <= self.ema_start <= self.ema_end <= 1:
            raise ValueError(f"need 0 <= ema_start <= ema_end <= 1, got {self.ema_start=} {self.ema_end=}")
        if self.ema_steps < 1:
            raise ValueError(f"ema_steps must be >= 1, got {self.ema_steps=}")
        if self.var_weight < 0 or self.var_target <= 0:
            raise ValueError(f"need var_weight >= 0 and var_target > 0, got {self.var_weight=} {self.var_target=}")

    def bind_dataset(self, info: dict[str, Any], stats: dict[str, Any]) -> None:
        """Train at the dataset's resolution (actions are not needed)."""
        from worldline.models.latent import image_size_of

        self.image_size = image_size_of(info)


@dataclasses.dataclass
class JEPAConfig(ModelConfig):
    """V-JEPA 2-AC: a block-causal predictor over per-frame embeddings of a frozen JEPA encoder (or, with
    ``pool: projector``, LeWM: encoder and predictor trained together from pixels)."""

    encoder_path: str = ""  # pretrained jepa_encoder dir (a run's final/); its EMA target encoder is loaded and frozen (pool projector: loaded as the starting point)
    encoder: dict[str, Any] | None = None  # that encoder's config, copied in by bind_dataset so a checkpoint is self-contained
    action_space: ActionSpec = dataclasses.field(default_factory=ActionSpec)  # the env's, copied from the dataset
    image_size: tuple[int, int] = (64, 64)  # (H, W) of the frames; set from the dataset
    grid: int = 4  # embeddings are average-pooled to grid x grid tokens per frame: fewer tokens make planning fast enough on a CPU
    pool: str = "avg"  # "avg": grid x grid pooled tokens; "keypoints": one token of 2 x D image coordinates, where each channel fires (spatial soft-argmax, Levine et al. 2016); see keypoint_tau; "projector": LeWM (Maes et al. 2026), one token = an MLP projection of all the encoder's tokens, and the encoder trains end to end with the predictor under SIGReg (encoder_path optional: without it the encoder starts from scratch)
    keypoint_tau: float = 0.05  # softmax temperature over the patch grid per channel, in LayerNorm'd token units (per-channel spread ~0.1): a thin arm's pooled tokens stop changing once two poses no longer overlap, so their distance is flat far from the goal; coordinates move with the pose everywhere (Reacher, true dynamics: goal-cost rank vs tip distance 0.58 -> 0.78)
    latent_dim: int = 128  # projector: size of the one-token embedding the planners compare
    projector_reduce: int = 8  # projector: channels kept per encoder token before all tokens are concatenated (64 tokens x 8 = 512 inputs at 64x64)
    projector_hidden: int = 512  # projector: width of its hidden layer (Linear, BatchNorm, GELU, Linear as LeWM: the encoder's final LayerNorm pins each token's norm, the BatchNorm'd projection can become Gaussian)
    sigreg_weight: float = 0.09  # projector: weight of SIGReg (N(0, I) test of the embeddings per time step) against collapse; LeWM's value
    sigreg_projections: int = 256  # projector: random directions SIGReg tests per step
    sigreg_motion: bool = False  # projector: SIGReg tests each window's embeddings minus their window mean (what moves within it), so what never changes within an episode (Reacher's target) cannot earn the spread it asks for
    sigreg_frames_weight: float = 0.0  # with sigreg_motion: weight of SIGReg on the embeddings themselves as well, so what moves only now and then (PushT's block, still in most windows, yet what the goal is about) keeps its share of the spread
    idm_weight: float = 0.0  # projector: weight of an inverse-dynamics loss (PLDM, Sobal et al. 2025): a small MLP reads each model action back from the embeddings before and after it and the one before those (the velocity), so the encoder must keep what the actions move (Reacher, random-pose probe of the first link: R^2 0.41 after 316 steps without it, 0.74 after 250 with it; on its own it did not stop the drift to the static target, sigreg_motion did)
    frameskip: int = 1  # env steps per model step; a model action is the frameskip env actions concatenated (DINO-WM uses 5 on PushT)
    context_frames: int = 2  # model steps of history the predictor attends to (velocity needs 2)
    train_horizon: int = 3  # predicted model steps per training window (window = context_frames + train_horizon model steps)
    rollout_steps: int = 2  # steps fed back on the predictor's own outputs in the rollout loss (V-JEPA 2-AC uses 2)
    rollout_weight: float = 1.0  # weight of the rollout loss next to teacher forcing
    dim: int = 128  # predictor width
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    proprio: bool = False  # V-JEPA 2-AC: the predictor also reads the robot's proprioception (the dataset's observation.state) with each step's action and predicts its next value; needs a dataset that records it
    proprio_weight: float = 1.0  # weight of the next-proprioception loss (mean squared, standardised), teacher-forced and rolled out
    proprio_names: list[str] = dataclasses.field(default_factory=list)  # the dataset's observation.state channels; set by bind_dataset
    proprio_mean: list[float] = dataclasses.field(default_factory=list)  # their mean and std over the dataset (stats.json), to standardise
    proprio_std: list[float] = dataclasses.field(default_factory=list)
    probe: bool = True  # train a pixel probe on the frozen embeddings, for viewing only (no gradient reaches the predictor)
    probe_width: int = 32  # channels of the probe's upsampling convolutions
    probe_weight: float = 1.0  # the probe's loss is added to the total but touches only probe weights

    def __post_init__(self):
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise ValueError(f"image_size must be (H, W), got {self.image_size=}")
        if self.grid < 1:
            raise ValueError(f"grid must be >= 1, got {self.grid=}")
        if self.pool not in ("avg", "keypoints", "projector"):
            raise ValueError(f"pool must be avg, keypoints or projector, got {self.pool=}")
        if self.latent_dim < 2 or self.projector_reduce < 1 or self.projector_hidden < 1 or self.sigreg_weight < 0 or self.sigreg_projections < 1:
            raise ValueError(f"need latent_dim >= 2, projector_reduce >= 1, projector_hidden >= 1, sigreg_weight >= 0 and sigreg_projections >= 1, got "
                             f"{self.latent_dim=} {self.projector_reduce=} {self.projector_hidden=} {self.sigreg_weight=} {self.sigreg_projections=}")
        if self.keypoint_tau <= 0:
            raise ValueError(f"keypoint_tau must be > 0, got {self.keypoint_tau=}")
        if self.sigreg_motion and self.pool != "projector":
            raise ValueError(f"sigreg_motion needs pool=projector (only it has SIGReg), got {self.pool=}")
        if self.sigreg_frames_weight < 0 or (self.sigreg_frames_weight > 0 and not self.sigreg_motion):
            raise ValueError(f"sigreg_frames_weight must be >= 0 and adds to sigreg_motion (without it the frames are what SIGReg "
                             f"tests, at sigreg_weight), got {self.sigreg_frames_weight=} {self.sigreg_motion=}")
        if self.idm_weight < 0 or (self.idm_weight > 0 and (self.pool != "projector" or self.context_frames + self.train_horizon < 3)):
            raise ValueError(f"idm_weight must be >= 0 and needs pool=projector (a frozen encoder cannot learn from it) and windows of "
                             f">= 3 model steps, got {self.idm_weight=} {self.pool=} {self.context_frames=} {self.train_horizon=}")
        if self.frameskip < 1 or self.context_frames < 1 or self.train_horizon < 1:
            raise ValueError(f"frameskip, context_frames and train_horizon must be >= 1, got {self.frameskip=} "
                             f"{self.context_frames=} {self.train_horizon=}")
        if not 0 <= self.rollout_steps <= self.train_horizon:
            raise ValueError(f"rollout_steps must be in 0..train_horizon, got {self.rollout_steps=} {self.train_horizon=}")
        if self.dim % self.heads or (self.dim // self.heads) % 2 or self.dim // self.heads < 6:
            raise ValueError(f"dim/heads must be an even head size >= 6 for 3D RoPE, got {self.dim=} {self.heads=}")
        if self.frameskip > 1 and self.action_space.kind == "discrete":
            raise ValueError(f"frameskip > 1 needs continuous actions, got {self.frameskip=} with discrete actions")
        if self.proprio_weight < 0:
            raise ValueError(f"proprio_weight must be >= 0, got {self.proprio_weight=}")
        P = len(self.proprio_names)
        if self.proprio and P and (len(self.proprio_mean) != P or len(self.proprio_std) != P):
            raise ValueError(f"proprio_mean and proprio_std need one value per proprio channel {self.proprio_names}, "
                             f"got {len(self.proprio_mean)} and {len(self.proprio_std)}")

    def bind_dataset(self, info: dict[str, Any], stats: dict[str, Any]) -> None:
        """Fill the action space and image size from ``meta/info.json`` and embed the encoder config."""
        from worldline.models.latent import action_space_of, image_size_of

        self.action_space = action_space_of(info)
        if self.frameskip > 1 and self.action_space.kind == "discrete":
            raise WorldlineError(f"model.frameskip={self.frameskip} needs continuous actions, the dataset's are discrete")
        self.image_size = image_size_of(info)
        if self.proprio:
            self.bind_proprio(info, stats)
        self.embed_encoder_config()

    def bind_proprio(self, info: dict[str, Any], stats: dict[str, Any]) -> None:
        """Take the observation.state channels and their statistics from the dataset."""
        from worldline.data.format import state_names_of

        names = state_names_of(info)
        if not names:
            raise WorldlineError("model.proprio=true needs a dataset with proprioception (observation.state); "
                                 "`worldline record` stores it for the built-in robots pusht, reacher and reacher-pos")
        dim = len(names)
        self.proprio_names = names
        block = stats.get("observation.state")
        if not block or len(block.get("mean", [])) != dim:
            raise WorldlineError("the dataset's meta/stats.json has no statistics of observation.state")
        self.proprio_mean = [float(v) for v in block["mean"]]
        self.proprio_std = [max(float(v), 1e-3) for v in block["std"]]  # a channel that never moves is not blown up into noise

    def embed_encoder_config(self) -> None:
        """Copy the config of the encoder at ``encoder_path`` into ``encoder``."""
        from worldline.core.pretrained import read_pretrained_config

        if not self.encoder_path:
            if self.encoder is None and self.pool == "projector":  # trained from scratch: the default ViT at this resolution
                self.encoder = to_dict(JEPAEncoderConfig(image_size=tuple(self.image_size)))
            if self.encoder is None:
                raise WorldlineError("model.encoder_path is required: a pretrained jepa_encoder dir (e.g. runs/jepa-encoder/final)")
            return
        path = Path(self.encoder_path)
        if not path.is_dir():
            raise WorldlineError(f"model.encoder_path: no such encoder directory: {path}")
        cfg = read_pretrained_config(path)
        if not isinstance(cfg, JEPAEncoderConfig):
            raise WorldlineError(f"model.encoder_path: {path} holds a {type(cfg).type_name()!r} model, not a jepa_encoder")
        self.encoder = to_dict(cfg)
