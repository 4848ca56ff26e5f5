"""The contract suite every tokenizer and world model passes, run on each preset's `debug` size.

A new family joins by shipping a preset: its debug model is built here and checked for shapes,
save/load round trip, determinism under a seed, a finite training step that lowers the loss on one
batch, and rollout length.
"""

import pytest
import torch

from worldline.core.config import build_model, list_presets, load_preset, lookup_model, to_dict
from worldline.core.contracts import ActionSpec, Tokenizer, WorldModel
from worldline.core.errors import WorldlineError
from worldline.core.pretrained import load_pretrained
from worldline.train.config import RunConfig

# variants of a preset's debug model whose code paths differ enough to need the suite too
VARIANTS = {"jepa-ac+lewm": ("jepa-ac", {"pool": "projector", "latent_dim": 8, "projector_hidden": 16, "idm_weight": 0.5})}
PRESETS = sorted(list_presets()) + sorted(VARIANTS)
ACTIONS = ActionSpec(kind="continuous", dim=2, low=[0.0, 0.0], high=[512.0, 512.0])
H = W = 64


def debug_config(preset):
    preset, changes = VARIANTS.get(preset, (preset, {}))
    cfg = RunConfig.from_dict(load_preset(preset, "debug")).model
    for k, v in changes.items():
        setattr(cfg, k, v)
    if hasattr(cfg, "action_space"):
        cfg.action_space = ACTIONS
    if hasattr(cfg, "tokenizer") and cfg.tokenizer is None:
        _, model_cls = lookup_model(cfg.type_name())
        tokenizer = "tokenizer-fsq" if getattr(model_cls, "discrete_tokenizer", False) else "tokenizer-continuous"
        cfg.tokenizer = to_dict(RunConfig.from_dict(load_preset(tokenizer, "debug")).model)
    if hasattr(cfg, "image_size"):
        cfg.image_size = (H, W)
    return cfg


def build(preset, seed=0):
    torch.manual_seed(seed)
    return build_model(debug_config(preset))


def make_batch(model, batch_size=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    T = model.window()
    frames = torch.rand(batch_size, T, 3, H, W, generator=g) * 2 - 1
    batch = {"frames": frames}
    if isinstance(model, WorldModel):
        batch["actions"] = torch.rand(batch_size, T, 2, generator=g) * 512
    return batch


@pytest.fixture(params=PRESETS)
def preset(request):
    return request.param


def is_encoder(model):
    """A representation learner (e.g. JEPA encoder pretraining): trains on frames, embeds them, no decoder."""
    return not isinstance(model, (Tokenizer, WorldModel)) and callable(getattr(model, "embed", None))


def test_preset_builds_a_contract_model(preset):
    model = build(preset)
    assert isinstance(model, (Tokenizer, WorldModel)) or is_encoder(model), type(model)
    assert model.window() >= 1


def test_shapes(preset):
    model = build(preset).eval()
    batch = make_batch(model)
    frames = batch["frames"]
    with torch.no_grad():
        if isinstance(model, Tokenizer):
            z = model.encode(frames)
            ct, ch, cw = model.compression
            assert z.shape[:2] == (2, model.latent_frames(frames.shape[1]))
            assert z.shape[-2:] == (H // ch, W // cw)
            assert z.dtype == (torch.int64 if model.discrete else torch.float32)
            assert model.decode(z).shape == frames.shape
        elif is_encoder(model):
            z = model.embed(frames)
            assert z.shape[:2] == frames.shape[:2] and torch.isfinite(z).all()
        else:
            K = 2
            state = model.init_state(frames[:, :K], batch["actions"][:, :K])
            state, frame = model.step(state, batch["actions"][:, K - 1])
            assert frame.shape == (2, 3, H, W)
            z = model.embed(frames[:, :K])
            assert z.shape[:2] == (2, K)
            traj = model.imagine(model.init_state(frames[:, :K]), torch.rand(2, 3, 2) * 512)
            assert traj.shape[:2] == (2, 3)


def test_rollout_length_and_range(preset):
    model = build(preset).eval()
    if not isinstance(model, WorldModel):
        pytest.skip("tokenizers do not roll out")
    batch = make_batch(model)
    with torch.no_grad():
        actions = torch.rand(2, 5, 2) * 512
        out = model.rollout(batch["frames"][:, :2], actions)
    assert out.frames.shape == (2, 5, 3, H, W)
    assert torch.isfinite(out.frames).all() and out.frames.abs().max() <= 1.0 + 1e-5


def test_save_load_round_trip(preset, tmp_path):
    model = build(preset).eval()
    batch = make_batch(model)
    model.save_pretrained(tmp_path / "m")
    again = load_pretrained(tmp_path / "m")
    assert type(again) is type(model)
    assert to_dict(again.config) == to_dict(model.config)
    with torch.no_grad():
        torch.manual_seed(3)
        a, _ = model.loss(batch)
        torch.manual_seed(3)
        b, _ = again.loss(batch)
    assert torch.equal(a, b)


def test_determinism_under_seed(preset):
    a, b, c = build(preset, seed=5), build(preset, seed=5), build(preset, seed=6)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point() and sa[k].numel() > 1)


def test_finite_training_step_lowers_loss(preset):
    model = build(preset).train()
    batch = make_batch(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-3)
    losses = []
    for _ in range(8):
        torch.manual_seed(0)
        loss, logs = model.loss(batch)
        assert torch.isfinite(loss) and all(isinstance(v, float) for v in logs.values())
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in params if p.grad is not None)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


def test_world_model_rejects_bad_actions(preset):
    model = build(preset).eval()
    if not isinstance(model, WorldModel):
        pytest.skip("world models only")
    batch = make_batch(model)
    state = model.init_state(batch["frames"][:, :2])
    with pytest.raises(WorldlineError):
        model.step(state, torch.zeros(2, 5))  # wrong action width
    with pytest.raises(WorldlineError):
        model.step(state, torch.full((2, 2), float("nan")))
    with pytest.raises(WorldlineError):
        model.init_state(torch.zeros(2, 2, 3, H // 2, W // 2))  # wrong resolution for the checkpoint
