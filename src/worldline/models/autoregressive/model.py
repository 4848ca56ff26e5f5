"""The autoregressive token world model, registered as model type ``autoregressive``.

A frozen discrete tokenizer (FSQ, temporal compression 1) turns each frame into an h x w grid of
ids; a Llama-style decoder-only transformer (see ``network.py``) predicts them one after another,
frame after frame, as Cosmos-Autoregressive, IRIS and MineWorld do. Decoding (KV cache, sampling,
the Medusa fast path) lives in ``decoding.py``.

How actions enter: as one *action slot* per frame, interleaved before that frame's tokens, holding
the embedding of the action that led to it. Why a slot and not an embedding added to the frame's
tokens: frame t's first token is predicted from the last slot before it, so an action added to frame
t's tokens would arrive one token too late for it; a slot in front gives every token of the frame,
the first included, attention to the action, at a cost of 1 slot in 1 + h*w. It also keeps the
layout of a frame fixed (the sliding window drops whole 1 + h*w blocks). A frame whose action is
unknown (a window's first frame, context given without actions) gets a learned "unknown" vector; a
fraction of action slots is trained as unknown so such contexts stay in distribution.

Text (optional, ``text: true``): every block cross-attends to the tokens of the shared frozen text
encoder, as Cosmos Video2World does. The encoder is loaded on first use and is not part of the
weights.

Training: cross-entropy of every token of frames 1..T-1 of a window (frame 0 has no context), plus
z-loss, plus the draft heads' cross-entropy on detached hidden states. Frames: the tokenizer decodes
the ids, and the tokenizer's error on the last real frame is added back where the decoded prediction
barely moved (see :meth:`frames`), so the model is not capped by the tokenizer's blur on a still
background. ``decode`` stays the plain tokenizer decode.

Time convention (LeRobot): ``actions[t]`` is taken at frame t and leads to frame t + 1, so it fills
the action slot of frame t + 1.
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
from worldline.models.autoregressive.config import AutoregressiveConfig
from worldline.models.autoregressive.decoding import Sampling, decode_frame, decode_frame_nocache
from worldline.models.autoregressive.network import ARCache, ARTransformer
from worldline.models.latent import LatentWorldModel, correct_frames

DECODE_MODES = ("fast", "cached", "nocache")


@dataclasses.dataclass
class ARState(State):
    ids: Tensor  # (B, n, h, w) ids of the last n <= context_frames frames, oldest first
    action_vecs: Tensor  # (B, n, 1 + N, dim) their action inputs (re-fed only by the no-cache path)
    frame: int  # index of the newest frame since the rollout began (RoPE time position)
    cache: ARCache  # keys/values of those frames' slots (all but possibly the newest frame's last token)
    text: tuple[Tensor, Tensor] | None = None  # text tokens (B, Lt, 384) and mask (B, Lt), when text-conditioned
    reference: Tensor | None = None  # (B, 3, H, W) tokenizer reconstruction of the last real frame
    correction: Tensor | None = None  # (B, 3, H, W) last real frame minus that reconstruction

    def clone(self) -> "ARState":
        return dataclasses.replace(self, cache=self.cache.clone())  # tensors are never written in place


@register_model("autoregressive", AutoregressiveConfig)
class AutoregressiveWorldModel(LatentWorldModel):
    discrete_tokenizer = True

    def __init__(self, config: AutoregressiveConfig):
        super().__init__(config)  # frozen tokenizer, latent_shape = (h, w)
        from worldline.text import TEXT_DIM

        self.vocab_size = int(self.tokenizer.vocab_size)
        self.net = ARTransformer(config, self.vocab_size, self.latent_shape, config.action_space,
                                 TEXT_DIM if config.text else None)
        self.sampling = Sampling()  # greedy: the most likely future, what PSNR rewards; set another for diverse rollouts
        self.decode_mode = "fast"  # one of DECODE_MODES

    # ------------------------------------------------------------------------------------------
    # training
    # ------------------------------------------------------------------------------------------

    def window(self) -> int:
        return self.config.train_frames

    def prepare_for_training(self) -> None:
        """Load the tokenizer at ``tokenizer_path``, refusing one that is not the tokenizer this model's
        config was built for: its token ids would mean something else."""
        from pathlib import Path

        from worldline.core.config import model_config_from_dict, to_dict
        from worldline.core.pretrained import read_pretrained_config

        if self.config.tokenizer_path and Path(self.config.tokenizer_path).is_dir():
            on_disk = to_dict(read_pretrained_config(self.config.tokenizer_path))
            mine = to_dict(model_config_from_dict(self.config.tokenizer, "model.tokenizer")) if self.config.tokenizer else {}
            if on_disk != mine:  # both with defaults filled in, so a field added since is no mismatch
                diff = sorted(k for k in set(on_disk) | set(mine) if on_disk.get(k) != mine.get(k))
                raise WorldlineError(f"model.tokenizer_path={self.config.tokenizer_path} is not the tokenizer this "
                                     f"model was built with (model.tokenizer differs in: {', '.join(diff)})")
        super().prepare_for_training()

    def loss(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        ids = self.batch_latents(batch)  # (B, T, h, w)
        B, T = ids.shape[:2]
        if T < 2:
            raise WorldlineError(f"batch has {T} frames, the model needs at least 2")
        logits, h = self.teacher_forced(ids, batch["actions"][:, :T], self._batch_text(batch, B), train=self.training)
        target = rearrange(ids[:, 1:], "b t y x -> b t (y x)")  # (B, T-1, N)
        ce = F.cross_entropy(rearrange(logits, "b t n v -> (b t n) v"), target.reshape(-1))
        z = torch.logsumexp(logits.float(), dim=-1).pow(2).mean()
        loss = ce + self.config.z_loss * z
        logs = {"ce": ce.item(), "acc": (logits.argmax(-1) == target).float().mean().item(), "z": z.item()}
        N = target.shape[-1]
        if len(self.net.draft_heads) and self.config.medusa_weight > 0:
            for k in range(min(len(self.net.draft_heads), N - 1)):
                d = self.net.draft_head_logits(k, h[:, :, : N - k - 1])  # (B, T-1, N-k-1, V): slot s -> token s + k + 1
                t = target[:, :, k + 1 :]
                loss = loss + self.config.medusa_weight * F.cross_entropy(rearrange(d, "b t n v -> (b t n) v"), t.reshape(-1))
                logs[f"draft{k + 1}_acc"] = (d.argmax(-1) == t).float().mean().item()
        return loss, logs

    def teacher_forced(self, ids: Tensor, actions: Tensor, text=None, train: bool = False) -> tuple[Tensor, Tensor]:
        """Ids (B, T, h, w) and actions (B, T, A) -> logits (B, T-1, N, V) for the tokens of frames
        1..T-1 and the hidden states (B, T-1, N, dim) that made them."""
        self.check_ids(ids, "ids")
        B, T = ids.shape[:2]
        known = torch.ones(B, T, dtype=torch.bool, device=ids.device)
        known[:, 0] = False  # the action before a window's first frame is not in the window
        if train and self.config.action_dropout > 0:
            known &= torch.rand(B, T, device=ids.device) >= self.config.action_dropout
        slot_actions = torch.cat([actions[:, :1], actions[:, :-1]], dim=1)  # (B, T, A): frame t's slot holds actions[t - 1]
        vecs = self.net.action_inputs(slot_actions, known)  # (B, T, 1 + N, dim)
        x = self.net.embed_frames(rearrange(ids, "b t y x -> b t (y x)"), vecs)  # (B, T * (1 + N), dim)
        frames, slots = self.net.layout(0, T, device=ids.device)
        h = self.net(x, frames, slots, text=text)
        h = rearrange(h, "b (t s) d -> b t s d", t=T)[:, 1:, :-1]  # (B, T-1, N, dim): slot s predicts token s
        return self.net.logits(h), h

    @torch.no_grad()
    def teacher_forced_metrics(self, frames: Tensor, actions: Tensor, start: int = 1) -> dict[str, float]:
        """Token accuracy and cross-entropy (nats) of frames ``start``.. of a clip (B, T, 3, H, W) with its
        actions (B, T, A), each token predicted from the true tokens before it (for eval/prediction.py)."""
        ids = self.encode_frames(frames)
        T = ids.shape[1]
        ctx = max(0, start - self.config.context_frames)  # older frames are outside every predicted token's window
        logits, _ = self.teacher_forced(ids[:, ctx:], actions[:, ctx:T])
        logits = logits[:, start - ctx - 1 :]
        target = rearrange(ids[:, start:], "b t y x -> b t (y x)")
        ce = F.cross_entropy(rearrange(logits, "b t n v -> (b t n) v"), target.reshape(-1))
        return {"token_accuracy": (logits.argmax(-1) == target).float().mean().item(), "cross_entropy": ce.item()}

    def _batch_text(self, batch: Batch, B: int):
        if not self.config.text:
            return None
        return self._encode_text(batch.get("text") or [""] * B, B)

    # ------------------------------------------------------------------------------------------
    # the WorldModel contract
    # ------------------------------------------------------------------------------------------

    def init_state(self, context_frames: Tensor, context_actions: Tensor | None = None,
                   text: list[str] | None = None) -> ARState:
        """State from ``context_frames`` (B, T, 3, H, W) with T <= ``context_frames`` and, optionally,
        the actions between them, ``context_actions`` (B, T-1 or T, A) (a T-th action is ignored:
        ``step`` takes it). The context is encoded and fed into the KV cache at once."""
        self.check_frames(context_frames, "context_frames")
        B, T = context_frames.shape[:2]
        if T > self.config.context_frames:
            raise WorldlineError(f"context_frames has {T} frames, more than this model's window "
                                 f"(model.context_frames={self.config.context_frames})")
        if context_actions is not None:
            self.check_actions(context_actions, B, "context_actions")
            if context_actions.shape[1] < T - 1:
                raise WorldlineError(f"context_actions has {context_actions.shape[1]} steps, {T} context frames need {T - 1}")
        text_ctx = self._encode_text(text, B)
        ids = self.encode_frames(context_frames)  # (B, T, h, w)
        known = torch.zeros(B, T, dtype=torch.bool, device=ids.device)
        slot_actions = torch.zeros(B, T, self.action_spec.dim, device=ids.device)
        if context_actions is not None and T > 1:
            known[:, 1:] = True
            slot_actions[:, 1:] = context_actions[:, : T - 1].float()
        vecs = self.net.action_inputs(slot_actions, known)  # (B, T, 1 + N, dim)

        cache = ARCache.empty(len(self.net.blocks), ids.device)
        x = self.net.embed_frames(rearrange(ids, "b t y x -> b t (y x)"), vecs)[:, :-1]  # the last token waits for the next step
        frames, slots = self.net.layout(0, T, device=ids.device)
        self.net(x, frames[:-1], slots[:-1], cache=cache, text=text_ctx)

        reference = correction = None
        if self.config.correction_gate > 0:
            reference = self.decode(ids[:, -1:])[:, 0]  # (B, 3, H, W)
            correction = context_frames[:, -1].float() - reference
        return ARState(ids, vecs, T - 1, cache, text_ctx, reference, correction)

    def step(self, state: ARState, action: Tensor) -> tuple[ARState, Tensor]:
        state, ids = self._next(state, action)
        return state, self.frames(state, ids[:, None])[:, 0]

    def imagine(self, state: ARState, actions: Tensor) -> Tensor:
        """Token ids (B, H, h, w) of the frames after each of ``actions`` (B, H, A); ``state`` is untouched."""
        self.check_actions(actions, state.ids.shape[0], "actions")
        out = []
        for t in range(actions.shape[1]):
            state, ids = self._next(state, actions[:, t])
            out.append(ids)
        if not out:
            return state.ids.new_zeros(state.ids.shape[0], 0, *self.latent_shape)
        return torch.stack(out, dim=1)

    def rollout(self, context_frames: Tensor, actions: Tensor, text: list[str] | None = None,
                context_actions: Tensor | None = None) -> Rollout:
        """Predict ``actions.shape[1]`` frames, decoding tokens to pixels once at the end."""
        state = self.init_state(context_frames, context_actions, text)
        ids = self.imagine(state, actions)
        return Rollout(frames=self.frames(state, ids), latents=ids)

    @torch.no_grad()  # sampled ids carry no gradient; no graph for play loops that forget no_grad
    def _next(self, state: ARState, action: Tensor) -> tuple[ARState, Tensor]:
        """One frame of ids (B, h, w) after ``action`` (B, A), and the state that includes it."""
        B = state.ids.shape[0]
        self.check_action(action, B)
        if self.decode_mode not in DECODE_MODES:
            raise WorldlineError(f"decode_mode must be one of {', '.join(DECODE_MODES)}, got {self.decode_mode!r}")
        net, K, N = self.net, self.config.context_frames, self.net.tokens_per_frame
        frame = state.frame + 1
        vec = net.action_inputs(action[:, None].float())  # (B, 1, 1 + N, dim)
        device = vec.device
        cache = state.cache.clone()
        if self.decode_mode == "nocache":
            ids = self._decode_nocache(state, vec, frame)
        else:
            cache.drop_before(frame - 1 - K)  # the previous frame's last token, fed below, still sees frame - 1 - K
            xs, fs, ss = [], [], []
            if int(cache.slots[-1]) < N:  # the newest frame's last token is not in the cache yet
                xs.append(net.embed_tokens(state.ids[:, -1].reshape(B, -1)[:, -1:], torch.tensor([N], device=device)))
                fs.append(state.frame), ss.append(N)
            xs.append(net.embed_action(vec[:, 0]))
            fs.append(frame), ss.append(0)
            ids = decode_frame(net, cache, torch.cat(xs, dim=1), torch.tensor(fs, device=device),
                               torch.tensor(ss, device=device), frame, self.sampling,
                               fast=self.decode_mode == "fast", text=state.text, drafter=self.config.drafter,
                               previous=state.ids[:, -1].reshape(B, -1), draft_len=self.config.draft_len,
                               inputs=vec[:, 0])
        ids = ids.reshape(B, *self.latent_shape)  # (B, h, w)
        new = dataclasses.replace(
            state,
            ids=torch.cat([state.ids, ids[:, None]], dim=1)[:, -K:],
            action_vecs=torch.cat([state.action_vecs, vec], dim=1)[:, -K:],
            frame=frame,
            cache=cache,
        )
        return new, ids

    def _decode_nocache(self, state: ARState, vec: Tensor, frame: int) -> Tensor:
        """The reference path without a KV cache: the window (last K frames + the new action slot) is
        re-run for every token. Once a rollout is longer than the window this differs slightly from the
        cached paths, whose oldest cached frames were computed with their own older context."""
        n = state.ids.shape[1]
        K = self.config.context_frames
        ids = state.ids[:, -K:]
        vecs = state.action_vecs[:, -K:]
        x = torch.cat([self.net.embed_frames(rearrange(ids, "b t y x -> b t (y x)"), vecs),
                       self.net.embed_action(vec[:, 0])], dim=1)
        frames, slots = self.net.layout(frame - min(n, K), min(n, K) + 1, device=x.device)
        L = x.shape[1]
        return decode_frame_nocache(self.net, x, frames[:L], slots[:L], frame, self.sampling, text=state.text,
                                    inputs=vec[:, 0])

    # ------------------------------------------------------------------------------------------
    # checks, text, frames
    # ------------------------------------------------------------------------------------------

    def check_ids(self, ids: Tensor, name: str) -> None:
        if ids.dim() != 4 or tuple(ids.shape[2:]) != self.latent_shape or ids.is_floating_point():
            raise WorldlineError(f"{name} must be integer token ids (B, T, {self.latent_shape[0]}, {self.latent_shape[1]}), "
                                 f"got {tuple(ids.shape)} {ids.dtype}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise WorldlineError(f"{name} hold token ids {int(ids.min())}..{int(ids.max())}, outside this model's "
                                 f"vocabulary 0..{self.vocab_size - 1}")

    def _encode_text(self, text: list[str] | None, B: int):
        if text is None or not any(text):
            if not self.config.text:
                return None
            text = [""] * B
        if not self.config.text:
            raise WorldlineError("this autoregressive model was trained without text (model.text=false)")
        if len(text) != B:
            raise WorldlineError(f"text has {len(text)} prompts for a batch of {B}")
        from worldline.text import text_encoder

        emb, mask = text_encoder().tokens(list(text))
        return emb.to(self.net.no_action.device), mask.to(self.net.no_action.device).bool()

    def frames(self, state: ARState, ids: Tensor) -> Tensor:
        """Frames (B, T, 3, H, W) for predicted ids (B, T, h, w): decoded, plus the tokenizer's error on
        the last real frame where the prediction barely moved (``models.latent.correct_frames``)."""
        frames = self.decode(ids)
        if state.correction is None:
            return frames
        return correct_frames(frames, state.reference, state.correction, self.config.correction_gate)
