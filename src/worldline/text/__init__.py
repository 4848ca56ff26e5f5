"""The one shared text encoder every text-conditioned family uses, and the prompt guardrail."""

from worldline.text.encoder import TEXT_DIM, TextEncoder, text_encoder

__all__ = ["TEXT_DIM", "TextEncoder", "text_encoder"]
