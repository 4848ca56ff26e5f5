"""Smoke tests of the real CLI: the whole demo path on the debug preset, then each command on its
outputs, and the bad-input cases (one `error:` line, exit status 2)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "worldline"]


def run(*args, cwd=None, check=True):
    env = {**os.environ, "COLUMNS": "200", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    proc = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"worldline {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    run("demo", "--size", "debug", "--out", out)
    return out


def test_help_lists_the_commands():
    text = run("--help").stdout
    for command in ("record", "data", "import", "train", "eval", "rollout", "demo", "presets", "config"):
        assert command in text


def test_demo_debug_end_to_end(demo_dir):
    headline = json.loads((demo_dir / "headline.json").read_text())
    report = Path(headline["report"])
    assert report.is_file()
    html = report.read_text()
    for key in ("tokenizer_psnr_db", "model_psnr_db", "copy_last_psnr_db", "shuffled_actions_psnr_db"):
        assert isinstance(headline[key], float), key
    assert headline["tokenizer_psnr_db"] > 10  # a debug tokenizer after a few steps is far from noise
    # the report embeds rollout gifs and curve images that exist beside it
    assert ".gif" in html and ".png" in html
    for ref in [p.split('"')[0] for p in html.split('src="')[1:]]:
        if not ref.startswith("data:"):
            assert (report.parent / ref).is_file(), ref
    assert (demo_dir / "runs" / "tokenizer" / "final" / "model.safetensors").is_file()
    assert (demo_dir / "runs" / "world_model" / "config.yaml").is_file()


def test_demo_trains_again_a_stage_whose_config_changed(demo_dir):
    import io

    import yaml
    from rich.console import Console

    from worldline.demo import stale_run
    from worldline.train.config import RunConfig

    run_dir = demo_dir / "runs" / "world_model"
    same = RunConfig.from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    log = io.StringIO()
    assert not stale_run(same, run_dir, Console(file=log))  # an unchanged stage resumes (here: is already done)
    changed = same.to_dict()
    changed["model"]["action_xy"] = []  # e.g. a demo left by a version without the pointer map
    assert stale_run(RunConfig.from_dict(changed), run_dir, Console(file=log, width=300))
    assert "model.action_xy" in log.getvalue()
    assert not stale_run(same, demo_dir / "runs" / "nothing-here", Console(file=log))


def test_commands_on_demo_outputs(demo_dir, tmp_path):
    data, wm = demo_dir / "data", demo_dir / "runs" / "world_model" / "final"
    tok = demo_dir / "runs" / "tokenizer" / "final"
    assert "episodes" in run("data", "info", data).stdout.lower()
    out = tmp_path / "pred.json"
    run("eval", "--suite", "prediction", "--ckpt", wm, "--data", data, "--context", "2", "--horizon", "3",
        "--max-windows", "4", "--out", out)
    result = json.loads(out.read_text())
    assert len(result["model"]["psnr"]) == 3
    out = tmp_path / "tok.json"
    run("eval", "--suite", "tokenizer", "--ckpt", tok, "--data", data, "--max-windows", "4", "--out", out)
    assert json.loads(out.read_text())["dataset"]["psnr"] > 10
    run("rollout", "--ckpt", wm, "--data", data, "--episodes", "0", "--horizon", "3", "--context", "2",
        "--out", tmp_path / "roll")
    assert list((tmp_path / "roll").rglob("*.mp4")) and list((tmp_path / "roll").rglob("*.gif"))
    # a second recording into the same directory refuses without --append/--overwrite
    assert_one_line_error(run("record", "--env", "pusht", "--episodes", "1", "--out", data, check=False),
                          "--append", "--overwrite")


def test_bad_inputs_get_one_line_errors(tmp_path):
    assert_one_line_error(run("record", "--env", "NoSuchWorld-v9", "--episodes", "1", "--out", tmp_path / "x", check=False),
                          "NoSuchWorld-v9")
    assert_one_line_error(run("train", "--preset", "no-such-preset", "--data", tmp_path, "--out", tmp_path / "r", check=False),
                          "no-such-preset")
    assert_one_line_error(run("train", "--preset", "tokenizer-continuous", "--size", "debug", "--data", tmp_path,
                              "--out", tmp_path / "r", "--set", "model.no_such_key=1", check=False), "model.no_such_key")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run("data", "info", tmp_path / "empty", check=False), "meta/info.json")
    assert_one_line_error(run("train", "--preset", "tokenizer-continuous", "--size", "debug", "--data", tmp_path / "empty",
                              "--out", tmp_path / "r", check=False), "meta/info.json")
    assert_one_line_error(run("eval", "--suite", "prediction", "--ckpt", tmp_path / "nope", "--data", tmp_path, check=False),
                          "nope")
