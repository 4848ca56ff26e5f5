"""Video curation: raw video -> clean, deduplicated, sharded training clips (``worldline curate``).

Stages (each a small class with declared resources and a batch size, see :mod:`.stage`): shot
detection and splitting (:mod:`.split`), transcoding (:mod:`.transcode`), filters: motion, visual
quality, text overlay, content type (:mod:`.filters`), captioning (:mod:`.annotate`), perceptual-hash
deduplication (:mod:`.dedup`) and sharding into worldline datasets (:mod:`.shard`). A parquet
manifest (:mod:`.manifest`) records every input and clip with each stage's scores and decisions;
:mod:`.executors` runs the stages locally (process pool) or on Ray. Entry point:
:func:`worldline.curate.pipeline.curate`.
"""

from worldline.curate.config import CurateConfig, Thresholds

__all__ = ["CurateConfig", "Thresholds"]
