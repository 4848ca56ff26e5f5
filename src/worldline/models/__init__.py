"""World-model families, one sub-package each. Importing this package registers them."""

from worldline.models import baseline  # noqa: F401  (type "deterministic")
from worldline.models import autoregressive  # noqa: F401  (type "autoregressive")
from worldline.models import jepa  # noqa: F401  (types "jepa_encoder", "jepa")
from worldline.models import diffusion  # noqa: F401  (type "diffusion")
from worldline.models import rssm  # noqa: F401  (types "rssm", "vmc")
from worldline.models import genie  # noqa: F401  (type "genie")
