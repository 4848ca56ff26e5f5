"""Decoding loops of the autoregressive world model: one frame of tokens at a time. No weights here.

Three ways to decode a frame, all sampling from the same base distribution:

- ``decode_frame_nocache``: every token re-runs the transformer over the whole window (the reference
  cost a KV cache removes);
- ``decode_frame`` with ``fast=False``: KV-cached, one token per forward pass;
- ``decode_frame`` with ``fast=True``: speculative decoding. A drafter proposes the next tokens; the
  proposals are fed in one forward pass and kept while they equal what the base head samples at each
  position, so every kept token is a sample from the base model given the kept prefix (with greedy
  sampling the output equals plain greedy decoding). Each pass keeps 1..m+1 tokens; the cache is
  cropped back past the first rejected draft. Two drafters:

  - ``"medusa"``: the model's draft heads guess the next K tokens from the last hidden state
    (Cai et al. 2024, as Cosmos-Autoregressive does);
  - ``"previous"``: the same positions of the previous frame, up to ``draft_len`` tokens ahead
    (prompt-lookup drafting, Saxena 2023, with the last frame as the prompt). Most of a frame's
    tokens repeat the frame before — the background, everything nothing touched — so long runs are
    accepted in one pass, and no weights are needed.

Batched decoding keeps the shortest accepted run over the batch, so all rows stay at the same slot.
With more than ``FAST_MAX_BATCH`` rows that run is nearly always one token while every pass costs
K + 1 tokens of compute, so large batches (evaluation) decode plainly; play and planning at batch 1
get the fast path.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from worldline.models.autoregressive.network import ARCache, ARTransformer

FAST_MAX_BATCH = 4  # rows up to which speculative decoding pays (see the module docstring)


@dataclasses.dataclass
class Sampling:
    """How the next token is drawn from the base head's logits."""

    temperature: float = 0.0  # 0 = greedy (argmax); > 0 samples from softmax(logits / temperature)
    top_k: int = 0  # keep only the k most likely ids before sampling (0 = all)
    top_p: float = 1.0  # nucleus: keep the smallest set of ids whose probability reaches top_p

    def __post_init__(self):
        if self.temperature < 0 or self.top_k < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"need temperature >= 0, top_k >= 0, 0 < top_p <= 1, got {self.temperature=} {self.top_k=} {self.top_p=}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def sample(logits: Tensor, sampling: Sampling, generator: torch.Generator | None = None) -> Tensor:
    """Logits (..., V) -> ids (...) long."""
    if sampling.greedy:
        return logits.argmax(-1)
    logits = logits.float() / sampling.temperature
    if sampling.top_k and sampling.top_k < logits.shape[-1]:
        kth = logits.topk(sampling.top_k, dim=-1).values[..., -1:]  # (..., 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs >= sampling.top_p  # mass before this id already reaches top_p; the top id always stays
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    probs = logits.softmax(-1)
    flat = probs.reshape(-1, probs.shape[-1])  # (n, V)
    return torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])


DRAFTERS = ("previous", "medusa")


def decode_frame(net: ARTransformer, cache: ARCache, x: Tensor, frames: Tensor, slots: Tensor, frame: int,
                 sampling: Sampling, *, fast: bool = True, text=None, generator: torch.Generator | None = None,
                 drafter: str = "previous", previous: Tensor | None = None, draft_len: int = 16,
                 inputs: Tensor | None = None) -> Tensor:
    """Feed the pending slots ``x`` (B, L, dim) at ``frames``/``slots`` (L,) (ending with the new
    frame's action slot) into ``cache``, then decode the N tokens of frame ``frame`` -> ids (B, N).

    ``fast`` decodes speculatively with ``drafter`` (see the module docstring); ``previous`` (B, N)
    are the previous frame's ids, which the "previous" drafter copies (without them it falls back to
    the Medusa heads); ``inputs`` (B, 1 + N, dim) are the frame's action inputs
    (``ARTransformer.action_inputs``). On return the cache holds every slot fed, which is at least the frame's first
    N - 1 tokens."""
    if drafter not in DRAFTERS:
        raise ValueError(f"drafter must be one of {DRAFTERS}, got {drafter!r}")
    N = net.tokens_per_frame
    h = net(x, frames, slots, cache=cache, text=text)[:, -1]  # (B, dim) hidden at the action slot
    cache.drop_before(frame - net.context_frames)  # kept until now for the previous frame's last token
    if fast and x.shape[0] <= FAST_MAX_BATCH:
        if drafter == "previous" and previous is not None:
            return _speculative(net, cache, h, frame, sampling, text, generator, _copy_drafter(previous, draft_len), inputs)
        if len(net.draft_heads):
            return _speculative(net, cache, h, frame, sampling, text, generator, _medusa_drafter(net), inputs)
    device = x.device
    out = []
    for i in range(N):
        tok = sample(net.logits(h), sampling, generator)  # (B,)
        out.append(tok)
        if i == N - 1:
            break
        f, s = torch.full((1,), frame, device=device), torch.full((1,), i + 1, device=device)
        h = net(net.embed_tokens(tok[:, None], s, inputs), f, s, cache=cache, text=text)[:, -1]
    return torch.stack(out, dim=1)


def _medusa_drafter(net: ARTransformer):
    """Drafts from the Medusa heads: ``(hidden (B, dim), n) -> (B, K)`` guesses for tokens n+1..n+K."""
    return lambda h, n: net.draft_logits(h).argmax(-1)


def _copy_drafter(previous: Tensor, length: int):
    """Drafts copied from the previous frame: tokens n+1..n+length at the same positions."""
    return lambda h, n: previous[:, n + 1 : n + 1 + length]


def _speculative(net: ARTransformer, cache: ARCache, h: Tensor, frame: int, sampling: Sampling, text,
                 generator, drafter, inputs: Tensor | None) -> Tensor:
    N = net.tokens_per_frame
    device = h.device
    out: list[Tensor] = []  # accepted tokens, each (B, n)
    n = 0
    x0 = sample(net.logits(h), sampling, generator)  # (B,) the next token, already a base-model sample
    drafts = drafter(h, n)  # (B, K) guesses for the tokens after x0
    while True:
        m = min(drafts.shape[1], N - n - 1)  # drafts that still fit in the frame
        if m == 0:
            out.append(x0[:, None])
            break
        cand = torch.cat([x0[:, None], drafts[:, :m]], dim=1)  # (B, m + 1) tokens n .. n + m
        s = torch.arange(n + 1, n + m + 2, device=device)  # their slots
        f = torch.full_like(s, frame)
        H = net(net.embed_tokens(cand, s, inputs), f, s, cache=cache, text=text)  # (B, m + 1, dim)
        y = sample(net.logits(H), sampling, generator)  # (B, m + 1): y[:, j] is the base sample for token n + j + 1
        match = (y[:, :m] == drafts[:, :m]).long().cumprod(dim=1).sum(dim=1)  # (B,) leading drafts confirmed
        a = int(match.min())
        out.append(cand[:, : a + 1])
        n += a + 1
        cache.crop(len(cache) - (m - a))  # forget the rejected drafts' keys/values
        if n == N:
            break
        x0 = y[:, a]
        drafts = drafter(H[:, a], n)  # (B, K)
    return torch.cat(out, dim=1)


def decode_frame_nocache(net: ARTransformer, x: Tensor, frames: Tensor, slots: Tensor, frame: int,
                         sampling: Sampling, *, text=None, generator: torch.Generator | None = None,
                         inputs: Tensor | None = None) -> Tensor:
    """Decode frame ``frame`` by re-running the transformer over the whole window ``x`` (B, L, dim)
    (ending with the frame's action slot, whose action inputs are ``inputs`` (B, 1 + N, dim)) for
    every token -> ids (B, N)."""
    N, device = net.tokens_per_frame, x.device
    out = []
    for i in range(N):
        tok = sample(net.logits(net(x, frames, slots, text=text)[:, -1]), sampling, generator)  # (B,)
        out.append(tok)
        s = torch.full((1,), i + 1, device=device)
        x = torch.cat([x, net.embed_tokens(tok[:, None], s, inputs)], dim=1)
        frames, slots = torch.cat([frames, torch.full_like(s, frame)]), torch.cat([slots, s])
    return torch.stack(out, dim=1)
