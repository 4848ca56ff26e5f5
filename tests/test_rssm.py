"""The rssm family: DreamerV3's numerics (symlog, two-hot, unimix, balanced KL with free bits) and
the world model's own behaviour beyond the shared contract suite."""

import dataclasses

import pytest
import torch

from _data_helpers import write_dataset
from test_contracts import build
from worldline.core.config import load_preset
from worldline.core.contracts import ActionSpec
from worldline.core.errors import WorldlineError
from worldline.models.rssm.distributions import (
    categorical_kl,
    kl_balance,
    sample_straight_through,
    symexp,
    symlog,
    symlog_bins,
    two_hot,
    two_hot_loss,
    two_hot_mean,
    two_hot_symlog,
    unimix_logits,
)
from worldline.models.rssm.model import RSSMWorldModel
from worldline.train.config import RunConfig


# ----------------------------------------------------------------------------------------------
# numerics
# ----------------------------------------------------------------------------------------------


def test_symlog_symexp_round_trip_and_shape():
    x = torch.tensor([-1e6, -100.0, -1.0, -1e-3, 0.0, 1e-3, 0.5, 1.0, 100.0, 1e6], dtype=torch.float64)
    torch.testing.assert_close(symexp(symlog(x)), x)
    assert symlog(torch.tensor(1e6)).item() == pytest.approx(13.8155, abs=1e-3)  # log(1 + 1e6): large values squashed
    assert symlog(torch.tensor(-3.0)).item() == -symlog(torch.tensor(3.0)).item()  # odd


def test_two_hot_round_trip():
    bins = symlog_bins(255)
    x = torch.tensor([-5000.0, -3.7, -1.0, 0.0, 0.25, 1.0, 42.0, 1e4])
    enc = two_hot_symlog(x, bins)  # (8, 255)
    assert torch.allclose(enc.sum(-1), torch.ones(8))
    assert ((enc > 0).sum(-1) <= 2).all()  # at most two neighbouring bins
    torch.testing.assert_close(symexp((enc * bins).sum(-1)), x, rtol=1e-4, atol=1e-4)  # the weighted mean is the value
    # logits that put the same mass on the same bins decode to the same value
    torch.testing.assert_close(two_hot_mean(enc.clamp_min(1e-30).log(), bins), x, rtol=1e-3, atol=1e-3)
    # exactly on a bin: one-hot; outside the range: clamped to the last bin
    on = two_hot(bins[[10, 200]], bins)
    assert on[0, 10] == 1 and on[1, 200] == 1
    assert two_hot(torch.tensor([99.0]), bins)[0, -1] == 1


def test_two_hot_loss_is_minimised_by_the_target():
    bins = symlog_bins(33, limit=5.0)
    logits = torch.zeros(1, 33, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.1)
    for _ in range(300):
        opt.zero_grad()
        two_hot_loss(logits, torch.tensor([3.3]), bins).sum().backward()
        opt.step()
    assert two_hot_mean(logits, bins).item() == pytest.approx(3.3, rel=0.02)


def test_unimix_floors_every_probability_and_straight_through_passes_gradients():
    logits = torch.tensor([[[20.0, -20.0, -20.0, -20.0]]], requires_grad=True)  # (1, 1, 4) nearly deterministic
    logp = unimix_logits(logits, 0.01)
    assert torch.allclose(logp.exp().sum(-1), torch.ones(1, 1))
    assert logp.exp().min() >= 0.01 / 4 - 1e-7
    sample = sample_straight_through(logp)
    assert set(sample.detach().unique().tolist()) <= {0.0, 1.0} and sample.sum() == 1  # forward: a one-hot
    (sample * torch.arange(4.0)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0  # backward: through the probabilities


def _kl_pair(seed=0):
    g = torch.Generator().manual_seed(seed)
    post = torch.randn(3, 4, 5, generator=g, requires_grad=True)  # (B, S, K)
    prior = torch.randn(3, 4, 5, generator=g, requires_grad=True)
    return post, prior


def test_kl_balancing_sends_dyn_to_the_prior_and_rep_to_the_posterior():
    post, prior = _kl_pair()
    loss, _ = kl_balance(post.log_softmax(-1), prior.log_softmax(-1), free_bits=0.0, dyn_scale=0.5, rep_scale=0.1)
    loss.sum().backward()
    # reference: the plain KL's gradient w.r.t. each side
    p2, q2 = post.detach().clone().requires_grad_(), prior.detach().clone().requires_grad_()
    categorical_kl(p2.log_softmax(-1), q2.log_softmax(-1)).sum().backward()
    torch.testing.assert_close(prior.grad, 0.5 * q2.grad)  # the prior moves with the dyn weight only
    torch.testing.assert_close(post.grad, 0.1 * p2.grad)  # the posterior with the rep weight only


def test_free_bits_clip_the_kl_and_stop_its_gradient():
    post, prior = _kl_pair(1)
    kl = categorical_kl(post.log_softmax(-1), prior.log_softmax(-1)).detach()  # (3,) nats per element
    free = float(kl.max()) + 1.0  # every element below the free bits
    loss, logs = kl_balance(post.log_softmax(-1), prior.log_softmax(-1), free_bits=free, dyn_scale=0.5, rep_scale=0.1)
    torch.testing.assert_close(loss, torch.full((3,), 0.6 * free))
    torch.testing.assert_close(logs["kl"], kl)  # the logged KL is the real one
    loss.sum().backward()
    assert post.grad.abs().max() == 0 and prior.grad.abs().max() == 0
    # with free bits between the elements' KLs only the ones above it keep a gradient
    post.grad = prior.grad = None
    mid = float(kl.sort().values[1]) + 1e-4  # just above the middle element
    loss, _ = kl_balance(post.log_softmax(-1), prior.log_softmax(-1), free_bits=mid)
    loss.sum().backward()
    above = kl > mid
    assert (prior.grad[~above].abs().amax((-1, -2)) == 0).all() and (prior.grad[above].abs().amax((-1, -2)) > 0).all()


# ----------------------------------------------------------------------------------------------
# the world model
# ----------------------------------------------------------------------------------------------


def debug_model(**over) -> RSSMWorldModel:
    cfg = RunConfig.from_dict(load_preset("wm-rssm", "debug")).model
    cfg = dataclasses.replace(cfg, action_space=ActionSpec(kind="discrete", dim=1, n=3), **over)
    torch.manual_seed(0)
    return RSSMWorldModel(cfg).eval()


def test_memory_restarts_at_episode_starts():
    model = debug_model()
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(1, 6, 3, 64, 64, generator=g) * 2 - 1
    actions = model.actions(torch.randint(0, 3, (1, 6, 1), generator=g).float())
    first = torch.zeros(1, 6, dtype=torch.bool)
    first[0, 3] = True
    with torch.no_grad():
        whole = model.observe(frames, actions, first, sample=False)
        tail = model.observe(frames[:, 3:], actions[:, 3:], sample=False)
        no_reset = model.observe(frames, actions, sample=False)
    torch.testing.assert_close(whole["h"][:, 3:], tail["h"])  # after the start flag: as if the window began there
    assert not torch.allclose(no_reset["h"][:, 3:], tail["h"])
    # the transition that ended the first episode is read from the imagined state, not the next episode's
    assert not torch.allclose(whole["arrive"][:, 2], torch.cat([whole["h"][:, 3], whole["z"][:, 3]], -1))


def test_heads_read_the_state_a_dream_reaches_on_every_transition():
    """Reward/continue heads must read (h_{t+1}, prior sample) on every transition, as in a dream:
    terminal transitions have no next frame, so heads that read posteriors elsewhere learn
    "prior-looking = the episode ends" (CartPole: continue 0.85 on every dreamt state)."""
    model = debug_model()
    S, K, D = model.config.stoch, model.config.classes, model.config.deter

    def peaked(h, k):  # log-probs (B, S, K) with all mass on class k
        logits = torch.full((h.shape[0], S, K), -30.0)
        logits[..., k] = 0.0
        return logits.log_softmax(-1)

    img_step = model.core.img_step
    model.core.img_step = lambda h, z, a: (img_step(h, z, a)[0], peaked(h, K - 1))
    model.core.posterior = lambda h, embed: peaked(h, 0)
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(2, 5, 3, 64, 64, generator=g) * 2 - 1
    actions = model.actions(torch.randint(0, 3, (2, 5, 1), generator=g).float())
    with torch.no_grad():
        out = model.observe(frames, actions)
    posterior_class = out["z"].reshape(2, 5, S, K).argmax(-1)  # (B, T, S)
    arrive_class = out["arrive"][..., D:].reshape(2, 5, S, K).argmax(-1)
    assert (posterior_class == 0).all() and (arrive_class == K - 1).all()
    h_next = torch.stack([img_step(out["h"][:, t], out["z"][:, t], actions[:, t])[0] for t in range(5)], 1)
    torch.testing.assert_close(out["arrive"][..., :D], h_next)


def test_heads_learn_reward_and_termination():
    model = debug_model(deter=32, hidden=32).train()
    g = torch.Generator().manual_seed(0)
    B, T = 4, 4
    frames = torch.rand(B, T, 3, 64, 64, generator=g) * 2 - 1
    actions = torch.randint(0, 3, (B, T, 1), generator=g).float()
    rewards = (actions[..., 0] == 2).float() * 5.0  # reward 5 for action 2
    dones = torch.zeros(B, T, dtype=torch.bool)
    dones[:, -1] = True
    batch = {"frames": frames, "actions": actions, "rewards": rewards, "dones": dones}
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        torch.manual_seed(0)
        loss, logs = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        torch.manual_seed(0)
        out = model.observe(frames, model.actions(actions))
        reward = model.predict_reward(out["arrive"])
        cont = model.predict_continue(out["arrive"])
    assert torch.equal(reward > 2.5, rewards > 2.5), (reward, rewards)  # the reward of each action, read from the state it led to
    assert cont[:, -1].max() < 0.5 < cont[:, :-1].min()


def test_dataset_without_rewards_is_refused(tmp_path):
    from worldline.data.format import Dataset

    write_dataset(tmp_path / "ds", [6, 6], size=64)
    info = Dataset(tmp_path / "ds").info
    cfg = RunConfig.from_dict(load_preset("wm-rssm", "debug")).model
    cfg.bind_dataset(info, {})  # a recorded dataset with rewards binds
    assert cfg.action_space.kind == "continuous" and cfg.image_size == (64, 64)
    del info["features"]["next.reward"]
    with pytest.raises(WorldlineError, match="no next.reward"):
        cfg.bind_dataset(info, {})
    cfg.reward_head = False
    cfg.bind_dataset(info, {})  # a video-only model binds


def test_train_from_recorded_episodes(tmp_path):
    from worldline.core.config import apply_overrides
    from worldline.core.pretrained import load_pretrained
    from worldline.train.run import train

    write_dataset(tmp_path / "ds", [8, 8, 8], size=64)
    raw = apply_overrides(load_preset("wm-rssm", "debug"), [f"data.path={tmp_path / 'ds'}", "train.eval_every=0"])
    final = train(RunConfig.from_dict(raw), tmp_path / "run", progress=False)
    model = load_pretrained(final)
    assert isinstance(model, RSSMWorldModel) and model.action_spec.kind == "continuous"
    with torch.no_grad():
        state = model.init_state(torch.zeros(1, 2, 3, 64, 64))
        reward, cont = model.reward_and_continue(state)
    assert reward.shape == cont.shape == (1,) and 0 <= cont.item() <= 1


def test_model_without_reward_head_refuses_reward():
    from worldline.agents.dream_env import DreamEnv

    model = debug_model(reward_head=False)
    assert not any(n.startswith(("reward.", "cont.")) for n, _ in model.named_parameters())
    state = model.init_state(torch.zeros(1, 1, 3, 64, 64))
    with pytest.raises(WorldlineError, match="no reward head"):
        model.reward_and_continue(state)
    clips = torch.zeros(2, 2, 64, 64, 3, dtype=torch.uint8).numpy()
    with pytest.raises(WorldlineError, match="no reward head"):
        DreamEnv(model, clips, context_frames=2)
    DreamEnv(model, clips, context_frames=2, reward_fn=lambda o, a, n: 0.0)  # a user reward function is fine


def test_bad_inputs():
    model = debug_model()
    frames = torch.zeros(2, 2, 3, 64, 64)
    with pytest.raises(WorldlineError, match="discrete index"):
        model.init_state(frames, torch.full((2, 2, 1), 3.0))
    with pytest.raises(WorldlineError, match="text"):
        model.init_state(frames, text=["go left", ""])
    with pytest.raises(WorldlineError, match="decode expects"):
        model.decode(torch.zeros(2, 1, 5))
    with pytest.raises(ValueError, match="multiples of 16"):
        dataclasses.replace(model.config, image_size=(60, 64))
