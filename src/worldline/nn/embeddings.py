"""Action embeddings and timestep-free FiLM, shared by every family that conditions on actions.

An action tensor is ``(..., A)`` float (see :class:`worldline.core.contracts.ActionSpec`):
a discrete space is one integer-index column, a continuous one a box scaled to [-1, 1] with its
bounds, and a video-only dataset has no actions at all (A = 0).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from worldline.core.contracts import ActionSpec


class ActionFeatures(nn.Module):
    """Continuous ``(..., A)`` actions -> ``(..., A * (1 + 2F))`` features: each column scaled to
    [-1, 1] with the box bounds, then its sin and cos at ``F`` octave frequencies (2^k * pi).

    Why Fourier features: an action is often a place (PushT's target position, a cursor, a gripper
    goal), and a world model has to draw its effect at that place. A network on the raw coordinate
    learns only smooth, low-frequency functions of it (the spectral bias of Tancik et al. 2020);
    sin/cos at octave frequencies make a bump at the action's position a linear function of the
    features, down to 1/2^F of the box. Unbounded columns (common in gymnasium Box spaces) pass
    through unscaled and get no Fourier features: their scale is unknown.
    """

    def __init__(self, spec: ActionSpec, frequencies: int = 6):
        super().__init__()
        low, high = _bounds(spec)
        finite = torch.isfinite(low) & torch.isfinite(high) & (high > low)
        self.register_buffer("center", torch.where(finite, (high + low) / 2, torch.zeros_like(low)), persistent=False)
        self.register_buffer("half_range", torch.where(finite, (high - low) / 2, torch.ones_like(low)), persistent=False)
        self.register_buffer("finite", finite.float(), persistent=False)
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(frequencies, dtype=torch.float32), persistent=False)
        self.width = spec.dim * (1 + 2 * frequencies)

    def forward(self, actions: Tensor) -> Tensor:
        return self.fourier((actions.float() - self.center) / self.half_range)

    def fourier(self, x: Tensor) -> Tensor:
        """(..., A) scaled actions -> (..., A * (1 + 2F)): the value, then sin and cos per frequency."""
        angles = x[..., None] * self.freqs * self.finite[:, None]  # (..., A, F); 0 for unbounded columns
        return torch.cat([x, angles.sin().flatten(-2), angles.cos().flatten(-2)], dim=-1)


class ActionEmbedding(nn.Module):
    """``(..., A)`` actions -> ``(..., dim)`` vectors, whatever the action space.

    - discrete: a table of ``n`` learned vectors, indexed by the action column;
    - continuous: :class:`ActionFeatures` (scaled to [-1, 1], Fourier features), then a 2-layer MLP;
    - none: one learned vector, so a video-only model keeps the same code path.
    """

    def __init__(self, spec: ActionSpec, dim: int, frequencies: int = 6):
        super().__init__()
        self.spec = spec
        self.dim = dim
        if spec.kind == "discrete":
            self.table = nn.Embedding(spec.n, dim)
            nn.init.normal_(self.table.weight, std=0.02)  # small, like token embeddings in GPT-2
        elif spec.kind == "continuous":
            self.features = ActionFeatures(spec, frequencies)
            self.mlp = nn.Sequential(nn.Linear(self.features.width, dim), nn.SiLU(), nn.Linear(dim, dim))
        else:
            self.constant = nn.Parameter(torch.zeros(dim))

    def forward(self, actions: Tensor) -> Tensor:
        if self.spec.kind == "discrete":
            return self.table(actions[..., 0].round().long())
        if self.spec.kind == "continuous":
            return self.mlp(self.features(actions))
        return self.constant.expand(*actions.shape[:-1], self.dim)


class ActionMap(nn.Module):
    """``(..., A)`` actions -> ``(..., N, dim)``: a vector per token position, a different linear
    function of the action's features at each of the ``N`` positions of a token grid.

    Adding one action vector to every token (or modulating them all alike) leaves the network to
    discover where in the image an action acts. Here each position has its own map: with the Fourier
    features of :class:`ActionEmbedding`, ``cos(w (p - a))`` = ``cos(wp) cos(wa) + sin(wp) sin(wa)`` is
    linear in the features with position-dependent weights, so a bump that follows a positional action
    (PushT's target, a cursor) is one linear layer away; a discrete action gets a learned map per
    value (Breakout's LEFT acts at the paddle's row). Initialised small, so it starts as a no-op
    that training grows where actions matter.
    """

    def __init__(self, spec: ActionSpec, tokens: int, dim: int, frequencies: int = 6):
        super().__init__()
        self.spec = spec
        if spec.kind == "discrete":
            self.maps = nn.Parameter(torch.randn(spec.n, tokens, dim) * 0.02)
        elif spec.kind == "continuous":
            self.features = ActionFeatures(spec, frequencies)
            width = self.features.width
            self.maps = nn.Parameter(torch.randn(width, tokens, dim) * 0.02 / math.sqrt(width))
        else:
            self.maps = None
        self.tokens, self.dim = tokens, dim

    def forward(self, actions: Tensor) -> Tensor:
        if self.spec.kind == "discrete":
            return self.maps[actions[..., 0].round().long()]  # (..., N, dim)
        if self.spec.kind == "continuous":
            return torch.einsum("...f,fnd->...nd", self.features(actions), self.maps)  # (..., N, dim)
        return actions.new_zeros(*actions.shape[:-1], self.tokens, self.dim)


class PointerActionMap(nn.Module):
    """Actions that name a place in the image (PushT's target, a cursor, a click) -> ``(..., N, dim)``:
    each token's vector is one shared function of its offset to that place.

    :class:`ActionMap` learns a separate map per token, so each token learns what an action does near
    it only from the few windows where the action lands near it. Here the columns ``xy`` of the action
    (x and y over the action box, which spans the image) become an offset in token units from every
    token's centre, and one linear layer of local features of that offset is shared by all tokens:
    what is learnt at one place holds at every place (translation equivariance, as a convolution).
    The features are 2D bumps at three widths (a 1D Fourier feature per axis cannot say "here and
    only here" without a product), the offset itself inside the middle bump (where in the token), and
    sin/cos of the offset at three frequencies inside the widest bump (sub-token detail). The layer
    starts small, so the map starts as a no-op.
    """

    SCALES = (0.5, 1.0, 2.0)  # bump widths in tokens
    FREQUENCIES = (0.5, 1.0, 2.0)  # times pi per token: periods of 4, 2 and 1 tokens, whose phases place within a token

    def __init__(self, spec: ActionSpec, grid: tuple[int, int], dim: int, xy: Sequence[int]):
        super().__init__()
        if spec.kind != "continuous":
            raise ValueError(f"a pointer action needs a continuous action space, got {spec.kind=}")
        if len(xy) != 2 or not all(0 <= i < spec.dim for i in xy):
            raise ValueError(f"xy must be two action columns in 0..{spec.dim - 1}, got {list(xy)}")
        low, high = _bounds(spec)
        low, high = low[list(xy)], high[list(xy)]
        if not (torch.isfinite(low) & torch.isfinite(high) & (high > low)).all():
            raise ValueError(f"pointer action columns {list(xy)} need finite bounds (they map the box onto the image)")
        gh, gw = grid
        rows, cols = torch.meshgrid(torch.arange(gh) + 0.5, torch.arange(gw) + 0.5, indexing="ij")
        self.register_buffer("centres", torch.stack([cols, rows], -1).reshape(-1, 2), persistent=False)  # (N, 2): x, y in tokens
        self.register_buffer("low", low, persistent=False)
        self.register_buffer("tokens_per_unit", torch.tensor([gw, gh], dtype=torch.float32) / (high - low), persistent=False)
        self.xy = list(xy)
        width = len(self.SCALES) + 2 + 4 * len(self.FREQUENCIES)
        self.proj = nn.Linear(width, dim)
        nn.init.normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)

    def forward(self, actions: Tensor) -> Tensor:
        place = (actions[..., self.xy].float() - self.low) * self.tokens_per_unit  # (..., 2) in tokens
        d = place[..., None, :] - self.centres  # (..., N, 2): from each token's centre to the place
        r2 = d.square().sum(-1, keepdim=True)  # (..., N, 1)
        bumps = [torch.exp(-r2 / (2 * s * s)) for s in self.SCALES]
        angles = torch.cat([d * (math.pi * f) for f in self.FREQUENCIES], dim=-1)  # (..., N, 2F)
        fine = torch.cat([angles.sin(), angles.cos()], dim=-1) * bumps[-1]  # (..., N, 4F)
        return self.proj(torch.cat([*bumps, d * bumps[1], fine], dim=-1))  # (..., N, dim)


def _bounds(spec: ActionSpec) -> tuple[Tensor, Tensor]:
    low = spec.low if spec.low is not None else [-1.0] * spec.dim
    high = spec.high if spec.high is not None else [1.0] * spec.dim
    if len(low) != spec.dim or len(high) != spec.dim:
        raise ValueError(f"action bounds must have {spec.dim} entries, got {len(low)=} {len(high)=}")
    to_tensor = lambda xs: torch.tensor([float(x) if x is not None else math.inf for x in xs], dtype=torch.float32)  # noqa: E731
    return to_tensor(low), to_tensor(high)


class FiLM(nn.Module):
    """Feature-wise scale and shift from a conditioning vector (Perez et al. 2018), no timestep.

    ``x * (1 + scale) + shift`` on the channel axis of ``(B, C, ...)`` features. The projection is
    zero-initialised so every modulated layer starts as the identity and conditioning is learned in.
    """

    def __init__(self, cond_dim: int, channels: int):
        super().__init__()
        self.proj = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 2 * channels))
        nn.init.zeros_(self.proj[1].weight)
        nn.init.zeros_(self.proj[1].bias)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        scale, shift = self.proj(cond).chunk(2, dim=-1)  # (B, C) each
        return modulate(x, scale, shift)


def modulate(x: Tensor, scale: Tensor, shift: Tensor, channels_last: bool = False) -> Tensor:
    """``x * (1 + scale) + shift`` with ``scale``/``shift`` of shape (B, C).

    Channels-first ``x`` (B, C, ...) (conv features) is modulated on axis 1; with ``channels_last``,
    ``x`` (B, ..., C) (tokens) is modulated on its last axis.
    """
    extra = x.dim() - scale.dim()
    if channels_last:
        scale = scale.reshape(scale.shape[0], *([1] * extra), scale.shape[1])  # (B, 1, ..., C)
        shift = shift.reshape(shift.shape[0], *([1] * extra), shift.shape[1])
    else:
        scale = scale.reshape(*scale.shape, *([1] * extra))  # (B, C, 1, ...)
        shift = shift.reshape(*shift.shape, *([1] * extra))
    return x * (1 + scale) + shift


class NoiseLevelEmbedding(nn.Module):
    """Scalar noise level (a diffusion timestep, or EDM's ``c_noise = log(sigma) / 4``) -> ``(..., dim)``.

    Sinusoidal features of ``scale * t`` followed by a 2-layer SiLU MLP, as DiT embeds timesteps.
    ``scale`` maps the input range onto the sinusoid periods (1..10^4): EDM's c_noise spans about
    [-1.5, 1], so the default 1000 spreads it over the slow and fast frequencies alike.
    """

    def __init__(self, dim: int, freq_dim: int = 256, scale: float = 1000.0, max_period: float = 10000.0):
        super().__init__()
        if freq_dim % 2:
            raise ValueError(f"freq_dim must be even, got {freq_dim=}")
        self.scale = scale
        freqs = torch.exp(-math.log(max_period) * torch.arange(freq_dim // 2, dtype=torch.float32) / (freq_dim // 2))
        self.register_buffer("freqs", freqs, persistent=False)  # (freq_dim/2,)
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        args = (self.scale * t.float())[..., None] * self.freqs  # (..., freq_dim/2)
        return self.mlp(torch.cat([args.cos(), args.sin()], dim=-1))
