"""Curation quality and throughput on the ground-truth media of tests/_curate_media.py.

    python benchmarks/bench_curate.py                  # quality + local (1, 2 workers) + ray (2 CPUs)
    python benchmarks/bench_curate.py --no-ray --copies 4

Quality: shot detection precision/recall/F1 on the hard cuts of the concatenations (content and
adaptive detectors; a detected cut within one frame of a true one is a hit), each filter's confusion
table on the planted segments, and the planted duplicates found. Throughput: clip-seconds computed
per second of wall time (split, transcode, scores, captions, hashes; the shard step is excluded) on
this machine, for the local executor and the Ray executor (Ray's start-up measured on its own).
``--copies K`` adds K re-encoded copies of the mixes so the timed work is larger.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from rich.console import Console  # noqa: E402

from _curate_media import build_media, confusion, read_video, segment_rows, write_video  # noqa: E402
from worldline.curate.config import CurateConfig, Thresholds  # noqa: E402
from worldline.curate.executors import LocalExecutor  # noqa: E402
from worldline.curate.pipeline import curate  # noqa: E402
from worldline.curate.split import detect_cuts  # noqa: E402

CONFIG = CurateConfig(min_shot_s=1.5)
THRESHOLDS = Thresholds(content_block=("greyscale",))


def shot_f1(media, detector: str) -> tuple[float, float, float, int, int, int]:
    tp = fp = fn = 0
    for video in media.videos + media.copies:
        found, _, _ = detect_cuts(video.path, CurateConfig(min_shot_s=1.5, detector=detector))
        truth = video.cuts
        tp += sum(1 for t in truth if any(abs(c - t) <= 1 for c in found))
        fn += sum(1 for t in truth if not any(abs(c - t) <= 1 for c in found))
        fp += sum(1 for c in found if not any(abs(c - t) <= 1 for t in truth))
    p, r = tp / max(1, tp + fp), tp / max(1, tp + fn)
    return p, r, 2 * p * r / max(1e-9, p + r), tp, fp, fn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=0, help="extra re-encoded copies of each mix")
    ap.add_argument("--no-ray", action="store_true")
    args = ap.parse_args()
    quiet = Console(quiet=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        media = build_media(tmp / "raw")
        for k in range(args.copies):
            for video in media.videos:
                write_video(tmp / "raw" / f"extra{k}_{video.path.name}", read_video(video.path), video.fps, crf=20 + 2 * k)
        print(f"media built in {time.perf_counter() - t:.1f} s")

        print("\n## shot detection (hard cuts, +-1 frame)")
        for det in ("content", "adaptive"):
            p, r, f1, tp, fp, fn = shot_f1(media, det)
            print(f"{det:<9} precision {p:.3f} recall {r:.3f} F1 {f1:.3f}  ({tp} tp, {fp} fp, {fn} fn)")

        print("\n## filters on the planted segments (exact spans)")
        rows = segment_rows(media, tmp / "seg", CONFIG)
        for name, c in confusion(rows, THRESHOLDS).items():
            print(f"{name:<8} planted removed {c['tp']}/{c['tp'] + c['fn']}   good kept {c['tn']}/{c['tn'] + c['fp']}   (tp {c['tp']} fn {c['fn']} fp {c['fp']} tn {c['tn']})")

        print("\n## throughput (clip-seconds computed per second)")
        results = {}
        for workers in (1, 2):
            t = time.perf_counter()
            ex = LocalExecutor(workers).start()
            startup = time.perf_counter() - t
            res = curate(media.root, tmp / f"local{workers}", CONFIG, THRESHOLDS, executor=ex, workers=workers, console=quiet)
            ex.close()
            s = res.summary
            results[f"local x{workers}"] = s
            local_kept = sorted(r["id"] for r in res.kept())
            print(f"local {workers} worker(s): start-up {startup:.1f} s; {s['processed_clip_seconds']:.1f} clip-s in {s['compute_s']:.1f} s = "
                  f"{s['throughput_clip_s_per_s']:.2f} clip-s/s ({s['processed_clip_seconds'] / (s['compute_s'] + startup):.2f} with start-up)")
        dups = [r for r in res.manifest.clips() if r["removed_by"] == "dedup"]
        planted = [r for r in res.manifest.clips() if r["input"] in media.duplicates and r["removed_by"] in ("dedup", "")]
        print(f"dedup: {len(dups)} clips removed as duplicates; {sum(r['removed_by'] == 'dedup' for r in planted)}/{len(planted)} "
              "planted copies of good shots found")
        if not args.no_ray:
            import ray

            t = time.perf_counter()
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            startup = time.perf_counter() - t
            res = curate(media.root, tmp / "ray", CONFIG, THRESHOLDS, executor="ray", workers=2, console=quiet)
            ray.shutdown()
            s = res.summary
            same = sorted(r["id"] for r in res.kept()) == local_kept
            print(f"ray 2 CPUs: start-up {startup:.1f} s; {s['processed_clip_seconds']:.1f} clip-s in {s['compute_s']:.1f} s = "
                  f"{s['throughput_clip_s_per_s']:.2f} clip-s/s ({s['processed_clip_seconds'] / (s['compute_s'] + startup):.2f} with start-up); "
                  f"same kept set as local: {same}")
            base = results["local x2"]["throughput_clip_s_per_s"]
            print(f"ratio ray / local (2 workers): {s['throughput_clip_s_per_s'] / base:.2f}")
        print(f"ratio local 2 workers / 1 worker: {results['local x2']['throughput_clip_s_per_s'] / results['local x1']['throughput_clip_s_per_s']:.2f}")


if __name__ == "__main__":
    main()
