"""World-model families, one sub-package each. Importing this package registers them."""

from worldline.models import baseline  # noqa: F401  (type "deterministic")
