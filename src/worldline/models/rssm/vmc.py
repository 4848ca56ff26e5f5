"""Ha & Schmidhuber's World Models (2018): V (a VAE) and M (an MDN-RNN), registered as type ``vmc``.

V encodes each 64x64 frame to a 32-d latent z (KL kept above ``kl_tolerance`` nats per dimension,
as the paper does, so the code keeps detail). M is an LSTM over (z_t, a_t) whose output is a mixture
of Gaussians over each dimension of z_{t+1}, plus a reward head (two-hot symlog) and a done head
reading its memory h_{t+1}, so a controller can be trained entirely inside M's dream (the paper's
VizDoom setting; its CarRacing controller trained in the real env). C, the linear controller on
[z, h], is in ``worldline.agents.controller``.

The paper trains V, then M on V's codes. Here one loss trains both at once with M reading detached
codes: the same gradients per part, one training run. Sampling uses the paper's temperature
(mixture logits / tau, sigma * sqrt(tau)); a higher tau makes the dream harder to exploit.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from worldline.core.config import register_model
from worldline.core.contracts import Batch, Rollout, State, WorldModel
from worldline.models.rssm.config import VMCConfig
from worldline.models.rssm.distributions import symlog_bins, two_hot_loss, two_hot_mean
from worldline.models.rssm.model import PixelChecks
from worldline.models.rssm.networks import ActionFeatures, Decoder, Encoder, mlp

REWARD_BINS = 255


@dataclasses.dataclass
class VMCState(State):
    z: Tensor  # (B, latent) current code
    h: Tensor  # (B, rnn) LSTM output after the transitions so far
    c: Tensor  # (B, rnn) LSTM cell

    def clone(self) -> "VMCState":
        return VMCState(self.z.clone(), self.h.clone(), self.c.clone())

    @property
    def feat(self) -> Tensor:
        """(B, latent + rnn): what the controller reads, [z, h] as in the paper."""
        return torch.cat([self.z, self.h], -1)


@register_model("vmc", VMCConfig)
class VMCWorldModel(PixelChecks, WorldModel):
    def __init__(self, config: VMCConfig):
        super().__init__()
        self.config = config
        self.action_spec = config.action_space
        self.actions = ActionFeatures(config.action_space)
        L, R, K = config.latent, config.rnn, config.mixtures
        self.encoder = Encoder(config.depth, config.image_size)
        self.to_latent = nn.Linear(self.encoder.out_dim, 2 * L)  # mean and log-variance
        self.decoder = Decoder(L, config.depth, config.image_size)
        self.rnn = nn.LSTMCell(L + self.actions.dim, R)
        self.mdn = nn.Linear(R, 3 * L * K)  # per dimension and component: logit, mean, log sigma
        if config.reward_head:
            self.reward = mlp(R, R, REWARD_BINS, 1, zero_out=True)
            self.done = mlp(R, R, 1, 1)
        self.register_buffer("bins", symlog_bins(REWARD_BINS), persistent=False)

    @property
    def has_reward_head(self) -> bool:
        return self.config.reward_head

    @property
    def feat_dim(self) -> int:
        return self.config.latent + self.config.rnn

    def window(self) -> int:
        return self.config.sequence_length

    # ------------------------------------------------------------------------------------------
    # V and M
    # ------------------------------------------------------------------------------------------

    def encode(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T, 3, H, W) -> mean, log-variance (B, T, latent)."""
        B = frames.shape[0]
        stats = self.to_latent(self.encoder(rearrange(frames, "b t c h w -> (b t) c h w")))
        mean, logvar = rearrange(stats, "(b t) (two l) -> two b t l", b=B, two=2)  # 2 x (B, T, L)
        return mean, logvar.clamp(-10, 5)

    def mixture(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """MDN head: (..., rnn) -> log-weights, means, log-sigmas, each (..., latent, mixtures)."""
        out = rearrange(self.mdn(h), "... (l k three) -> three ... l k", l=self.config.latent, three=3)
        return out[0].log_softmax(-1), out[1], out[2].clamp(-7, 3)

    def memory(self, z: Tensor, action_feats: Tensor, hc: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor]:
        return self.rnn(torch.cat([z, action_feats], -1), hc)

    # ------------------------------------------------------------------------------------------
    # training
    # ------------------------------------------------------------------------------------------

    def loss(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        cfg = self.config
        frames = batch["frames"].float()
        B, T = frames.shape[:2]
        actions = batch.get("actions")
        if actions is None:
            actions = frames.new_zeros(B, T, self.action_spec.dim)
        mean, logvar = self.encode(frames)
        z = mean + (0.5 * logvar).exp() * torch.randn_like(mean)  # (B, T, L)
        recon = rearrange(self.decoder(rearrange(z, "b t l -> (b t) l")), "(b t) c h w -> b t c h w", b=B)
        image = ((recon - frames) / 2).pow(2).sum((-3, -2, -1)).mean()  # summed on the [0, 1] scale, like the rssm
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(-1)  # (B, T)
        kl_loss = kl.clamp(min=cfg.kl_tolerance * cfg.latent).mean()

        # M on detached codes: h_{t+1} from (z_t, a_t), mixture over z_{t+1}
        zd, feats = z.detach(), self.actions(actions)
        hc, hs = None, []
        for t in range(T):
            hc = self.memory(zd[:, t], feats[:, t], hc)
            hs.append(hc[0])
        h = torch.stack(hs, 1)  # (B, T, R): h[:, t] follows action t
        logw, mu, logsig = self.mixture(h[:, :-1])  # (B, T-1, L, K)
        target = zd[:, 1:, :, None]  # (B, T-1, L, 1)
        logp = logw - 0.5 * ((target - mu) / logsig.exp()).pow(2) - logsig - 0.5 * math.log(2 * math.pi)
        mdn = -torch.logsumexp(logp, -1).sum(-1).mean()  # NLL of the next code, summed over dimensions
        loss = cfg.vae_weight * (image + kl_loss) + mdn
        logs = {"image_mse": F.mse_loss(recon, frames).item(), "kl": kl.mean().item(), "mdn_nll": mdn.item()}
        if cfg.reward_head and "rewards" in batch:
            dones = batch["dones"].float() if "dones" in batch else torch.zeros_like(batch["rewards"])
            reward_loss = two_hot_loss(self.reward(h), batch["rewards"].float(), self.bins).mean()
            done_loss = F.binary_cross_entropy_with_logits(self.done(h)[..., 0], dones)
            loss = loss + reward_loss + done_loss
            logs.update(reward_loss=reward_loss.item(), done_loss=done_loss.item())
        return loss, logs

    # ------------------------------------------------------------------------------------------
    # dreaming (agents)
    # ------------------------------------------------------------------------------------------

    def dream_step(self, state: VMCState, action_feats: Tensor) -> VMCState:
        """One step of M: sample z_{t+1} from the mixture at ``temperature``."""
        h, c = self.memory(state.z, action_feats, (state.h, state.c))
        logw, mu, logsig = self.mixture(h)
        tau = self.config.temperature
        k = torch.multinomial(rearrange((logw / tau).softmax(-1), "b l k -> (b l) k"), 1)  # (B*L, 1)
        k = rearrange(k, "(b l) one -> b l one", b=h.shape[0])
        mean = mu.gather(-1, k)[..., 0]
        sigma = logsig.gather(-1, k)[..., 0].exp() * math.sqrt(tau)
        return VMCState(mean + sigma * torch.randn_like(mean), h, c)

    def predict_reward(self, feat: Tensor) -> Tensor:
        self._need_heads()
        return two_hot_mean(self.reward(feat[..., self.config.latent:]), self.bins)

    def predict_continue(self, feat: Tensor) -> Tensor:
        self._need_heads()
        return 1 - torch.sigmoid(self.done(feat[..., self.config.latent:])[..., 0])

    def reward_and_continue(self, state: VMCState) -> tuple[Tensor, Tensor]:
        return self.predict_reward(state.feat), self.predict_continue(state.feat)

    def _need_heads(self) -> None:
        from worldline.core.errors import WorldlineError

        if not self.config.reward_head:
            raise WorldlineError("this vmc checkpoint has no reward head (model.reward_head=false): pass a reward_fn")

    # ------------------------------------------------------------------------------------------
    # state features and filtering real frames one at a time (the controller in a real env)
    # ------------------------------------------------------------------------------------------

    def decode_state(self, state: VMCState) -> Tensor:
        """The frame (B, 3, H, W) in [-1, 1] V draws for a state's code."""
        return self.decode(state.z[:, None])[:, 0]

    def state_features(self, state: VMCState) -> Tensor:
        """(B, latent + rnn): [z, h], what the controller reads in the dream and in the real env."""
        return state.feat

    def filter_start(self, frames: Tensor, sample: bool = True) -> VMCState:
        """V's mean code of an episode's first frames (B, 3, H, W) in [-1, 1], with an empty memory
        (``sample`` is accepted for the family's interface: V's code is always its mean here)."""
        self.check_frames(frames[:, None], "frames")
        z = self.encode(frames[:, None].float())[0][:, 0]  # (B, L)
        zeros = z.new_zeros(z.shape[0], self.config.rnn)
        return VMCState(z, zeros, zeros.clone())

    def filter_step(self, state: VMCState, action_feats: Tensor, frames: Tensor, sample: bool = True) -> VMCState:
        """M reads the transition (z, action) into its memory; z becomes V's code of the real frame."""
        self.check_frames(frames[:, None], "frames")
        h, c = self.memory(state.z, action_feats, (state.h, state.c))
        return VMCState(self.encode(frames[:, None].float())[0][:, 0], h, c)

    # ------------------------------------------------------------------------------------------
    # the WorldModel contract
    # ------------------------------------------------------------------------------------------

    def init_state(self, context_frames: Tensor, context_actions: Tensor | None = None,
                   text: list[str] | None = None) -> VMCState:
        """V codes every context frame (its mean); M reads the transitions between them."""
        from worldline.core.errors import WorldlineError

        self.check_frames(context_frames, "context_frames")
        self.check_text(text)
        B, T = context_frames.shape[:2]
        if context_actions is not None:
            self.check_actions(context_actions, B, "context_actions")
            if context_actions.shape[1] < T - 1:
                raise WorldlineError(f"context_actions cover {context_actions.shape[1]} steps, {T} context frames need {T - 1}")
            feats = self.actions(context_actions)
        else:
            feats = context_frames.new_zeros(B, T, self.actions.dim)
        z = self.encode(context_frames.float())[0]  # (B, T, L)
        h = c = z.new_zeros(B, self.config.rnn)
        for t in range(T - 1):
            h, c = self.memory(z[:, t], feats[:, t], (h, c))
        return VMCState(z[:, -1], h, c)

    def step(self, state: VMCState, action: Tensor) -> tuple[VMCState, Tensor]:
        self.check_action(action, state.z.shape[0])
        state = self.dream_step(state, self.actions(action))
        return state, self.decode(state.z[:, None])[:, 0]

    def embed(self, frames: Tensor) -> Tensor:
        """V's mean codes (B, T, latent)."""
        self.check_frames(frames)
        return self.encode(frames.float())[0]

    def imagine(self, state: VMCState, actions: Tensor) -> Tensor:
        """Codes (B, H, latent) M dreams under ``actions`` (B, H, A)."""
        self.check_actions(actions, state.z.shape[0])
        zs = []
        for t in range(actions.shape[1]):
            state = self.dream_step(state, self.actions(actions[:, t]))
            zs.append(state.z)
        return torch.stack(zs, 1) if zs else state.z.new_zeros(state.z.shape[0], 0, self.config.latent)

    def decode(self, z: Tensor) -> Tensor:
        """Codes (B, T, latent) -> frames (B, T, 3, H, W) in [-1, 1]."""
        from worldline.core.errors import WorldlineError

        if z.ndim != 3 or z.shape[-1] != self.config.latent:
            raise WorldlineError(f"decode expects codes (B, T, {self.config.latent}), got {tuple(z.shape)}")
        B = z.shape[0]
        frames = self.decoder(rearrange(z, "b t l -> (b t) l"))  # (B*T, 3, H, W)
        return rearrange(frames, "(b t) c h w -> b t c h w", b=B).clamp(-1, 1)

    def rollout(self, context_frames: Tensor, actions: Tensor, text: list[str] | None = None,
                context_actions: Tensor | None = None) -> Rollout:
        state = self.init_state(context_frames, context_actions, text)
        z = self.imagine(state, actions)
        return Rollout(frames=self.decode(z), latents=z)
