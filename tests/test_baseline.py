"""The deterministic baseline world model, its action embedding and the latent cache.

Every test uses a tiny real ``continuous`` tokenizer (saved to disk, as training loads it) at 16x16
and a debug-sized predictor, so the whole file runs in seconds.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from worldline.core.config import build_model, load_preset, to_dict
from worldline.core.contracts import ActionSpec, Rollout
from worldline.core.errors import WorldlineError
from worldline.data.latent_cache import build_latent_store, latent_channel_stats
from worldline.data.windows import EpisodeStore, WindowSampler
from worldline.models.baseline import DeterministicConfig, DeterministicState, DeterministicWorldModel
from worldline.nn.embeddings import ActionEmbedding, ActionMap, FiLM, PointerActionMap, modulate
from worldline.tokenizers import ContinuousTokenizer, ContinuousTokenizerConfig, FSQTokenizer, FSQTokenizerConfig
from worldline.train.config import RunConfig

SIZE = 16
CONT = ActionSpec(kind="continuous", dim=2, low=[0.0, -2.0], high=[10.0, 2.0])
DISC = ActionSpec(kind="discrete", dim=1, n=4)


def tiny_tokenizer(seed: int = 0, temporal: int = 1) -> ContinuousTokenizer:
    torch.manual_seed(seed)
    cfg = ContinuousTokenizerConfig(image_size=(SIZE, SIZE), channels=(8, 16), blocks=(0, 1), latent_channels=4,
                                    temporal_compression=temporal, num_frames=1 + temporal if temporal > 1 else 1)
    return ContinuousTokenizer(cfg)


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "final"
    tiny_tokenizer().save_pretrained(path)
    return path


def debug_config(tok_dir, spec: ActionSpec = CONT, **kw) -> DeterministicConfig:
    fields = dict(tokenizer_path=str(tok_dir), action_space=spec, image_size=(SIZE, SIZE), context_frames=2,
                  train_horizon=3, rollout_steps=3, width=8, channel_mult=(1, 2), blocks_per_level=1, action_dim=16)
    fields.update(kw)
    return DeterministicConfig(**fields)


def make_model(tok_dir, spec: ActionSpec = CONT, seed: int = 0, **kw) -> DeterministicWorldModel:
    torch.manual_seed(seed)
    model = DeterministicWorldModel(debug_config(tok_dir, spec, **kw))
    model.prepare_for_training()
    return model


def randomize(model: nn.Module, seed: int = 1) -> None:
    """Give the zero-initialised layers (FiLM, residual convs, output) weights, as training would."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.2 * torch.randn(p.shape, generator=g))


def frames(B: int, T: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, T, 3, SIZE, SIZE, generator=g) * 2 - 1


def cont_actions(B: int, T: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(B, T, 2, generator=g)
    return torch.stack([a[..., 0] * 10, a[..., 1] * 4 - 2], dim=-1)  # inside CONT's box


# ----------------------------------------------------------------------------------------------
# nn/embeddings
# ----------------------------------------------------------------------------------------------


def test_action_embedding_kinds():
    disc = ActionEmbedding(DISC, 8)
    out = disc(torch.tensor([[[0.0], [3.0]]]))  # (1, 2, 1) -> (1, 2, 8)
    assert out.shape == (1, 2, 8)
    assert torch.equal(out[0, 1], disc.table.weight[3])

    cont = ActionEmbedding(CONT, 8)
    low, high = torch.tensor([0.0, -2.0]), torch.tensor([10.0, 2.0])
    assert torch.allclose(cont(low), cont.mlp(cont.features.fourier(-torch.ones(2))))  # bounds map to -1 / +1 before the MLP
    assert torch.allclose(cont(high), cont.mlp(cont.features.fourier(torch.ones(2))))
    assert torch.allclose(cont((low + high) / 2), cont.mlp(cont.features.fourier(torch.zeros(2))))

    inf = ActionEmbedding(ActionSpec(kind="continuous", dim=1, low=[float("-inf")], high=[float("inf")]), 4)
    assert torch.allclose(inf(torch.tensor([0.5])), inf.mlp(inf.features.fourier(torch.tensor([0.5]))))  # unbounded columns pass through

    feats = inf.features.fourier(torch.tensor([0.5]))
    assert torch.equal(feats[1:7], torch.zeros(6)) and torch.equal(feats[7:], torch.ones(6))  # no Fourier features

    # Fourier features tell apart positions 1/32 of the box apart far more than the raw value does.
    a, b = cont.features.fourier(torch.tensor([0.0, 0.0])), cont.features.fourier(torch.tensor([1 / 32, 0.0]))
    assert (a - b).norm() > 20 * (1 / 32)
    assert cont.features.fourier(torch.zeros(2)).shape == (2 * 13,)

    none = ActionEmbedding(ActionSpec(), 8)
    assert none(torch.zeros(3, 5, 0)).shape == (3, 5, 8)
    assert any(p.requires_grad for p in none.parameters())


def test_action_map_gives_each_position_its_own_vector():
    cont = ActionMap(CONT, tokens=6, dim=4)
    out = cont(torch.tensor([[1.0, 0.5], [9.0, -1.5]]))  # (2, A) -> (2, 6, 4)
    assert out.shape == (2, 6, 4)
    assert not torch.allclose(out[0, 0], out[0, 1])  # positions differ
    assert not torch.allclose(out[0], out[1])  # actions differ
    # Linear in the features: the map of a mix of feature vectors is the mix of the maps.
    f = cont.features(torch.tensor([[1.0, 0.5], [9.0, -1.5]]))
    torch.testing.assert_close(torch.einsum("bf,fnd->bnd", f, cont.maps), out)

    disc = ActionMap(DISC, tokens=6, dim=4)
    torch.testing.assert_close(disc(torch.tensor([[[2.0]]]))[0, 0], disc.maps[2])
    assert ActionMap(ActionSpec(), tokens=6, dim=4)(torch.zeros(3, 0)).abs().sum() == 0


def test_pointer_action_map_is_shared_across_places():
    box = ActionSpec(kind="continuous", dim=3, low=[0.0, -1.0, 0.0], high=[80.0, 1.0, 40.0])  # x in col 0, y in col 2
    pmap = PointerActionMap(box, grid=(4, 8), dim=5, xy=[0, 2])  # 4 rows x 8 columns: a token is 10 x 10 action units
    with torch.no_grad():
        pmap.proj.weight.normal_()
    at = lambda x, y, other=0.0: pmap(torch.tensor([x, other, y]))  # noqa: E731  (N, dim)
    grid = lambda out: out.reshape(4, 8, 5)  # noqa: E731  (rows, cols, dim)
    a, moved = grid(at(25.0, 13.0)), grid(at(35.0, 23.0))  # one token right and one down
    # Translation equivariance: the token one right and one down of another sees what it saw.
    torch.testing.assert_close(moved[1:, 1:], a[:-1, :-1])
    # Local: a token far from the place gets almost nothing but the bias.
    near, far = (grid(at(5.0, 5.0)) - pmap.proj.bias)[0, 0], (grid(at(5.0, 5.0)) - pmap.proj.bias)[3, 7]
    assert far.norm() < 0.02 * near.norm()
    assert not torch.allclose(a[1, 2], grid(at(21.0, 13.0))[1, 2])  # sub-token moves are seen
    torch.testing.assert_close(at(25.0, 13.0, other=0.9), at(25.0, 13.0))  # the other columns play no part
    with pytest.raises(ValueError, match="continuous"):
        PointerActionMap(DISC, (4, 8), 5, [0, 1])
    with pytest.raises(ValueError, match="two action columns"):
        PointerActionMap(box, (4, 8), 5, [0, 3])
    with pytest.raises(ValueError, match="finite bounds"):
        PointerActionMap(ActionSpec(kind="continuous", dim=2, low=[0.0, None], high=[1.0, None]), (4, 8), 5, [0, 1])


def test_film_starts_as_identity_and_modulates():
    film = FiLM(cond_dim=6, channels=4)
    x, c = torch.randn(2, 4, 3, 3), torch.randn(2, 6)
    assert torch.equal(film(x, c), x)
    scale, shift = torch.randn(2, 4), torch.randn(2, 4)
    assert torch.allclose(modulate(x, scale, shift), x * (1 + scale[:, :, None, None]) + shift[:, :, None, None])
    tokens = torch.randn(2, 5, 4)  # (B, N, C)
    assert torch.allclose(modulate(tokens, scale, shift, channels_last=True), tokens * (1 + scale[:, None]) + shift[:, None])


# ----------------------------------------------------------------------------------------------
# the model
# ----------------------------------------------------------------------------------------------


def test_loss_is_finite_and_a_step_reduces_it(tok_dir):
    model = make_model(tok_dir)
    assert model.window() == 5
    batch = {"frames": frames(4, 5), "actions": cont_actions(4, 5)}
    loss, logs = model.loss(batch)
    assert torch.isfinite(loss) and {"tf_mse", "rollout_mse", "copy_mse"} <= set(logs)
    assert all(np.isfinite(v) for v in logs.values())
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert not any(p.requires_grad for p in model.tokenizer.parameters())  # frozen
    opt = torch.optim.Adam(trainable, lr=3e-3)
    for _ in range(3):
        opt.zero_grad()
        model.loss(batch)[0].backward()
        opt.step()
    assert model.loss(batch)[0].item() < loss.item()


def test_untrained_model_copies_the_last_latent(tok_dir):
    model = make_model(tok_dir).eval()
    ctx = frames(2, 2)
    with torch.no_grad():
        z = model.imagine(model.init_state(ctx), cont_actions(2, 3))
        last = model.embed(ctx[:, -1:])
        assert torch.allclose(z, last.expand_as(z), atol=1e-6)  # zero-init output: residual 0
        # with the frame correction, an unchanged latent shows the real last frame, not its reconstruction
        shown = model.rollout(ctx, cont_actions(2, 3)).frames
        assert torch.allclose(shown, ctx[:, -1:].expand_as(shown), atol=1e-5)
        model.config.correction_gate = 0.0
        plain = model.rollout(ctx, cont_actions(2, 3)).frames
        assert torch.allclose(plain, model.decode(last).expand_as(plain), atol=1e-6)
        assert not torch.allclose(plain, shown, atol=1e-3)


@pytest.mark.parametrize("correct", [True, False], ids=["corrected", "decoded"])
def test_rollout_shapes_and_step_matches_rollout(tok_dir, correct):
    model = make_model(tok_dir, correction_gate=0.1 if correct else 0.0).eval()
    randomize(model)
    ctx, acts = frames(3, 2), cont_actions(3, 6)
    with torch.no_grad():
        out = model.rollout(ctx, acts)
        assert isinstance(out, Rollout)
        assert out.frames.shape == (3, 6, 3, SIZE, SIZE) and out.latents.shape == (3, 6, 4, SIZE // 4, SIZE // 4)
        assert out.frames.min() >= -1 and out.frames.max() <= 1
        state = model.init_state(ctx)
        before = state.clone()
        stepped = []
        for t in range(6):
            state, frame = model.step(state, acts[:, t])
            stepped.append(frame)
        assert torch.allclose(torch.stack(stepped, 1), out.frames, atol=1e-5)
        assert torch.allclose(model.frames(before, out.latents), out.frames, atol=1e-6)
        assert torch.allclose(model.imagine(before, acts), out.latents, atol=1e-6)
        assert isinstance(state, DeterministicState) and state.z.shape == (3, 2, 4, 4, 4)


def test_deterministic_under_a_seed(tok_dir):
    a, b = make_model(tok_dir, seed=3), make_model(tok_dir, seed=3)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    randomize(a), randomize(b)
    ctx, acts = frames(2, 2), cont_actions(2, 4)
    with torch.no_grad():
        assert torch.equal(a.rollout(ctx, acts).frames, b.rollout(ctx, acts).frames)
        assert torch.equal(a.rollout(ctx, acts).frames, a.rollout(ctx, acts).frames)


def test_save_load_is_self_contained_and_identical(tok_dir, tmp_path):
    tok_copy = tmp_path / "tok"
    shutil.copytree(tok_dir, tok_copy)
    model = make_model(tok_copy)
    randomize(model)
    model.set_latent_stats(torch.tensor([0.1, -0.2, 0.3, 0.0]), torch.tensor([0.5, 1.5, 2.0, 0.25]))
    model.save_pretrained(tmp_path / "wm")
    shutil.rmtree(tok_copy)  # the world model dir alone must be enough
    loaded = DeterministicWorldModel.from_pretrained(tmp_path / "wm")
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    assert any(k.startswith("tokenizer.") for k in loaded.state_dict())
    assert torch.equal(loaded.latent_std, torch.tensor([0.5, 1.5, 2.0, 0.25]))
    ctx, acts = frames(2, 2), cont_actions(2, 4)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.rollout(ctx, acts).frames, loaded.rollout(ctx, acts).frames)
    saved = json.loads((tmp_path / "wm" / "config.json").read_text())
    assert saved["type"] == "deterministic" and saved["tokenizer"]["type"] == "continuous"


@pytest.mark.parametrize("spec", [CONT, DISC], ids=["continuous", "discrete"])
def test_actions_change_the_prediction(tok_dir, spec):
    model = make_model(tok_dir, spec).eval()
    randomize(model)
    ctx = frames(2, 2)
    if spec.kind == "discrete":
        a, b = torch.zeros(2, 3, 1), torch.full((2, 3, 1), 3.0)
    else:
        a, b = cont_actions(2, 3, seed=0), cont_actions(2, 3, seed=1)
    with torch.no_grad():
        diff = (model.rollout(ctx, a).latents - model.rollout(ctx, b).latents).abs().max()
    assert diff > 1e-3


def test_short_context_is_padded_and_long_context_truncated(tok_dir):
    model = make_model(tok_dir).eval()
    one = frames(1, 1)
    with torch.no_grad():
        padded = model.init_state(one).z
        assert padded.shape[1] == 2 and torch.equal(padded[:, 0], padded[:, 1])
        long = frames(1, 5)
        assert torch.equal(model.init_state(long).z, model.init_state(long[:, -2:]).z)


def test_bad_inputs_give_one_line_errors(tok_dir):
    model = make_model(tok_dir).eval()
    state = model.init_state(frames(2, 2))
    cases = [
        (lambda: model.init_state(torch.zeros(2, 2, 3, 32, 32)), "trained on 16x16"),
        (lambda: model.init_state(torch.zeros(2, 3, SIZE, SIZE)), "(B, T, 3, H, W)"),
        (lambda: model.init_state(torch.zeros(2, 2, 1, SIZE, SIZE)), "(B, T, 3, H, W)"),
        (lambda: model.init_state(torch.full((1, 2, 3, SIZE, SIZE), float("nan"))), "NaN"),
        (lambda: model.step(state, torch.zeros(2, 3)), "3 columns"),
        (lambda: model.step(state, torch.zeros(2)), "(B, A)"),
        (lambda: model.step(state, torch.full((2, 2), float("nan"))), "NaN"),
        (lambda: model.rollout(frames(2, 2), torch.zeros(3, 4, 2)), "B=2"),
        (lambda: model.rollout(frames(2, 2), torch.zeros(2, 4, 5)), "5 columns"),
        (lambda: model.decode(torch.zeros(1, 2, 3, 4, 4)), "latents must be"),
        (lambda: model.loss({"frames": frames(1, 3), "actions": cont_actions(1, 3)}), "windows of 5"),
    ]
    for fn, needle in cases:
        with pytest.raises(WorldlineError) as e:
            fn()
        assert needle in str(e.value) and "\n" not in str(e.value)
    disc = make_model(tok_dir, DISC).eval()
    with pytest.raises(WorldlineError, match="outside 0..3"):
        disc.rollout(frames(1, 2), torch.full((1, 2, 1), 4.0))


def test_tokenizer_requirements(tok_dir, tmp_path):
    tiny_tokenizer(temporal=2).save_pretrained(tmp_path / "ct2")
    with pytest.raises(WorldlineError, match="temporal compression 1"):
        DeterministicWorldModel(debug_config(tmp_path / "ct2"))
    FSQTokenizer(FSQTokenizerConfig(image_size=(SIZE, SIZE), channels=(8, 16), blocks=(0, 1))).save_pretrained(tmp_path / "fsq")
    with pytest.raises(WorldlineError, match="continuous tokenizer"):
        DeterministicWorldModel(debug_config(tmp_path / "fsq"))
    with pytest.raises(WorldlineError, match="tokenizer_path is required"):
        DeterministicWorldModel(debug_config("", tokenizer_path=""))
    with pytest.raises(WorldlineError, match="no such tokenizer directory"):
        DeterministicWorldModel(debug_config(tmp_path / "missing"))


def test_bind_dataset_fills_dataset_fields(tok_dir):
    cfg = DeterministicConfig(tokenizer_path=str(tok_dir))
    info = {"features": {"observation.image": {"dtype": "video", "shape": [SIZE, SIZE, 3]}},
            "worldline": {"action_space": to_dict(DISC)}}
    cfg.bind_dataset(info, {})
    assert cfg.action_space == DISC and tuple(cfg.image_size) == (SIZE, SIZE)
    assert cfg.tokenizer["type"] == "continuous" and cfg.tokenizer["latent_channels"] == 4
    with pytest.raises(WorldlineError, match="action_space"):
        DeterministicConfig(tokenizer_path=str(tok_dir)).bind_dataset({"features": info["features"]}, {})
    model = build_model(cfg)
    assert model.action_spec == DISC


def test_preset_resolves_to_a_valid_run_config():
    for size in ("debug", "small"):
        run = RunConfig.from_dict(load_preset("wm-deterministic", size))
        assert isinstance(run.model, DeterministicConfig)
        assert run.model.rollout_steps <= run.model.train_horizon


# ----------------------------------------------------------------------------------------------
# the latent cache
# ----------------------------------------------------------------------------------------------


def frame_store(lengths=(7, 5, 6), seed=0) -> EpisodeStore:
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    starts = np.cumsum([0, *lengths[:-1]])
    arrays = {
        "frames": rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8),
        "actions": rng.uniform(0, 1, (n, 2)).astype(np.float32),
        "rewards": rng.standard_normal(n).astype(np.float32),
        "dones": np.zeros(n, bool),
    }
    return EpisodeStore(arrays, starts, lengths)


def test_latent_cache_encodes_once_and_reuses(tmp_path, monkeypatch):
    tok = tiny_tokenizer().eval()
    store = frame_store()
    latents = build_latent_store(store, tok, tmp_path, batch_size=5, progress=False)
    z = latents.arrays["latents"]
    assert z.dtype == np.float16 and z.shape == (18, 4, 4, 4)
    assert "frames" not in latents.arrays
    for key in ("actions", "rewards", "dones"):
        assert np.array_equal(latents.arrays[key], store.arrays[key])
    assert np.array_equal(latents.episode_lengths, store.episode_lengths)
    with torch.no_grad():
        x = torch.from_numpy(store.arrays["frames"][3:4]).permute(0, 3, 1, 2)[:, None].float() / 127.5 - 1
        ref = tok.encode(x)[0, 0].numpy()
    assert np.allclose(z[3].astype(np.float32), ref, atol=2e-3)
    entries = list(tmp_path.glob("latents-*"))
    assert len(entries) == 1 and not list(tmp_path.glob(".*"))

    def boom(*a, **k):
        raise AssertionError("re-encoded a cached store")

    monkeypatch.setattr(tok, "encode", boom)
    again = build_latent_store(store, tok, tmp_path, progress=False)
    assert np.array_equal(again.arrays["latents"], z)
    monkeypatch.undo()

    other = tiny_tokenizer(seed=1)  # other weights -> another entry, the first one kept
    build_latent_store(store, other, tmp_path, progress=False)
    assert len(list(tmp_path.glob("latents-*"))) == 2
    changed = frame_store(seed=5)  # new frames -> a new entry, entries of the old frames removed
    build_latent_store(changed, tok, tmp_path, progress=False)
    assert len(list(tmp_path.glob("latents-*"))) == 1


def test_model_latent_store_sets_normalisation_and_matches_frame_loss(tok_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLDLINE_CACHE", str(tmp_path))
    model = make_model(tok_dir)
    randomize(model)
    store = model.latent_store(frame_store())
    mean, std = latent_channel_stats(store)
    assert np.allclose(model.latent_mean.numpy(), mean, atol=1e-6) and np.allclose(model.latent_std.numpy(), std, atol=1e-6)
    assert std.min() > 0
    assert list((tmp_path / "latents").glob("latents-*"))
    sampler = WindowSampler(store, model.window(), [0, 1, 2])
    frames_sampler = WindowSampler(frame_store(), model.window(), [0, 1, 2])
    idx = np.arange(len(sampler))
    with torch.no_grad():
        from_latents = model.loss(sampler.batch(idx))[0]
        from_frames = model.loss(frames_sampler.batch(idx))[0]
    assert torch.allclose(from_latents, from_frames, rtol=1e-2)


def test_video_only_model_takes_empty_actions(tok_dir):
    model = make_model(tok_dir, ActionSpec()).eval()
    with torch.no_grad():
        out = model.rollout(frames(2, 2), torch.zeros(2, 3, 0))
        assert out.frames.shape == (2, 3, 3, SIZE, SIZE)
        loss, _ = model.loss({"frames": frames(2, 5), "actions": torch.zeros(2, 5, 0)})
        assert torch.isfinite(loss)
    with pytest.raises(WorldlineError, match="takes no actions"):
        model.rollout(frames(2, 2), torch.zeros(2, 3, 2))
