"""worldline: a world-model platform for physical AI.

Data flows one way: datasets -> tokenizers -> world models -> rollout / play / plan / dream / eval.
Every family implements the contracts in :mod:`worldline.core.contracts`.
"""

__version__ = "0.1.0"

from worldline.core.errors import WorldlineError  # noqa: E402

__all__ = ["WorldlineError", "__version__"]
