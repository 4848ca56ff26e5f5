"""The numerics DreamerV3 relies on, as plain functions with no weights.

- ``symlog``/``symexp``: a bi-symmetric log squash, so one head regresses rewards and returns of
  any scale (Hafner et al. 2023, eq. 1);
- two-hot encoding over symlog-spaced bins: a regression target as a categorical distribution, so
  the head's loss gradient does not grow with the target's magnitude;
- categorical latents with ``unimix`` (1% uniform mixed into every distribution, so no KL term or
  log-probability ever meets a zero) and straight-through one-hot samples;
- the balanced KL with free bits: ``dyn`` trains the prior towards the (frozen) posterior, ``rep``
  the posterior towards the (frozen) prior, each clipped below ``free_bits`` nats so a KL that is
  already small stops pulling the representation into a trivial one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def symlog(x: Tensor) -> Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: Tensor) -> Tensor:
    return torch.sign(x) * torch.expm1(x.abs())


def symlog_bins(num: int = 255, limit: float = 20.0) -> Tensor:
    """``num`` equally spaced bin centres in symlog space, [-limit, limit] (symexp(20) ~ 5e8)."""
    if num < 2:
        raise ValueError(f"two-hot needs at least 2 bins, got {num=}")
    return torch.linspace(-limit, limit, num)


def two_hot(x: Tensor, bins: Tensor) -> Tensor:
    """``x`` (...) already in bin space -> (..., K) weights on the two neighbouring bins whose
    weighted mean is ``x`` (clamped to the outermost bins)."""
    x = x.clamp(bins[0], bins[-1])
    above = torch.searchsorted(bins, x.detach().contiguous(), right=True).clamp(1, len(bins) - 1)  # (...)
    below = above - 1
    lo, hi = bins[below], bins[above]
    w_hi = ((x - lo) / (hi - lo)).clamp(0, 1)
    out = torch.zeros(*x.shape, len(bins), dtype=x.dtype, device=x.device)
    out.scatter_(-1, below[..., None], (1 - w_hi)[..., None])
    out.scatter_add_(-1, above[..., None], w_hi[..., None])
    return out


def two_hot_symlog(x: Tensor, bins: Tensor) -> Tensor:
    """Two-hot target of a raw value (reward, return): encoded at ``symlog(x)``."""
    return two_hot(symlog(x), bins)


def two_hot_mean(logits: Tensor, bins: Tensor) -> Tensor:
    """(..., K) logits -> the raw-space value: symexp of the expected bin."""
    return symexp((logits.softmax(-1) * bins).sum(-1))


def two_hot_loss(logits: Tensor, target: Tensor, bins: Tensor) -> Tensor:
    """Cross-entropy (...) of ``logits`` against the two-hot encoding of raw ``target``."""
    return -(two_hot_symlog(target, bins) * logits.log_softmax(-1)).sum(-1)


# ----------------------------------------------------------------------------------------------
# Categorical latents
# ----------------------------------------------------------------------------------------------


def unimix_logits(logits: Tensor, unimix: float) -> Tensor:
    """Log-probabilities of ``(1 - unimix) * softmax(logits) + unimix / K`` over the last axis."""
    if unimix <= 0:
        return logits.log_softmax(-1)
    probs = logits.softmax(-1)
    probs = (1 - unimix) * probs + unimix / probs.shape[-1]
    return probs.log()


def sample_straight_through(logp: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One-hot sample (..., K) whose gradient is that of the probabilities (Bengio et al. 2013)."""
    probs = logp.exp()
    flat = probs.reshape(-1, probs.shape[-1])  # (N, K)
    index = torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])  # (...)
    hard = F.one_hot(index, probs.shape[-1]).to(probs.dtype)
    return hard + probs - probs.detach()


def mode_one_hot(logp: Tensor) -> Tensor:
    """The most likely class of each categorical, one-hot (deterministic encodings)."""
    return F.one_hot(logp.argmax(-1), logp.shape[-1]).to(logp.dtype)


def categorical_kl(logp: Tensor, logq: Tensor) -> Tensor:
    """KL(p || q) of categoricals (..., S, K) given as log-probabilities, summed over the S latents."""
    return (logp.exp() * (logp - logq)).sum((-1, -2))


def kl_balance(post_logp: Tensor, prior_logp: Tensor, free_bits: float = 1.0,
               dyn_scale: float = 0.5, rep_scale: float = 0.1) -> tuple[Tensor, dict[str, Tensor]]:
    """DreamerV3's KL loss for latents (..., S, K): ``dyn_scale * max(free_bits, KL(sg(post) || prior))
    + rep_scale * max(free_bits, KL(post || sg(prior)))``, per element (...).

    The dynamics term moves only the prior and the representation term only the posterior; below
    ``free_bits`` nats each is constant, so its gradient is zero there.
    """
    dyn = categorical_kl(post_logp.detach(), prior_logp)
    rep = categorical_kl(post_logp, prior_logp.detach())
    loss = dyn_scale * dyn.clamp(min=free_bits) + rep_scale * rep.clamp(min=free_bits)
    return loss, {"kl": dyn.detach()}
