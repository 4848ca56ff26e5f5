"""Prediction evaluation, rollout videos and the HTML report, on tiny datasets written to disk.

Stub world models make the plumbing checkable exactly: one repeats the last context frame (so it
must score like copy-last), one records what it was given (so the frame/action alignment and the
held-out split can be compared with the dataset rows).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console

from worldline.core.contracts import ActionSpec, Rollout, WorldModel
from worldline.core.errors import WorldlineError
from worldline.data.config import DataConfig
from worldline.data.format import Dataset, DatasetWriter
from worldline.data.windows import split_episodes
from worldline.eval.prediction import PSNR_CAP_DB, evaluate_prediction, format_table
from worldline.eval.report import write_report
from worldline.eval.rollout import write_rollouts

SIZE = 16
SPEC = ActionSpec(kind="continuous", dim=2, low=[-1.0, -1.0], high=[1.0, 1.0])
LENGTHS = (14, 12, 16, 13, 15, 12)


def scene(length: int, seed: int, static: bool) -> np.ndarray:
    """(T, SIZE, SIZE, 3) uint8: a flat colour per episode, with a square moving unless ``static``."""
    rng = np.random.default_rng(seed)
    frames = np.empty((length, SIZE, SIZE, 3), np.uint8)
    frames[:] = rng.integers(40, 200, 3)
    if not static:
        for t in range(length):
            x = t % (SIZE - 4)
            frames[t, 6:10, x : x + 4] = 250
    return frames


def write(path: Path, static: bool) -> Path:
    rng = np.random.default_rng(0)
    with DatasetWriter(path, fps=10, image_shape=(SIZE, SIZE, 3), action_spec=SPEC) as w:
        for i, n in enumerate(LENGTHS):
            w.add_episode(scene(n, i, static), rng.uniform(-1, 1, (n, 2)).astype(np.float32))
    return path


@pytest.fixture(scope="module")
def moving(tmp_path_factory):
    return write(tmp_path_factory.mktemp("moving") / "data", static=False)


@pytest.fixture(scope="module")
def static(tmp_path_factory):
    return write(tmp_path_factory.mktemp("static") / "data", static=True)


class CopyLast(WorldModel):
    """Repeats the last context frame; records every rollout call."""

    def __init__(self):
        super().__init__()
        self.action_spec = SPEC
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # so the model has a device
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []

    def rollout(self, context_frames, actions, text=None, context_actions=None):
        self.calls.append((context_frames.clone(), actions.clone(), None if context_actions is None else context_actions.clone()))
        frames = context_frames[:, -1:].expand(-1, actions.shape[1], -1, -1, -1)
        return Rollout(frames=frames.clone())

    def loss(self, batch):
        raise NotImplementedError

    def window(self):
        return 2

    def init_state(self, context_frames, context_actions=None, text=None):
        raise NotImplementedError

    def step(self, state, action):
        raise NotImplementedError

    def embed(self, frames):
        raise NotImplementedError

    def imagine(self, state, actions):
        raise NotImplementedError


def dataset_rows(path: Path):
    ds = Dataset(path)
    arrays = ds.arrays()
    return ds, arrays["actions"], ds.episode_starts


# ----------------------------------------------------------------------------------------------
# evaluate_prediction
# ----------------------------------------------------------------------------------------------


def test_prediction_result_shapes_split_and_json(moving):
    model = CopyLast()
    K, H = 3, 5
    result = evaluate_prediction(model, moving, context=K, horizon=H, max_windows=10, batch_size=4)
    json.dumps(result, allow_nan=False)  # strict JSON
    _, val = split_episodes(len(LENGTHS), DataConfig().val_fraction, DataConfig().split_seed)
    assert result["episode_ids"] == val and result["num_windows"] <= 10
    for name in ("model", "copy_last", "shuffled_actions"):
        assert len(result[name]["psnr"]) == H and len(result[name]["ssim"]) == H
        assert np.isclose(result[name]["psnr_mean"], np.mean(result[name]["psnr"]))
    assert result["tokenizer"] is None  # no tokenizer in this model
    # the stub repeats the last frame, so it must score exactly like the copy-last baseline
    assert np.allclose(result["model"]["psnr"], result["copy_last"]["psnr"])
    # a moving square: copying gets worse with the horizon
    assert result["copy_last"]["psnr"][0] > result["copy_last"]["psnr"][-1]
    # a copy of a real frame has a real frame's detail
    assert np.allclose(result["copy_last"]["sharpness"], 1.0, atol=0.05) and len(result["model"]["sharpness"]) == H
    gain = result["action_gain"]["psnr_db_steps"]  # the stub ignores its actions: no gain at any step
    assert len(gain) == H and np.allclose(gain, np.array(result["model"]["psnr"]) - result["shuffled_actions"]["psnr"])
    assert np.allclose(gain, 0.0)
    text = Console(record=True, width=200)
    text.print(format_table(result))
    out = text.export_text()
    assert "mean" in out and "copy-last" in out and "sharpness" in out and "at step 5" in out


class NoisyCopy(CopyLast):
    """Copy-last plus noise from the global generator, as a diffusion sampler draws it."""

    def rollout(self, context_frames, actions, text=None, context_actions=None):
        frames = super().rollout(context_frames, actions, text, context_actions).frames
        return Rollout(frames=(frames + 0.1 * torch.randn_like(frames)).clamp(-1, 1))


def test_prediction_seeds_the_models_sampling_and_leaves_the_callers_state(moving):
    model = NoisyCopy()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = evaluate_prediction(model, moving, context=2, horizon=3, max_windows=6, progress=False)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's generator is untouched
    b = evaluate_prediction(model, moving, context=2, horizon=3, max_windows=6, progress=False)
    assert a["model"]["psnr"] == b["model"]["psnr"]  # repeatable


def test_sharpness_tells_blur_and_noise_from_detail():
    from worldline.eval.metrics import sharpness

    g = torch.Generator().manual_seed(0)
    real = (torch.rand(2, 3, 3, 32, 32, generator=g) > 0.7).float() - 0.5  # (B, T, C, H, W) sparse dots, away from the clamp
    blurred = torch.nn.functional.avg_pool2d(real.flatten(0, 1), 3, stride=1, padding=1).view_as(real)
    noisy = (real + 0.3 * torch.randn(real.shape, generator=g)).clamp(-1, 1)
    assert sharpness(real, real).shape == (2, 3) and torch.allclose(sharpness(real, real), torch.ones(2, 3))
    assert sharpness(blurred, real).max() < 0.3  # an average of futures loses its fine detail
    assert sharpness(noisy, real).min() > 1.0
    flat = torch.zeros(1, 3, 8, 8)
    assert torch.allclose(sharpness(flat, flat), torch.ones(1))  # nothing to lose: as sharp as real


def test_prediction_feeds_the_right_frames_and_actions(moving):
    model = CopyLast()
    K, H = 2, 4
    data_cfg = DataConfig(val_fraction=0.34, split_seed=3)
    result = evaluate_prediction(model, moving, context=K, horizon=H, max_windows=6, batch_size=3, data_cfg=data_cfg)
    _, val = split_episodes(len(LENGTHS), 0.34, 3)
    assert result["episode_ids"] == val
    ds, actions, starts = dataset_rows(moving)
    real_calls, shuffled_calls = model.calls[0::2], model.calls[1::2]
    seen = 0
    for (ctx, fut, ctx_act), (_, shuf, _) in zip(real_calls, shuffled_calls):
        assert ctx.shape[1:] == (K, 3, SIZE, SIZE) and fut.shape[1:] == (H, 2) and ctx_act.shape[1:] == (K - 1, 2)
        for b in range(len(fut)):
            # find the row this window starts at from its context actions + future actions
            window = torch.cat([ctx_act[b], fut[b]]).numpy()  # actions[start : start + K - 1 + H]
            hits = [(e, s) for e in val for s in range(LENGTHS[e] - K - H + 1)
                    if np.allclose(actions[starts[e] + s : starts[e] + s + K - 1 + H], window)]
            assert len(hits) == 1, "window actions do not line up with one held-out window"
            e, s = hits[0]
            real = ds.episode_frames(e)[s : s + K]
            got = ((ctx[b].permute(0, 2, 3, 1) + 1) * 127.5).round().numpy()
            assert np.abs(got - real.astype(np.float64)).max() <= 1
            assert not torch.allclose(shuf[b], fut[b])  # shuffled actions come from another window
            seen += 1
    assert seen == result["num_windows"] == 6


def test_copy_last_on_a_static_video_is_perfect(static):
    result = evaluate_prediction(CopyLast(), static, context=2, horizon=3, max_windows=8)
    assert min(result["copy_last"]["psnr"]) > 40
    assert min(result["copy_last"]["ssim"]) > 0.99
    assert max(result["copy_last"]["psnr"]) <= PSNR_CAP_DB
    json.dumps(result, allow_nan=False)


def test_prediction_with_a_latent_model_reports_the_tokenizer_ceiling(moving, tmp_path):
    from worldline.models.baseline import DeterministicConfig, DeterministicWorldModel
    from worldline.tokenizers import ContinuousTokenizer, ContinuousTokenizerConfig

    ContinuousTokenizer(ContinuousTokenizerConfig(image_size=(SIZE, SIZE), channels=(8, 16), blocks=(0, 1),
                                                  latent_channels=4)).save_pretrained(tmp_path / "tok")
    model = DeterministicWorldModel(DeterministicConfig(
        tokenizer_path=str(tmp_path / "tok"), action_space=SPEC, image_size=(SIZE, SIZE), context_frames=2,
        train_horizon=2, rollout_steps=2, width=8, channel_mult=(1,), blocks_per_level=1, action_dim=8))
    result = evaluate_prediction(model, moving, context=2, horizon=3, max_windows=4)
    assert len(result["tokenizer"]["psnr"]) == 3 and np.isfinite(result["tokenizer"]["psnr_mean"])
    # untrained = copy-last-latent: the model equals its shuffled-actions run
    assert np.allclose(result["model"]["psnr"], result["shuffled_actions"]["psnr"])


def test_prediction_bad_arguments(moving):
    with pytest.raises(WorldlineError, match="long enough"):
        evaluate_prediction(CopyLast(), moving, context=8, horizon=16)
    with pytest.raises(WorldlineError, match="episodes must be"):
        evaluate_prediction(CopyLast(), moving, episodes="test")
    with pytest.raises(WorldlineError, match="episode 99"):
        evaluate_prediction(CopyLast(), moving, episodes=[99])
    latent_actions = CopyLast()
    latent_actions.action_spec = ActionSpec(kind="discrete", dim=1, n=8)  # e.g. a Genie model's latent codes
    with pytest.raises(WorldlineError, match="genie label"):
        evaluate_prediction(latent_actions, moving)


# ----------------------------------------------------------------------------------------------
# rollouts and report
# ----------------------------------------------------------------------------------------------


def test_write_rollouts(moving, tmp_path):
    K, H = 2, 5
    gifs = write_rollouts(CopyLast(), moving, tmp_path / "roll", [1, 3], context=K, horizon=H, start=2)
    assert [p.name for p in gifs] == ["episode_0001.gif", "episode_0003.gif"]
    for gif in gifs:
        assert gif.with_suffix(".mp4").stat().st_size > 0
        with Image.open(gif) as im:
            assert im.n_frames == K + H
            assert im.size[1] >= 2 * SIZE  # upscaled so it is visible
        metrics = json.loads(gif.with_suffix(".json").read_text())
        assert len(metrics["psnr"]) == H and metrics["start"] == 2
        assert np.allclose(metrics["psnr"], metrics["copy_last_psnr"])
    with pytest.raises(WorldlineError, match="episode 1 has 12 frames"):
        write_rollouts(CopyLast(), moving, tmp_path / "bad", [1], context=4, horizon=8, start=2)


def test_report_is_self_contained(moving, tmp_path):
    gifs = write_rollouts(CopyLast(), moving, tmp_path / "elsewhere", [0], context=2, horizon=3)
    prediction = evaluate_prediction(CopyLast(), moving, context=2, horizon=3, max_windows=4)
    run = tmp_path / "run"
    run.mkdir()
    lines = [{"step": s, "split": "train", "loss": 1.0 / s, "tf_mse": 0.5 / s, "lr": 1e-3, "time": s} for s in range(1, 30)]
    lines += [{"step": s, "split": "val", "loss": 1.2 / s, "tf_mse": 0.6 / s} for s in (10, 20)]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + '\n{"step": 31, "spl')  # torn last line
    (run / "config.yaml").write_text("model:\n  type: deterministic\n")
    tok = {"dataset": {"psnr": 31.5, "ssim": 0.93, "frames_per_s": 800.0},
           "videos": {"psnr": 29.0, "ssim": 0.9, "per_clip": [{"file": "a.mp4", "psnr": 28.0}, {"file": "b.mp4", "psnr": 30.0}]}}
    index = write_report(tmp_path / "report", runs={"world model": run}, prediction=prediction, tokenizer_eval=tok,
                         rollouts=gifs, title="test <report>", timings={"total": 90.0})
    page = index.read_text()
    assert "test &lt;report&gt;" in page and "31.50 dB" in page and "type: deterministic" in page
    assert "<td>b.mp4</td>" in page  # per-clip records as a table
    refs = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert any(r.endswith(".gif") for r in refs) and any(r.endswith(".png") for r in refs)
    for ref in refs:
        assert not ref.startswith(("/", "http")), ref
        assert (index.parent / ref).is_file(), ref
        assert (index.parent / ref).resolve().is_relative_to(index.parent.resolve())
    with pytest.raises(WorldlineError, match="not found"):
        write_report(tmp_path / "r2", rollouts=[tmp_path / "nope.gif"])


class ProprioCopyLast(CopyLast):
    """CopyLast for a robot: it reads proprioception and records what it was given."""

    uses_proprio = True

    def __init__(self):
        super().__init__()
        self.readings: list[torch.Tensor] = []

    def rollout(self, context_frames, actions, text=None, context_actions=None, context_proprio=None):
        self.readings.append(context_proprio.clone())
        return super().rollout(context_frames, actions, text, context_actions)


def test_prediction_and_rollouts_feed_a_proprioceptive_model_the_context_readings(tmp_path):
    path = tmp_path / "robot"
    rng = np.random.default_rng(0)
    with DatasetWriter(path, fps=10, image_shape=(SIZE, SIZE, 3), action_spec=SPEC, state_names=("clock",)) as w:
        for i, n in enumerate(LENGTHS):  # the reading tells episode and frame: 1000 * episode + frame
            w.add_episode(scene(n, i, False), rng.uniform(-1, 1, (n, 2)).astype(np.float32),
                          states=(1000 * i + np.arange(n, dtype=np.float32))[:, None])
    K, H = 3, 4
    model = ProprioCopyLast()
    result = evaluate_prediction(model, path, context=K, horizon=H, max_windows=5, batch_size=5)
    assert result["num_windows"] == 5 and len(model.readings) == 2  # the true and the shuffled rollout
    for p in model.readings:
        assert p.shape == (5, K, 1)
        assert (p[:, 1:] - p[:, :-1] == 1).all()  # K consecutive frames of one episode: the context's
    write_rollouts(model, path, tmp_path / "roll", [1, 3], context=K, horizon=H, start=2)
    assert [r[0, :, 0].tolist() for r in model.readings[2:]] == [[1002, 1003, 1004], [3002, 3003, 3004]]
    with pytest.raises(WorldlineError, match="has no observation.state"):
        evaluate_prediction(ProprioCopyLast(), write(tmp_path / "plain", static=False), context=K, horizon=H, max_windows=2)
