"""The action-conditioned JEPA world model (V-JEPA 2-AC), registered as model type ``jepa``.

A frozen pretrained JEPA encoder turns each frame into a grid of embeddings; the block-causal
predictor (predictor.py) learns how they change under actions, with teacher forcing plus a rollout
loss on its own outputs fed back (Assran et al. 2025). There is no pixel decoder: planners compare
embeddings, and the optional pixel probe (probe.py) only renders what a rollout looks like.

Time: one model step is ``frameskip`` env steps; a model action is those env actions concatenated
(oldest first), so ``action_spec`` is the env's box repeated ``frameskip`` times. ``actions[:, t]``
leads from model step t to t + 1 (the contract's convention).

Training runs on a cache of per-frame embeddings (``latent_store``), so the frozen encoder runs once
per frame, not once per step; the frames stay in the store for the probe.

Proprioception (``model.proprio``, V-JEPA 2-AC's end-effector state): where the dataset records the
robot's own readings (``observation.state``), each step's reading, standardised, is added to its action
token, and a head on that token's output predicts the next reading as a change (teacher-forced and
rolled out like the embeddings). The state then carries the readings, ``init_state`` needs them
(``context_proprio``), imagined rollouts feed the predicted ones back, and ``imagine_proprio`` returns
them for a planner whose goal holds the robot's readings at the goal (DINO-WM's objective).

``pool: projector`` is LeWM (Maes et al. 2026) instead: the encoder is not frozen but trains with the
predictor on the prediction loss (mean squared, gradients into both sides), one token per frame (an MLP
projector of all the encoder's tokens), and SIGReg (nn/sigreg.py) keeps the embeddings N(0, I) so they
cannot collapse. The aim is features shaped by what the actions move: a frozen masked-prediction
encoder's jumped about on Reacher (a 0.02 s frame changed them by 0.78 of their spread). SIGReg alone
lets the embedding spend its spread on what never changes within an episode (Reacher's target: held-out
probe R^2 0.81, fingertip -0.93, even with the inverse-dynamics head ``idm_weight``); ``sigreg_motion``
tests only each window's motion, and the embedding then reads the fingertip (0.93) and not the target.
No cache: every step encodes its windows' frames.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from worldline.core.config import model_config_from_dict, register_model
from worldline.core.contracts import ActionSpec, Batch, Rollout, State, WorldModel
from worldline.core.errors import WorldlineError
from worldline.models.jepa.config import JEPAConfig, JEPAEncoderConfig
from worldline.models.jepa.encoder import VisionEncoder
from worldline.models.jepa.predictor import ACPredictor
from worldline.models.jepa.probe import PixelProbe
from worldline.nn.embeddings import ActionEmbedding
from worldline.nn.sigreg import sigreg

CHUNK = 256  # frames per encoder call


@dataclasses.dataclass
class JEPAState(State):
    z: Tensor  # (B, T, N, D) embeddings of the last T <= context_frames model steps, oldest first
    actions: Tensor  # (B, T - 1, A) the actions between them
    proprio: Tensor | None = None  # (B, T, P) standardised proprioception at those steps (models with proprio)

    def clone(self) -> "JEPAState":
        return JEPAState(self.z.clone(), self.actions.clone(), None if self.proprio is None else self.proprio.clone())


@dataclasses.dataclass
class _FrameCodeKey:
    """What the embedding cache depends on besides the weights (its fingerprint hashes this)."""

    encoder: dict
    grid: int


@dataclasses.dataclass
class _KeypointCodeKey:
    """The same for keypoint embeddings (a class of its own keeps the avg caches' fingerprints)."""

    encoder: dict
    keypoint_tau: float


class _FrameCoder(nn.Module):
    """The frozen encoder seen as a per-frame tokenizer, for data.latent_cache: (n, 1, 3, H, W) -> (n, 1, D, g, g)."""

    discrete = False

    def __init__(self, model: "JEPAWorldModel"):
        super().__init__()
        self.encoder = model.encoder
        c = model.config
        self.tubelet, self.grid, self.pool, self.tau = model.encoder_config.tubelet, c.grid, c.pool, c.keypoint_tau
        self.config = _FrameCodeKey(c.encoder, c.grid) if c.pool == "avg" else _KeypointCodeKey(c.encoder, c.keypoint_tau)

    @torch.no_grad()
    def encode(self, frames: Tensor) -> Tensor:
        if self.pool == "keypoints":
            return self.encoder.encode_keypoints(frames, self.tubelet, self.tau)
        return self.encoder.encode_frames(frames, self.tubelet, self.grid)


@register_model("jepa", JEPAConfig)
class JEPAWorldModel(WorldModel):
    def __init__(self, config: JEPAConfig):
        super().__init__()
        self.config = config
        if config.encoder is None:
            config.embed_encoder_config()
        enc = model_config_from_dict(config.encoder, where="model.encoder")
        if not isinstance(enc, JEPAEncoderConfig):
            raise WorldlineError(f"model.encoder is a {type(enc).type_name()!r} config, not a jepa_encoder")
        self.encoder_config = enc
        H, W = config.image_size
        if H % enc.patch or W % enc.patch:
            raise WorldlineError(f"frames of {H}x{W} (model.image_size) do not split into the encoder's {enc.patch}-pixel patches")
        if config.pool == "avg" and config.grid > min(H, W) // enc.patch:
            raise WorldlineError(f"model.grid={config.grid} is finer than the encoder's patch grid {H // enc.patch}x{W // enc.patch}")
        self.encoder = VisionEncoder(enc.dim, enc.depth, enc.heads, enc.mlp_ratio, enc.patch, enc.tubelet)
        self.end_to_end = config.pool == "projector"
        if not self.end_to_end:
            self.encoder.requires_grad_(False).eval()

        spec, k = config.action_space, config.frameskip
        self.action_spec = spec if k == 1 else ActionSpec(
            kind="continuous", dim=spec.dim * k,
            low=None if spec.low is None else list(spec.low) * k, high=None if spec.high is None else list(spec.high) * k)
        self.action_embed = ActionEmbedding(spec, config.dim)
        self.action_merge = nn.Linear(k * config.dim, config.dim) if k > 1 else nn.Identity()
        # keypoints: one token per frame holding every channel's (x, y); projector: one token of latent_dim
        self.grid, self.embed_dim = {"keypoints": (1, 2 * enc.dim), "projector": (1, config.latent_dim)}.get(
            config.pool, (config.grid, enc.dim))
        # The projector reads every token (each narrowed to projector_reduce channels), not their mean: the
        # encoder has RoPE only, so it is translation-equivariant and a mean of its tokens hardly knows
        # where anything is (LeWM's ViT has learned absolute positions and a CLS token instead).
        self.reduce = nn.Linear(enc.dim, config.projector_reduce) if self.end_to_end else None
        self.projector = nn.Sequential(
            nn.Linear(config.projector_reduce * (H // enc.patch) * (W // enc.patch), config.projector_hidden),
            nn.BatchNorm1d(config.projector_hidden), nn.GELU(), nn.Linear(config.projector_hidden, config.latent_dim),
        ) if self.end_to_end else None
        idm_out = spec.n if spec.kind == "discrete" else k * spec.dim  # logits, or the k env actions scaled to [-1, 1]
        self.idm = nn.Sequential(nn.Linear(3 * self.embed_dim, config.dim), nn.GELU(), nn.Linear(config.dim, idm_out)) \
            if config.idm_weight > 0 and spec.kind != "none" else None
        self.predictor = ACPredictor(self.embed_dim, config.dim, config.depth, config.heads, config.mlp_ratio, self.grid)
        # Proprioception (V-JEPA 2-AC): each step's state joins its action token, and a head on that
        # token's output predicts the next state (as a change, zero at init), so imagined rollouts carry it.
        self.proprio_dim = len(config.proprio_names) if config.proprio else 0
        if config.proprio and not self.proprio_dim:
            raise WorldlineError("model.proprio=true, but no observation.state channels are bound: train it on a dataset that records them")
        self.proprio_in = nn.Linear(self.proprio_dim, config.dim) if self.proprio_dim else None
        self.proprio_out = nn.Linear(config.dim, self.proprio_dim) if self.proprio_dim else None
        if self.proprio_out is not None:
            nn.init.zeros_(self.proprio_out.weight)
            nn.init.zeros_(self.proprio_out.bias)
        self.register_buffer("proprio_mean", torch.tensor(config.proprio_mean, dtype=torch.float32) if self.proprio_dim else torch.zeros(0))
        self.register_buffer("proprio_std", torch.tensor(config.proprio_std, dtype=torch.float32) if self.proprio_dim else torch.ones(0))
        self.probe = PixelProbe(self.embed_dim, self.grid, config.image_size, config.probe_width) if config.probe else None
        # Per-channel statistics of the training embeddings (set by latent_store, saved with the weights):
        # a JEPA encoder's features vary little around a large constant part, so the predictor, the
        # probe and the planners' costs work on standardised embeddings.
        self.register_buffer("embed_mean", torch.zeros(self.embed_dim))
        self.register_buffer("embed_std", torch.ones(self.embed_dim))

    # ------------------------------------------------------------------------------------------
    # training hooks (train/run.py)
    # ------------------------------------------------------------------------------------------

    @property
    def uses_latents(self) -> bool:
        """train/run.py calls latent_store (embeddings computed once per frame) unless the encoder trains."""
        return not self.end_to_end

    def prepare_for_training(self) -> None:
        """Load the pretrained encoder's EMA target weights from ``encoder_path`` and keep them frozen
        (``pool: projector``: they are the starting point, and without a path the encoder starts fresh)."""
        from worldline.core.pretrained import WEIGHTS_NAME, read_weights

        if not self.config.encoder_path:
            if self.end_to_end:
                return
            raise WorldlineError("model.encoder_path is required to train: a pretrained jepa_encoder dir")
        path = Path(self.config.encoder_path) / WEIGHTS_NAME
        state = read_weights(path)
        target = {k[len("target."):]: v for k, v in state.items() if k.startswith("target.")}
        missing, unexpected = self.encoder.load_state_dict(target, strict=False)
        if missing or unexpected or not target:
            raise WorldlineError(f"{path} does not hold a matching jepa_encoder target (missing {missing[:3]}, unexpected {unexpected[:3]})")
        if not self.end_to_end:
            self.encoder.requires_grad_(False).eval()

    def latent_store(self, frame_store):
        """Embed every frame once (cached on disk); the frames stay for the probe."""
        from worldline.data.latent_cache import build_latent_store, default_cache_dir

        device = "cuda" if torch.cuda.is_available() else None
        store = build_latent_store(frame_store, _FrameCoder(self), default_cache_dir(frame_store), device=device)
        from worldline.data.latent_cache import latent_channel_stats

        mean, std = latent_channel_stats(store)
        std = torch.as_tensor(std, dtype=torch.float32)
        if self.config.pool == "keypoints":  # one scale for all coordinates: standardising each would blow up the still ones (background channels) into noise
            std = std.square().mean().sqrt().expand_as(std)
        self.embed_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.embed_std.copy_(std.clamp_min(1e-4))
        if self.probe is not None:
            store.arrays["frames"] = frame_store.arrays["frames"]
        return store

    def normalize(self, z: Tensor) -> Tensor:
        """Raw encoder embeddings (..., D) -> standardised per channel."""
        return (z - self.embed_mean) / self.embed_std

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.end_to_end:
            self.encoder.eval()
        return self

    def window(self) -> int:
        c = self.config
        return (c.context_frames + c.train_horizon - 1) * c.frameskip + 1

    def loss(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        c = self.config
        K, Hz, R, k = c.context_frames, c.train_horizon, c.rollout_steps, c.frameskip
        M = K + Hz
        T = batch["latents"].shape[1] if "latents" in batch else batch["frames"].shape[1]
        if T < (M - 1) * k + 1:
            raise WorldlineError(f"batch has {T} frames, the model needs windows of {(M - 1) * k + 1}")
        if "latents" in batch:
            z = self.normalize(rearrange(batch["latents"][:, : (M - 1) * k + 1 : k].float(), "b t d h w -> b t (h w) d"))  # (B, M, N, D)
        elif self.end_to_end:
            z = self.project(batch["frames"][:, : (M - 1) * k + 1 : k])  # (B, M, 1, D), with gradients into the encoder
        else:
            z = self.encode(batch["frames"][:, : (M - 1) * k + 1 : k])  # (B, M, N, D): one embedding per model step
        dist = (lambda x, y: (x - y).square().mean()) if self.end_to_end else (lambda x, y: (x - y).abs().mean())
        name = "mse" if self.end_to_end else "l1"  # LeWM's loss is mean squared; V-JEPA 2-AC's L1
        actions = rearrange(batch["actions"][:, : (M - 1) * k].float(), "b (m k) a -> b m (k a)", k=k)  # (B, M-1, k*A)
        a = self.embed_actions(actions)  # (B, M-1, dim)
        p = None
        if self.proprio_dim:
            if "states" not in batch:
                raise WorldlineError("model.proprio is on, but the batch has no 'states' (the dataset's observation.state)")
            p = self.normalize_proprio(batch["states"][:, : (M - 1) * k + 1 : k].float())  # (B, M, P)
            a = a + self.proprio_in(p[:, : M - 1])

        # Teacher forcing: every step predicted from the true embeddings before it, in one pass.
        pred, h = self.predictor(z[:, : M - 1], a, with_actions=True)  # (B, M-1, N, D) ~ z[:, 1:]
        tf = dist(pred, z[:, 1:])
        loss = tf
        logs = {f"tf_{name}": tf.item(), f"copy_{name}": dist(z[:, :-1], z[:, 1:]).item()}
        if p is not None:  # the next proprioception, read from the action tokens
            ptf = (p[:, : M - 1] + self.proprio_out(h) - p[:, 1:]).square().mean()
            loss = loss + c.proprio_weight * ptf
            logs["proprio_mse"] = ptf.item()
        if self.end_to_end:  # SIGReg per model step over the batch: without it the cheapest prediction is a constant embedding
            tested = z - z.mean(1, keepdim=True) if c.sigreg_motion else z  # (B, M, N, D)
            reg = sigreg(rearrange(tested, "b m n d -> m (b n) d"), c.sigreg_projections)
            loss = loss + c.sigreg_weight * reg
            logs["sigreg"] = reg.item()
            if c.sigreg_frames_weight > 0:  # the frames too: what moves only now and then keeps some spread
                still = sigreg(rearrange(z, "b m n d -> m (b n) d"), c.sigreg_projections)
                loss = loss + c.sigreg_frames_weight * still
                logs["sigreg_frames"] = still.item()

        if self.idm is not None:  # inverse dynamics: action t from the embeddings at t - 1, t, t + 1 (the step before gives the velocity)
            guess = self.idm(torch.cat([z[:, :-2], z[:, 1:-1], z[:, 2:]], dim=-1).flatten(2))  # (B, M-2, out)
            acted = actions[:, 1:]  # (B, M-2, k*A): the actions between steps 1..M-1
            if c.action_space.kind == "discrete":
                idm = F.cross_entropy(guess.flatten(0, 1), acted[..., 0].round().long().flatten())
            else:
                f = self.action_embed.features
                target = (rearrange(acted, "b m (k a) -> b m k a", k=k) - f.center) / f.half_range  # (B, M-2, k, A) in [-1, 1]
                idm = (guess - target.flatten(2)).square().mean()
            loss = loss + c.idm_weight * idm
            logs["idm"] = idm.item()

        # Rollout: from K true steps, the predictor's outputs are fed back for R steps.
        if R >= 1:
            hz, hp, steps, psteps = z[:, :K], None if p is None else p[:, :K], [], []
            for s in range(R):
                nxt, pn = self.predict_next(hz, actions[:, : K + s], hp)  # (B, N, D), (B, P) | None
                steps.append(nxt)
                hz = torch.cat([hz, nxt[:, None]], dim=1)
                if pn is not None:
                    psteps.append(pn)
                    hp = torch.cat([hp, pn[:, None]], dim=1)
            roll = dist(torch.stack(steps, dim=1), z[:, K : K + R])
            loss = loss + c.rollout_weight * roll
            logs[f"rollout_{name}"] = roll.item()
            if psteps:
                proll = (torch.stack(psteps, dim=1) - p[:, K : K + R]).square().mean()
                loss = loss + c.rollout_weight * c.proprio_weight * proll
                logs["rollout_proprio_mse"] = proll.item()

        # Probe: pixels of the last step's frame from its (detached) true embedding.
        if self.probe is not None and "frames" in batch:
            frame = batch["frames"][:, (M - 1) * k].float()  # (B, 3, H, W)
            probe = F.mse_loss(self.probe_frames(z[:, -1].detach()), frame)
            loss = loss + c.probe_weight * probe
            logs["probe_mse"] = probe.item()
        return loss, logs

    # ------------------------------------------------------------------------------------------
    # embeddings, actions, probe
    # ------------------------------------------------------------------------------------------

    def project(self, frames: Tensor) -> Tensor:
        """``pool: projector``: (B, T, 3, H, W) -> (B, T, 1, latent_dim), each frame encoded alone, its
        tokens narrowed, concatenated in raster order and projected; differentiable (this is the embedding
        the encoder trains for)."""
        B = frames.shape[0]
        x = rearrange(frames.float(), "b t c h w -> (b t) 1 c h w").expand(-1, self.encoder_config.tubelet, -1, -1, -1)
        _, h, w = self.encoder.grid(x)
        tokens = self.reduce(self.encoder(x)[:, : h * w])  # (B*T, h*w, reduce): the first tubelet slice's tokens
        return rearrange(self.projector(tokens.flatten(1)), "(b t) d -> b t 1 d", b=B)

    @torch.no_grad()
    def encode(self, frames: Tensor) -> Tensor:
        """(B, T, 3, H, W) -> standardised per-frame embeddings (B, T, N, D), N = grid * grid (1 for keypoints
        and projector)."""
        B = frames.shape[0]
        if self.end_to_end:  # SIGReg set the scale (of the embeddings, or of their motion): the normalisation buffers stay 0 and 1
            flat = frames.float().flatten(0, 1)[:, None]  # (B*T, 1, 3, H, W)
            z = torch.cat([self.project(flat[i : i + CHUNK]) for i in range(0, flat.shape[0], CHUNK)])  # (B*T, 1, 1, D)
            return rearrange(z, "(b t) 1 n d -> b t n d", b=B)
        flat = rearrange(frames.float(), "b t c h w -> (b t) 1 c h w")  # (B*T, 1, 3, H, W)
        coder = _FrameCoder(self)
        parts = [coder.encode(flat[i : i + CHUNK]) for i in range(0, flat.shape[0], CHUNK)]
        z = torch.cat(parts)[:, 0]  # (B*T, D, g, g)
        return self.normalize(rearrange(z, "(b t) d h w -> b t (h w) d", b=B))  # (B, T, N, D) standardised

    def normalize_proprio(self, p: Tensor) -> Tensor:
        """Raw proprioception (..., P) -> standardised with the training set's statistics."""
        return (p - self.proprio_mean) / self.proprio_std

    def embed_actions(self, actions: Tensor) -> Tensor:
        """Model actions (..., k*A) -> (..., dim): each env action embedded, then merged."""
        k = self.config.frameskip
        e = self.action_embed(rearrange(actions, "... (k a) -> ... k a", k=k))  # (..., k, dim)
        return self.action_merge(rearrange(e, "... k d -> ... (k d)"))  # (..., dim)

    def probe_frames(self, z: Tensor) -> Tensor:
        """(B, N, D) embeddings -> (B, 3, H, W) probe pictures."""
        g = self.grid
        return self.probe(rearrange(z, "b (h w) d -> b d h w", h=g, w=g))

    def decode(self, z: Tensor) -> Tensor:
        """(B, T, N, D) embeddings -> probe frames (B, T, 3, H, W) in [-1, 1]; only with a probe."""
        if self.probe is None:
            raise WorldlineError("this JEPA model has no pixel probe (model.probe=false), so it cannot show frames")
        N, D = self.grid**2, self.embed_dim
        if z.dim() != 4 or tuple(z.shape[2:]) != (N, D):
            raise WorldlineError(f"embeddings must be (B, T, {N}, {D}), got {tuple(z.shape)}")
        B = z.shape[0]
        frames = self.probe_frames(rearrange(z, "b t n d -> (b t) n d"))
        return rearrange(frames, "(b t) c h w -> b t c h w", b=B).clamp(-1, 1)

    # ------------------------------------------------------------------------------------------
    # the WorldModel contract
    # ------------------------------------------------------------------------------------------

    def embed(self, frames: Tensor) -> Tensor:
        """(B, T, 3, H, W) -> embeddings (B, T, N, D), the space :meth:`imagine` predicts in."""
        self.check_frames(frames, "frames")
        return self.encode(frames)

    @property
    def uses_proprio(self) -> bool:
        """Does this model read proprioception (``init_state(..., context_proprio=)`` then needs it)?"""
        return self.proprio_dim > 0

    def init_state(self, context_frames: Tensor, context_actions: Tensor | None = None,
                   text: list[str] | None = None, context_proprio: Tensor | None = None) -> JEPAState:
        """State from ``context_frames`` (B, T, 3, H, W), one per model step, and the T - 1 model actions
        between them. Without ``context_actions`` only the last frame is kept (its history is unknown).
        A model trained with proprioception also needs ``context_proprio`` (B, T, P): the robot's
        readings with each frame, in the dataset's units."""
        self.check_frames(context_frames, "context_frames")
        if text is not None and any(t for t in text):
            raise WorldlineError("the jepa world model takes no text prompt")
        B, T = context_frames.shape[:2]
        K = self.config.context_frames
        proprio = self.check_proprio(context_proprio, B, T)
        if context_actions is None or T == 1:
            frames, actions = context_frames[:, -1:], context_frames.new_zeros(B, 0, self.action_spec.dim)
        else:
            self.check_actions(context_actions, B, "context_actions")
            if context_actions.shape[1] not in (T - 1, T):
                raise WorldlineError(f"context_actions must have {T - 1} steps (between the {T} frames), got {context_actions.shape[1]}")
            frames, actions = context_frames, context_actions[:, : T - 1].float()
        frames = frames[:, -K:]
        actions = actions[:, actions.shape[1] - (frames.shape[1] - 1) :]  # the T - 1 actions between the kept frames
        if proprio is not None:
            proprio = proprio[:, T - frames.shape[1] :]
        return JEPAState(self.encode(frames), actions, proprio)

    def check_proprio(self, context_proprio: Tensor | None, B: int, T: int) -> Tensor | None:
        """Standardised (B, T, P) proprioception, or None for a model without it."""
        names = self.config.proprio_names
        if not self.uses_proprio:
            if context_proprio is not None:
                raise WorldlineError("context_proprio given, but this jepa model was trained without proprioception")
            return None
        if context_proprio is None:
            raise WorldlineError(f"this jepa model reads proprioception: pass context_proprio (B, T, {len(names)}) with channels {names}")
        p = torch.as_tensor(context_proprio)
        if p.dim() != 3 or tuple(p.shape) != (B, T, len(names)):
            raise WorldlineError(f"context_proprio must be ({B}, {T}, {len(names)}) for channels {names}, got {tuple(p.shape)}")
        if not torch.isfinite(p).all():
            raise WorldlineError("context_proprio holds NaN or inf")
        return self.normalize_proprio(p.float().to(self.proprio_mean.device))

    def predict_next(self, z: Tensor, actions: Tensor, proprio: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Next embeddings (B, N, D) from the last K steps ``z`` (B, T, N, D) and their actions (B, T, A),
        the last of which is the action being taken; with proprioception ``proprio`` (B, T, P) also the
        next standardised proprioception (B, P), else None."""
        K = self.config.context_frames
        a = self.embed_actions(actions[:, -K:])
        if self.proprio_in is None:
            return self.predictor(z[:, -K:], a)[:, -1], None
        nxt, h = self.predictor(z[:, -K:], a + self.proprio_in(proprio[:, -K:]), with_actions=True)
        return nxt[:, -1], proprio[:, -1] + self.proprio_out(h[:, -1])

    def imagine(self, state: JEPAState, actions: Tensor) -> Tensor:
        """Embeddings (B, H, N, D) after each of ``actions`` (B, H, A); ``state`` is untouched.
        Differentiable in ``actions`` (the gradient planner relies on it)."""
        return self._imagine(state, actions)[0]

    def _imagine(self, state: JEPAState, actions: Tensor) -> tuple[Tensor, Tensor | None]:
        self.check_actions(actions, state.z.shape[0], "actions")
        z, hist, p, out, pout = state.z, state.actions, state.proprio, [], []
        K = self.config.context_frames
        for t in range(actions.shape[1]):
            hist = torch.cat([hist, actions[:, t : t + 1].float()], dim=1)[:, -K:]
            nxt, pn = self.predict_next(z, hist, p)
            out.append(nxt)
            z = torch.cat([z, nxt[:, None]], dim=1)[:, -K:]
            if pn is not None:
                pout.append(pn)
                p = torch.cat([p, pn[:, None]], dim=1)[:, -K:]
        B = state.z.shape[0]
        z_traj = torch.stack(out, dim=1) if out else state.z.new_zeros(B, 0, *state.z.shape[2:])
        if state.proprio is None:
            return z_traj, None
        return z_traj, torch.stack(pout, dim=1) if pout else state.z.new_zeros(B, 0, self.proprio_dim)

    def imagine_proprio(self, state: JEPAState, actions: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`imagine` plus the predicted standardised proprioception (B, H, P) after each action
        (a planner's goal may hold the robot's readings at the goal: DINO-WM's objective)."""
        if not self.uses_proprio:
            raise WorldlineError("this jepa model was trained without proprioception, so it cannot predict it")
        return self._imagine(state, actions)

    def step(self, state: JEPAState, action: Tensor) -> tuple[JEPAState, Tensor]:
        """One model step; the frame is the probe's picture of the predicted embeddings."""
        if action.dim() != 2:
            raise WorldlineError(f"action must be (B, A), got shape {tuple(action.shape)}")
        self.check_actions(action[:, None], state.z.shape[0], "action")
        K = self.config.context_frames
        hist = torch.cat([state.actions, action[:, None].float()], dim=1)
        nxt, pn = self.predict_next(state.z, hist, state.proprio)
        z = torch.cat([state.z, nxt[:, None]], dim=1)[:, -K:]
        actions = hist[:, hist.shape[1] - (z.shape[1] - 1) :]  # the actions between the kept steps
        p = None if pn is None else torch.cat([state.proprio, pn[:, None]], dim=1)[:, -K:]
        return JEPAState(z, actions, p), self.decode(nxt[:, None])[:, 0]

    def rollout(self, context_frames: Tensor, actions: Tensor, text: list[str] | None = None,
                context_actions: Tensor | None = None, context_proprio: Tensor | None = None) -> Rollout:
        state = self.init_state(context_frames, context_actions, text, context_proprio)
        z = self.imagine(state, actions)
        return Rollout(frames=self.decode(z), latents=z)
