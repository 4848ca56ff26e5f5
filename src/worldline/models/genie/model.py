"""The Genie world model (Bruce et al. 2024), registered as model type ``genie``.

Two networks trained jointly in one loss, on top of a frozen discrete (FSQ) tokenizer:

- the latent action model (:mod:`.lam`) sees pixels and learns one of ``num_latent_actions`` codes
  per transition, from video alone;
- the dynamics model (:mod:`.dynamics`) predicts masked token ids of each frame from earlier frames
  and the code of the transition into it (the LAM's ids, detached, as in Genie), decoded at play
  time with MaskGIT (:mod:`.maskgit`).

Playing: ``step(state, action)`` takes a latent action index (B, 1) in 0..n-1, so
``action_spec`` is discrete with n = the codebook size, whatever the dataset's actions were. With
``real_actions`` the dynamics also sees the dataset's actions, and ``step`` takes those instead
(the latent action is then "none", which training shows it in ``latent_dropout`` of the clips).

Windows: the dynamics trains on clips of ``window_frames`` and plays with the last
``window_frames - 1`` as context; the LAM reads windows of ``lam_window`` frames slid over the clip
(``lam_clips``), so a 2-frame LAM (a code must explain x_t -> x_t+1 alone, not what the past already
shows) can sit beside a dynamics model that sees enough frames to know how fast things move.

Context: ``init_state`` infers the latent actions between the context frames with the LAM (or
takes them from ``context_actions``), so play can start from real video. The rollout state keeps
the temporal keys/values of the last ``window_frames - 1`` frames, so a step costs
``maskgit_steps + 1`` passes over one frame's tokens, however long the game has run.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from worldline.core.config import register_model
from worldline.core.contracts import ActionSpec, Batch, Rollout, State
from worldline.core.errors import WorldlineError
from worldline.models.genie import maskgit
from worldline.models.genie.config import GenieConfig
from worldline.models.genie.dynamics import DynamicsTransformer
from worldline.models.genie.lam import LatentActionModel
from worldline.models.latent import LatentWorldModel
from worldline.nn.attention import KVCache

LABEL_CHUNK = 64  # LAM windows per call when labelling long videos


@dataclasses.dataclass
class GenieState(State):
    ids: Tensor  # (B, n, h, w) token ids of the frames held in the cache, oldest first
    cache: list[KVCache]  # per dynamics layer: temporal keys/values of those frames
    t: int  # time position of the next frame

    def clone(self) -> "GenieState":
        return GenieState(self.ids.clone(), [kv.clone() for kv in self.cache], self.t)


@register_model("genie", GenieConfig)
class GenieWorldModel(LatentWorldModel):
    discrete_tokenizer = True

    def __init__(self, config: GenieConfig):
        super().__init__(config)  # frozen tokenizer, latent_shape (h, w)
        H, W = config.image_size
        if H % config.lam_patch or W % config.lam_patch:
            raise WorldlineError(f"model.image_size {H}x{W} does not split into model.lam_patch={config.lam_patch} patches")
        if config.real_actions and config.action_space.kind == "none":
            raise WorldlineError("model.real_actions is set, but the dataset has no actions (action kind 'none')")
        n = config.num_latent_actions
        if config.real_actions:
            self.action_spec = config.action_space
        else:
            self.action_spec = ActionSpec(kind="discrete", dim=1, n=n, names=[f"latent {i}" for i in range(n)])
        self.lam = LatentActionModel(
            (H, W), config.lam_patch, config.lam_dim, config.lam_depth, config.lam_heads, n, config.motion_weight,
            config.usage_floor, config.lam_code_bias,
        )
        h, w = self.latent_shape
        self.dynamics = DynamicsTransformer(
            self.tokenizer.vocab_size, (h, w), config.dim, config.depth, config.heads, config.mlp_ratio, n,
            config.action_space if config.real_actions else None,
        )
        self.maskgit_steps = config.maskgit_steps  # play-time settings; change freely (no weights)
        self.temperature = config.temperature

    @property
    def tokens_per_frame(self) -> int:
        h, w = self.latent_shape
        return h * w

    # ------------------------------------------------------------------------------------------
    # training hooks (train/run.py)
    # ------------------------------------------------------------------------------------------

    def window(self) -> int:
        return self.config.window_frames

    def latent_store(self, frame_store):
        """The latent cache, with the decoded frames kept beside it: the LAM works on pixels."""
        from worldline.data.windows import EpisodeStore

        store = super().latent_store(frame_store)
        arrays = {**store.arrays, "frames": frame_store.arrays["frames"]}
        return EpisodeStore(arrays, store.episode_starts, store.episode_lengths, info=store.info)

    def loss(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        cfg = self.config
        ids = self.batch_latents(batch)  # (B, T, h, w) int64
        B, T = ids.shape[:2]
        if T < cfg.window_frames:
            raise WorldlineError(f"batch has {T} frames, the model needs windows of {cfg.window_frames}")
        frames = batch.get("frames")
        if frames is None:  # a latent-only batch: the LAM sees the tokenizer's reconstruction
            with torch.no_grad():
                frames = self.decode(ids)
        lam = self.lam(self.lam_clips(frames.float()))
        lam_ids = self.join_lam_ids(lam.ids, B)  # (B, T-1)

        # conditioning of frame t: the latent action of t-1 -> t (frame 0: none)
        dyn = self.dynamics
        latent = torch.cat([ids.new_full((B, 1), dyn.none_id), lam_ids.detach()], dim=1)  # (B, T)
        real = real_known = None
        if cfg.real_actions:
            hide = torch.rand(B, 1, device=ids.device) < cfg.latent_dropout
            latent = torch.where(hide, torch.full_like(latent, dyn.none_id), latent)
            acts = batch["actions"].float()
            real = torch.cat([acts[:, :1], acts[:, :-1]], dim=1)  # (B, T, A): action leading into frame t
            real_known = torch.rand(B, 1, device=ids.device) >= cfg.real_dropout
            real_known = real_known & (torch.arange(T, device=ids.device) > 0)  # (B, T): frame 0 has none
        cond = dyn.condition(latent, real, real_known)  # (B, T, D)

        tokens = rearrange(ids, "b t h w -> b t (h w)")  # (B, T, S)
        mask = maskgit.training_mask(tuple(tokens.shape), device=ids.device)
        mask[:, 0] = False  # the first frame is always given
        hidden = dyn.hidden(torch.where(mask, torch.full_like(tokens, dyn.mask_id), tokens), cond)  # (B, T, S, D)
        logits = dyn.head(hidden[mask]).float()  # (M, V): only masked tokens are scored
        if mask.any():
            ce = F.cross_entropy(logits, tokens[mask])
            acc = (logits.argmax(-1) == tokens[mask]).float().mean().item()
        else:
            ce, acc = hidden.sum() * 0, 1.0
        lam_loss = (lam.recon_loss + cfg.entropy_weight * lam.vq_loss[0] + cfg.commit_weight * lam.vq_loss[1]
                    + cfg.rate_weight * lam.vq_loss[2])
        loss = ce + cfg.lam_weight * lam_loss

        n = cfg.num_latent_actions
        share = torch.bincount(lam.ids.reshape(-1), minlength=n).float() / lam.ids.numel()
        logs = {
            "dyn_ce": ce.item(),
            "dyn_acc": acc,
            "lam_mse": lam.recon_loss.item(),
            "lam_entropy": lam.vq_loss[0].item(),
            "lam_commit": lam.vq_loss[1].item(),
            "lam_rate": lam.vq_loss[2].item(),  # batch entropy of the soft code usage (nats)
            "lam_codes_used": float((share > 0).sum().item()),  # distinct codes in this batch
            "lam_perplexity": float(torch.exp(-(share * share.clamp_min(1e-12).log()).sum()).item()),
        }
        return loss, logs

    # ------------------------------------------------------------------------------------------
    # latent actions
    # ------------------------------------------------------------------------------------------

    def lam_clips(self, frames: Tensor) -> Tensor:
        """The LAM windows (B * (T - L + 1), L, 3, H, W) of ``frames`` (B, T, 3, H, W): every run of
        L = ``lam_frames`` consecutive frames (just ``frames`` when T <= L)."""
        L, T = self.config.lam_frames, frames.shape[1]
        if T <= L:
            return frames
        idx = torch.arange(T - L + 1, device=frames.device)[:, None] + torch.arange(L, device=frames.device)  # (n, L)
        return rearrange(frames[:, idx], "b n l c h w -> (b n) l c h w")  # (B*n, L, 3, H, W)

    def join_lam_ids(self, ids: Tensor, batch: int) -> Tensor:
        """Code ids (B, T-1) of a clip's transitions from the ids (B*n, L-1) of its :meth:`lam_clips`:
        all of the first window's, then the last transition of each later window."""
        ids = rearrange(ids, "(b n) k -> b n k", b=batch)  # (B, n, L-1)
        return torch.cat([ids[:, 0], ids[:, 1:, -1]], dim=1)

    @torch.no_grad()
    def infer_latent_actions(self, frames: Tensor) -> Tensor:
        """Latent action ids (B, T-1) of each transition of ``frames`` (B, T, 3, H, W).

        Transition t -> t+1 is read from a LAM window ending at frame t+1 of at most
        ``lam_frames`` frames, as in training, however long the video is."""
        self.check_frames(frames, "frames")
        B, T = frames.shape[:2]
        W = self.config.lam_frames
        if T < 2:
            raise WorldlineError(f"a video of {T} frame is too short for the latent action model: it needs 2 or more (one transition)")
        frames = frames.float()
        if T <= W:
            return self.lam.infer(frames)
        out = [self.lam.infer(frames[:, :W])]  # (B, W-1): windows that start at frame 0
        ends = torch.arange(W, T, device=frames.device)  # last frame of each further window
        for chunk in ends.split(max(LABEL_CHUNK // B, 1)):
            idx = chunk[:, None] - torch.arange(W - 1, -1, -1, device=frames.device)  # (n, W) frame indices
            clips = rearrange(frames[:, idx], "b n w c h x -> (b n) w c h x")  # (B*n, W, 3, H, W)
            out.append(rearrange(self.lam.infer(clips)[:, -1], "(b n) -> b n", b=B))
        return torch.cat(out, dim=1)

    # ------------------------------------------------------------------------------------------
    # the WorldModel contract
    # ------------------------------------------------------------------------------------------

    def check_action(self, action: Tensor, batch: int) -> None:
        if not self.config.real_actions:
            n = self.config.num_latent_actions
            if action.dim() != 2 or action.shape[0] != batch or action.shape[1] != 1:
                raise WorldlineError(
                    f"this genie model was trained without real actions: step takes one latent action index per row, "
                    f"(B={batch}, 1) in 0..{n - 1}, got shape {tuple(action.shape)}"
                )
            bad = ~torch.isfinite(action) | (action < 0) | (action >= n) | (action != action.round())
            if bad.any():
                raise WorldlineError(f"latent action {action[bad][0].item()} is outside the codebook 0..{n - 1}")
            return
        super().check_action(action, batch)

    def check_actions(self, actions: Tensor, batch: int, name: str) -> None:
        if actions.dim() != 3 or actions.shape[0] != batch:
            raise WorldlineError(f"{name} must be (B={batch}, T, A), got shape {tuple(actions.shape)}")
        if not self.config.real_actions:
            for t in range(actions.shape[1]):
                self.check_action(actions[:, t], batch)
            return
        super().check_actions(actions, batch, name)

    def _condition_step(self, action: Tensor) -> Tensor:
        """Conditioning (B, D) of the next frame from a step's action (B, A)."""
        dyn = self.dynamics
        if self.config.real_actions:
            none = torch.full((action.shape[0],), dyn.none_id, dtype=torch.long, device=action.device)
            return dyn.condition(none, action.float())
        return dyn.condition(action[:, 0].round().long())

    @torch.no_grad()
    def init_state(self, context_frames: Tensor, context_actions: Tensor | None = None,
                   text: list[str] | None = None) -> GenieState:
        """State from ``context_frames`` (B, T, 3, H, W); the last ``window_frames - 1`` are kept.
        The latent actions between them come from ``context_actions`` (latent ids, in a model without
        real actions) or else from the LAM; a model with real actions takes its real ones from
        ``context_actions`` where given (``context_actions[:, t]`` leads from frame t to t + 1)."""
        self.check_frames(context_frames, "context_frames")
        B = context_frames.shape[0]
        if context_actions is not None:
            self.check_actions(context_actions, B, "context_actions")
            if context_actions.shape[1] < context_frames.shape[1] - 1:
                raise WorldlineError(
                    f"context_actions cover {context_actions.shape[1]} steps, {context_frames.shape[1]} frames need {context_frames.shape[1] - 1}"
                )
        if text is not None and any(t for t in text):
            raise WorldlineError("the genie model takes no text prompt")
        keep = self.config.window_frames - 1
        frames = context_frames[:, -keep:].float()
        n = frames.shape[1]
        actions = None if context_actions is None else context_actions[:, context_frames.shape[1] - n : context_frames.shape[1] - 1]
        ids = self.encode_frames(frames)  # (B, n, h, w)

        dyn = self.dynamics
        latent = torch.full((B, n), dyn.none_id, dtype=torch.long, device=ids.device)
        real = real_known = None
        if n > 1:
            if actions is not None and not self.config.real_actions:
                latent[:, 1:] = actions[..., 0].round().long()
            else:
                latent[:, 1:] = self.infer_latent_actions(frames)
            if actions is not None and self.config.real_actions:
                real = torch.cat([actions[:, :1], actions], dim=1).float()  # (B, n, A): frame 0 gets a placeholder
                real_known = (torch.arange(n, device=ids.device) > 0).expand(B, n)
        cond = dyn.condition(latent, real, real_known)  # (B, n, D)
        tokens = rearrange(ids, "b n h w -> b n (h w)")  # (B, n, S)
        cache = dyn.new_cache()
        for t in range(n):
            cache = dyn.commit(tokens[:, t], cond[:, t], cache, t, self.config.window_frames)
        return GenieState(ids, cache, n)

    def _advance(self, state: GenieState, action: Tensor) -> tuple[GenieState, Tensor]:
        """One frame of token ids (B, h, w) and the state after it."""
        dyn = self.dynamics
        B = state.ids.shape[0]
        cond = self._condition_step(action)  # (B, D)
        tokens = maskgit.decode(
            lambda x: dyn.frame_logits(x, cond, state.cache, state.t),
            B, self.tokens_per_frame, dyn.mask_id, min(self.maskgit_steps, self.tokens_per_frame),
            self.temperature, device=state.ids.device,
        )  # (B, S)
        cache = dyn.commit(tokens, cond, state.cache, state.t, self.config.window_frames)
        ids = tokens.reshape(B, *self.latent_shape)  # (B, h, w)
        keep = self.config.window_frames - 1
        return GenieState(torch.cat([state.ids, ids[:, None]], dim=1)[:, -keep:], cache, state.t + 1), ids

    @torch.no_grad()
    def step(self, state: GenieState, action: Tensor) -> tuple[GenieState, Tensor]:
        self.check_action(action, state.ids.shape[0])
        state, ids = self._advance(state, action)
        return state, self.decode(ids[:, None])[:, 0]

    @torch.no_grad()
    def imagine(self, state: GenieState, actions: Tensor) -> Tensor:
        """Token ids (B, H, h, w) after each of ``actions`` (B, H, A); ``state`` is untouched."""
        self.check_actions(actions, state.ids.shape[0], "actions")
        out = []
        for t in range(actions.shape[1]):
            state, ids = self._advance(state, actions[:, t])
            out.append(ids)
        if not out:
            return state.ids.new_zeros(state.ids.shape[0], 0, *self.latent_shape)
        return torch.stack(out, dim=1)

    @torch.no_grad()
    def rollout(self, context_frames: Tensor, actions: Tensor, text: list[str] | None = None,
                context_actions: Tensor | None = None) -> Rollout:
        """Predict ``actions.shape[1]`` frames, decoding all token ids at the end."""
        z = self.imagine(self.init_state(context_frames, context_actions, text), actions)
        return Rollout(frames=self.decode(z), latents=z)
