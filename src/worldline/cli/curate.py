"""`worldline curate RAW_DIR --out DIR`: raw video -> filtered, deduplicated, sharded training clips."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from worldline.core.errors import WorldlineError

_T = "thresholds (re-applied from stored scores with --refilter)"


def register(app: typer.Typer) -> None:
    @app.command()
    def curate(
        raw_dir: Path = typer.Argument(..., help="Folder of raw videos (searched recursively)."),
        out: Path = typer.Option(..., "--out", help="Output folder: manifest.parquet, clips/, shards/<bucket>/, summary.json."),
        executor: str = typer.Option("local", help="local (process pool) or ray."),
        workers: int = typer.Option(2, help="Worker processes (local) or CPUs for a local Ray instance."),
        ray_address: Optional[str] = typer.Option(None, help="Address of a running Ray cluster (RAW_DIR and --out on shared storage)."),
        refilter: bool = typer.Option(False, "--refilter", help="Re-apply thresholds to the stored scores of a finished run; computes nothing."),
        detector: str = typer.Option("content", help="PySceneDetect detector: content, adaptive, histogram or hash."),
        threshold: Optional[float] = typer.Option(None, help="Detector threshold (default: PySceneDetect's)."),
        min_shot: float = typer.Option(2.0, help="Drop shots shorter than this (s)."),
        max_shot: float = typer.Option(60.0, help="Cut shots longer than this (s) into equal pieces."),
        height: int = typer.Option(144, help="Clip height in pixels (width follows the aspect ratio)."),
        fps: float = typer.Option(10.0, help="Clip frame rate."),
        content_classifier: str = typer.Option("worldline.curate.filters:ColourClassifier", help="module:Class labelling clip content."),
        captioner: str = typer.Option("worldline.curate.annotate:DescriptorCaptioner", help="module:Class captioning clips."),
        motion_min: float = typer.Option(0.01, help=f"Static below this flow speed (widths/s); {_T}."),
        shake_max: float = typer.Option(0.25, help=f"Shaking above this camera jerk (widths/s); {_T}."),
        sharpness_min: float = typer.Option(40.0, help=f"Blurred below this variance of the Laplacian; {_T}."),
        brightness_min: float = typer.Option(0.12, help=f"Underexposed below this mean luma (0-1); {_T}."),
        brightness_max: float = typer.Option(0.85, help=f"Overexposed above this mean luma (0-1); {_T}."),
        clipped_max: float = typer.Option(0.5, help=f"Badly exposed above this fraction of crushed/blown pixels; {_T}."),
        noise_max: float = typer.Option(5.0, help=f"Noisy above this noise sigma (grey levels); {_T}."),
        text_max: float = typer.Option(0.01, help=f"Text overlay above this fraction of the frame; {_T}."),
        content_block: str = typer.Option("", help=f"Comma-separated content labels to drop, e.g. greyscale; {_T}."),
        dedup_bits: float = typer.Option(10.0, help=f"Duplicates at or below this pHash distance (of 64 bits); {_T}."),
    ):
        """Curate raw video into training clips: shots, transcode, filters, captions, dedup, shards."""
        from worldline.cli.main import console
        from worldline.curate.config import CurateConfig, Thresholds
        from worldline.curate.pipeline import curate as run

        try:
            config = CurateConfig(
                detector=detector, threshold=threshold, min_shot_s=min_shot, max_shot_s=max_shot, height=height, fps=fps,
                content_classifier=content_classifier, captioner=captioner,
            )
            thresholds = Thresholds(
                motion_min=motion_min, shake_max=shake_max, sharpness_min=sharpness_min, brightness_min=brightness_min,
                brightness_max=brightness_max, clipped_max=clipped_max, noise_max=noise_max, text_max=text_max,
                content_block=tuple(b.strip() for b in content_block.split(",") if b.strip()), dedup_bits=dedup_bits,
            )
        except ValueError as e:
            raise WorldlineError(str(e)) from None
        result = run(raw_dir, out, config, thresholds, executor=executor, workers=workers, refilter=refilter, ray_address=ray_address, console=console)
        console.print(f"{result.summary['kept']} clips kept; datasets in [bold]{out / 'shards'}[/bold], manifest {out / 'manifest.parquet'}")
