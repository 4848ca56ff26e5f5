"""The diffusion world model family: EDM preconditioning, samplers, the DiT and the model contract.

A tiny real ``continuous`` tokenizer at 16x16 (saved to disk, as training loads it) and a one-block
DiT keep the whole file to seconds; only the text test loads the shared sentence encoder.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from worldline.core.config import to_dict
from worldline.core.contracts import ActionSpec
from worldline.core.errors import WorldlineError
from worldline.core.pretrained import load_pretrained
from worldline.data.windows import EpisodeStore
from worldline.models.diffusion import DiffusionConfig, DiffusionWorldModel
from worldline.models.diffusion.edm import EDM, karras_sigmas
from worldline.models.diffusion.model import residual_std
from worldline.models.diffusion.samplers import sample
from worldline.nn.attention import ConvMlp, Mlp
from worldline.nn.adaln import AdaLNModulation, AdaLNShared, gate_frames, modulate_frames
from worldline.nn.embeddings import NoiseLevelEmbedding
from worldline.tokenizers import ContinuousTokenizer, ContinuousTokenizerConfig

SIZE = 16
CONT = ActionSpec(kind="continuous", dim=2, low=[0.0, -2.0], high=[10.0, 2.0])
DISC = ActionSpec(kind="discrete", dim=1, n=4)


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = ContinuousTokenizerConfig(image_size=(SIZE, SIZE), channels=(8, 16), blocks=(0, 1), latent_channels=4)
    path = tmp_path_factory.mktemp("tok") / "final"
    ContinuousTokenizer(cfg).save_pretrained(path)
    return path


def make_model(tok_dir, spec: ActionSpec = CONT, seed: int = 0, randomise: bool = True, **kw) -> DiffusionWorldModel:
    fields = dict(tokenizer_path=str(tok_dir), action_space=spec, image_size=(SIZE, SIZE), context_frames=2,
                  chunk_frames=1, width=24, depth=1, heads=2, mlp_ratio=2.0)
    fields.update(kw)
    torch.manual_seed(seed)
    model = DiffusionWorldModel(DiffusionConfig(**fields))
    model.prepare_for_training()
    if randomise:  # give the zero-initialised layers (adaLN, output) weights, as training would
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(0.2 * torch.randn(p.shape, generator=g))
    return model.eval()


def frames(B: int, T: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, T, 3, SIZE, SIZE, generator=g) * 2 - 1


def cont_actions(B: int, T: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(B, T, 2, generator=g)
    return torch.stack([a[..., 0] * 10, a[..., 1] * 4 - 2], dim=-1)  # inside CONT's box


def roll(model, ctx, actions, seed=0, **kw):
    torch.manual_seed(seed)
    with torch.no_grad():
        return model.rollout(ctx, actions, **kw)


# ----------------------------------------------------------------------------------------------
# EDM and samplers
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma_data", [1.0, 0.5])
def test_edm_preconditioning_identities(sigma_data):
    edm = EDM(sigma_data=sigma_data)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(200_000, generator=g) * sigma_data
    n = torch.randn(200_000, generator=g)
    for s in (0.002, 0.05, 0.5, 1.0, 5.0, 80.0):
        sigma = torch.tensor(s)
        c_skip, c_out, c_in, c_noise = edm.precondition(sigma)
        x = x0 + s * n
        assert (c_in * x).std().item() == pytest.approx(1.0, abs=0.01)  # unit-variance network input at every sigma
        target = edm.network_target(x0, x, sigma)
        assert target.std().item() == pytest.approx(1.0, abs=0.01)  # and a unit-variance regression target
        assert torch.allclose(edm.denoise(target, x, sigma), x0, atol=1e-4 * max(1.0, s))  # D(F*) = x0
        assert (edm.loss_weight(sigma) * c_out**2).item() == pytest.approx(1.0, rel=1e-5)  # weighted loss = MSE of F
        assert (c_skip * sigma_data**2 + c_out**2).item() == pytest.approx(c_skip.item() * (s**2 + sigma_data**2), rel=1e-5)
        assert c_noise.item() == pytest.approx(math.log(s) / 4)
    c_skip, c_out, _, _ = edm.precondition(torch.tensor(1e-8))
    assert c_skip.item() == pytest.approx(1.0) and c_out.item() == pytest.approx(0.0, abs=1e-6)  # no noise: D = identity


def test_training_noise_levels_are_log_normal():
    edm = EDM(p_mean=-0.4, p_std=1.2)
    log_s = edm.sample_sigma(100_000, generator=torch.Generator().manual_seed(0)).log()
    assert log_s.mean().item() == pytest.approx(-0.4, abs=0.02)
    assert log_s.std().item() == pytest.approx(1.2, abs=0.02)


def test_karras_schedule():
    s = karras_sigmas(5, 0.002, 80.0)
    assert s.shape == (6,) and s[0].item() == pytest.approx(80.0) and s[-2].item() == pytest.approx(0.002) and s[-1] == 0
    assert bool((s[1:] < s[:-1]).all())
    assert karras_sigmas(1, 0.002, 5.0).tolist() == [5.0, 0.0]
    with pytest.raises(ValueError):
        karras_sigmas(0, 0.002, 5.0)


@pytest.mark.parametrize("method", ["euler", "heun"])
def test_samplers_are_deterministic_under_a_seed_and_exact_for_a_point_mass(method):
    target = torch.randn(3, 4)
    point = lambda x, sigma: target.expand_as(x)  # noqa: E731  the ideal denoiser of data that is always ``target``
    sigmas = karras_sigmas(4, 0.002, 5.0)
    out = sample(point, (3, 4), sigmas, method=method, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, target, atol=1e-5)

    shrink = lambda x, sigma: x / (1 + sigma[:, None] ** 2)  # noqa: E731  ideal denoiser of N(0, 1) data
    a = sample(shrink, (3, 4), sigmas, method=method, generator=torch.Generator().manual_seed(7))
    b = sample(shrink, (3, 4), sigmas, method=method, generator=torch.Generator().manual_seed(7))
    c = sample(shrink, (3, 4), sigmas, method=method, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    with pytest.raises(ValueError):
        sample(point, (3, 4), sigmas, method="ddim")


def test_heun_integrates_the_gaussian_ode_better_than_euler():
    # For N(0, 1) data the probability-flow ODE maps x_T to x_T / sqrt(1 + sigma_max^2) exactly.
    shrink = lambda x, sigma: x / (1 + sigma[:, None] ** 2)  # noqa: E731
    sigmas = karras_sigmas(12, 0.002, 5.0)
    err = {}
    for method in ("euler", "heun"):
        g = torch.Generator().manual_seed(0)
        out = sample(shrink, (1000, 1), sigmas, method=method, generator=g)
        x_t = torch.randn((1000, 1), generator=torch.Generator().manual_seed(0)) * 5.0
        exact = x_t / math.sqrt(1 + 25.0)
        err[method] = (out - exact).abs().mean().item()
    assert err["heun"] < err["euler"] / 3, err


# ----------------------------------------------------------------------------------------------
# nn pieces
# ----------------------------------------------------------------------------------------------


def test_adaln_starts_as_identity_and_lora_shares_one_projection():
    mod = AdaLNModulation(8, 6, chunks=3)
    cond = torch.randn(2, 5, 8)
    shift, scale, gate = mod(cond)
    assert shift.shape == (2, 5, 6) and not shift.any() and not gate.any()  # adaLN-Zero
    x = torch.randn(2, 5 * 4, 6)  # 5 frames of 4 tokens
    assert torch.equal(modulate_frames(x, scale, shift), x)
    s, b = torch.randn(2, 5, 6), torch.randn(2, 5, 6)
    y = modulate_frames(x, s, b).reshape(2, 5, 4, 6)
    assert torch.allclose(y[:, 3, 2], x.reshape(2, 5, 4, 6)[:, 3, 2] * (1 + s[:, 3]) + b[:, 3])  # per-frame, per-token
    assert torch.allclose(gate_frames(x, s).reshape(2, 5, 4, 6)[:, 1], x.reshape(2, 5, 4, 6)[:, 1] * s[:, 1, None])

    shared, lora = AdaLNShared(64, 4), AdaLNModulation(64, 64, chunks=6, lora_rank=4)
    assert lora(shared(torch.randn(3, 64)))[0].shape == (3, 64)
    full = AdaLNModulation(64, 64, chunks=6)
    assert sum(p.numel() for p in lora.parameters()) < sum(p.numel() for p in full.parameters()) / 10


def test_conv_mlp_starts_as_the_mlp_and_mixes_only_neighbours_within_a_frame(tok_dir):
    torch.manual_seed(0)
    conv, plain = ConvMlp(6, 12), Mlp(6, 12)
    plain.load_state_dict({k: v for k, v in conv.state_dict().items() if not k.startswith("dw.")})
    grid = (2, 4, 4)  # 2 frames of 4x4 tokens
    x = torch.randn(3, 32, 6)
    assert torch.allclose(conv(x, grid), plain(x), atol=1e-6)  # zero conv: the plain MLP
    with torch.no_grad():
        conv.dw.weight.normal_()
    y = x.clone()
    y[:, 5] += 1.0  # token (frame 0, row 1, col 1)
    changed = (conv(y, grid) - conv(x, grid)).abs().amax(-1).amax(0) > 1e-6  # (32,) which tokens moved
    moved = {int(i) for i in changed.nonzero()}
    assert moved == {r * 4 + c for r in range(3) for c in range(3)}  # its 3x3 neighbourhood in frame 0 only
    model = make_model(tok_dir, local_mix=True)  # the DiT with it: every block's MLP mixes, a rollout runs
    assert all(isinstance(b.mlp, ConvMlp) for b in model.net.blocks)
    assert roll(model, frames(2, 2), cont_actions(2, 3)).frames.shape == (2, 3, 3, SIZE, SIZE)


def test_noise_level_embedding_separates_levels():
    emb = NoiseLevelEmbedding(16)
    c = torch.log(torch.tensor([0.01, 0.1, 1.0, 10.0])) / 4
    out = emb(c)
    assert out.shape == (4, 16)
    assert torch.cdist(out, out).triu(1)[torch.triu(torch.ones(4, 4), 1).bool()].min() > 0
    assert emb(c[None].expand(3, 4)).shape == (3, 4, 16)  # per-frame levels


# ----------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------


def test_tiny_overfit_memorises_one_batch(tok_dir):
    model = make_model(tok_dir, randomise=False, short_context_prob=0.0, cond_drop=0.0, context_noise_max=0.0,
                       width=32, depth=2, p_mean=0.0, p_std=0.5).train()
    batch = {"frames": frames(2, 3, seed=3), "actions": cont_actions(2, 3)}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=3e-3)
    losses = []
    for _ in range(150):
        torch.manual_seed(0)  # the same noise and sigma every step: one fixed regression problem
        loss, logs = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0], (losses[0], losses[-1])
    assert set(logs) >= {"loss_F", "mse_x0", "copy_mse"}


def test_rollout_loss_feeds_the_models_own_predictions_as_context(tok_dir):
    model = make_model(tok_dir, rollout_steps=2, short_context_prob=0.0, cond_drop=0.0).train()
    K = model.config.context_frames
    assert model.window() == K + 3  # the teacher-forced chunk and two rolled-out ones
    batch = {"frames": frames(2, K + 3, seed=3), "actions": cont_actions(2, K + 3)}
    z = model.batch_latents(batch)
    acts = torch.cat([torch.zeros_like(batch["actions"][:, :1]), batch["actions"][:, :-1]], dim=1)  # into each frame
    predicted, seen = [], []
    real_predict, real_chunk = model.predict_chunk, model.chunk_loss

    def predict(ctx, present, frame_actions, *rest):
        out = real_predict(ctx, present, frame_actions, *rest)
        predicted.append((ctx.clone(), frame_actions.clone(), out))
        return out

    def chunk(ctx, present, target, frame_actions, *rest):
        seen.append((ctx.clone(), target.clone(), frame_actions.clone()))
        return real_chunk(ctx, present, target, frame_actions, *rest)

    model.predict_chunk, model.chunk_loss = predict, chunk
    loss, logs = model.loss(batch)
    assert len(predicted) == 2 and len(seen) == 3 and logs["loss_rollout"] > 0
    assert torch.equal(predicted[0][0], z[:, :K]) and torch.equal(predicted[0][1], acts[:, : K + 1])
    for r in (1, 2):  # chunk r: the context ends with the model's predictions, the target is the real frame
        ctx, target, frame_actions = seen[r]
        assert torch.equal(ctx[:, -1], predicted[r - 1][2][:, 0]) and torch.equal(target, z[:, K + r : K + r + 1])
        assert torch.equal(frame_actions, acts[:, r : K + r + 1])
    assert torch.equal(seen[2][0][:, -2], predicted[0][2][:, 0])  # both context frames are its own by chunk 2
    loss.backward()
    assert all(p.grad is not None for p in model.net.blocks.parameters() if p.requires_grad)
    with pytest.raises(WorldlineError, match="windows of"):
        model.loss({"frames": frames(2, K + 1), "actions": cont_actions(2, K + 1)})


def test_residual_std_comes_from_consecutive_latents_within_episodes():
    rng = np.random.default_rng(0)
    lat = rng.normal(size=(30, 2, 3, 3)).astype(np.float32)
    store = EpisodeStore({"latents": lat, "actions": np.zeros((30, 1), np.float32)}, [0, 10], [10, 20])
    std = torch.tensor([2.0, 0.5])
    got = residual_std(store, torch.zeros(2), std)
    pairs = [i for i in range(29) if i != 9]  # 9 -> 10 crosses episodes
    d = (lat[[i + 1 for i in pairs]] - lat[pairs]) / std.numpy()[:, None, None]
    assert np.allclose(got, np.sqrt((d**2).mean(axis=(0, 2, 3))), rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# conditioning and sampling
# ----------------------------------------------------------------------------------------------


def test_actions_change_the_output_and_guidance_zero_ignores_them(tok_dir):
    model = make_model(tok_dir)
    ctx, a, b = frames(2, 2), cont_actions(2, 3, seed=1), cont_actions(2, 3, seed=2)
    ra, ra2, rb = roll(model, ctx, a), roll(model, ctx, a), roll(model, ctx, b)
    assert torch.equal(ra.frames, ra2.frames)  # deterministic under a seed
    assert (ra.latents - rb.latents).abs().max() > 1e-3  # actions matter
    model.set_sampling(guidance=0.0)  # unconditional: the actions must not matter at all
    assert torch.allclose(roll(model, ctx, a).latents, roll(model, ctx, b).latents, atol=1e-5)
    model.set_sampling(guidance=3.0)
    assert (roll(model, ctx, a).latents - ra.latents).abs().max() > 1e-3
    with pytest.raises(WorldlineError):
        model.set_sampling(guidance=-0.5)


def test_pointer_actions_reach_the_tokens_where_they_point(tok_dir):
    model = make_model(tok_dir, action_xy=[0, 1], action_map=False)
    ctx, a = frames(2, 2), cont_actions(2, 3, seed=1)
    b = a.clone()
    b[..., 0] = 10.0 - b[..., 0]  # point elsewhere
    assert (roll(model, ctx, a).latents - roll(model, ctx, b).latents).abs().max() > 1e-3
    assert sum(p.numel() for p in model.pointer_map.parameters()) < 1000  # one small map for all tokens
    with pytest.raises(WorldlineError, match="action_xy"):
        make_model(tok_dir, spec=DISC, action_xy=[0, 1])
    with pytest.raises(ValueError, match="action_xy"):
        DiffusionConfig(tokenizer_path=str(tok_dir), action_xy=[1, 1])


def test_discrete_actions_and_heun_sampling(tok_dir):
    model = make_model(tok_dir, spec=DISC, sampler="heun", sample_steps=3)
    a = torch.tensor([[[0.0], [1.0]], [[2.0], [3.0]]])
    out = roll(model, frames(2, 2), a)
    assert out.frames.shape == (2, 2, 3, SIZE, SIZE)
    assert (out.latents - roll(model, frames(2, 2), 3 - a).latents).abs().max() > 1e-3
    with pytest.raises(WorldlineError):
        model.step(model.init_state(frames(2, 2)), torch.tensor([[4.0], [0.0]]))  # index out of range


def test_text_conditioning_changes_the_output(tok_dir):
    model = make_model(tok_dir, text=True)
    ctx, a = frames(2, 2), cont_actions(2, 2)
    left = roll(model, ctx, a, text=["push the block left", "push the block left"])
    right = roll(model, ctx, a, text=["push the block right", "push the block right"])
    none = roll(model, ctx, a)
    assert (left.latents - right.latents).abs().max() > 1e-4
    assert (left.latents - none.latents).abs().max() > 1e-4
    model.set_sampling(guidance=0.0)  # unconditional = the null prompt
    assert torch.allclose(roll(model, ctx, a, text=["push the block left"] * 2).latents, roll(model, ctx, a).latents, atol=1e-5)
    model.train()
    loss, _ = model.loss({"frames": frames(2, 3), "actions": cont_actions(2, 3), "text": ["a", "b"]})
    assert torch.isfinite(loss)
    with pytest.raises(WorldlineError):
        model.loss({"frames": frames(2, 3), "actions": cont_actions(2, 3)})  # a text model needs text in its batches


def test_chunked_rollout_length_and_continuity(tok_dir):
    model = make_model(tok_dir, chunk_frames=2)
    seen = []
    generate = model.generate

    def spy(state, actions, generator=None):
        z = generate(state, actions, generator)
        seen.append((state.z.clone(), actions.clone(), z.clone()))
        return z

    model.generate = spy
    ctx, a = frames(2, 2), cont_actions(2, 5)
    out = roll(model, ctx, a)
    assert out.frames.shape == (2, 5, 3, SIZE, SIZE) and out.latents.shape[:2] == (2, 5)
    assert [s[1].shape[1] for s in seen] == [2, 2, 1]  # chunks of 2, the last one short
    assert torch.equal(torch.cat([s[2] for s in seen], dim=1), out.latents)
    for (_, _, prev), (ctx_z, acts, _) in zip(seen, seen[1:]):
        assert torch.equal(ctx_z, prev[:, -2:])  # each chunk is conditioned on the last K frames of the one before
    assert torch.equal(seen[1][1], a[:, 2:4]) and torch.equal(seen[2][1], a[:, 4:])
    assert torch.isfinite(out.frames).all() and out.frames.abs().max() <= 1


def test_step_matches_a_one_frame_rollout_and_clones(tok_dir):
    model = make_model(tok_dir)
    ctx, a = frames(2, 3), cont_actions(2, 3)
    state = model.init_state(ctx, a[:, :2])
    assert state.z.shape[1] == 2 and bool(state.has_action.all())  # the last K = 2 frames, both reached by known actions
    branch = state.clone()
    torch.manual_seed(4)
    state, frame = model.step(state, a[:, 2])
    torch.manual_seed(4)
    _, again = model.step(branch, a[:, 2])
    assert frame.shape == (2, 3, SIZE, SIZE) and torch.equal(frame, again)
    assert state.z.shape[1] == 2 and not torch.equal(state.z, branch.z)
    torch.manual_seed(4)
    one = model.rollout(ctx, a[:, 2:3], context_actions=a[:, :2])
    assert torch.allclose(one.frames[:, 0], frame, atol=1e-5)


def test_text2world_and_video2world_run(tok_dir):
    model = make_model(tok_dir)
    a = cont_actions(2, 3)
    t2w = roll(model, None, a)  # no context frames at all
    assert t2w.frames.shape == (2, 3, 3, SIZE, SIZE) and torch.isfinite(t2w.frames).all()
    v2w = roll(model, frames(2, 1), a)  # one context frame, fewer than context_frames
    assert v2w.frames.shape == (2, 3, 3, SIZE, SIZE)
    assert (t2w.latents - v2w.latents).abs().max() > 1e-3  # the context is used


def test_bad_inputs_raise_clear_errors(tok_dir):
    model = make_model(tok_dir)
    state = model.init_state(frames(2, 2))
    with pytest.raises(WorldlineError, match="context_frames"):
        model.init_state(torch.zeros(2, 3, SIZE, SIZE))  # not a video
    with pytest.raises(WorldlineError, match="trained on"):
        model.init_state(frames(2, 2)[..., :8, :8])  # wrong resolution
    with pytest.raises(WorldlineError, match="columns"):
        model.step(state, torch.zeros(2, 3))  # wrong action width
    with pytest.raises(WorldlineError, match="context_actions"):
        model.init_state(frames(2, 3), cont_actions(2, 1))  # 3 frames need 2 (or 3) context actions
    with pytest.raises(WorldlineError, match="guidance"):
        model.set_sampling(guidance=-1.0)
    with pytest.raises(WorldlineError, match="without text"):
        model.rollout(frames(2, 2), cont_actions(2, 2), text=["go left", "go left"])
    with pytest.raises(WorldlineError, match="list of 2"):
        model.init_state(frames(2, 2), text="go left")
    with pytest.raises(ValueError):
        DiffusionConfig(tokenizer_path=str(tok_dir), width=30, heads=4)  # head size 7.5
    with pytest.raises(ValueError):
        DiffusionConfig(tokenizer_path=str(tok_dir), guidance=-1.0)


def test_save_load_keeps_statistics_and_sampling(tok_dir, tmp_path):
    model = make_model(tok_dir, adaln_lora_rank=4)
    model.residual_std.fill_(0.25)
    model.set_sampling(steps=2, sampler="heun", guidance=1.5)
    model.save_pretrained(tmp_path / "m")
    again = load_pretrained(tmp_path / "m").eval()
    assert torch.equal(again.residual_std, model.residual_std)
    assert (again.config.sample_steps, again.config.sampler, again.config.guidance) == (2, "heun", 1.5)
    assert to_dict(again.config) == to_dict(model.config)
    ctx, a = frames(1, 2), cont_actions(1, 2)
    assert torch.equal(roll(model, ctx, a).frames, roll(again, ctx, a).frames)
    lora = sum(p.numel() for p in model.net.parameters())
    full = sum(p.numel() for p in make_model(tok_dir).net.parameters())
    assert lora < full  # adaLN-LoRA is smaller


def test_command_line_sampling_options_reach_the_sampler(tok_dir):
    from worldline.cli.sampling import set_sampling

    model = make_model(tok_dir)
    ctx, a = frames(1, 2), cont_actions(1, 3)
    one = roll(model, ctx, a).frames
    set_sampling(model, None, 0, 1.0, steps=4, sampler="heun", guidance=2.0)
    assert (model.config.sample_steps, model.config.sampler, model.config.guidance) == (4, "heun", 2.0)
    assert not torch.allclose(roll(model, ctx, a).frames, one)  # the sampler really changed
    for bad, match in [(dict(steps=0), "sample-steps"), (dict(sampler="ddim"), "unknown sampler"), (dict(guidance=-1.0), "guidance")]:
        with pytest.raises(WorldlineError, match=match):
            set_sampling(model, None, 0, 1.0, **bad)
    with pytest.raises(WorldlineError, match="token models"):
        set_sampling(model, 0.7, 0, 1.0)  # temperature means nothing to a diffusion model
    from worldline.models.baseline import DeterministicConfig, DeterministicWorldModel

    with pytest.raises(WorldlineError, match="apply to diffusion"):
        set_sampling(DeterministicWorldModel(DeterministicConfig(tokenizer_path=str(tok_dir), image_size=(SIZE, SIZE))), None, 0, 1.0, guidance=2.0)
