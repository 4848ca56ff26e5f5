"""The encoder diagnostics: channel spread and the linear probe of state from embeddings."""

import numpy as np
import pytest
import torch

from worldline.core.errors import WorldlineError
from worldline.models.jepa.config import JEPAEncoderConfig
from worldline.models.jepa.diagnostics import channel_spread, linear_probe_r2
from worldline.models.jepa.pretrain import JEPAEncoderPretrainer


def test_linear_probe_reads_a_planted_signal_and_not_noise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 40))
    y = np.stack([x[:, 0] * 2 - x[:, 3], rng.normal(size=300)], 1)  # column 0 linear in x, column 1 independent noise
    r2 = linear_probe_r2(x, y)
    assert r2[0] > 0.95
    assert r2[1] < 0.2


def test_linear_probe_works_with_more_features_than_rows():
    rng = np.random.default_rng(1)
    latent = rng.normal(size=(60, 4))
    x = latent @ rng.normal(size=(4, 500)) + 0.01 * rng.normal(size=(60, 500))  # wide features of a few factors
    r2 = linear_probe_r2(x, latent[:, 0] - latent[:, 2], ridge=1e-4)
    assert r2[0] > 0.8


def test_grouped_probe_does_not_let_a_per_episode_lookup_pass_for_reading():
    """A feature that only names the episode predicts a per-episode constant under a row split (the
    test rows' episodes were seen) and nothing once whole episodes are held out."""
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(20), 10)
    x = np.eye(20)[groups] + 0.01 * rng.normal(size=(200, 20))  # one-hot episode id
    y = rng.normal(size=20)[groups]  # a per-episode constant (Reacher's target)
    assert linear_probe_r2(x, y)[0] > 0.9
    assert linear_probe_r2(x, y, groups=groups)[0] < 0.2
    with pytest.raises(WorldlineError, match="groups"):
        linear_probe_r2(x, y, groups=groups[:-1])


def test_collect_states_gives_reacher_tip_target_and_episodes():
    pytest.importorskip("mujoco")
    from worldline.models.jepa.diagnostics import collect_states

    frames, states, names, episodes = collect_states("reacher", 12, "random", resolution=32, episode_steps=5)
    assert frames.shape == (12, 32, 32, 3) and states.shape == (12, 4)
    assert names == ["tip_x", "tip_y", "target_x", "target_y"]
    assert episodes.tolist() == [0] * 5 + [1] * 5 + [2] * 2
    for e in range(3):  # the target stays put within an episode, the fingertip moves
        assert np.ptp(states[episodes == e, 2:], axis=0).max() < 1e-9
    assert np.ptp(states[episodes == 0, :2], axis=0).max() > 1e-4


def test_linear_probe_rejects_mismatched_rows():
    with pytest.raises(WorldlineError, match="paired rows"):
        linear_probe_r2(np.zeros((20, 3)), np.zeros((19, 1)))


def test_channel_spread_is_zero_for_a_collapsed_encoder():
    z = torch.randn(1, 4, 8).expand(10, -1, -1)  # every frame the same tokens
    assert channel_spread(z) == pytest.approx(0.0, abs=1e-6)
    assert channel_spread(torch.randn(10, 4, 8)) > 0.5


def test_encoder_embeddings_locate_a_moving_square():
    """Even an untrained encoder's pooled tokens say where a square is: the probe's positive control."""
    torch.manual_seed(0)
    n, size = 160, 32
    pos = torch.randint(0, size - 6, (n, 2))
    frames = -torch.ones(n, 1, 3, size, size)
    for i, (r, c) in enumerate(pos.tolist()):
        frames[i, 0, :, r : r + 6, c : c + 6] = 1.0
    model = JEPAEncoderPretrainer(JEPAEncoderConfig(image_size=(size, size), frames=2, patch=8, dim=24, depth=1,
                                                    heads=2, pred_dim=12, pred_depth=1, pred_heads=2)).eval()
    z = model.embed(frames)[:, 0]  # (n, D, 4, 4)
    r2 = linear_probe_r2(z.flatten(1), pos.float())
    assert (r2 > 0.6).all(), r2


def test_pretraining_logs_the_per_position_mean_baseline():
    """Clips that are all alike have targets a per-position mean predicts exactly; varied clips do not."""
    torch.manual_seed(0)
    model = JEPAEncoderPretrainer(JEPAEncoderConfig(image_size=(32, 32), frames=2, patch=8, dim=24, depth=1,
                                                    heads=2, pred_dim=12, pred_depth=1, pred_heads=2)).eval()
    same = torch.rand(1, 2, 3, 32, 32).expand(4, -1, -1, -1, -1) * 2 - 1
    _, logs = model.loss({"frames": same})
    assert logs["position_mean_l1"] < 1e-5 < logs["l1"]
    _, logs = model.loss({"frames": torch.rand(4, 2, 3, 32, 32) * 2 - 1})
    assert logs["position_mean_l1"] > 0.05


def test_absolute_positions_break_the_predictors_shift_invariance():
    """RoPE alone sees only relative offsets: shifting every position leaves the predictions unchanged, so
    the predictor cannot learn what belongs where. With pred_abs_pos the same shift changes them."""
    from worldline.models.jepa.pretrain import sincos_positions

    feats = sincos_positions(torch.tensor([[0, 0, 0], [0, 0, 1], [0, 3, 0]]), 24)
    assert feats.shape == (3, 24) and torch.pdist(feats).min() > 0.1
    cfg = dict(image_size=(32, 32), frames=2, patch=8, dim=24, depth=1, heads=2, pred_dim=12, pred_depth=1, pred_heads=2)
    context, cpos = torch.randn(1, 3, 24), torch.tensor([[[0, 0, 0], [0, 0, 1], [0, 1, 0]]])
    tpos = torch.tensor([[[1, 1, 1], [0, 2, 2]]])
    shift = torch.tensor([0, 2, 1])
    for abs_pos in (False, True):
        torch.manual_seed(0)
        model = JEPAEncoderPretrainer(JEPAEncoderConfig(pred_abs_pos=abs_pos, **cfg)).eval()
        with torch.no_grad():
            moved = (model.predictor(context, cpos, tpos) - model.predictor(context, cpos + shift, tpos + shift)).abs().max()
        assert (moved > 1e-3) == abs_pos, (abs_pos, moved)
