"""The JEPA family: masking, the EMA target, block-causal prediction, encoder loading, training."""

import dataclasses

import pytest
import torch

from worldline.core.config import build_model, load_preset, to_dict
from worldline.core.contracts import ActionSpec
from worldline.core.errors import WorldlineError
from worldline.models.jepa import JEPAConfig, JEPAEncoderPretrainer, JEPAWorldModel
from worldline.models.jepa.masking import block_mask, tube_masks
from worldline.models.jepa.predictor import ACPredictor
from worldline.nn.attention import block_causal_mask
from worldline.train.config import RunConfig

@pytest.fixture(autouse=True)
def _one_thread():
    """One thread: on a shared 2-core machine two spinning OpenMP threads run small models many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


PUSHT = ActionSpec(kind="continuous", dim=2, low=[0.0, 0.0], high=[512.0, 512.0])


def encoder_model(seed=0):
    torch.manual_seed(seed)
    return build_model(RunConfig.from_dict(load_preset("jepa-encoder", "debug")).model)


def ac_config(**kw) -> JEPAConfig:
    cfg = RunConfig.from_dict(load_preset("jepa-ac", "debug")).model
    cfg.action_space = PUSHT
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


@pytest.mark.parametrize("ratio,grid", [(0.75, (2, 8, 8)), (0.5, (1, 4, 6)), (0.9, (3, 16, 16)), (0.1, (1, 5, 5))])
def test_masking_covers_the_requested_ratio_with_tubes(ratio, grid):
    t, h, w = grid
    keep, masked = tube_masks(4, grid, ratio, (0.1, 0.3), (0.5, 2.0))
    want = min(max(round(ratio * h * w), 1), h * w - 1)
    assert masked.shape == (4, want * t) and keep.shape == (4, t * h * w - want * t)
    for k, m in zip(keep, masked):
        assert torch.equal(torch.sort(torch.cat([k, m])).values, torch.arange(t * h * w))  # a partition
        cells = (m.view(t, -1) % (h * w))  # the same spatial cells in every frame: tubes
        assert all(torch.equal(cells[0], cells[i]) for i in range(t))


def test_mask_is_made_of_blocks_not_scattered_cells():
    torch.manual_seed(0)
    mask = block_mask(16, 16, 0.5, (0.15, 0.2), (0.75, 1.5))
    # neighbours of a masked cell are mostly masked (random scatter would give about 0.5)
    m = mask.float()
    right = (m[:, :-1] * m[:, 1:]).sum() / m[:, :-1].sum()
    assert right > 0.75


def test_ema_target_gets_no_gradient_and_follows_the_encoder():
    model = encoder_model().train()
    frames = torch.rand(2, model.window(), 3, 64, 64) * 2 - 1
    assert not any(p.requires_grad for p in model.target.parameters())
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    loss, _ = model.loss({"frames": frames})
    loss.backward()
    assert all(p.grad is None for p in model.target.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    before = [p.detach().clone() for p in model.target.parameters()]
    opt.step()
    online = [p.detach().clone() for p in model.encoder.parameters()]
    m = model.momentum()
    model.loss({"frames": frames})  # a training-mode call moves the target first
    for b, o, t in zip(before, online, model.target.parameters()):
        assert torch.allclose(t, m * b + (1 - m) * o, atol=1e-6)
    assert int(model.ema_updates) == 2
    model.eval()
    frozen = [p.detach().clone() for p in model.target.parameters()]
    with torch.no_grad():
        model.loss({"frames": frames})  # validation does not move it
    assert all(torch.equal(a, b) for a, b in zip(frozen, model.target.parameters()))


def test_variance_hinge_pushes_collapsed_tokens_apart():
    """With var_weight the loss has a gradient away from identical tokens; without it it has none from that term."""
    model = encoder_model().train()
    frames = torch.zeros(4, model.window(), 3, 64, 64)  # blank clips: every token the same, the collapsed case
    _, logs = model.loss({"frames": frames})
    assert logs["context_std"] < 1e-3
    model.config.var_weight = 1.0
    loss, logs = model.loss({"frames": frames})
    assert loss.item() > logs["l1"] + 0.9  # the hinge is active: spread far below var_target
    _, logs = model.loss({"frames": torch.rand_like(frames) * 2 - 1})
    assert logs["context_std"] > 0.3  # varied clips give varied tokens: the log tells collapse apart
    with pytest.raises(ValueError, match="var_weight"):
        type(model.config)(var_weight=-1.0)


def test_block_causal_mask_is_causal():
    mask = block_causal_mask(3, 2)
    frame = torch.arange(6) // 2
    assert torch.equal(mask, frame[:, None] >= frame[None, :])
    torch.manual_seed(0)
    pred = ACPredictor(embed_dim=8, dim=12, depth=2, heads=2, mlp_ratio=2.0, grid=2)
    torch.nn.init.normal_(pred.out.weight, std=0.5)  # out is zero-initialised; make the check non-trivial
    z, a = torch.randn(2, 4, 4, 8), torch.randn(2, 4, 12)
    out = pred(z, a)
    z2, a2 = z.clone(), a.clone()
    z2[:, 2:] += 3.0
    a2[:, 2:] -= 2.0
    out2 = pred(z2, a2)
    assert torch.allclose(out[:, :2], out2[:, :2], atol=1e-5)  # steps 0, 1 never see steps 2, 3
    assert not torch.allclose(out[:, 2:], out2[:, 2:])


def test_imagine_matches_step_and_respects_frameskip():
    torch.manual_seed(0)
    model = JEPAWorldModel(ac_config(frameskip=3)).eval()
    assert model.action_spec.dim == 6 and model.action_spec.high == [512.0] * 6
    assert model.window() == (2 + 2 - 1) * 3 + 1
    frames = torch.rand(1, 2, 3, 64, 64) * 2 - 1
    actions = torch.rand(1, 3, 6) * 512
    with torch.no_grad():
        state = model.init_state(frames, actions[:, :1])
        z = model.imagine(state, actions)
        s = state
        for t in range(3):
            s, frame = model.step(s, actions[:, t])
            assert torch.allclose(s.z[:, -1], z[:, t], atol=1e-5)
        assert frame.shape == (1, 3, 64, 64)
    with pytest.raises(WorldlineError):
        model.imagine(state, torch.rand(1, 3, 2))  # env-sized actions for a frameskip-3 model


def test_ac_model_loads_the_pretrained_target_and_stays_frozen(tmp_path):
    enc = encoder_model(seed=3)
    with torch.no_grad():
        for p in enc.target.parameters():
            p.add_(torch.randn_like(p))  # make target != online, to see which one is loaded
    enc.save_pretrained(tmp_path / "enc")
    cfg = ac_config(encoder=None, encoder_path=str(tmp_path / "enc"))
    cfg.embed_encoder_config()
    assert cfg.encoder == to_dict(enc.config)
    model = JEPAWorldModel(cfg)
    model.prepare_for_training()
    for (name, p), q in zip(model.encoder.named_parameters(), enc.target.parameters()):
        assert torch.equal(p, q), name
        assert not p.requires_grad
    with pytest.raises(WorldlineError):
        JEPAWorldModel(ac_config(encoder=None, encoder_path=str(tmp_path / "nope")))


def test_pretrainer_embeds_per_frame():
    model = encoder_model().eval()
    assert isinstance(model, JEPAEncoderPretrainer)
    z = model.embed(torch.rand(2, 3, 3, 64, 64) * 2 - 1)
    assert z.shape == (2, 3, model.config.dim, 4, 4)
    with pytest.raises(WorldlineError):
        model.embed(torch.rand(1, 1, 3, 60, 60))


def test_train_encoder_then_ac_model_end_to_end(tmp_path):
    from _data_helpers import write_dataset
    from worldline.core.pretrained import load_pretrained
    from worldline.train.run import train

    write_dataset(tmp_path / "data", [12, 10], size=32)
    enc_cfg = RunConfig.from_dict({**load_preset("jepa-encoder", "debug"), "data": {"path": str(tmp_path / "data"), "val_fraction": 0.0}})
    enc_cfg.train.steps, enc_cfg.train.eval_every = 2, 0
    enc_dir = train(enc_cfg, tmp_path / "enc", progress=False)
    ac = load_preset("jepa-ac", "debug")
    ac["model"].pop("encoder")
    ac["model"]["encoder_path"] = str(enc_dir)
    ac_cfg = RunConfig.from_dict({**ac, "data": {"path": str(tmp_path / "data"), "val_fraction": 0.0}})
    ac_cfg.train.steps, ac_cfg.train.eval_every = 2, 0
    final = train(ac_cfg, tmp_path / "ac", progress=False)
    model = load_pretrained(final)
    assert isinstance(model, JEPAWorldModel) and model.config.image_size == (32, 32)
    enc = load_pretrained(enc_dir)
    assert all(torch.equal(p, q) for p, q in zip(model.encoder.parameters(), enc.target.parameters()))


def _square_frames(cols, size=32, side=4):
    """(n, 1, 3, size, size) frames of a white square on black, its column at each of ``cols``."""
    frames = -torch.ones(len(cols), 1, 3, size, size)
    for i, c in enumerate(cols):
        frames[i, 0, :, 14 : 14 + side, c : c + side] = 1.0
    return frames


def test_keypoints_follow_a_moving_object_where_pooled_tokens_go_flat():
    """The keypoint distance to a goal keeps growing as a thin object moves away; the 1x1 pooled one
    stops changing once the object has left the goal's patch (the Reacher arm's flat landscape)."""
    from worldline.models.jepa.encoder import VisionEncoder

    torch.manual_seed(0)
    enc = VisionEncoder(dim=24, depth=1, heads=2, mlp_ratio=2.0, patch=4, tubelet=1).eval()
    frames = _square_frames([0, 4, 8, 12, 16, 20, 24, 28])
    with torch.no_grad():
        kp = enc.encode_keypoints(frames, 1, tau=0.05)[:, 0, :, 0, 0]  # (n, 48)
        avg = enc.encode_frames(frames, 1, 8)[:, 0].flatten(1)  # (n, 24*8*8) unpooled patch tokens
    assert kp.shape == (8, 48) and kp.abs().max() <= 1
    d_kp = (kp - kp[0]).abs().mean(1)
    d_avg = (avg - avg[0]).abs().mean(1)
    assert (d_kp[1:].diff() > 0).float().mean() >= 0.8, d_kp  # keeps growing with the distance
    assert d_kp[-1] > 3 * d_kp[1]
    assert d_avg[-1] < 1.5 * d_avg[2], d_avg  # once the squares stop overlapping, pooled distances plateau


def test_keypoint_model_embeds_one_token_of_coordinates_and_plans_shapes():
    torch.manual_seed(0)
    model = JEPAWorldModel(ac_config(pool="keypoints")).eval()
    D = model.encoder_config.dim
    assert model.embed_dim == 2 * D and model.grid == 1
    frames = torch.rand(2, 2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        z = model.embed(frames)
        state = model.init_state(frames, torch.rand(2, 1, 2) * 512)
        out = model.imagine(state, torch.rand(2, 3, 2) * 512)
        pics = model.decode(out)
    assert z.shape == (2, 2, 1, 2 * D) and out.shape == (2, 3, 1, 2 * D) and pics.shape == (2, 3, 3, 64, 64)
    with pytest.raises(ValueError, match="pool"):
        ac_config(pool="max").__post_init__()


# ----------------------------------------------------------------------------------------------
# pool: projector (LeWM): encoder and predictor trained end to end under SIGReg
# ----------------------------------------------------------------------------------------------


def test_sigreg_is_small_for_standard_normal_and_large_otherwise():
    from worldline.nn.sigreg import sigreg

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 256, 32, generator=g)
    normal = sigreg(x, generator=g)
    for bad in (x * 0.1, x * 3, x + 1, torch.zeros_like(x) + 0.5, x.abs()):
        assert sigreg(bad, generator=g) > 5 * normal
    with pytest.raises(ValueError):
        sigreg(torch.randn(1, 8))


def test_sigreg_gradient_spreads_collapsed_embeddings():
    from worldline.nn.sigreg import sigreg

    torch.manual_seed(0)
    z = (0.01 * torch.randn(128, 8)).requires_grad_()
    opt = torch.optim.Adam([z], lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        sigreg(z, projections=64).backward()
        opt.step()
    std = z.detach().std(0)
    assert std.min() > 0.6 and std.max() < 1.4, std
    assert z.detach().mean(0).abs().max() < 0.3


def test_projector_model_trains_its_encoder(tmp_path):
    """pool: projector needs no pretrained encoder, trains it (no latent cache) and saves it with the model."""
    from _data_helpers import write_dataset
    from worldline.core.pretrained import load_pretrained
    from worldline.train.run import train

    write_dataset(tmp_path / "data", [12, 10], size=32)
    ac = load_preset("jepa-ac", "debug")
    ac["model"].pop("encoder")
    ac["model"].update(pool="projector", latent_dim=8, projector_hidden=16)
    cfg = RunConfig.from_dict({**ac, "data": {"path": str(tmp_path / "data"), "val_fraction": 0.0}})
    cfg.train.steps, cfg.train.eval_every = 3, 0
    final = train(cfg, tmp_path / "ac", progress=False)
    model = load_pretrained(final)
    assert isinstance(model, JEPAWorldModel) and not model.uses_latents and model.embed_dim == 8
    torch.manual_seed(cfg.train.seed)
    fresh = JEPAWorldModel(model.config)
    assert any(not torch.equal(p, q) for p, q in zip(model.encoder.parameters(), fresh.encoder.parameters()))
    assert [f.name.startswith("observation.image") for f in (tmp_path / "data" / "cache").iterdir()] == [True]  # frames only, no latents
    z = model.eval().embed(torch.rand(2, 3, 3, 32, 32) * 2 - 1)
    assert z.shape == (2, 3, 1, 8)


def _slider(n, length, size=32, seed=0):
    """Episodes of a square whose column moves by 3 px per unit of action: (frames (n, T, 3, s, s), actions (n, T, 1), columns (n, T))."""
    g = torch.Generator().manual_seed(seed)
    actions = torch.rand(n, length, 1, generator=g) * 2 - 1
    cols = torch.zeros(n, length)
    cols[:, 0] = torch.rand(n, generator=g) * (size - 6)
    for t in range(1, length):
        cols[:, t] = (cols[:, t - 1] + 3 * actions[:, t - 1, 0]).clamp(0, size - 6)
    frames = -torch.ones(n, length, 3, size, size)
    for i in range(n):
        for t in range(length):
            c = int(cols[i, t].round())
            frames[i, t, :, 12:18, c : c + 6] = 1.0
    return frames, actions, cols


def test_end_to_end_embedding_learns_the_controlled_position_and_does_not_collapse():
    """A few hundred LeWM steps on a square moved by the action: the one-token embedding comes to
    encode the square's column (held-out linear probe), stays spread (SIGReg), the predictor beats
    copying the last embedding, and the inverse-dynamics head reads the action back from it."""
    from worldline.models.jepa.diagnostics import channel_spread, linear_probe_r2

    torch.manual_seed(0)
    enc = {"type": "jepa_encoder", "image_size": [32, 32], "frames": 1, "patch": 8, "dim": 32, "depth": 1, "heads": 2,
           "pred_dim": 16, "pred_depth": 1, "pred_heads": 2}
    cfg = ac_config(pool="projector", encoder=enc, image_size=(32, 32), latent_dim=8, projector_hidden=32,
                    action_space=ActionSpec(kind="continuous", dim=1, low=[-1.0], high=[1.0]),
                    frameskip=1, context_frames=2, train_horizon=2, rollout_steps=1, dim=32, depth=1, probe=False, idm_weight=0.5)
    model = JEPAWorldModel(cfg)
    frames, actions, cols = _slider(64, 4)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for step in range(250):
        i = torch.randint(0, 64, (32,))
        loss, logs = model.loss({"frames": frames[i], "actions": actions[i]})
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    test_frames, test_actions, test_cols = _slider(64, 4, seed=1)
    with torch.no_grad():
        z = model.embed(test_frames)  # (64, 4, 1, 8)
        _, logs = model.loss({"frames": test_frames, "actions": test_actions})
    flat = z.flatten(0, 1)[:, 0]
    assert channel_spread(flat) > 0.5
    assert linear_probe_r2(flat.numpy(), test_cols.flatten()[:, None].numpy())[0] > 0.8
    assert logs["tf_mse"] < 0.5 * logs["copy_mse"], logs
    assert logs["idm"] < 0.5 / 3, logs  # actions are U(-1, 1): variance 1/3 (clamping at the edges hides some)
    with pytest.raises(ValueError, match="idm_weight"):
        ac_config(pool="avg", idm_weight=1.0).__post_init__()
    with pytest.raises(ValueError, match="sigreg_motion"):
        ac_config(pool="keypoints", sigreg_motion=True).__post_init__()


def test_motion_sigreg_ignores_what_never_moves_within_a_window():
    """sigreg_motion tests the embeddings minus their window mean: an encoder that adds a per-window
    constant (Reacher's target) changes the plain SIGReg term, not the motion one."""
    torch.manual_seed(0)
    model = JEPAWorldModel(ac_config(pool="projector", latent_dim=8, projector_hidden=16, probe=False, rollout_steps=0))
    batch = {"frames": torch.rand(16, model.window(), 3, 64, 64) * 2 - 1, "actions": torch.rand(16, model.window(), 2) * 512}
    offset = torch.randn(16, 1, 1, 8) * 3  # a different constant per window
    terms = {}
    for motion in (False, True):
        model.config.sigreg_motion = motion
        for shifted in (False, True):
            plain = model.project
            model.project = (lambda f, p=plain: p(f) + offset) if shifted else plain
            torch.manual_seed(1)  # the same random SIGReg directions
            terms[motion, shifted] = model.loss(batch)[1]["sigreg"]
            model.project = plain
    assert terms[True, False] == pytest.approx(terms[True, True], rel=1e-4)
    assert terms[False, True] > 1.5 * terms[False, False]  # the offsets spread the plain term away from N(0, I)


def test_frames_sigreg_adds_the_plain_test_to_the_motion_one():
    """sigreg_frames_weight: the per-window constants that motion SIGReg ignores count again, at that weight."""
    torch.manual_seed(0)
    model = JEPAWorldModel(ac_config(pool="projector", latent_dim=8, projector_hidden=16, probe=False, rollout_steps=0,
                                     sigreg_motion=True, sigreg_frames_weight=0.5))
    batch = {"frames": torch.rand(16, model.window(), 3, 64, 64) * 2 - 1, "actions": torch.rand(16, model.window(), 2) * 512}
    offset = torch.randn(16, 1, 1, 8) * 3
    plain, out = model.project, {}
    for shifted in (False, True):
        model.project = (lambda f, p=plain: p(f) + offset) if shifted else plain
        torch.manual_seed(1)
        out[shifted] = model.loss(batch)[1]
    model.project = plain
    assert out[True]["sigreg"] == pytest.approx(out[False]["sigreg"], rel=1e-4)
    assert out[True]["sigreg_frames"] > 1.5 * out[False]["sigreg_frames"]
    with pytest.raises(ValueError, match="sigreg_frames_weight"):
        dataclasses.replace(ac_config(pool="projector"), sigreg_frames_weight=0.5)


def _proprio_config(**kw) -> JEPAConfig:
    enc = {"type": "jepa_encoder", "image_size": [32, 32], "frames": 1, "patch": 8, "dim": 16, "depth": 1, "heads": 2,
           "pred_dim": 8, "pred_depth": 1, "pred_heads": 2}
    base = dict(encoder=enc, image_size=(32, 32), grid=2, action_space=ActionSpec(kind="continuous", dim=1, low=[-1.0], high=[1.0]),
                context_frames=2, train_horizon=2, rollout_steps=2, dim=32, depth=1, probe_width=4, proprio=True,
                proprio_names=["column"], proprio_mean=[13.0], proprio_std=[7.5])
    return ac_config(**{**base, **kw})


def test_proprioception_is_read_predicted_and_carried_through_imagined_rollouts():
    """V-JEPA 2-AC's proprioceptive input: on the slider, with its column as the robot's reading, the
    predictor learns the next reading from the current one and the action, two steps rolled out
    (imagined), far better than holding the last reading."""
    torch.manual_seed(0)
    model = JEPAWorldModel(_proprio_config())
    assert model.uses_proprio and model.proprio_mean.tolist() == [13.0]
    frames, actions, cols = _slider(64, 4)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    for step in range(150):
        i = torch.randint(0, 64, (32,))
        loss, logs = model.loss({"frames": frames[i], "actions": actions[i], "states": cols[i, :, None]})
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert {"proprio_mse", "rollout_proprio_mse"} <= set(logs)
    model.eval()
    frames, actions, cols = _slider(64, 4, seed=1)
    with torch.no_grad():
        state = model.init_state(frames[:, :2], actions[:, :1], context_proprio=cols[:, :2, None])
        for t in (1, 2):  # imagined: each step's reading comes from the model's own previous prediction
            state, _ = model.step(state, actions[:, t])
        guess = state.proprio[:, -1, 0] * 7.5 + 13.0  # back to pixels
    err = (guess - cols[:, 3]).abs().mean()
    hold = (cols[:, 1] - cols[:, 3]).abs().mean()
    assert err < 0.25 * hold, (err, hold)
    z = model.imagine(model.init_state(frames[:, :2], actions[:, :1], context_proprio=cols[:, :2, None]), actions[:, 1:3])
    assert torch.allclose(z[:, -1], state.z[:, -1], atol=1e-5)  # imagine and step agree


def test_proprioception_bad_input_gives_clear_errors():
    torch.manual_seed(0)
    model = JEPAWorldModel(_proprio_config()).eval()
    frames, actions = torch.rand(2, 2, 3, 32, 32) * 2 - 1, torch.zeros(2, 1, 1)
    with pytest.raises(WorldlineError, match=r"reads proprioception: pass context_proprio \(B, T, 1\) with channels \['column'\]"):
        model.init_state(frames, actions)
    with pytest.raises(WorldlineError, match=r"context_proprio must be \(2, 2, 1\)"):
        model.init_state(frames, actions, context_proprio=torch.zeros(2, 2, 3))
    with pytest.raises(WorldlineError, match="NaN"):
        model.init_state(frames, actions, context_proprio=torch.full((2, 2, 1), float("nan")))
    with pytest.raises(WorldlineError, match="no 'states'"):
        model.loss({"frames": torch.rand(2, 4, 3, 32, 32), "actions": torch.zeros(2, 4, 1)})
    plain = JEPAWorldModel(_proprio_config(proprio=False)).eval()
    with pytest.raises(WorldlineError, match="trained without proprioception"):
        plain.init_state(frames, actions, context_proprio=torch.zeros(2, 2, 1))
    with pytest.raises(WorldlineError, match="no observation.state channels"):
        JEPAWorldModel(_proprio_config(proprio_names=[], proprio_mean=[], proprio_std=[]))
    cfg = _proprio_config()
    cfg.bind_proprio({"features": {"observation.state": {"shape": [2], "names": {"motors": ["lift", "grip"]}}}},
                     {"observation.state": {"mean": [1.0, 2.0], "std": [0.5, 0.0]}})  # LeRobot's names; a channel that never moves
    assert cfg.proprio_names == ["lift", "grip"] and cfg.proprio_mean == [1.0, 2.0] and cfg.proprio_std == [0.5, 1e-3]
    with pytest.raises(WorldlineError, match="needs a dataset with proprioception"):
        cfg.bind_proprio({"features": {"action": {"shape": [1]}}}, {})
    with pytest.raises(ValueError, match="proprio_mean and proprio_std"):
        _proprio_config(proprio_std=[1.0, 2.0]).__post_init__()
