"""What the continuous and FSQ tokenizers share: the config fields, input checks and the loss."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from worldline.core.config import ModelConfig
from worldline.core.contracts import Batch, Tokenizer
from worldline.core.errors import WorldlineError
from worldline.eval import metrics
from worldline.tokenizers.network import Decoder, Encoder


def _power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


@dataclasses.dataclass
class TokenizerConfig(ModelConfig):
    """Fields every convolutional tokenizer has (not registered itself)."""

    image_size: tuple[int, int] = (64, 64)  # (H, W) trained at; bind_dataset copies it from the data (the net is convolutional, any size divisible by the compression works)
    in_channels: int = 3  # RGB
    spatial_compression: int = 4  # power of two: latents are (H/s, W/s); 4 keeps PushT-sized detail, 8 is 4x fewer tokens
    temporal_compression: int = 1  # power of two: 1 + ct*k frames -> 1 + k latent frames, the first frame alone
    num_frames: int = 1  # frames per training window (1 + ct*k): 1 trains on images, 5 or 9 on clips for ct=4
    channels: tuple[int, ...] = (16, 32, 64)  # width per resolution, full resolution first (last repeats); sized for a CPU
    blocks: tuple[int, ...] = (0, 1, 2)  # residual blocks per resolution: none at full res, where a conv costs most
    temporal_kernel: int = 0  # 0: 1 when temporal_compression is 1 (per-frame net, latents cacheable frame by frame), else 3
    norm_groups: int = 8  # GroupNorm groups (per frame, so normalisation never looks at the future)
    l1_weight: float = 1.0  # L1 keeps flat regions flat and edges sharp
    mse_weight: float = 1.0  # MSE is what PSNR measures
    grad_weight: float = 0.5  # L1 on image gradients: a cheap sharpness term (no perceptual net on CPU)
    hard_weight: float = 0.0  # L1 on each frame's worst pixels: a 1-2 px sprite (Breakout's ball) is ~0.1% of a mean loss and gets erased without it
    hard_fraction: float = 0.01  # share of a frame's pixels counted as its worst (1% of 64x64 = 41 px: ball and paddle)

    def __post_init__(self):
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise ValueError(f"image_size must be (H, W) > 0, got {self.image_size=}")
        if self.hard_weight < 0 or not 0 < self.hard_fraction <= 1:
            raise ValueError(f"need hard_weight >= 0 and 0 < hard_fraction <= 1, got {self.hard_weight=} {self.hard_fraction=}")
        if not _power_of_two(self.spatial_compression):
            raise ValueError(f"spatial_compression must be a power of two, got {self.spatial_compression=}")
        if not _power_of_two(self.temporal_compression) or self.temporal_compression > self.spatial_compression:
            raise ValueError(
                f"temporal_compression must be a power of two <= spatial_compression, got {self.temporal_compression=}"
            )
        if self.num_frames < 1 or (self.num_frames - 1) % self.temporal_compression:
            raise ValueError(f"num_frames must be 1 + {self.temporal_compression}k, got {self.num_frames=}")
        if any(s % self.spatial_compression for s in self.image_size):
            raise ValueError(f"image_size must be divisible by {self.spatial_compression}, got {self.image_size=}")
        rungs = (self.spatial_compression.bit_length() - 1) + 1
        for name in ("channels", "blocks"):
            values = getattr(self, name)
            if not values or len(values) > rungs or min(values) < (1 if name == "channels" else 0):
                raise ValueError(f"{name} needs 1..{rungs} entries (one per resolution), got {name}={values}")
        if self.temporal_kernel < 0 or (self.temporal_compression > 1 and self.temporal_kernel == 1):
            raise ValueError(f"temporal_kernel must be 0 (auto) or >= 2 with temporal compression, got {self.temporal_kernel=}")

    @property
    def resolved_temporal_kernel(self) -> int:
        if self.temporal_kernel:
            return self.temporal_kernel
        return 1 if self.temporal_compression == 1 else 3

    def bind_dataset(self, info: dict[str, Any], stats: dict[str, Any]) -> None:
        """Take ``image_size`` and ``in_channels`` from the dataset's camera feature ((H, W, C))."""
        features = info.get("features", {}) if isinstance(info, dict) else {}
        cams = [k for k, v in features.items() if isinstance(v, dict) and v.get("dtype") in ("video", "image")]
        if not cams:
            return
        key = "observation.image" if "observation.image" in cams else cams[0]
        shape = features[key].get("shape")
        if not shape or len(shape) != 3:
            raise WorldlineError(f"dataset feature {key!r} has shape {shape!r}, expected (H, W, C)")
        h, w, c = (int(s) for s in shape)
        s = self.spatial_compression
        if h % s or w % s:
            raise WorldlineError(f"dataset frames are {h}x{w}, not divisible by the tokenizer's spatial compression {s}")
        self.image_size, self.in_channels = (h, w), c


class ConvTokenizer(Tokenizer):
    """Encoder/decoder pair with a bottleneck supplied by the subclass."""

    config: TokenizerConfig

    def __init__(self, config: TokenizerConfig, latent_channels: int):
        super().__init__()
        self.config = config
        self.latent_channels = latent_channels
        net = dict(
            channels=tuple(config.channels),
            blocks=tuple(config.blocks),
            spatial_compression=config.spatial_compression,
            temporal_compression=config.temporal_compression,
            temporal_kernel=config.resolved_temporal_kernel,
            norm_groups=config.norm_groups,
        )
        self.encoder = Encoder(config.in_channels, latent_channels, **net)
        self.decoder = Decoder(latent_channels, config.in_channels, **net)

    # -------------------------------------------------------------------------------- contract

    @property
    def compression(self) -> tuple[int, int, int]:
        c = self.config
        return (c.temporal_compression, c.spatial_compression, c.spatial_compression)

    def window(self) -> int:
        return self.config.num_frames

    def latent_shape(self, num_frames: int, height: int | None = None, width: int | None = None) -> tuple[int, ...]:
        """Shape of one video's latents (without batch): (t, c, h, w) continuous, (t, h, w) discrete."""
        height, width = height or self.config.image_size[0], width or self.config.image_size[1]
        s = self.config.spatial_compression
        t = self.latent_frames(num_frames)
        return (t, height // s, width // s) if self.discrete else (t, self.latent_channels, height // s, width // s)

    def check_frames(self, frames: Tensor, name: str = "frames") -> None:
        """One-line errors for video the network cannot take."""
        if not isinstance(frames, Tensor) or frames.dim() != 5:
            shape = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
            raise WorldlineError(f"{name} must be (B, T, C, H, W), got {shape}")
        _, T, C, H, W = frames.shape
        if C != self.config.in_channels:
            raise WorldlineError(f"{name} have {C} channels, the tokenizer expects {self.config.in_channels}")
        s = self.config.spatial_compression
        if H % s or W % s:
            raise WorldlineError(f"{name} are {H}x{W}, not divisible by the spatial compression {s}")
        ct = self.config.temporal_compression
        if T < 1 or (T - 1) % ct:
            raise WorldlineError(f"{name} have {T} frames; temporal compression {ct} needs 1 + {ct}k (e.g. 1, {1 + ct}, {1 + 2 * ct})")
        if not frames.is_floating_point():
            raise WorldlineError(f"{name} must be float in [-1, 1], got {frames.dtype}")

    # -------------------------------------------------------------------------------- bottleneck

    def bottleneck(self, h: Tensor) -> Tensor:
        """Encoder output -> what the decoder sees in training (differentiable)."""
        raise NotImplementedError

    # -------------------------------------------------------------------------------- loss

    def loss(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        frames = batch["frames"]
        self.check_frames(frames, "batch['frames']")
        z = self.bottleneck(self.encoder(frames))
        recon = self.decoder(z)
        loss, logs = reconstruction_loss(recon, frames, self.config)
        logs.update(self.latent_logs(z))
        return loss, logs

    def latent_logs(self, z: Tensor) -> dict[str, float]:
        return {}


def reconstruction_loss(recon: Tensor, target: Tensor, config: TokenizerConfig) -> tuple[Tensor, dict[str, float]]:
    """Weighted L1 + MSE + L1 on horizontal/vertical image gradients (+ L1 on each frame's worst
    pixels when ``hard_weight`` > 0); logs PSNR of the clamped output."""
    err = (recon - target).abs()  # (B, T, C, H, W)
    l1 = err.mean()
    mse = F.mse_loss(recon, target)
    dx = lambda x: x[..., :, 1:] - x[..., :, :-1]  # noqa: E731
    dy = lambda x: x[..., 1:, :] - x[..., :-1, :]  # noqa: E731
    grad = (dx(recon) - dx(target)).abs().mean() + (dy(recon) - dy(target)).abs().mean()
    loss = config.l1_weight * l1 + config.mse_weight * mse + config.grad_weight * grad
    logs = {"l1": l1.item(), "mse": mse.item(), "grad": grad.item()}
    if config.hard_weight > 0:
        per_pixel = err.sum(-3).flatten(-2)  # (B, T, H*W): L1 over channels
        k = max(1, round(config.hard_fraction * per_pixel.shape[-1]))
        hard = per_pixel.topk(k, dim=-1).values.mean()
        loss = loss + config.hard_weight * hard
        logs["hard"] = hard.item()
    with torch.no_grad():
        logs["psnr"] = metrics.psnr(recon.detach(), target).clamp(max=100).mean().item()  # per-frame mean, as eval reports
    return loss, logs
