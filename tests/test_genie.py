"""The Genie family: MaskGIT schedule, LAM codebook, cached dynamics, latent-action play, bad inputs, tiny overfits.

The shared contract suite runs the preset's debug size (real actions); these tests cover the
latent-action path every Genie model plays with by default, on 32x32 frames of a toy world.
"""

import math

import numpy as np
import pytest
import torch

from worldline.core.config import build_model, load_preset, to_dict
from worldline.core.contracts import ActionSpec
from worldline.core.errors import WorldlineError
from worldline.core.pretrained import load_pretrained
from worldline.models.genie import GenieWorldModel, maskgit
from worldline.models.genie.dynamics import DynamicsTransformer
from worldline.models.genie.evaluate import codebook_usage, confusion, propose_layout, purity
from worldline.models.genie.lam import LatentActionModel, LatentActionQuantizer
from worldline.train.config import RunConfig

SIZE = 32


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def genie_config(**over):
    cfg = RunConfig.from_dict(load_preset("wm-genie", "debug")).model
    cfg.tokenizer = to_dict(RunConfig.from_dict(load_preset("tokenizer-fsq", "debug")).model)
    cfg.image_size = (SIZE, SIZE)
    cfg.real_actions = False
    cfg.action_space = ActionSpec()  # a video-only dataset
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg


def genie(seed=0, **over):
    torch.manual_seed(seed)
    return build_model(genie_config(**over))


def toy_world(n, T, seed=0, size=SIZE):
    """Clips (n, T, 3, size, size) in [-1, 1] of a white square that moves 4 px left (action 0) or
    right (1) each step, wrapping around, with the actions (n, T) that moved it."""
    g = np.random.default_rng(seed)
    actions = g.integers(0, 2, (n, T))
    frames = np.full((n, T, 3, size, size), -1.0, np.float32)
    for i in range(n):
        x, y = g.integers(0, size), g.integers(0, size - 6)
        for t in range(T):
            cols = (np.arange(6) + x) % size
            frames[i, t, :, y : y + 6, cols] = 1.0
            x = (x + (4 if actions[i, t] else -4)) % size
    return torch.from_numpy(frames), actions


# ----------------------------------------------------------------------------------------------
# MaskGIT
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 2, 4, 8, 16])
def test_maskgit_schedule_unmasks_every_token_in_the_set_steps(steps):
    S = 16
    sched = maskgit.schedule(steps, S)
    assert len(sched) == steps and sched[-1] == 0
    assert all(a > b for a, b in zip([S, *sched], sched))  # at least one token committed per step
    if steps in (4, 8):  # the cosine shape: the first step commits fewer tokens than the last
        assert S - sched[0] < sched[-2]

    calls, masked = [], []
    V, mask_id = 10, 10

    def logits_fn(ids):
        calls.append(ids.clone())
        masked.append(int((ids == mask_id).sum(1)[0]))
        return torch.randn(ids.shape[0], S, V)

    out = maskgit.decode(logits_fn, 3, S, mask_id, steps)
    assert len(calls) == steps
    assert masked == [S, *sched[:-1]]
    assert out.shape == (3, S) and (out != mask_id).all() and out.max() < V
    for prev, nxt in zip(calls, calls[1:]):  # committed tokens never change
        kept = prev != mask_id
        assert torch.equal(nxt[kept], prev[kept])


def test_maskgit_rejects_more_steps_than_tokens_and_samples_with_temperature():
    with pytest.raises(ValueError):
        maskgit.schedule(17, 16)
    g = torch.Generator().manual_seed(0)
    logits = torch.zeros(2, 16, 5)
    logits[..., 3] = 5.0
    out = maskgit.decode(lambda ids: logits, 2, 16, 5, 4, temperature=1.0, generator=g)
    assert (out == 3).float().mean() > 0.8  # sampling follows the distribution
    greedy = maskgit.decode(lambda ids: logits, 2, 16, 5, 4)
    assert (greedy == 3).all()


def test_training_mask_rates_follow_the_cosine_curve():
    g = torch.Generator().manual_seed(0)
    mask = maskgit.training_mask((4000, 64), generator=g)
    # E[cos(pi/2 u)] = 2/pi for u ~ U(0, 1)
    assert abs(mask.float().mean().item() - 2 / math.pi) < 0.02
    assert mask.float().mean(1).max() > 0.95 and mask.float().mean(1).min() < 0.05


# ----------------------------------------------------------------------------------------------
# LAM
# ----------------------------------------------------------------------------------------------


def test_lam_codebook_indices_round_trip():
    q = LatentActionQuantizer(8)
    ids = torch.randint(0, 8, (5, 7))
    assert torch.equal(q.indices(q.lookup(ids)), ids)
    zq, got, losses = q(q.lookup(ids) * 3.0)  # only the signs matter
    assert torch.equal(got, ids) and torch.equal(zq.sign(), q.lookup(ids))
    assert len({tuple(v) for v in q.lookup(torch.arange(8)).tolist()}) == 8  # 8 distinct corners of the cube
    with pytest.raises(ValueError):
        LatentActionQuantizer(6)


def test_lam_entropy_term_prefers_decisive_codes_that_are_all_used():
    q = LatentActionQuantizer(8)
    even = q.lookup(torch.arange(8).repeat(4)) * 2  # every code, decisively
    one = q.lookup(torch.zeros(32, dtype=torch.long)) * 2  # a single code
    vague = torch.randn(32, 3) * 0.01  # near every boundary
    entropy = lambda z: q(z)[2][0].item()  # noqa: E731
    assert entropy(even) < entropy(one) and entropy(even) < entropy(vague)


def test_usage_floor_leaves_a_skewed_split_alone_but_penalises_missing_codes():
    free, floored = LatentActionQuantizer(8), LatentActionQuantizer(8, usage_floor=0.05)
    skewed = torch.cat([torch.zeros(60, dtype=torch.long), torch.arange(8).repeat(5)])  # code 0 holds 2/3, all used
    four = torch.arange(4).repeat(25)  # codes 4..7 never used
    usage = lambda q, ids: q(q.lookup(ids) * 3)[2][0].item()  # noqa: E731  (decisive, so per-sample entropy ~0)
    assert usage(floored, skewed) == pytest.approx(0, abs=1e-3)  # every code above 5%: no pull towards uniform
    assert usage(floored, four) == pytest.approx(4, abs=0.01)  # four codes missing, each costs 1
    assert usage(free, torch.arange(8).repeat(12)) < usage(free, skewed)  # the entropy term does pull towards uniform
    rate = lambda ids: floored(floored.lookup(ids) * 3)[2][2].item()  # noqa: E731
    assert rate(four) == pytest.approx(math.log(4), abs=1e-3) and rate(skewed) < rate(torch.arange(8).repeat(12))
    with pytest.raises(ValueError):
        genie_config(usage_floor=0.2).__post_init__()  # 8 codes cannot each hold 20%


def test_lam_is_causal_one_code_per_transition():
    torch.manual_seed(0)
    lam = LatentActionModel((SIZE, SIZE), 8, 24, 1, 2, 8).eval()
    frames = torch.rand(2, 4, 3, SIZE, SIZE) * 2 - 1
    a = lam.encode(frames)
    assert a.shape == (2, 3, 3)  # 3 bits = 8 codes
    later = frames.clone()
    later[:, 3] = -later[:, 3]
    b = lam.encode(later)
    assert torch.allclose(a[:, :2], b[:, :2], atol=1e-6) and not torch.allclose(a[:, 2], b[:, 2])


def test_lam_overfits_a_toy_world_and_its_codes_mean_the_actions():
    torch.manual_seed(0)
    frames, actions = toy_world(32, 3)
    lam = LatentActionModel((SIZE, SIZE), 8, 32, 1, 2, 8, motion_weight=10.0)
    opt = torch.optim.Adam(lam.parameters(), lr=3e-3)
    first = None
    for _ in range(120):
        out = lam(frames)
        first = first if first is not None else out.recon_loss.item()
        opt.zero_grad()
        (out.recon_loss + 0.01 * out.vq_loss[0] + 0.01 * out.vq_loss[1]).backward()
        opt.step()
    table = confusion(actions[:, :-1], out.ids.numpy(), 2, 8)
    assert out.recon_loss.item() < 0.5 * first
    assert purity(table)["latent_to_true"] > 0.85, table  # a code means left or right, seldom both (chance: 0.58)
    assert len({z for _, z, _ in propose_layout(table)}) == 2, table  # and the two get different keys


def test_code_bias_gives_still_transitions_one_code_not_a_random_one():
    torch.manual_seed(0)
    plain = LatentActionModel((SIZE, SIZE), 8, 24, 1, 2, 8).eval()
    biased = LatentActionModel((SIZE, SIZE), 8, 24, 1, 2, 8, code_bias=True).eval()
    assert plain.to_code.bias is None and torch.equal(biased.to_code.bias, torch.zeros(3))  # starts as the plain LAM
    missing, _ = biased.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["to_code.bias"]
    scene = torch.rand(16, 1, 3, SIZE, SIZE) * 2 - 1
    still = torch.cat([scene, scene + 1e-3 * torch.randn_like(scene)], dim=1)  # (16, 2, ...): almost nothing changes
    assert len(plain.infer(still).unique()) > 2  # at every sign boundary: noise picks the code
    with torch.no_grad():
        biased.to_code.bias.copy_(torch.tensor([0.5, -0.5, 0.5]))  # bits 0 and 2: code 5
    assert biased.infer(still).eq(5).all()


def test_checkpoints_from_before_the_code_bias_still_load(tmp_path):
    import json

    model = genie(lam_code_bias=False).eval()
    model.save_pretrained(tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    del config["lam_code_bias"]  # as written before the field existed
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    again = load_pretrained(tmp_path / "old")
    assert again.config.lam_code_bias is False and again.lam.to_code.bias is None
    frames, _ = toy_world(2, 4)
    assert torch.equal(again.infer_latent_actions(frames), model.infer_latent_actions(frames))
    assert genie().lam.to_code.bias is not None  # the preset's LAM has one


# ----------------------------------------------------------------------------------------------
# dynamics
# ----------------------------------------------------------------------------------------------


def test_cached_dynamics_matches_the_full_forward_also_past_the_window():
    torch.manual_seed(0)
    net = DynamicsTransformer(50, (2, 3), 24, 2, 2, 2.0, 8, None).eval()
    B, T, S, W = 2, 5, 6, 3
    ids = torch.randint(0, 51, (B, T, S))
    cond = net.condition(torch.randint(0, 9, (B, T)))
    with torch.no_grad():
        full = net(ids, cond)  # (B, T, S, V)
        cache = net.new_cache()
        for t in range(3):
            assert torch.allclose(net.frame_logits(ids[:, t], cond[:, t], cache, t), full[:, t], atol=1e-4)
            cache = net.commit(ids[:, t], cond[:, t], cache, t, T)
        # past the window the cache keeps the newest W - 1 frames: the first layer's keys/values
        # (which depend on their own frame only) equal those of a fresh pass over those frames
        capped, fresh = net.new_cache(), net.new_cache()
        for t in range(T - 1):
            capped = net.commit(ids[:, t], cond[:, t], capped, t, W)
            if t >= T - W:
                fresh = net.commit(ids[:, t], cond[:, t], fresh, t, T)
        assert all(kv.k.shape[2] == W - 1 for kv in capped)
        assert torch.allclose(capped[0].k, fresh[0].k) and torch.allclose(capped[0].v, fresh[0].v)
        assert torch.isfinite(net.frame_logits(ids[:, T - 1], cond[:, T - 1], capped, T - 1)).all()


# ----------------------------------------------------------------------------------------------
# the world model with latent actions
# ----------------------------------------------------------------------------------------------


def test_latent_action_world_model_contract(tmp_path):
    model = genie().eval()
    assert model.action_spec.kind == "discrete" and model.action_spec.n == 8
    frames, _ = toy_world(2, model.window())
    state = model.init_state(frames[:, :2])
    s2, frame = model.step(state.clone(), torch.tensor([[3.0], [7.0]]))
    assert frame.shape == (2, 3, SIZE, SIZE) and frame.abs().max() <= 1
    assert s2.t == state.t + 1
    z = model.imagine(state, torch.randint(0, 8, (2, 4, 1)).float())
    assert z.shape == (2, 4, 4, 4) and z.dtype == torch.int64 and z.max() < model.tokenizer.vocab_size
    out = model.rollout(frames[:, :2], torch.randint(0, 8, (2, 5, 1)).float())
    assert out.frames.shape == (2, 5, 3, SIZE, SIZE) and torch.isfinite(out.frames).all()
    # the step path and the rollout path agree (greedy MaskGIT is deterministic)
    acts = torch.tensor([[[1.0], [2.0]], [[5.0], [0.0]]])
    ids = model.imagine(model.init_state(frames[:, :2]), acts)
    st, stepped = model.init_state(frames[:, :2]), []
    for t in range(2):
        st, f = model.step(st, acts[:, t])
        stepped.append(f)
    assert torch.allclose(torch.stack(stepped, 1), model.decode(ids), atol=1e-5)
    # latent actions from the LAM: one per transition, in the codebook
    inferred = model.infer_latent_actions(frames)
    assert inferred.shape == (2, model.window() - 1) and inferred.max() < 8
    # save / load round trip
    model.save_pretrained(tmp_path / "g")
    again = load_pretrained(tmp_path / "g")
    assert isinstance(again, GenieWorldModel) and to_dict(again.config) == to_dict(model.config)
    assert torch.equal(again.imagine(again.init_state(frames[:, :2]), acts), ids)


def test_long_videos_are_labelled_with_training_sized_windows():
    model = genie(lam_window=0).eval()  # a LAM that reads whole training clips (the preset's reads pairs)
    W = model.window()
    frames, _ = toy_world(1, 9)
    ids = model.infer_latent_actions(frames)
    assert ids.shape == (1, 8)
    assert torch.equal(ids[:, : W - 1], model.lam.infer(frames[:, :W]))
    for t in range(W - 1, 8):  # transition t -> t+1 from the window ending at frame t+1
        assert ids[0, t] == model.lam.infer(frames[:, t + 2 - W : t + 2])[0, -1]


def test_lam_window_is_independent_of_the_dynamics_context():
    model = genie(window_frames=4, lam_window=2).eval()
    assert model.window() == 4
    frames, _ = toy_world(2, 6, seed=2)
    ids = model.infer_latent_actions(frames)
    pairs = torch.stack([model.lam.infer(frames[:, t : t + 2])[:, 0] for t in range(5)], dim=1)
    assert torch.equal(ids, pairs)  # each code reads x_t and x_t+1 only
    state = model.init_state(frames)
    assert state.ids.shape[1] == 3 and state.t == 3  # the dynamics keeps window_frames - 1 frames
    # training reads the LAM on every pair of the 4-frame clip and conditions frame t on pair t-1 -> t
    clips = model.lam_clips(frames[:, :4])
    assert clips.shape == (6, 2, 3, SIZE, SIZE) and torch.equal(clips[1], frames[0, 1:3])
    assert torch.equal(model.join_lam_ids(model.lam.infer(clips), 2), ids[:, :3])
    loss, logs = model.train().loss({"frames": frames[:, :4]})
    assert torch.isfinite(loss) and logs["lam_codes_used"] >= 1
    # a LAM window longer than the clip, or of one frame, is refused
    for bad in (1, 5):
        with pytest.raises(ValueError, match="lam_window"):
            genie_config(window_frames=4, lam_window=bad).__post_init__()


def test_bad_inputs_get_clear_errors():
    model = genie().eval()
    frames, _ = toy_world(2, model.window())
    state = model.init_state(frames[:, :2])
    with pytest.raises(WorldlineError, match="too short"):
        model.infer_latent_actions(frames[:, :1])
    with pytest.raises(WorldlineError, match="outside the codebook"):
        model.step(state, torch.tensor([[8.0], [0.0]]))
    with pytest.raises(WorldlineError, match="outside the codebook"):
        model.step(state, torch.tensor([[-1.0], [0.0]]))
    with pytest.raises(WorldlineError, match="trained without real actions"):
        model.step(state, torch.zeros(2, 2))  # a continuous real action
    with pytest.raises(WorldlineError, match="trained without real actions"):
        model.imagine(state, torch.zeros(2, 3, 4))
    with pytest.raises(WorldlineError, match="windows of"):
        model.loss({"frames": frames[:, :2]})
    with pytest.raises(WorldlineError, match="real_actions"):
        genie(real_actions=True)  # the dataset has no actions
    with pytest.raises(WorldlineError, match="lam_patch"):
        genie(lam_patch=5)
    with pytest.raises(WorldlineError, match="power of two"):
        RunConfig.from_dict({"model": {"type": "genie", "num_latent_actions": 6}})
    with pytest.raises(WorldlineError):
        RunConfig.from_dict({"model": {"type": "genie", "num_latent_actions": 1}})


def test_real_action_model_plays_with_real_actions_only():
    spec = ActionSpec(kind="discrete", dim=1, n=2, names=["left", "right"])
    model = genie(real_actions=True, action_space=spec).eval()
    assert model.action_spec == spec
    frames, actions = toy_world(2, model.window())
    state = model.init_state(frames[:, :2], torch.from_numpy(actions[:, :2, None]).float())
    _, frame = model.step(state, torch.ones(2, 1))
    assert frame.shape == (2, 3, SIZE, SIZE)
    with pytest.raises(WorldlineError):
        model.step(state, torch.full((2, 1), 2.0))  # not one of its 2 real actions


def test_joint_training_overfits_one_batch():
    model = genie(seed=1, dim=48, heads=4).train()
    frames, _ = toy_world(4, model.window(), seed=3)
    batch = {"frames": frames}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    logs = []
    for i in range(60):
        torch.manual_seed(i)
        loss, log = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        logs.append(log)
    first, last = logs[0], np.mean([l["dyn_ce"] for l in logs[-5:]])
    assert last < 0.5 * first["dyn_ce"], (first, logs[-1])
    assert np.mean([l["lam_mse"] for l in logs[-5:]]) < 0.5 * first["lam_mse"]
    assert all(set(l) >= {"dyn_ce", "dyn_acc", "lam_mse", "lam_codes_used", "lam_perplexity"} for l in logs)


def test_confusion_purity_usage_and_layout():
    true = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    latent = np.array([5, 5, 2, 2, 2, 2, 7, 7])
    table = confusion(true, latent, 3, 8)
    assert table[0, 5] == 2 and table.sum() == 8
    assert purity(table)["true_to_latent"] == pytest.approx(7 / 8)
    assert purity(table)["latent_to_true"] == pytest.approx(7 / 8)
    assert purity(table)["one_to_one"] == pytest.approx(7 / 8)
    collapsed = confusion(true, np.zeros(8, np.int64), 3, 8)  # every transition on one code
    assert purity(collapsed)["true_to_latent"] == 1.0 and purity(collapsed)["one_to_one"] == pytest.approx(3 / 8)
    assert codebook_usage(table)["codes_used"] == 3
    assert propose_layout(table) == [(0, 5, pytest.approx(2 / 3)), (1, 2, 1.0), (2, 7, 1.0)]
    with pytest.raises(WorldlineError):
        confusion(np.array([3]), np.array([0]), 3, 8)


def test_command_line_sample_steps_set_maskgit_steps_and_diffusion_options_are_refused():
    from worldline.cli.sampling import set_sampling

    model = genie()
    assert model.maskgit_steps != 3
    set_sampling(model, None, 0, 1.0, steps=3)
    assert model.maskgit_steps == 3
    for bad in (dict(guidance=2.0), dict(sampler="heun")):
        with pytest.raises(WorldlineError, match="apply to diffusion"):
            set_sampling(model, None, 0, 1.0, **bad)
    with pytest.raises(WorldlineError, match="sample-steps"):
        set_sampling(model, None, 0, 1.0, steps=0)
