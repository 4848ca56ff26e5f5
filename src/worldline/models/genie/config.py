"""Config of the Genie family: a latent action model and a MaskGIT dynamics model over FSQ tokens."""

from __future__ import annotations

import dataclasses

from worldline.models.latent import LatentWorldModelConfig


@dataclasses.dataclass
class GenieConfig(LatentWorldModelConfig):
    window_frames: int = 6  # clip length T in training; play keeps the last T - 1 frames as context
    lam_window: int = 0  # frames the LAM reads per code (0 = window_frames); 2: a code explains x_t -> x_t+1 alone, however much context the dynamics keeps
    real_actions: bool = False  # also condition the dynamics on the dataset's actions; step() then takes real actions, not latent ones

    # latent action model (LAM): pixels in, one code per transition
    num_latent_actions: int = 8  # codebook size, a power of two (binary codes): few codes force the LAM to keep only what the agent controls (Genie uses 8)
    lam_patch: int = 8  # pixels per patch side: 8x8 patches give 64 tokens for a 64x64 frame
    lam_dim: int = 128
    lam_depth: int = 2  # ST blocks in the LAM encoder and again in its decoder
    lam_heads: int = 4
    lam_weight: float = 1.0  # weight of the LAM's pixel reconstruction + quantiser losses next to the dynamics' cross-entropy
    commit_weight: float = 0.001  # pulls code channels towards +-1; small, or codes freeze before they mean anything
    entropy_weight: float = 0.001  # MAGVIT-v2's entropy term (decisive codes, all used); keep it ~1/10 of the reconstruction error or codes become a hash of the scene
    rate_weight: float = 0.0  # weight of the batch entropy of code usage as a penalty: codes that buy little reconstruction merge (with usage_floor, so none dies)
    usage_floor: float = 0.0  # > 0: instead of pushing code usage to uniform (which caps purity at ~n_actions/n), only penalise codes used by fewer than this share of transitions
    lam_code_bias: bool = False  # a learnt bias on the LAM's code channels, so that a transition where nothing moves gets one code rather than a random one (False: checkpoints from before it)
    motion_weight: float = 10.0  # pixels that change between frames weigh up to 1 + this in the LAM's reconstruction (actions explain change)

    # dynamics: MaskGIT over the tokenizer's ids, conditioned on the latent action (and real action)
    dim: int = 192
    depth: int = 4
    heads: int = 6
    mlp_ratio: float = 4.0
    latent_dropout: float = 0.5  # with real_actions: clips that hide the latent action, so real actions alone can drive play
    real_dropout: float = 0.1  # with real_actions: clips that hide the real action, so a context without actions still works

    # decoding (no weights; may be changed at play time)
    maskgit_steps: int = 4  # parallel decoding iterations per frame (cosine schedule); fewer is faster
    temperature: float = 0.0  # 0 = most likely id at each position; > 0 samples, with MaskGIT's annealed confidence noise

    @property
    def lam_frames(self) -> int:
        """Frames per LAM window."""
        return self.lam_window or self.window_frames

    def __post_init__(self):
        super().__post_init__()
        if self.window_frames < 2:
            raise ValueError(f"window_frames must be >= 2 (a transition needs two frames), got {self.window_frames=}")
        if self.lam_window and not 2 <= self.lam_window <= self.window_frames:
            raise ValueError(f"lam_window must be 0 (= window_frames) or in 2..window_frames, got {self.lam_window=} {self.window_frames=}")
        if not 0 <= self.usage_floor < 1 / self.num_latent_actions:
            raise ValueError(f"usage_floor must be in [0, 1/num_latent_actions), got {self.usage_floor=} {self.num_latent_actions=}")
        if self.num_latent_actions < 2:
            raise ValueError(f"num_latent_actions must be >= 2, got {self.num_latent_actions=}")
        if self.num_latent_actions & (self.num_latent_actions - 1):
            raise ValueError(f"num_latent_actions must be a power of two (binary codes), got {self.num_latent_actions=}")
        if self.lam_patch < 1:
            raise ValueError(f"lam_patch must be >= 1, got {self.lam_patch=}")
        for name in ("lam", ""):
            dim, heads = getattr(self, f"{name}_dim" if name else "dim"), getattr(self, f"{name}_heads" if name else "heads")
            if heads < 1 or dim % heads or (dim // heads) % 2 or dim // heads < 6:
                raise ValueError(f"{name or 'dynamics'} dim must split into heads of an even size >= 6 (3D RoPE), got {dim=} {heads=}")
        if self.lam_depth < 1 or self.depth < 1:
            raise ValueError(f"lam_depth and depth must be >= 1, got {self.lam_depth=} {self.depth=}")
        if min(self.lam_weight, self.commit_weight, self.entropy_weight, self.motion_weight, self.rate_weight) < 0:
            raise ValueError(f"loss weights must be >= 0, got {self.lam_weight=} {self.commit_weight=} {self.entropy_weight=} {self.motion_weight=} {self.rate_weight=}")
        if not (0 <= self.latent_dropout <= 1 and 0 <= self.real_dropout < 1):
            raise ValueError(f"need 0 <= latent_dropout <= 1 and 0 <= real_dropout < 1, got {self.latent_dropout=} {self.real_dropout=}")
        if self.maskgit_steps < 1:
            raise ValueError(f"maskgit_steps must be >= 1, got {self.maskgit_steps=}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature=}")
