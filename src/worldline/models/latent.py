"""What every world model that works in a frozen tokenizer's latent space shares.

A latent family (deterministic baseline, diffusion, autoregressive, Genie) trains on the latent
cache of a pretrained tokenizer and decodes its predictions with the same tokenizer. The plumbing is
the same for all of them and lives here once:

- the config fields that tie a model to its data and tokenizer (:class:`LatentWorldModelConfig`), with
  ``bind_dataset`` filling the action space and image size from ``meta/info.json`` and embedding the
  tokenizer's config so a checkpoint is self-contained;
- building the tokenizer, loading its pretrained weights and freezing it (``prepare_for_training``);
- encoding every frame once into the latent cache (``latent_store``) and, for continuous tokenizers,
  normalising latents per channel with that cache's statistics (buffers, so they travel with the weights);
- per-frame ``encode``/``decode`` in chunks, and the input checks every family's contract methods need.

Continuous tokenizers give latents (B, T, c, h, w), normalised; discrete ones give token ids
(B, T, h, w) int64, never normalised. Per-frame coding needs temporal compression 1 unless a family
says otherwise (``temporal_compression_ok``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from einops import rearrange
from torch import Tensor

from worldline.core.config import ModelConfig, build_model, from_dict, model_config_from_dict, to_dict
from worldline.core.contracts import ActionSpec, Tokenizer, WorldModel
from worldline.core.errors import WorldlineError

CHUNK = 256  # frames per tokenizer call, bounding memory on long rollouts and big eval batches


@dataclasses.dataclass
class LatentWorldModelConfig(ModelConfig):
    tokenizer_path: str = ""  # pretrained tokenizer dir (e.g. runs/tok/final); its weights are loaded and frozen for training
    tokenizer: dict[str, Any] | None = None  # that tokenizer's config, copied in by bind_dataset so a checkpoint is self-contained
    action_space: ActionSpec = dataclasses.field(default_factory=ActionSpec)  # copied from the dataset by bind_dataset
    image_size: tuple[int, int] = (64, 64)  # (H, W) of the frames the model sees; set from the dataset

    def __post_init__(self):
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise ValueError(f"image_size must be (H, W), got {self.image_size=}")

    def bind_dataset(self, info: dict[str, Any], stats: dict[str, Any]) -> None:
        """Fill the action space and image size from ``meta/info.json`` and embed the tokenizer config."""
        self.action_space = action_space_of(info)
        self.image_size = image_size_of(info)
        self.embed_tokenizer_config()

    def embed_tokenizer_config(self) -> None:
        """Copy the config of the tokenizer at ``tokenizer_path`` into ``tokenizer``."""
        from worldline.core.pretrained import read_pretrained_config

        if not self.tokenizer_path:
            if self.tokenizer is None:
                raise WorldlineError("model.tokenizer_path is required: a pretrained tokenizer dir (e.g. runs/tok/final)")
            return
        path = Path(self.tokenizer_path)
        if not path.is_dir():
            raise WorldlineError(f"model.tokenizer_path: no such tokenizer directory: {path}")
        self.tokenizer = to_dict(read_pretrained_config(path))


def action_space_of(info: dict[str, Any], where: str = "meta/info.json") -> ActionSpec:
    """The dataset's action space, from the ``worldline`` block of ``meta/info.json``."""
    try:
        space = info["worldline"]["action_space"]
    except (KeyError, TypeError):
        raise WorldlineError(f"{where} has no worldline.action_space (not a worldline dataset?)") from None
    return from_dict(ActionSpec, space, where=f"{where}: worldline.action_space")


def image_size_of(info: dict[str, Any], where: str = "meta/info.json") -> tuple[int, int]:
    """(H, W) of the default camera (or the first video feature) in a LeRobot ``features`` table."""
    features = info.get("features") if isinstance(info, dict) else None
    if not isinstance(features, dict):
        raise WorldlineError(f"{where} has no 'features' table")
    cameras = [k for k, v in features.items() if isinstance(v, dict) and v.get("dtype") in ("video", "image")]
    if not cameras:
        raise WorldlineError(f"{where} lists no video feature")
    key = "observation.image" if "observation.image" in cameras else cameras[0]
    shape = features[key].get("shape")
    if not isinstance(shape, (list, tuple)) or len(shape) != 3:
        raise WorldlineError(f"{where}: features.{key}.shape must be [H, W, C], got {shape!r}")
    names = features[key].get("names")
    if isinstance(names, (list, tuple)) and len(names) == 3 and names[0] in ("channels", "channel", "c"):
        return int(shape[1]), int(shape[2])  # stored channels-first
    return int(shape[0]), int(shape[1])


class LatentWorldModel(WorldModel):
    """Base of latent families. Subclasses call ``super().__init__(config)`` first, then build their
    network on ``self.latent_shape``; they implement ``window``, ``loss`` and the contract's
    ``init_state``/``step``/``imagine``."""

    uses_latents = True  # train/run.py trains on the latent cache instead of frames
    discrete_tokenizer: bool | None = False  # what the family needs: False continuous, True discrete, None either
    temporal_compression_ok: bool = False  # True for a family that codes whole clips (ct > 1)

    def __init__(self, config: LatentWorldModelConfig):
        super().__init__()
        self.config = config
        if config.tokenizer is None:
            config.embed_tokenizer_config()
        self.tokenizer = self._build_tokenizer()
        self.action_spec = config.action_space

        H, W = config.image_size
        with torch.no_grad():
            try:
                probe = self.tokenizer.encode(torch.zeros(1, 1, 3, H, W))  # (1, 1, c, h, w) or (1, 1, h, w)
            except (RuntimeError, ValueError) as e:
                raise WorldlineError(f"the tokenizer cannot encode {H}x{W} frames (model.image_size): {e}") from None
        self.latent_shape = tuple(probe.shape[2:])  # (c, h, w) continuous, (h, w) discrete
        c = 1 if self.tokenizer.discrete else self.latent_shape[0]
        self.register_buffer("latent_mean", torch.zeros(c))  # per-channel statistics of the latent cache
        self.register_buffer("latent_std", torch.ones(c))

    def _build_tokenizer(self) -> Tokenizer:
        family = type(self).__name__
        tok_config = model_config_from_dict(self.config.tokenizer, where="model.tokenizer")
        tokenizer = build_model(tok_config)
        if not isinstance(tokenizer, Tokenizer):
            raise WorldlineError(f"model.tokenizer is a {type(tokenizer).__name__}, not a tokenizer")
        if self.discrete_tokenizer is not None and tokenizer.discrete != self.discrete_tokenizer:
            want = "discrete (e.g. fsq)" if self.discrete_tokenizer else "continuous"
            raise WorldlineError(f"{family} needs a {want} tokenizer, got {tok_config.type_name()!r}")
        ct = tokenizer.compression[0]
        if ct != 1 and not self.temporal_compression_ok:
            raise WorldlineError(f"{family} needs a tokenizer with temporal compression 1, {tok_config.type_name()!r} has {ct}")
        return tokenizer.requires_grad_(False).eval()

    # ------------------------------------------------------------------------------------------
    # training hooks (train/run.py)
    # ------------------------------------------------------------------------------------------

    def prepare_for_training(self) -> None:
        """Load the pretrained tokenizer's weights from ``tokenizer_path`` and keep it frozen."""
        from worldline.core.pretrained import WEIGHTS_NAME, load_weights

        if not self.config.tokenizer_path:
            raise WorldlineError("model.tokenizer_path is required to train: a pretrained tokenizer dir")
        load_weights(self.tokenizer, Path(self.config.tokenizer_path) / WEIGHTS_NAME)
        self.tokenizer.requires_grad_(False).eval()

    def latent_store(self, frame_store):
        """Encode every frame once (cached on disk) and, for continuous latents, set the normalisation."""
        from worldline.data.latent_cache import build_latent_store, default_cache_dir, latent_channel_stats

        device = "cuda" if torch.cuda.is_available() else None  # the trainer moves the model later; encode where it is fast
        store = build_latent_store(frame_store, self.tokenizer, default_cache_dir(frame_store), device=device)
        if not self.tokenizer.discrete:
            self.set_latent_stats(*latent_channel_stats(store))
        return store

    def set_latent_stats(self, mean: Tensor, std: Tensor) -> None:
        c = self.latent_mean.numel()
        mean, std = torch.as_tensor(mean).float().reshape(-1), torch.as_tensor(std).float().reshape(-1)
        if mean.numel() != c or std.numel() != c:
            raise WorldlineError(f"latent statistics have {mean.numel()} channels, the tokenizer makes {c}")
        self.latent_mean.copy_(mean)
        self.latent_std.copy_(std.clamp_min(1e-3))  # a constant channel must not blow up

    def train(self, mode: bool = True):
        super().train(mode)
        self.tokenizer.eval()  # frozen: no dropout or norm-statistics updates while the predictor trains
        return self

    def batch_latents(self, batch) -> Tensor:
        """The batch's latents (normalised floats, or int64 ids), from the cache or encoded on the fly."""
        if "latents" in batch:
            z = batch["latents"]
            return z.round().long() if self.tokenizer.discrete else self.normalize(z.float())
        with torch.no_grad():
            return self.encode_frames(batch["frames"])

    # ------------------------------------------------------------------------------------------
    # latents <-> frames
    # ------------------------------------------------------------------------------------------

    def normalize(self, z: Tensor) -> Tensor:
        if self.tokenizer.discrete:
            return z
        return (z - self.latent_mean[:, None, None]) / self.latent_std[:, None, None]

    def denormalize(self, z: Tensor) -> Tensor:
        if self.tokenizer.discrete:
            return z
        return z * self.latent_std[:, None, None] + self.latent_mean[:, None, None]

    def encode_frames(self, frames: Tensor) -> Tensor:
        """(B, T, 3, H, W) in [-1, 1] -> normalised latents (B, T, c, h, w) or ids (B, T, h, w), frame by frame."""
        B = frames.shape[0]
        flat = rearrange(frames.float(), "b t c h w -> (b t) 1 c h w")  # (B*T, 1, 3, H, W)
        z = chunked(self.tokenizer.encode, flat)[:, 0]  # (B*T, *latent_shape)
        return self.normalize(z.reshape(B, -1, *z.shape[1:]))  # (B, T, *latent_shape)

    def embed(self, frames: Tensor) -> Tensor:
        """(B, T, 3, H, W) -> latents (B, T, ...), the space :meth:`imagine` works in."""
        self.check_frames(frames, "frames")
        return self.encode_frames(frames)

    def decode(self, z: Tensor) -> Tensor:
        """Latents (B, T, *latent_shape) -> frames (B, T, 3, H, W) in [-1, 1], frame by frame."""
        if z.dim() != 2 + len(self.latent_shape) or tuple(z.shape[2:]) != self.latent_shape:
            raise WorldlineError(f"latents must be (B, T, {', '.join(map(str, self.latent_shape))}), got {tuple(z.shape)}")
        B, T = z.shape[:2]
        if B * T == 0:
            return torch.zeros(B, T, 3, *self.config.image_size, device=z.device)
        flat = self.denormalize(z).reshape(B * T, 1, *self.latent_shape)  # each frame a 1-frame video
        out = chunked(self.tokenizer.decode, flat)  # (B*T, 1, 3, H, W)
        return rearrange(out, "(b t) 1 c h w -> b t c h w", b=B).clamp(-1, 1)  # (B, T, 3, H, W)


def chunked(fn, x: Tensor) -> Tensor:
    """``fn`` over the first axis of ``x`` in chunks of CHUNK items."""
    return torch.cat([fn(x[i : i + CHUNK]) for i in range(0, x.shape[0], CHUNK)])


def correct_frames(frames: Tensor, reference: Tensor, correction: Tensor, gate: float) -> Tensor:
    """Decoded predictions ``frames`` (B, T, 3, H, W) plus the tokenizer's error on the last real frame
    (``correction`` = real - ``reference``, both (B, 3, H, W)), gated per pixel by how little the
    prediction changed there: ``exp(-|frames - reference| / gate)``.

    A static background thus keeps the real frame's detail instead of the tokenizer's blur, while
    pixels the model moves show its prediction (an ungated correction would leave a ghost of the
    real frame where an object moved away)."""
    change = (frames - reference[:, None]).abs().amax(dim=2, keepdim=True)  # (B, T, 1, H, W)
    return (frames + torch.exp(-change / gate) * correction[:, None]).clamp(-1, 1)
