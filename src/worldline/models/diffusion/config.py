"""Config of the latent diffusion world model (a DiT denoiser trained with EDM)."""

from __future__ import annotations

import dataclasses

from worldline.models.diffusion.samplers import SAMPLERS
from worldline.models.latent import LatentWorldModelConfig


@dataclasses.dataclass
class DiffusionConfig(LatentWorldModelConfig):
    # --- what is predicted from what ---
    context_frames: int = 4  # latent frames the model attends to (Video2World); 4 give velocity and acceleration
    chunk_frames: int = 1  # frames denoised together per sampler call; 1 = frame by frame (DIAMOND), the interactive setting
    short_context_prob: float = 0.2  # training windows whose context is cut to 0..K-1 frames (Cosmos), so short and empty (Text2World) contexts work
    stack_context: int = 2  # the last n context latents also stacked on the channels of each noisy frame (DIAMOND): local motion is read off without an attention hop
    residual: bool = True  # denoise z_next - z_last, scaled by its dataset std: most of a frame does not move, so the target is small and sparse
    # --- the DiT ---
    patch: int = 2  # spatial patch on the latent grid (temporal patch 1): 16x16 latents -> 64 tokens a frame
    width: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    local_mix: bool = False  # a depthwise 3x3 conv over each frame's tokens inside every MLP (ConvFFN): the local bias of a conv net
    adaln_lora_rank: int = 0  # > 0: adaLN-LoRA (Cosmos), one shared low-rank projection instead of a full one per block
    action_map: bool = True  # also add a per-position linear map of the action's features to each token (nn.embeddings.ActionMap): where an action acts is then local, not left for attention to find
    action_xy: list[int] = dataclasses.field(default_factory=list)  # two action columns that are an image position (x, y over the action box, e.g. PushT's target): each token also gets features of its offset to it, shared by all tokens (nn.embeddings.PointerActionMap); [] = none
    text: bool = False  # cross-attention to the shared text encoder's tokens; the encoder itself is never saved
    # --- EDM training ---
    sigma_data: float = 1.0  # the denoised variable is normalised to unit std by dataset statistics
    p_mean: float = -0.4  # log-normal training noise levels (DIAMOND's choice for few-step sampling)
    p_std: float = 1.2
    rollout_steps: int = 0  # > 0: also train on R more chunks whose context holds the model's own one-step predictions (the baseline's rollout loss)
    rollout_weight: float = 1.0  # weight of their mean loss beside the teacher-forced chunk's
    context_noise_max: float = 0.1  # training noise on context latents ~ U(0, this) (Cosmos/GameNGen): rollouts tolerate their own errors
    cond_drop: float = 0.1  # probability of dropping actions and text together, for classifier-free guidance
    # --- sampling ---
    sampler: str = "euler"  # euler | heun
    sample_steps: int = 1  # 1-3 is the fast interactive setting; 8+ Heun steps the quality one
    sigma_min: float = 0.002
    sigma_max: float = 5.0  # where sampling starts; the conditional mean is recoverable there in one step
    rho: float = 7.0  # Karras schedule curvature
    context_noise: float = 0.0  # noise level the context is declared at during sampling (and added to it)
    guidance: float = 1.0  # classifier-free guidance scale; 1 = conditional only (one network call), 0 = unconditional
    correction_gate: float = 0.1  # add the tokenizer's error on the last real frame where the prediction leaves pixels unchanged; 0 = off

    def __post_init__(self):
        super().__post_init__()
        if self.context_frames < 1 or self.chunk_frames < 1:
            raise ValueError(f"need context_frames >= 1 and chunk_frames >= 1, got {self.context_frames=} {self.chunk_frames=}")
        if not 0 <= self.stack_context <= self.context_frames:
            raise ValueError(f"stack_context must be in 0..context_frames, got {self.stack_context=} {self.context_frames=}")
        if not 0 <= self.short_context_prob <= 1 or not 0 <= self.cond_drop < 1:
            raise ValueError(f"probabilities out of range: {self.short_context_prob=} {self.cond_drop=}")
        if self.width % self.heads or (self.width // self.heads) % 2 or self.width // self.heads < 6:
            raise ValueError(f"width/heads must be an even head size >= 6 for 3D RoPE, got {self.width=} {self.heads=}")
        if self.rollout_steps < 0 or self.rollout_weight < 0:
            raise ValueError(f"need rollout_steps >= 0 and rollout_weight >= 0, got {self.rollout_steps=} {self.rollout_weight=}")
        if self.depth < 1 or self.patch < 1 or self.mlp_ratio <= 0 or self.adaln_lora_rank < 0:
            raise ValueError(f"bad network size: {self.depth=} {self.patch=} {self.mlp_ratio=} {self.adaln_lora_rank=}")
        if self.action_xy and (len(self.action_xy) != 2 or len(set(self.action_xy)) != 2):
            raise ValueError(f"action_xy must name two different action columns, got {self.action_xy=}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {self.sampler=}")
        if self.sample_steps < 1 or not 0 < self.sigma_min < self.sigma_max or self.sigma_data <= 0 or self.p_std <= 0:
            raise ValueError(f"bad EDM settings: {self.sample_steps=} {self.sigma_min=} {self.sigma_max=} {self.sigma_data=} {self.p_std=}")
        if self.guidance < 0 or self.context_noise < 0 or self.context_noise_max < 0 or self.correction_gate < 0:
            raise ValueError(f"must be >= 0: {self.guidance=} {self.context_noise=} {self.context_noise_max=} {self.correction_gate=}")
