"""Causal video tokenizers (continuous autoencoder and discrete FSQ). Importing registers them."""

from worldline.tokenizers.continuous import ContinuousTokenizer, ContinuousTokenizerConfig
from worldline.tokenizers.fsq import FSQ, FSQTokenizer, FSQTokenizerConfig

__all__ = [
    "FSQ",
    "ContinuousTokenizer",
    "ContinuousTokenizerConfig",
    "FSQTokenizer",
    "FSQTokenizerConfig",
]
