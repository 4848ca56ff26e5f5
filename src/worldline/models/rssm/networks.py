"""Networks of the recurrent state-space family: conv image encoder/decoder for 64x64 frames, the
RSSM core (GRU + categorical latents), MLP heads, and the action feature map they share.

Everything here predicts; sampling schedules and training loops live in model.py and agents/.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from worldline.core.contracts import ActionSpec
from worldline.models.rssm.distributions import sample_straight_through, unimix_logits


class ActionFeatures(nn.Module):
    """Actions (..., A) as the model's input vector (..., F) and back.

    Discrete: one-hot over ``n`` (F = n). Continuous: each column scaled to [-1, 1] with its box
    bounds (unbounded columns pass through). None: F = 0. Agents act in this feature space.
    """

    def __init__(self, spec: ActionSpec):
        super().__init__()
        self.spec = spec
        self.dim = spec.n if spec.kind == "discrete" else spec.dim
        low = spec.low if spec.low is not None else [-math.inf] * spec.dim
        high = spec.high if spec.high is not None else [math.inf] * spec.dim
        low_t, high_t = torch.tensor(low, dtype=torch.float32), torch.tensor(high, dtype=torch.float32)
        finite = torch.isfinite(low_t) & torch.isfinite(high_t) & (high_t > low_t)
        self.register_buffer("center", torch.where(finite, (high_t + low_t) / 2, torch.zeros_like(low_t)), persistent=False)
        self.register_buffer("half_range", torch.where(finite, (high_t - low_t) / 2, torch.ones_like(low_t)), persistent=False)

    def forward(self, actions: Tensor) -> Tensor:
        if self.spec.kind == "discrete":
            return F.one_hot(actions[..., 0].round().long(), self.spec.n).float()
        if self.spec.kind == "continuous":
            return (actions.float() - self.center) / self.half_range
        return actions.new_zeros(*actions.shape[:-1], 0).float()

    def to_actions(self, features: Tensor) -> Tensor:
        """Inverse map: one-hot (or logits) -> index column; [-1, 1] -> the box."""
        if self.spec.kind == "discrete":
            return features.argmax(-1, keepdim=True).float()
        if self.spec.kind == "continuous":
            return features.clamp(-1, 1) * self.half_range + self.center
        return features.new_zeros(*features.shape[:-1], 0)


def mlp(din: int, hidden: int, dout: int, layers: int, zero_out: bool = False) -> nn.Sequential:
    """``layers`` x (Linear, LayerNorm, SiLU) then a Linear; ``zero_out`` starts the output at zero
    (DreamerV3 does this for the reward and value heads so early returns are not huge random numbers)."""
    mods: list[nn.Module] = []
    d = din
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.LayerNorm(hidden), nn.SiLU()]
        d = hidden
    out = nn.Linear(d, dout)
    if zero_out:
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
    return nn.Sequential(*mods, out)


class Encoder(nn.Module):
    """(N, 3, H, W) in [-1, 1] -> (N, E): four stride-2 4x4 convs (64 -> 4), channels depth x (1, 2, 4, 8)."""

    def __init__(self, depth: int, image_size: tuple[int, int]):
        super().__init__()
        chans = [3] + [depth * m for m in (1, 2, 4, 8)]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            # GroupNorm(1, c) normalises over (C, H, W) like a LayerNorm and works at batch size 1
            layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.GroupNorm(1, cout), nn.SiLU()]
        self.net = nn.Sequential(*layers)
        self.out_dim = chans[-1] * (image_size[0] // 16) * (image_size[1] // 16)

    def forward(self, x: Tensor) -> Tensor:
        return rearrange(self.net(x), "n c h w -> n (c h w)")  # (N, E)


class Decoder(nn.Module):
    """(N, F) features -> (N, 3, H, W): a linear map to a (8 depth, H/16, W/16) grid, then four
    stride-2 transposed convs. The output is unbounded; callers clamp frames to [-1, 1]."""

    def __init__(self, in_dim: int, depth: int, image_size: tuple[int, int]):
        super().__init__()
        self.grid = (image_size[0] // 16, image_size[1] // 16)
        chans = [depth * m for m in (8, 4, 2, 1)] + [3]
        self.proj = nn.Linear(in_dim, chans[0] * self.grid[0] * self.grid[1])
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(chans[:-1], chans[1:])):
            layers.append(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1))
            if i < 3:
                layers += [nn.GroupNorm(1, cout), nn.SiLU()]
        self.net = nn.Sequential(*layers)

    def forward(self, feat: Tensor) -> Tensor:
        x = rearrange(self.proj(feat), "n (c h w) -> n c h w", h=self.grid[0], w=self.grid[1])  # (N, 8d, h, w)
        return self.net(x)


class RSSMCore(nn.Module):
    """The recurrent state-space model (Hafner et al. 2019, categorical latents of DreamerV2/3).

    State: ``h`` (B, deter) deterministic GRU memory and ``z`` (B, stoch * classes) one-hot samples.
    ``img_step``: (h, z, action) -> next h and the prior over the next z (no observation needed).
    ``posterior``: (h, embedding of the frame) -> the posterior over z.
    """

    def __init__(self, deter: int, stoch: int, classes: int, hidden: int, action_dim: int, embed_dim: int, unimix: float):
        super().__init__()
        self.deter, self.stoch, self.classes, self.unimix = deter, stoch, classes, unimix
        # latent and action get their own normalised projections before the GRU (as DreamerV3's code
        # does), so a 2-d action is not one small slice of a 1000-wide input the heads must read it from
        self.inp_z = nn.Sequential(nn.Linear(stoch * classes, hidden), nn.LayerNorm(hidden), nn.SiLU())
        self.inp_a = nn.Sequential(nn.Linear(action_dim, hidden), nn.LayerNorm(hidden), nn.SiLU()) if action_dim else None
        self.gru = nn.GRUCell(hidden * (2 if action_dim else 1), deter)
        self.prior = mlp(deter, hidden, stoch * classes, 1)
        self.post = mlp(deter + embed_dim, hidden, stoch * classes, 1)

    @property
    def feat_dim(self) -> int:
        return self.deter + self.stoch * self.classes

    def initial(self, batch: int, device: torch.device) -> tuple[Tensor, Tensor]:
        return torch.zeros(batch, self.deter, device=device), torch.zeros(batch, self.stoch * self.classes, device=device)

    def _logp(self, logits: Tensor) -> Tensor:
        logits = rearrange(logits, "b (s k) -> b s k", s=self.stoch)  # (B, S, K)
        return unimix_logits(logits, self.unimix)

    def img_step(self, h: Tensor, z: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        """-> (next h (B, deter), prior log-probs (B, S, K))."""
        x = self.inp_z(z) if self.inp_a is None else torch.cat([self.inp_z(z), self.inp_a(action)], -1)
        h = self.gru(x, h)
        return h, self._logp(self.prior(h))

    def posterior(self, h: Tensor, embed: Tensor) -> Tensor:
        """-> posterior log-probs (B, S, K) of z given the memory and the frame's embedding."""
        return self._logp(self.post(torch.cat([h, embed], -1)))

    def sample(self, logp: Tensor) -> Tensor:
        """Straight-through one-hot sample, flattened to (B, S * K)."""
        return rearrange(sample_straight_through(logp), "b s k -> b (s k)")
