"""The game suite: the Breakout sprite reader against the screen's own pixels, the metrics that tell a
frozen rollout from a live one, and the suite end to end on a recorded Breakout dataset."""

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
from worldline.eval.game import BreakoutReader, Sprites, evaluate_game, sprite_metrics  # noqa: E402
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
    want_paddle = to_px(paddle, sx)
    want_ball = np.stack([to_px(ball[:, 0], sy), to_px(ball[:, 1], sx)], axis=1)

    assert not np.isnan(got.paddle_x).any()
    assert np.abs(got.paddle_x - want_paddle).max() < 0.6 * size / 64
    real_seen = ~np.isnan(want_ball[:, 0])
    seen = ~np.isnan(got.ball[:, 0])
    assert real_seen.sum() > 60, "the expert's episode should have the ball in play most of the time"
    assert not (seen & ~real_seen).any(), "a ball was read where the screen has none"
    assert (seen & real_seen).sum() >= 0.9 * real_seen.sum()
    assert np.nanmax(np.linalg.norm(got.ball - want_ball, axis=1)) < 0.7 * size / 64


def test_sprite_metrics_tell_a_live_rollout_from_a_frozen_one(screens):
    full, _, _ = screens
    frames = np.stack([resize_frame(f, 64) for f in full])
    s = BreakoutReader().read(frames)
    H, n = 8, len(frames) // 8
    windows = lambda a: a[: n * H].reshape(n, H, *a.shape[1:])  # noqa: E731
    real = Sprites(windows(s.paddle_x), windows(s.ball))
    frozen = Sprites(np.repeat(real.paddle_x[:, :1], H, 1), np.repeat(real.ball[:, :1], H, 1))

    oracle = sprite_metrics(real, real, 64)
    assert oracle["paddle_error_px"] == 0 and oracle["ball_error_px"] == 0
    assert oracle["ball_visible"] == 1 and oracle["ball_moving"] == 1 and oracle["ball_pairs"] > 20
    still = sprite_metrics(real, frozen, 64)
    assert still["ball_moving"] == 0 and still["ball_error_px"] > 1 and still["paddle_error_px"] > 0.5
    gone = sprite_metrics(real, Sprites(real.paddle_x, np.full_like(real.ball, np.nan)), 64)
    assert gone["ball_visible"] == 0 and np.isnan(gone["ball_moving"])
    # the same rollout read at twice the size scores the same in 64-px units
    double = Sprites(real.paddle_x * 2, real.ball * 2)
    shifted = Sprites(frozen.paddle_x * 2, frozen.ball * 2)
    assert sprite_metrics(double, shifted, 128)["paddle_error_px"] == pytest.approx(still["paddle_error_px"])


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
    assert rows["real"]["paddle_error_px"] == 0 and rows["real"]["ball_visible"] in (0.0, 1.0)
    assert rows["copy_last"]["ball_moving"] in (0.0,) or np.isnan(rows["copy_last"]["ball_moving"])
    assert np.isfinite(rows["model"]["paddle_error_px"])

    pusht = record("pusht", 2, tmp_path / "pt", max_steps=12, progress=False)
    cont = dataclasses.replace(cfg, action_space=ActionSpec(kind="continuous", dim=2, low=[0, 0], high=[512, 512]))
    with pytest.raises(WorldlineError, match="no sprite reader for env 'pusht'"):
        evaluate_game(build_model(cont), pusht, context=2, horizon=4, progress=False)


def test_sampling_options_refuse_models_without_token_sampling():
    from worldline.cli.main import set_sampling

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
