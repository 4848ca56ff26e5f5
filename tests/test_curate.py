"""Curation pipeline: every stage against the ground truth of tests/_curate_media.py, plus resume,
re-filter, bad inputs and the CLI. The media and one full local run are built once per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from _curate_media import build_media, confusion, segment_rows
from worldline.core.errors import WorldlineError
from worldline.curate.config import CurateConfig, Thresholds
from worldline.curate.dedup import clip_distance, clip_hashes, find_duplicates
from worldline.curate.executors import LocalExecutor
from worldline.curate.manifest import read_manifest
from worldline.curate.pipeline import curate
from worldline.curate.split import detect_cuts, shot_spans

pytest.importorskip("scenedetect")
pytest.importorskip("cv2")

CONFIG = CurateConfig(min_shot_s=1.5)  # the planted real shots are 1.8-2.9 s long
THRESHOLDS = Thresholds(content_block=("greyscale",))


@pytest.fixture(scope="session")
def media(tmp_path_factory):
    return build_media(tmp_path_factory.mktemp("curate_raw"))


@pytest.fixture(scope="session")
def run(media, tmp_path_factory):
    out = tmp_path_factory.mktemp("curate_out") / "out"
    return curate(media.root, out, CONFIG, THRESHOLDS, executor="local", workers=2)


def _segment_of(video, row) -> int | None:
    """The ground-truth segment holding at least 90% of a clip's span, else None (a mixed clip)."""
    for i in range(len(video.segments)):
        a, b = video.span(i)
        overlap = min(b, row["end_s"]) - max(a, row["start_s"])
        if overlap >= 0.9 * (row["end_s"] - row["start_s"]):
            return i
    return None


# ----------------------------------------------------------------------------------------------
# Stages on ground truth
# ----------------------------------------------------------------------------------------------


def test_shot_detection_f1_on_hard_cuts(media):
    tp = fp = fn = 0
    for video in media.videos + media.copies:
        found, _, _ = detect_cuts(video.path, CONFIG)
        truth = set(video.cuts)
        hits = {c for c in found if any(abs(c - t) <= 1 for t in truth)}
        tp += sum(1 for t in truth if any(abs(c - t) <= 1 for c in found))
        fp += len(found) - len(hits)
        fn += sum(1 for t in truth if not any(abs(c - t) <= 1 for c in found))
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    f1 = 2 * precision * recall / (precision + recall)
    print(f"shot detection: precision {precision:.3f} recall {recall:.3f} F1 {f1:.3f} ({tp} tp, {fp} fp, {fn} fn)")
    assert f1 >= 0.9


def test_shot_spans_drop_short_and_cut_long():
    fps = 10.0
    times = np.arange(200) / fps  # 20 s
    spans = shot_spans([5, 30], times, fps, min_s=2.0, max_s=6.0)  # shots: 0.5 s, 2.5 s, 17 s
    assert spans[0] == pytest.approx((0.5, 3.0))
    long = spans[1:]
    assert len(long) == 3 and all(e - s == pytest.approx(17 / 3) for s, e in long)
    assert long[0][0] == pytest.approx(3.0) and long[-1][1] == pytest.approx(20.0)


def test_each_filter_confusion_table_on_planted_segments(run, media, tmp_path):
    # scores of the pipeline's clips that cover one planted segment; segments a missed cut merged
    # with a neighbour are scored on their exact span instead
    rows, covered = [], set()
    for video in media.videos:
        for r in run.manifest.clips():
            i = _segment_of(video, r) if r["input"] == video.path.name else None
            if i is not None:
                seg = video.segments[i]
                rows.append({**r, "segment": seg.name, "expect": seg.expect})
                covered.add(seg.name)
    missing = {s.name for v in media.videos for s in v.segments} - covered
    rows += segment_rows(media, tmp_path, CONFIG, only=missing)
    table = confusion(rows, THRESHOLDS)
    print("filter confusion (tp fn fp tn):", {f: tuple(c.values()) for f, c in table.items()})
    for name, c in table.items():
        assert c["tp"] >= 1 and c["fn"] == 0, (name, c)  # removes its planted clips
        assert c["fp"] == 0 and c["tn"] >= 9, (name, c)  # keeps every good clip
    # and each planted clip is caught for the planted reason
    reasons = {r["segment"]: r for r in rows}
    assert reasons["still coffee"]["motion"] < THRESHOLDS.motion_min
    assert reasons["shaking pan astronaut"]["shake"] > THRESHOLDS.shake_max
    assert reasons["noisy pan stereo"]["noise"] > THRESHOLDS.noise_max
    assert reasons["blurred pan chelsea"]["sharpness"] < THRESHOLDS.sharpness_min
    assert reasons["bright pan retina"]["brightness"] > THRESHOLDS.brightness_max


def test_dedup_distance_separates_copies_from_other_clips():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**63, 5, dtype=np.uint64)
    shifted = np.concatenate([a[1:], a[-1:]])  # a copy whose boundary moved by one frame
    other = rng.integers(0, 2**63, 5, dtype=np.uint64)
    near = clip_distance(a, shifted)  # only the first frame has no partner: ~32 bits / 5 frames, halved
    assert near < 5
    assert clip_distance(a, other) > 20
    rows = [
        {"id": "b#0", "phash": list(a), "src_height": 108, "src_width": 192, "src_bitrate": 1.0},
        {"id": "a#0", "phash": list(shifted), "src_height": 144, "src_width": 256, "src_bitrate": 1.0},
        {"id": "c#0", "phash": list(other), "src_height": 144, "src_width": 256, "src_bitrate": 1.0},
    ]
    assert find_duplicates(rows, 10) == {"b#0": ("a#0", near)}  # the larger source is kept


def test_phash_survives_resize_and_reencode(run):
    from worldline.data.video import read_video

    rows = {r["id"]: r for r in run.manifest.clips()}
    a = clip_hashes(read_video(run.out / rows["mix_a.mp4#0000"]["clip_path"]), 5)
    b = clip_hashes(read_video(run.out / rows["sub/copy_resized.mp4#0000"]["clip_path"]), 5)
    c = clip_hashes(read_video(run.out / rows["mix_a.mp4#0001"]["clip_path"]), 5)
    assert clip_distance(np.array(a, np.uint64), np.array(b, np.uint64)) <= 4
    assert clip_distance(np.array(a, np.uint64), np.array(c, np.uint64)) > 15


# ----------------------------------------------------------------------------------------------
# The pipeline
# ----------------------------------------------------------------------------------------------


def test_pipeline_keeps_exactly_the_good_shots(run, media):
    clips = run.manifest.clips()
    by_input = {}
    for r in clips:
        by_input.setdefault(r["input"], []).append(r)
    for video in media.videos:
        kept, mixed = set(), 0
        for r in by_input[video.path.name]:
            i = _segment_of(video, r)
            if i is None:
                mixed += 1
                assert not r["keep"], r["id"]  # a clip spanning a missed cut holds a planted bad shot
            elif r["keep"]:
                kept.add(video.segments[i].name)
        good = {s.name for s in video.segments if s.expect is None}
        assert kept == good, video.path.name
        assert mixed <= 1
    summary = run.summary
    assert summary["kept"] == sum(1 for v in media.videos for s in v.segments if s.expect is None)
    assert summary["removed"]["dedup"] >= 4 and summary["throughput_clip_s_per_s"] > 0


def test_dedup_removes_planted_copies(run, media):
    rows = {r["id"]: r for r in run.manifest.clips()}
    copies = [r for r in rows.values() if r["input"] in media.duplicates]
    assert copies
    for r in copies:
        assert not r["keep"]
        if r["removed_by"] == "dedup":
            original = rows[r["dup_of"]]
            assert original["input"] == media.duplicates[r["input"]] and original["keep"]
            assert abs(original["start_s"] - r["start_s"]) < 0.2
            assert "near-duplicate of" in r["removed_reason"]
    assert sum(r["removed_by"] == "dedup" for r in copies) == 2 * 3  # 3 good shots in each copy


def test_bad_inputs_fail_with_reason_and_leave_no_half_clip(run, media):
    rows = {r["id"]: r for r in run.manifest.inputs()}
    for name, word in media.bad.items():
        assert rows[name]["status"] == "failed", name
        assert word in rows[name]["reason"], (name, rows[name]["reason"])
        assert not [r for r in run.manifest.clips() if r["input"] == name]
    files = {p.relative_to(run.out).as_posix() for p in (run.out / "clips").rglob("*") if p.is_file()}
    assert files == {r["clip_path"] for r in run.manifest.clips() if r["status"] == "ok"}
    assert not [p for p in run.out.rglob(".*")], "temporary files left behind"


def test_shards_are_worldline_datasets_grouped_by_bucket(run):
    from worldline.data.format import Dataset

    kept = run.kept()
    assert sum(run.shards.values()) == len(kept)
    for bucket, n in run.shards.items():
        ds = Dataset(run.out / "shards" / bucket)
        assert ds.num_episodes == n and ds.action_spec.kind == "none" and ds.fps == CONFIG.fps
        h, w, _ = ds.image_shape
        assert bucket.startswith(f"{h}x{w}_") and h == CONFIG.height
        ep = ds.episode(0)
        assert ep["frames"].shape[1:] == (h, w, 3) and ep["task"].startswith("[descriptors]")
    table = read_manifest(run.out)
    assert table.num_rows == len(run.manifest.rows)
    assert set(table.column("removed_by").to_pylist()) >= {"", "motion", "quality", "text", "content", "dedup"}


class _Crash(LocalExecutor):
    """Inline executor that dies after the first batch of clips, like a killed run."""

    def map(self, stage, batches):
        for i, result in enumerate(super().map(stage, batches)):
            if stage.name == "clips" and i == 1:
                raise KeyboardInterrupt("simulated crash")
            yield result


class _Count(LocalExecutor):
    def __init__(self):
        super().__init__(1)
        self.seen: dict[str, list[str]] = {}

    def map(self, stage, batches):
        self.seen[stage.name] = [r["id"] for b in batches for r in b]
        yield from super().map(stage, batches)


def test_resume_after_crash_redoes_only_unfinished_work(run, media, tmp_path):
    raw = tmp_path / "raw"
    for name in media.duplicates:  # six good shots in two inputs, three of them copies of the others
        (raw / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(media.root / name, raw / name)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        curate(raw, out, CONFIG, THRESHOLDS, executor=_Crash(1))
    first = {r["id"]: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    transcoded = [k for k, r in first.items() if "transcode" in (r["done"] or [])]
    assert len(transcoded) == 4  # one batch (transcoded and scored), saved before the crash
    assert all(len(first[k]["done"]) == 7 for k in transcoded)
    assert all(first[k]["done"] == ["split"] for k in ("copy_reencoded.mp4", "sub/copy_resized.mp4"))
    stamp = {k: (out / first[k]["clip_path"]).stat().st_mtime_ns for k in transcoded}

    counter = _Count()
    result = curate(raw, out, CONFIG, THRESHOLDS, executor=counter)
    assert "split" not in counter.seen  # the inputs were split before the crash
    clips = [r["id"] for r in result.manifest.clips()]
    assert len(clips) == 6
    assert sorted(counter.seen["clips"]) == sorted(set(clips) - set(transcoded))
    assert {k: (out / first[k]["clip_path"]).stat().st_mtime_ns for k in transcoded} == stamp
    assert sorted(r["id"] for r in result.kept()) == [f"copy_reencoded.mp4#{k:04d}" for k in range(3)]

    again = _Count()
    curate(raw, out, CONFIG, THRESHOLDS, executor=again)
    assert again.seen == {}  # nothing left to compute


def _raw_of(run) -> Path:
    return Path(run.manifest.meta["raw_dir"])


def test_refilter_changes_decisions_without_recomputing(run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(run.out, out, symlinks=True)
    clip_files = {p: p.stat().st_mtime_ns for p in (out / "clips").rglob("*.mp4")}
    loose = Thresholds(motion_min=0.0, shake_max=10.0, content_block=())
    result = curate("/nonexistent", out, thresholds=loose, refilter=True)
    before = {r["id"]: r for r in run.manifest.clips()}
    after = {r["id"]: r for r in result.manifest.clips()}
    newly = {k for k in after if after[k]["keep"] and not before[k]["keep"]}
    assert {before[k]["removed_by"] for k in newly} <= {"motion", "content"} and newly
    assert {"mix_a.mp4#0003", "mix_b.mp4#0006"} <= newly  # the still and the grey shot
    assert all(after[k]["motion"] == before[k]["motion"] for k in after)
    assert {p: p.stat().st_mtime_ns for p in (out / "clips").rglob("*.mp4")} == clip_files
    assert sum(result.shards.values()) == result.summary["kept"] == run.summary["kept"] + len(newly)


def test_changed_or_vanished_inputs_are_forgotten(tmp_path):
    from worldline.curate.manifest import Manifest
    from worldline.curate.pipeline import _merge_inputs, scan_inputs

    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.mp4").write_bytes(b"x" * 10)
    (raw / "b.mp4").write_bytes(b"y" * 10)
    (raw / ".hidden.mp4").write_bytes(b"z")
    (raw / "out" / "clips").mkdir(parents=True)  # an output folder inside the raw folder is not input
    (raw / "out" / "clips" / "0000.mp4").write_bytes(b"z")
    assert [r["id"] for r in scan_inputs(raw, exclude=(raw / "out").resolve())] == ["a.mp4", "b.mp4"]
    (raw / "out" / "clips" / "0000.mp4").unlink()
    manifest = Manifest(tmp_path / "m.parquet")
    _merge_inputs(manifest, scan_inputs(raw))
    assert sorted(manifest.rows) == ["a.mp4", "b.mp4"]
    for k in ("a.mp4", "b.mp4"):  # as if split: done, with one clip each
        manifest.rows[k].update(status="ok", done=["split"])
        manifest.update([{"id": f"{k}#0000", "kind": "clip", "input": k, "status": "ok", "done": ["transcode"]}])
    manifest.save()
    manifest = Manifest.load(tmp_path / "m.parquet")
    (raw / "a.mp4").write_bytes(b"x" * 11)  # changed
    (raw / "b.mp4").unlink()  # vanished
    _merge_inputs(manifest, scan_inputs(raw))
    assert sorted(manifest.rows) == ["a.mp4"]
    assert manifest.rows["a.mp4"]["status"] == "pending" and manifest.rows["a.mp4"]["done"] == []


def test_changed_compute_settings_are_refused(run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(run.out, out, symlinks=True)
    with pytest.raises(WorldlineError, match="height=144"):
        curate(_raw_of(run), out, CurateConfig(min_shot_s=1.5, height=96), THRESHOLDS)


def test_cli_refilter_and_errors(run, tmp_path):
    from typer.testing import CliRunner

    from worldline.cli.main import app

    out = tmp_path / "out"
    shutil.copytree(run.out, out, symlinks=True)
    runner = CliRunner()
    res = runner.invoke(app, ["curate", str(_raw_of(run)), "--out", str(out), "--refilter", "--content-block", "greyscale"])
    assert res.exit_code == 0, res.output
    assert "curation summary" in res.output and f"{run.summary['kept']} clips kept" in res.output
    res = runner.invoke(app, ["curate", str(tmp_path / "missing"), "--out", str(tmp_path / "o2")])
    assert isinstance(res.exception, WorldlineError) and "raw video folder not found" in str(res.exception)
    res = runner.invoke(app, ["curate", str(_raw_of(run)), "--out", str(tmp_path / "o3"), "--noise-max", "-1"])
    assert isinstance(res.exception, WorldlineError) and "noise_max" in str(res.exception)


# ----------------------------------------------------------------------------------------------
# Ray
# ----------------------------------------------------------------------------------------------


def test_ray_executor_keeps_the_same_clips_as_local(run, media, tmp_path):
    pytest.importorskip("ray")
    result = curate(media.root, tmp_path / "out", CONFIG, THRESHOLDS, executor="ray", workers=2)
    local = {r["id"]: r for r in run.manifest.rows.values()}
    ray_rows = {r["id"]: r for r in result.manifest.rows.values()}
    assert sorted(r["id"] for r in result.kept()) == sorted(r["id"] for r in run.kept())
    assert set(ray_rows) == set(local)
    for k, r in ray_rows.items():
        assert (r["status"], r.get("removed_by"), r.get("dup_of")) == (local[k]["status"], local[k].get("removed_by"), local[k].get("dup_of")), k
        if r["kind"] == "clip":
            assert r["motion"] == pytest.approx(local[k]["motion"]) and r["phash"] == local[k]["phash"]
    assert result.summary["executor"] == "ray"


def test_ray_missing_gives_a_clear_error(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kw):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    from worldline.curate.executors import make_executor

    with pytest.raises(WorldlineError, match="pip install"):
        make_executor("ray", 2)
