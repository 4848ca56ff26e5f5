"""The deterministic latent predictor: the honest baseline every world-model family must beat.

It works in the latent space of a frozen pretrained tokenizer with temporal compression 1, treated as
an image tokenizer (every frame encoded and decoded on its own). Latents are normalised per channel
with statistics of the latent cache (buffers, so they travel with the weights). A small U-Net sees the
last K latents stacked on channels, the action through FiLM, and predicts z_{t+1} - z_t.

Training: teacher forcing (every target predicted from true context) plus a multi-step rollout loss
(the model's own predictions fed back for ``rollout_steps``), so long rollouts do not drift off the
data the network was trained on. MSE gives the conditional mean: blurry under uncertainty, by design.

Frames: predicted latents are decoded by the tokenizer, and the tokenizer's error on the last real
frame is added back where the prediction leaves pixels unchanged (see :meth:`frames`), so a latent
model is not capped by its tokenizer's blur on a static background. ``decode`` stays the plain
tokenizer decode that planners pair with ``embed``/``imagine``.

Time convention (LeRobot): ``actions[t]`` is taken at frame t and leads to frame t + 1, so in a
window of K + H frames the first prediction uses ``actions[K - 1]``.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from worldline.core.config import register_model
from worldline.core.contracts import Batch, Rollout, State
from worldline.core.errors import WorldlineError
from worldline.models.baseline.config import DeterministicConfig
from worldline.models.baseline.network import LatentUNet, stack_context, unpatch
from worldline.models.latent import LatentWorldModel, correct_frames
from worldline.nn.embeddings import ActionEmbedding


@dataclasses.dataclass
class DeterministicState(State):
    z: Tensor  # (B, K, c, h, w) normalised latents of the last K frames, oldest first
    reference: Tensor | None = None  # (B, 3, H, W) tokenizer reconstruction of the last real frame
    correction: Tensor | None = None  # (B, 3, H, W) last real frame minus that reconstruction

    def clone(self) -> "DeterministicState":
        copy = lambda t: None if t is None else t.clone()  # noqa: E731
        return DeterministicState(self.z.clone(), copy(self.reference), copy(self.correction))


@register_model("deterministic", DeterministicConfig)
class DeterministicWorldModel(LatentWorldModel):
    def __init__(self, config: DeterministicConfig):
        super().__init__(config)  # frozen tokenizer, latent_shape, latent normalisation buffers
        c, h, w = self.latent_shape
        if h % config.patch or w % config.patch:
            raise WorldlineError(f"latents of {h}x{w} do not split into model.patch={config.patch} cells")

        self.action_embed = ActionEmbedding(config.action_space, config.action_dim)
        self.net = LatentUNet(
            in_channels=config.context_frames * c * config.patch**2,
            out_channels=c * config.patch**2,
            width=config.width,
            channel_mult=tuple(config.channel_mult),
            blocks_per_level=config.blocks_per_level,
            cond_dim=config.action_dim,
            coord_channels=config.coord_channels,
        )

    # ------------------------------------------------------------------------------------------
    # training hooks (train/run.py)
    # ------------------------------------------------------------------------------------------

    def window(self) -> int:
        return self.config.context_frames + self.config.train_horizon

    def loss(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        K, Hz, R = self.config.context_frames, self.config.train_horizon, self.config.rollout_steps
        z = self.batch_latents(batch)  # (B, T, c, h, w) normalised
        B, T = z.shape[:2]
        if T < K + Hz:
            raise WorldlineError(f"batch has {T} frames, the model needs windows of {K + Hz}")
        actions = batch["actions"][:, K - 1 : K - 1 + Hz].float()  # (B, Hz, A): the action leading to each target
        target = z[:, K : K + Hz]  # (B, Hz, c, h, w)

        # Teacher forcing: every target from its true context, all in one batched call.
        ctx = torch.stack([z[:, i : i + K] for i in range(Hz)], dim=1)  # (B, Hz, K, c, h, w)
        pred = self.predict(
            rearrange(ctx, "b n k c h w -> (b n) k c h w"),  # (B*Hz, K, c, h, w)
            rearrange(actions, "b n a -> (b n) a"),
        )
        pred = rearrange(pred, "(b n) c h w -> b n c h w", b=B)  # (B, Hz, c, h, w)
        tf_mse = F.mse_loss(pred, target)
        loss = tf_mse
        logs = {"tf_mse": tf_mse.item(), "copy_mse": F.mse_loss(z[:, K - 1], z[:, K]).item()}

        # Rollout: the first step is teacher-forced step 0; later steps see the model's own outputs.
        if R >= 2:
            window, steps = torch.cat([z[:, 1:K], pred[:, :1]], dim=1), [pred[:, 0]]
            for s in range(1, R):
                nxt = self.predict(window, actions[:, s])
                steps.append(nxt)
                window = torch.cat([window[:, 1:], nxt[:, None]], dim=1)
            roll_mse = F.mse_loss(torch.stack(steps, dim=1), target[:, :R])
            loss = loss + self.config.rollout_weight * roll_mse
            logs["rollout_mse"] = roll_mse.item()
        return loss, logs

    # ------------------------------------------------------------------------------------------
    # the network step
    # ------------------------------------------------------------------------------------------

    def predict(self, z: Tensor, action: Tensor) -> Tensor:
        """Next normalised latent (B, c, h, w) from context latents (B, K, c, h, w) and action (B, A)."""
        p = self.config.patch
        delta = unpatch(self.net(stack_context(z, p), self.action_embed(action)), p)  # (B, c, h, w)
        return z[:, -1] + delta

    # ------------------------------------------------------------------------------------------
    # the WorldModel contract
    # ------------------------------------------------------------------------------------------

    def init_state(self, context_frames: Tensor, context_actions: Tensor | None = None,
                   text: list[str] | None = None) -> DeterministicState:
        """State from ``context_frames`` (B, T, 3, H, W). The last K frames are kept; a shorter context
        is padded in front with its first frame (a world that stood still), so play can start from one
        frame. The baseline keeps no action history, and has no text conditioning."""
        self.check_frames(context_frames, "context_frames")
        if context_actions is not None:
            self.check_actions(context_actions, context_frames.shape[0], "context_actions")
        if text is not None and any(t for t in text):
            raise WorldlineError("the deterministic baseline takes no text prompt")
        z = self.encode_frames(context_frames)  # (B, T, c, h, w)
        K, T = self.config.context_frames, z.shape[1]
        if T < K:
            z = torch.cat([z[:, :1].expand(-1, K - T, -1, -1, -1), z], dim=1)  # (B, K, c, h, w)
        if self.config.correction_gate <= 0:
            return DeterministicState(z[:, -K:])
        reference = self.decode(z[:, -1:])[:, 0]  # (B, 3, H, W)
        return DeterministicState(z[:, -K:], reference, context_frames[:, -1].float() - reference)

    def step(self, state: DeterministicState, action: Tensor) -> tuple[DeterministicState, Tensor]:
        self.check_action(action, state.z.shape[0])
        nxt = self.predict(state.z, action.float())  # (B, c, h, w)
        state = DeterministicState(torch.cat([state.z[:, 1:], nxt[:, None]], dim=1), state.reference, state.correction)
        return state, self.frames(state, nxt[:, None])[:, 0]

    def imagine(self, state: DeterministicState, actions: Tensor) -> Tensor:
        """Normalised latents (B, H, c, h, w) after each of ``actions`` (B, H, A); ``state`` is untouched."""
        self.check_actions(actions, state.z.shape[0], "actions")
        z, out = state.z, []
        for t in range(actions.shape[1]):
            nxt = self.predict(z, actions[:, t].float())
            out.append(nxt)
            z = torch.cat([z[:, 1:], nxt[:, None]], dim=1)
        if not out:
            return state.z.new_zeros(state.z.shape[0], 0, *self.latent_shape)
        return torch.stack(out, dim=1)

    def rollout(self, context_frames: Tensor, actions: Tensor, text: list[str] | None = None,
                context_actions: Tensor | None = None) -> Rollout:
        """Predict ``actions.shape[1]`` frames, stepping in latent space and decoding once at the end."""
        state = self.init_state(context_frames, context_actions, text)
        z = self.imagine(state, actions)
        return Rollout(frames=self.frames(state, z), latents=z)

    def frames(self, state: DeterministicState, z: Tensor) -> Tensor:
        """Frames (B, T, 3, H, W) for predicted latents ``z``: decoded, plus the tokenizer's error on
        the last real frame where the prediction leaves pixels unchanged (see ``correct_frames``)."""
        frames = self.decode(z)
        if state.correction is None:
            return frames
        return correct_frames(frames, state.reference, state.correction, self.config.correction_gate)
