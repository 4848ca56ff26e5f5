"""The latent diffusion world model, registered as model type ``diffusion``.

Training (EDM, Cosmos Video2World): a window of ``context_frames + chunk_frames`` latents; the
context is lightly noised and, for a fraction of windows, cut short (down to none: Text2World);
the chunk is the denoising target, as a residual from the last context latent when ``residual``;
actions (and text) are dropped together now and then for classifier-free guidance; the loss is the
EDM-weighted denoising error on the chunk only. With ``rollout_steps`` R the window holds R more
chunks: each is denoised after a context that ends with the model's own sampled predictions, so it
learns to correct the errors it feeds itself in a long rollout.

Sampling: chunk by chunk, each chunk conditioned on the last ``context_frames`` latents before it
(real or generated), with the weight-free samplers of :mod:`worldline.models.diffusion.samplers`.
``step`` makes one frame (play, DreamEnv); ``rollout`` any number, decoded once at the end.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from worldline.core.config import register_model
from worldline.core.contracts import Batch, Rollout, State
from worldline.core.errors import WorldlineError
from worldline.models.diffusion.config import DiffusionConfig
from worldline.models.diffusion.edm import EDM, karras_sigmas
from worldline.models.diffusion.network import DiT
from worldline.models.diffusion.samplers import SAMPLERS, sample
from worldline.models.latent import LatentWorldModel, correct_frames
from worldline.nn.embeddings import ActionEmbedding, ActionMap, NoiseLevelEmbedding, PointerActionMap
from worldline.text import TEXT_DIM


@dataclasses.dataclass
class DiffusionState(State):
    z: Tensor  # (B, k, c, h, w) normalised latents of the last k <= K frames, oldest first (k = 0: Text2World)
    actions: Tensor  # (B, k, A) the action that led into each of those frames
    has_action: Tensor  # (B, k) bool: False where that action is unknown (the first context frame)
    text: Tensor | None = None  # (B, Lt, 384) text tokens, null token first, when the model uses text
    text_mask: Tensor | None = None  # (B, Lt) bool
    reference: Tensor | None = None  # (B, 3, H, W) tokenizer reconstruction of the last real frame
    correction: Tensor | None = None  # (B, 3, H, W) last real frame minus that reconstruction

    def clone(self) -> "DiffusionState":
        copy = lambda t: None if t is None else t.clone()  # noqa: E731
        return DiffusionState(self.z.clone(), self.actions.clone(), self.has_action.clone(), copy(self.text),
                              copy(self.text_mask), copy(self.reference), copy(self.correction))


@register_model("diffusion", DiffusionConfig)
class DiffusionWorldModel(LatentWorldModel):
    def __init__(self, config: DiffusionConfig):
        super().__init__(config)  # frozen tokenizer, latent_shape, latent normalisation buffers
        c, h, w = self.latent_shape
        K, Fc = config.context_frames, config.chunk_frames
        self.edm = EDM(config.sigma_data, config.p_mean, config.p_std)
        try:
            self.net = DiT(c, (h, w), K + Fc, config.patch, config.width, config.depth, config.heads, config.mlp_ratio,
                           config.adaln_lora_rank, TEXT_DIM if config.text else None, 1 + config.stack_context * c,
                           config.local_mix)
        except ValueError as e:
            raise WorldlineError(f"model.patch={config.patch}: {e}") from None
        self.noise_embed = NoiseLevelEmbedding(config.width)
        self.action_embed = ActionEmbedding(config.action_space, config.width)
        tokens = (h // config.patch) * (w // config.patch)
        self.action_map = ActionMap(config.action_space, tokens, config.width) if config.action_map else None
        self.pointer_map = None
        if config.action_xy:
            try:
                self.pointer_map = PointerActionMap(config.action_space, (h // config.patch, w // config.patch), config.width, config.action_xy)
            except ValueError as e:
                raise WorldlineError(f"model.action_xy={config.action_xy}: {e}") from None
        if config.text:
            self.text_null = nn.Parameter(torch.randn(1, TEXT_DIM) * 0.02)  # the "no text" token CFG falls back to
        self.register_buffer("residual_std", torch.ones(c))  # per-channel std of z_{t+1} - z_t, from the latent cache

    # ------------------------------------------------------------------------------------------
    # training hooks (train/run.py)
    # ------------------------------------------------------------------------------------------

    def window(self) -> int:
        return self.config.context_frames + self.config.chunk_frames * (1 + self.config.rollout_steps)

    def latent_store(self, frame_store):
        store = super().latent_store(frame_store)
        if self.config.residual and not self.tokenizer.discrete:
            self.residual_std.copy_(torch.as_tensor(residual_std(store, self.latent_mean, self.latent_std)).clamp_min(1e-3))
        return store

    def loss(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        cfg = self.config
        K, Fc, R = cfg.context_frames, cfg.chunk_frames, cfg.rollout_steps
        z = self.batch_latents(batch)  # (B, T, c, h, w) normalised
        B, T = z.shape[:2]
        if T < self.window():
            raise WorldlineError(f"batch has {T} frames, the model needs windows of {self.window()}")
        z = z[:, : self.window()]
        dev = z.device
        actions = batch["actions"][:, : self.window()].float()  # (B, T, A); actions[t] leads to frame t+1
        frame_actions = torch.cat([torch.zeros_like(actions[:, :1]), actions[:, :-1]], dim=1)  # (B, T, A): into frame t

        # Context length per window: K, or 0..K-1 for a fraction (absent frames are the oldest).
        k = torch.full((B,), K, device=dev)
        short = torch.rand(B, device=dev) < cfg.short_context_prob
        k = torch.where(short, torch.randint(0, K, (B,), device=dev), k)
        present = torch.arange(K, device=dev)[None] >= (K - k)[:, None]  # (B, K)
        keep = torch.rand(B, device=dev) >= cfg.cond_drop  # classifier-free guidance: drop actions and text together
        text, text_mask = self.batch_text(batch, B, keep)
        ctx = z[:, :K] * present[..., None, None, None]
        loss, x0, x0_hat = self.chunk_loss(ctx, present, z[:, K : K + Fc], frame_actions[:, : K + Fc], keep, text, text_mask, True)
        with torch.no_grad():
            logs = {"loss_F": loss.item(), "mse_x0": F.mse_loss(x0_hat, x0).item(), "copy_mse": F.mse_loss(z[:, K - 1], z[:, K]).item()}
        if R:
            # The model's own one-step predictions become the context of the next chunks, whose real frames
            # it must still reach (the baseline's rollout loss; Cosmos' and GameNGen's context noise cover
            # small errors only). The prediction is not differentiated through: it is an input, as at play.
            rollout = 0.0
            for r in range(1, R + 1):
                with torch.no_grad():
                    z_hat = self.predict_chunk(ctx, present, frame_actions[:, (r - 1) * Fc : K + r * Fc], keep, text, text_mask)
                ctx = torch.cat([ctx, z_hat], dim=1)[:, -K:]
                present = torch.cat([present, present.new_ones(B, Fc)], dim=1)[:, -K:]
                s = K + r * Fc  # the chunk's first frame
                rollout = rollout + self.chunk_loss(ctx, present, z[:, s : s + Fc], frame_actions[:, s - K : s + Fc],
                                                    keep, text, text_mask, False)[0] / R
            loss = loss + cfg.rollout_weight * rollout
            logs["loss_rollout"] = rollout.item()
        return loss, logs

    def chunk_loss(self, ctx: Tensor, present: Tensor, chunk: Tensor, frame_actions: Tensor, keep: Tensor,
                   text: Tensor | None, text_mask: Tensor | None, first: bool) -> tuple[Tensor, Tensor, Tensor]:
        """EDM loss of denoising ``chunk`` (B, F, c, h, w) after the context ``ctx`` (B, K, ...) whose real
        frames ``present`` (B, K) marks, which gets the training context noise here; ``frame_actions``
        (B, K+F, A) lead into each frame. ``first``: the context starts the window, so the action into its
        first frame is unknown. Returns (loss, x0, the denoised x0) in the residual variable."""
        cfg, B, n = self.config, chunk.shape[0], chunk.shape[1]
        ctx_sigma = torch.rand(B, device=ctx.device) * cfg.context_noise_max
        noisy_ctx = (ctx + ctx_sigma[:, None, None, None, None] * torch.randn_like(ctx)) * present[..., None, None, None]
        has_action = torch.cat([present, present.new_ones(B, n)], dim=1) & keep[:, None]  # (B, K+F)
        if first:
            has_action[:, 0] = False  # nothing is known about what led into the window's first frame
        base, scale = self.residual_frame(ctx, present.any(dim=1))
        x0 = (chunk - base) / scale  # (B, F, c, h, w)
        sigma = self.edm.sample_sigma(B, device=ctx.device)
        x_noisy = x0 + sigma[:, None, None, None, None] * torch.randn_like(x0)
        out = self.network(noisy_ctx, ctx_sigma, present, x_noisy, sigma, frame_actions, has_action, text, text_mask)
        target = self.edm.network_target(x0, x_noisy, sigma[:, None, None, None, None])
        loss = F.mse_loss(out, target)  # = the EDM-weighted denoiser loss (lambda(sigma) * c_out^2 = 1)
        return loss, x0, self.edm.denoise(out.detach(), x_noisy, sigma[:, None, None, None, None])

    def predict_chunk(self, ctx: Tensor, present: Tensor, frame_actions: Tensor, keep: Tensor,
                      text: Tensor | None, text_mask: Tensor | None) -> Tensor:
        """Latents (B, F, c, h, w) the model's sampler makes after ``ctx`` (B, K, ...) with ``frame_actions``
        (B, K+F, A), as it would at play (no guidance): the next context of the rollout loss."""
        cfg, B, n = self.config, ctx.shape[0], frame_actions.shape[1] - ctx.shape[1]
        ctx_sigma = ctx.new_full((B,), cfg.context_noise)  # declared and added as at play
        ctx = (ctx + cfg.context_noise * torch.randn_like(ctx)) * present[..., None, None, None]
        has_action = torch.cat([present, present.new_ones(B, n)], dim=1) & keep[:, None]
        base, scale = self.residual_frame(ctx, present.any(dim=1))

        def denoise(x: Tensor, sigma: Tensor) -> Tensor:
            out = self.network(ctx, ctx_sigma, present, x, sigma, frame_actions, has_action, text, text_mask)
            return self.edm.denoise(out, x, sigma[:, None, None, None, None])

        sigmas = karras_sigmas(cfg.sample_steps, cfg.sigma_min, cfg.sigma_max, cfg.rho)
        x0 = sample(denoise, (B, n, *self.latent_shape), sigmas, method=cfg.sampler, device=ctx.device)
        return base + scale * x0

    def batch_text(self, batch, B: int, keep: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """Text tokens for a training batch from ``batch["text"]`` (list of strings) or pre-embedded
        ``batch["text_tokens"]``/``batch["text_mask"]``; dropped rows see only the null token."""
        if not self.config.text:
            return None, None
        if "text_tokens" in batch:
            emb, mask = batch["text_tokens"].float(), batch["text_mask"].bool()
        elif "text" in batch:
            from worldline.text import text_encoder

            emb, mask = text_encoder(str(keep.device)).tokens(list(batch["text"]))
        else:
            raise WorldlineError("model.text is true but the batch has no 'text' (this dataset's windows carry no task text)")
        return self.with_null_token(emb, mask & keep[:, None])

    def with_null_token(self, emb: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Prepend the learned null token, so every row attends to something (an empty prompt = the null token)."""
        B = emb.shape[0]
        null = self.text_null.to(emb.dtype).expand(B, 1, TEXT_DIM)
        ones = torch.ones(B, 1, dtype=torch.bool, device=mask.device)
        return torch.cat([null, emb], dim=1), torch.cat([ones, mask], dim=1)

    # ------------------------------------------------------------------------------------------
    # the network, preconditioned
    # ------------------------------------------------------------------------------------------

    def residual_frame(self, ctx: Tensor, has_context: Tensor) -> tuple[Tensor, Tensor]:
        """(base, scale) with ``x = (z - base) / scale`` the denoised variable: the last context latent and
        the residual std where a context exists and ``residual`` is on; 0 and 1 otherwise."""
        c = self.latent_shape[0]
        if not self.config.residual or ctx.shape[1] == 0:
            return ctx.new_zeros(1, 1, *self.latent_shape), ctx.new_ones(1, 1, c, 1, 1)
        on = has_context[:, None, None, None, None]
        base = torch.where(on, ctx[:, -1:], 0.0)  # (B, 1, c, h, w)
        scale = torch.where(on, self.residual_std[None, None, :, None, None], 1.0)  # (B, 1, c, 1, 1)
        return base, scale

    def network(self, ctx: Tensor, ctx_sigma: Tensor, present: Tensor, x_noisy: Tensor, sigma: Tensor,
                frame_actions: Tensor, has_action: Tensor, text: Tensor | None, text_mask: Tensor | None) -> Tensor:
        """EDM network output F for the noisy chunk ``x_noisy`` (B, n, c, h, w) at ``sigma`` (B,), given
        context latents (B, k, c, h, w) noised to ``ctx_sigma`` (B,), with ``present`` (B, k) marking real
        context frames, and per-frame actions (B, k+n, A) / ``has_action`` (B, k+n)."""
        B, k, n = x_noisy.shape[0], ctx.shape[1], x_noisy.shape[1]
        K = self.config.context_frames
        _, _, c_in, c_noise = self.edm.precondition(sigma)
        frames = torch.cat([ctx, c_in[:, None, None, None, None] * x_noisy], dim=1)  # (B, k+n, c, h, w)
        is_ctx = torch.cat([frames.new_ones(B, k), frames.new_zeros(B, n)], dim=1)  # (B, k+n)
        extra = [is_ctx[:, :, None, None, None].expand(-1, -1, 1, *frames.shape[-2:])]  # mask channel (B, k+n, 1, h, w)
        S = self.config.stack_context
        if S:
            stack = torch.cat([ctx.new_zeros(B, max(S - k, 0), *ctx.shape[2:]), ctx[:, max(k - S, 0) :]], dim=1)  # (B, S, c, h, w)
            stack = rearrange(stack, "b s c h w -> b 1 (s c) h w")  # (B, 1, S*c, h, w)
            extra.append(torch.cat([stack.new_zeros(B, k, *stack.shape[2:]), stack.expand(-1, n, -1, -1, -1)], dim=1))
        ctx_noise = self.edm.precondition(ctx_sigma.clamp_min(self.config.sigma_min))[3]  # (B,)
        levels = torch.cat([ctx_noise[:, None].expand(B, k), c_noise[:, None].expand(B, n)], dim=1)  # (B, k+n)
        action = self.action_embed(frame_actions) * has_action[..., None]  # (B, k+n, D)
        cond = self.noise_embed(levels) + action
        key_mask = torch.cat([present, present.new_ones(B, n)], dim=1)  # (B, k+n)
        t_pos = torch.arange(K - k, K + n, device=frames.device)  # the chunk always starts at position K
        amap = None
        if self.action_map is not None:
            amap = self.action_map(frame_actions) * has_action[..., None, None]  # (B, k+n, N, D)
        if self.pointer_map is not None:
            pmap = self.pointer_map(frame_actions) * has_action[..., None, None]  # (B, k+n, N, D)
            amap = pmap if amap is None else amap + pmap
        return self.net(torch.cat([frames, *extra], dim=2), cond, t_pos, n, key_mask, text, text_mask, action, amap)

    # ------------------------------------------------------------------------------------------
    # sampling
    # ------------------------------------------------------------------------------------------

    def set_sampling(self, *, steps: int | None = None, sampler: str | None = None, guidance: float | None = None) -> None:
        """Change the sampling settings (also saved with the model): steps, euler|heun, CFG scale >= 0."""
        if guidance is not None and not guidance >= 0:
            raise WorldlineError(f"guidance scale must be >= 0, got {guidance}")
        if steps is not None and steps < 1:
            raise WorldlineError(f"sampling steps must be >= 1, got {steps}")
        if sampler is not None and sampler not in SAMPLERS:
            raise WorldlineError(f"unknown sampler {sampler!r} (known: {', '.join(SAMPLERS)})")
        cfg = self.config
        cfg.sample_steps = cfg.sample_steps if steps is None else int(steps)
        cfg.sampler = cfg.sampler if sampler is None else sampler
        cfg.guidance = cfg.guidance if guidance is None else float(guidance)

    def generate(self, state: DiffusionState, actions: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Latents (B, n, c, h, w) of the next n = actions.shape[1] frames in one sampler call (one chunk)."""
        cfg = self.config
        B, n = actions.shape[:2]
        ctx, k = state.z, state.z.shape[1]
        if cfg.context_noise > 0 and k:
            ctx = ctx + cfg.context_noise * torch.randn(ctx.shape, generator=generator).to(ctx)
        ctx_sigma = ctx.new_full((B,), cfg.context_noise)
        present = torch.ones(B, k, dtype=torch.bool, device=ctx.device)
        frame_actions = torch.cat([state.actions, actions.float()], dim=1)  # (B, k+n, A)
        has_action = torch.cat([state.has_action, present.new_ones(B, n)], dim=1)
        base, scale = self.residual_frame(state.z, present.new_ones(B))
        g = cfg.guidance

        def denoise(x: Tensor, sigma: Tensor) -> Tensor:
            if g == 1:
                out = self.network(ctx, ctx_sigma, present, x, sigma, frame_actions, has_action, state.text, state.text_mask)
                return self.edm.denoise(out, x, sigma[:, None, None, None, None])
            two = lambda t: None if t is None else torch.cat([t, t])  # noqa: E731
            text, text_mask = state.text, state.text_mask
            if text_mask is not None:
                text_mask = torch.cat([text_mask, torch.zeros_like(text_mask).index_fill_(1, torch.tensor([0], device=text_mask.device), True)])
                text = two(text)
            has2 = torch.cat([has_action, torch.zeros_like(has_action)])  # second half: unconditional
            out = self.network(two(ctx), two(ctx_sigma), two(present), two(x), two(sigma), two(frame_actions), has2, text, text_mask)
            d_cond, d_uncond = self.edm.denoise(out, two(x), two(sigma)[:, None, None, None, None]).chunk(2)
            return d_uncond + g * (d_cond - d_uncond)

        sigmas = karras_sigmas(cfg.sample_steps, cfg.sigma_min, cfg.sigma_max, cfg.rho)
        x0 = sample(denoise, (B, n, *self.latent_shape), sigmas, method=cfg.sampler, generator=generator, device=ctx.device)
        return base + scale * x0

    def advance(self, state: DiffusionState, z: Tensor, actions: Tensor) -> DiffusionState:
        """State after frames ``z`` (B, n, ...) reached by ``actions`` (B, n, A): the last K frames are kept."""
        K = self.config.context_frames
        has = torch.ones(actions.shape[:2], dtype=torch.bool, device=z.device)
        return dataclasses.replace(
            state,
            z=torch.cat([state.z, z], dim=1)[:, -K:],
            actions=torch.cat([state.actions, actions.float()], dim=1)[:, -K:],
            has_action=torch.cat([state.has_action, has], dim=1)[:, -K:],
        )

    # ------------------------------------------------------------------------------------------
    # the WorldModel contract
    # ------------------------------------------------------------------------------------------

    def init_state(self, context_frames: Tensor | None, context_actions: Tensor | None = None,
                   text: list[str] | None = None, batch_size: int | None = None) -> DiffusionState:
        """State from ``context_frames`` (B, T, 3, H, W) (the last K are kept), or from no frames at all
        (Text2World: ``context_frames=None`` and ``batch_size`` or ``text``). ``context_actions`` are
        (B, T-1, A), the actions between the context frames; (B, T, A) is accepted too and its last
        action (taken at the last frame, passed again to ``step``) is ignored."""
        if context_frames is None:
            B = batch_size if batch_size is not None else (len(text) if text is not None else 1)
            device = self.latent_mean.device
            z = torch.zeros(B, 0, *self.latent_shape, device=device)
        else:
            self.check_frames(context_frames, "context_frames")
            B = context_frames.shape[0]
            z = self.encode_frames(context_frames)  # (B, T, c, h, w)
        T, A = z.shape[1], max(self.action_spec.dim, 0)
        actions = z.new_zeros(B, T, A)
        has_action = torch.zeros(B, T, dtype=torch.bool, device=z.device)
        if context_actions is not None:
            self.check_actions(context_actions, B, "context_actions")
            if context_actions.shape[1] not in (T - 1, T) or T == 0:
                raise WorldlineError(f"context_actions must be (B, T-1={T - 1}, A) for {T} context frames, got {tuple(context_actions.shape)}")
            if T > 1:
                actions[:, 1:] = context_actions[:, : T - 1].float()
                has_action[:, 1:] = True
        text_tokens, text_mask = self.encode_text(text, B, z.device)
        K = self.config.context_frames
        state = DiffusionState(z[:, -K:] if T else z, actions[:, -K:] if T else actions, has_action[:, -K:] if T else has_action,
                               text_tokens, text_mask)
        if context_frames is not None and self.config.correction_gate > 0:
            state.reference = self.decode(z[:, -1:])[:, 0]  # (B, 3, H, W)
            state.correction = context_frames[:, -1].float() - state.reference
        return state

    def encode_text(self, text: list[str] | None, B: int, device) -> tuple[Tensor | None, Tensor | None]:
        if text is not None and (isinstance(text, str) or len(text) != B):
            raise WorldlineError(f"text must be a list of {B} strings (one per context), got {text!r:.80}")
        if not self.config.text:
            if text is not None and any(t for t in text):
                raise WorldlineError("this diffusion model was trained without text (model.text=false); give no text prompt")
            return None, None
        if text is None or not any(t for t in text):
            emb, mask = torch.zeros(B, 0, TEXT_DIM, device=device), torch.zeros(B, 0, dtype=torch.bool, device=device)
        else:
            from worldline.text import text_encoder

            emb, mask = text_encoder(str(device)).tokens(list(text))
            mask = mask & torch.tensor([bool(t) for t in text], device=device)[:, None]
        return self.with_null_token(emb.to(device), mask.to(device))

    def step(self, state: DiffusionState, action: Tensor) -> tuple[DiffusionState, Tensor]:
        self.check_action(action, state.z.shape[0])
        z = self.generate(state, action[:, None])  # (B, 1, c, h, w)
        state = self.advance(state, z, action[:, None])
        return state, self.frames(state, z)[:, 0]

    def imagine(self, state: DiffusionState, actions: Tensor) -> Tensor:
        """Normalised latents (B, H, c, h, w) after each of ``actions`` (B, H, A), chunk by chunk, each chunk
        conditioned on the last K frames before it; ``state`` is untouched."""
        self.check_actions(actions, state.z.shape[0], "actions")
        Fc, out = self.config.chunk_frames, []
        for s in range(0, actions.shape[1], Fc):
            chunk = actions[:, s : s + Fc]
            z = self.generate(state, chunk)
            out.append(z)
            state = self.advance(state, z, chunk)
        if not out:
            return state.z.new_zeros(state.z.shape[0], 0, *self.latent_shape)
        return torch.cat(out, dim=1)

    def rollout(self, context_frames: Tensor | None, actions: Tensor, text: list[str] | None = None,
                context_actions: Tensor | None = None) -> Rollout:
        """Predict ``actions.shape[1]`` frames (chunked), decoding once at the end; no context = Text2World."""
        state = self.init_state(context_frames, context_actions, text, batch_size=actions.shape[0])
        z = self.imagine(state, actions)
        return Rollout(frames=self.frames(state, z), latents=z)

    def frames(self, state: DiffusionState, z: Tensor) -> Tensor:
        """Decoded frames (B, T, 3, H, W) of latents ``z``, with the real frame's detail kept where nothing moved."""
        frames = self.decode(z)
        if state.correction is None:
            return frames
        return correct_frames(frames, state.reference, state.correction, self.config.correction_gate)


def residual_std(store, mean: Tensor, std: Tensor, max_pairs: int = 20000) -> np.ndarray:
    """Per-channel std (c,) of normalised ``z_{t+1} - z_t`` within episodes of a latent store (a sample of pairs)."""
    latents = store.arrays["latents"]
    starts, lengths = np.asarray(store.episode_starts), np.asarray(store.episode_lengths)
    firsts = np.concatenate([np.arange(s, s + n - 1) for s, n in zip(starts, lengths) if n > 1] or [np.zeros(0, np.int64)])
    if len(firsts) == 0:
        return np.ones(latents.shape[1], np.float32)
    firsts = firsts[np.linspace(0, len(firsts) - 1, min(max_pairs, len(firsts))).astype(np.int64)]
    s = std.cpu().numpy()[:, None, None]
    total = np.zeros(latents.shape[1])
    for i in range(0, len(firsts), 2048):
        idx = firsts[i : i + 2048]
        d = (latents[idx + 1].astype(np.float32) - latents[idx].astype(np.float32)) / s  # (n, c, h, w); the mean cancels
        total += np.square(d).mean(axis=(2, 3)).sum(0)
    return np.sqrt(total / len(firsts)).astype(np.float32)
