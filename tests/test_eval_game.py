"""The game suite: the Breakout and Boxing sprite readers against the screen's own pixels, the metrics
that tell a frozen rollout from a live one, and the suite end to end on a recorded Breakout dataset."""

import dataclasses

import numpy as np
import pytest
import torch

pytest.importorskip("ale_py")

from worldline.core.config import build_model, load_preset, to_dict  # noqa: E402
from worldline.core.contracts import ActionSpec  # noqa: E402
from worldline.core.errors import WorldlineError  # noqa: E402
from worldline.data.config import DataConfig  # noqa: E402
from worldline.envs.policies import make_policy  # noqa: E402
from worldline.envs.registry import make_env, resize_frame  # noqa: E402
from worldline.eval.game import BoxingReader, BreakoutReader, evaluate_game, game_metrics, track_metrics  # noqa: E402
from worldline.train.config import RunConfig  # noqa: E402

BALL_RED = (200, 72, 72)


@pytest.fixture(scope="module")
def screens():
    """150 full-resolution (210x160) Breakout screens played by the expert, and where the paddle and
    the ball are on each, found exactly from the ball/paddle colour (screen pixels)."""
    env, _ = make_env("breakout", 64)
    policy = make_policy("expert", env, 3)
    obs, info = env.reset(seed=3)
    policy.reset(3)
    full = []
    for _ in range(150):
        obs, _, terminated, truncated, info = env.step(policy(obs, info))
        full.append(np.array(obs))
        if terminated or truncated:
            break
    env.close()
    full = np.stack(full)
    red = np.all(full == BALL_RED, axis=-1)  # (T, 210, 160)
    paddle = np.full(len(full), np.nan)
    ball = np.full((len(full), 2), np.nan)
    for t in range(len(full)):
        _, xs = np.nonzero(red[t, 189:193, 8:152])
        if len(xs):
            paddle[t] = xs.mean() + 8
        ys, xs = np.nonzero(red[t, 94:188, 8:152])
        if len(xs):
            ball[t] = ys.mean() + 94, xs.mean() + 8
    return full, paddle, ball


@pytest.mark.parametrize("size", [64, 96])
def test_breakout_reader_places_paddle_and_ball_to_a_pixel(screens, size):
    full, paddle, ball = screens
    frames = np.stack([resize_frame(f, size) for f in full])
    got = BreakoutReader().read(frames)
    to_px = lambda v, scale: (v + 0.5) * scale - 0.5  # noqa: E731  screen pixel centre -> frame pixel centre
    sy, sx = size / 210, size / 160
    want_ball = np.stack([to_px(ball[:, 0], sy), to_px(ball[:, 1], sx)], axis=1)

    assert not np.isnan(got["paddle"]).any()
    assert np.abs(got["paddle"][:, 1] - to_px(paddle, sx)).max() < 0.6 * size / 64
    real_seen = ~np.isnan(want_ball[:, 0])
    seen = ~np.isnan(got["ball"][:, 0])
    assert real_seen.sum() > 60, "the expert's episode should have the ball in play most of the time"
    assert not (seen & ~real_seen).any(), "a ball was read where the screen has none"
    assert (seen & real_seen).sum() >= 0.9 * real_seen.sum()
    assert np.nanmax(np.linalg.norm(got["ball"] - want_ball, axis=1)) < 0.7 * size / 64


def test_boxing_reader_follows_both_boxers():
    import gymnasium as gym

    env = gym.make("ALE/Boxing-v5")
    obs, _ = env.reset(seed=1)
    env.action_space.seed(1)
    full = []
    for _ in range(120):
        obs, *_ = env.step(env.action_space.sample())
        full.append(obs.copy())
    env.close()
    full = np.stack(full)
    inner = full[:, 28:184, 27:133]  # the ring's inside, where only the boxers are drawn
    got = BoxingReader().read(np.stack([resize_frame(f, 64) for f in full]))
    moved = 0.0
    for name, colour in (("player", (214, 214, 214)), ("opponent", (0, 0, 0))):
        want = np.full((len(full), 2), np.nan)
        for t, mask in enumerate(np.all(inner == colour, axis=-1)):
            ys, xs = np.nonzero(mask)
            want[t] = (ys.mean() + 28.5) * 64 / 210 - 0.5, (xs.mean() + 27.5) * 0.4 - 0.5
        assert not np.isnan(got[name]).any()
        assert np.linalg.norm(got[name] - want, axis=1).max() < 0.6
        moved += np.linalg.norm(want[-1] - want[0])
    assert moved > 3, "random boxing should move the boxers"


def test_track_metrics_tell_a_live_rollout_from_a_frozen_one(screens):
    full, _, _ = screens
    tracks = BreakoutReader().read(np.stack([resize_frame(f, 64) for f in full]))
    H, n = 8, len(full) // 8
    real = {k: v[: n * H].reshape(n, H, 2) for k, v in tracks.items()}
    frozen = {k: np.repeat(v[:, :1], H, 1) for k, v in real.items()}

    oracle = game_metrics(BreakoutReader(), real, real, 64)
    for m in oracle.values():
        assert m["error_px"] == 0 and m["visible"] == 1 and m["moving"] == 1
    still = game_metrics(BreakoutReader(), real, frozen, 64)
    assert still["ball"]["moving"] == 0 and still["ball"]["error_px"] > 1 and still["paddle"]["error_px"] > 0.5
    gone = track_metrics(real["ball"], np.full_like(real["ball"], np.nan), 64)
    assert gone["visible"] == 0 and gone["moving"] == 0 and np.isnan(gone["error_px"])
    # the same rollout read at twice the size scores the same in 64-px units
    assert track_metrics(real["paddle"] * 2, frozen["paddle"] * 2, 128)["error_px"] == pytest.approx(still["paddle"]["error_px"])


def test_game_suite_runs_on_a_recorded_breakout_dataset(tmp_path):
    from worldline.envs.recorder import record

    data = record("breakout", 4, tmp_path / "bk", policy="expert", max_steps=40, progress=False)
    cfg = RunConfig.from_dict(load_preset("wm-autoregressive", "debug")).model
    tok = {**to_dict(RunConfig.from_dict(load_preset("tokenizer-fsq", "debug")).model), "levels": [4, 4, 4]}
    cfg = dataclasses.replace(cfg, action_space=ActionSpec(kind="discrete", dim=1, n=4), tokenizer=tok, image_size=(64, 64))
    torch.manual_seed(0)
    model = build_model(cfg)
    result = evaluate_game(model, data, context=2, horizon=4, max_windows=6, data_cfg=DataConfig(val_fraction=0.5),
                           progress=False)
    rows = result["rows"]
    assert set(rows) == {"model", "shuffled_actions", "copy_last", "tokenizer", "real"} and result["windows"] == 6
    assert rows["real"]["paddle"]["error_px"] == 0 and rows["real"]["paddle"]["visible"] == 1
    assert rows["copy_last"]["ball"]["moving"] == 0 or np.isnan(rows["copy_last"]["ball"]["moving"])
    assert set(rows["model"]) == {"paddle", "ball"} and result["controlled"] == "paddle"

    pusht = record("pusht", 2, tmp_path / "pt", max_steps=12, progress=False)
    cont = dataclasses.replace(cfg, action_space=ActionSpec(kind="continuous", dim=2, low=[0, 0], high=[512, 512]))
    with pytest.raises(WorldlineError, match="no sprite reader for env 'pusht'"):
        evaluate_game(build_model(cont), pusht, context=2, horizon=4, progress=False)


def test_sampling_options_refuse_models_without_token_sampling():
    from worldline.cli.sampling import set_sampling

    cfg = RunConfig.from_dict(load_preset("wm-autoregressive", "debug")).model
    tok = {**to_dict(RunConfig.from_dict(load_preset("tokenizer-fsq", "debug")).model), "levels": [4, 4, 4]}
    model = build_model(dataclasses.replace(cfg, tokenizer=tok, image_size=(64, 64)))
    set_sampling(model, 0.8, 20, 0.9)
    assert (model.sampling.temperature, model.sampling.top_k, model.sampling.top_p) == (0.8, 20, 0.9)
    with pytest.raises(WorldlineError, match="temperature"):
        set_sampling(model, -1.0, 0, 1.0)
    base = RunConfig.from_dict(load_preset("wm-deterministic", "debug")).model
    cont = to_dict(RunConfig.from_dict(load_preset("tokenizer-continuous", "debug")).model)
    baseline = build_model(dataclasses.replace(base, tokenizer=cont, image_size=(64, 64)))
    with pytest.raises(WorldlineError, match="token models"):
        set_sampling(baseline, 1.0, 0, 1.0)
