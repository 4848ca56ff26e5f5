"""The autoregressive token world model: KV cache and fast path against full passes, overfit, actions,
sampling, bad input, and the int16 latent cache. The debug preset with an untrained debug fsq tokenizer."""

import dataclasses

import numpy as np
import pytest
import torch

from worldline.core.config import build_model, load_preset, to_dict
from worldline.core.contracts import ActionSpec
from worldline.core.errors import WorldlineError
from worldline.core.pretrained import load_pretrained
from worldline.models.autoregressive import AutoregressiveWorldModel, Sampling
from worldline.models.autoregressive.decoding import sample
from worldline.models.autoregressive.network import ARCache
from worldline.train.config import RunConfig

H = W = 64
DISCRETE = ActionSpec(kind="discrete", dim=1, n=3)


def fsq_debug(**over):
    return {**to_dict(RunConfig.from_dict(load_preset("tokenizer-fsq", "debug")).model), **over}


def make(seed=0, action_space=DISCRETE, tokenizer=None, **over) -> AutoregressiveWorldModel:
    """The debug model over a debug fsq tokenizer with 64 ids (1000 would make every test slower)."""
    cfg = RunConfig.from_dict(load_preset("wm-autoregressive", "debug")).model
    tokenizer = tokenizer or fsq_debug(levels=[4, 4, 4])
    cfg = dataclasses.replace(cfg, action_space=action_space, tokenizer=tokenizer, image_size=(H, W), **over)
    torch.manual_seed(seed)
    return build_model(cfg)


def scramble(model, std=0.3, seed=0):
    """Random weights large enough that greedy decoding varies from token to token (an untrained
    model repeats one id, which would make every equality below trivially true)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.net.named_parameters():
            if p.dim() >= 2 or name in ("no_action", "slot_embed"):
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return model


def frames(B, T, seed=0):
    return torch.rand(B, T, 3, H, W, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_kv_cache_gives_the_logits_of_a_full_forward_pass():
    model = scramble(make(depth=2)).eval()
    model.net.double()
    net, K, N = model.net, model.config.context_frames, model.net.tokens_per_frame
    B, T = 2, K + 3  # longer than the band, so the cache has to slide
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.vocab_size, (B, T, N), generator=g)
    vecs = net.action_inputs(torch.randint(0, 3, (B, T, 1), generator=g).double())
    x = net.embed_frames(ids, vecs)  # (B, T * (1 + N), dim)
    frames_, slots = net.layout(0, T)
    with torch.no_grad():
        full = net.logits(net(x, frames_, slots))
        cache, pieces, i, dropped = ARCache.empty(len(net.blocks), x.device), [], 0, 0
        for size in [3, 1, 70, 1, 1, 64, 5, 100, 40, 1, 1, 10_000]:  # uneven chunks, across frame boundaries
            j = min(i + size, x.shape[1])
            before = len(cache)
            cache.drop_before(int(frames_[i]) - K)
            dropped += before - len(cache)
            pieces.append(net.logits(net(x[:, i:j], frames_[i:j], slots[i:j], cache=cache)))
            i = j
            if i == x.shape[1]:
                break
        assert dropped > 0  # the window slid
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-9, atol=1e-9)


def test_decoded_tokens_are_the_argmax_of_a_teacher_forced_pass():
    model = scramble(make(depth=2), std=0.2).eval()
    model.net.double()
    ctx, actions = frames(2, 2), torch.randint(0, 3, (2, 6, 1)).double()
    with torch.no_grad():
        for mode in ("cached", "fast"):
            model.decode_mode = mode
            state = model.init_state(ctx, actions[:, :1])
            ids = model.imagine(state, actions[:, 1:5])  # (2, 4, h, w), past the window of 2
            all_ids = torch.cat([state.ids, ids], dim=1)
            logits, _ = model.teacher_forced(all_ids, actions)
            target = all_ids[:, 2:].flatten(2)
            agree = (logits[:, 1:].argmax(-1) == target).float().mean()
            assert agree == 1.0, (mode, agree)
    assert target.unique().numel() > 10  # decoding did not collapse to one id


def test_fast_greedy_reproduces_plain_greedy_in_fewer_passes():
    """Draft heads trained on frames that count 0..63, the third head then scrambled: passes of the
    fast path accept some drafts and reject others, and greedy output must not change."""
    model = make(depth=1, dim=32, heads=2, medusa_heads=3, drafter="medusa")
    ids = torch.arange(64).reshape(1, 1, 8, 8).repeat(2, 3, 1, 1)
    batch = {"latents": ids.float(), "actions": torch.zeros(2, 3, 1)}
    opt = torch.optim.Adam(model.net.parameters(), lr=1e-2)
    for _ in range(40):
        loss, logs = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert logs["acc"] == 1.0 and logs["draft1_acc"] > 0.3, logs
    with torch.no_grad():
        model.net.draft_heads[2].proj.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(0))
    model.eval()
    model.net.double()
    calls = {"n": 0}
    forward = model.net.forward

    def counting(*args, **kwargs):
        calls["n"] += 1
        return forward(*args, **kwargs)

    model.net.forward = counting
    g = torch.Generator().manual_seed(0)
    ctx = torch.randint(0, model.vocab_size, (2, 2, 8, 8), generator=g)
    ctx[:, 1, :4] = torch.arange(32).reshape(4, 8)  # half counting, half noise
    actions = torch.zeros(2, 4, 1).double()
    out, passes = {}, {}
    with torch.no_grad():
        for mode in ("nocache", "cached", "fast"):
            model.decode_mode = mode
            state = _state_from_ids(model, ctx, actions[:, :1])
            calls["n"] = 0
            out[mode] = model.imagine(state, actions[:, 1:])
            passes[mode] = calls["n"]
    assert torch.equal(out["fast"], out["cached"])
    assert torch.equal(out["nocache"], out["cached"])  # one block: no older context reaches a cached key
    N, steps = model.net.tokens_per_frame, actions.shape[1] - 1
    assert passes["cached"] == steps * N
    assert steps * N / 4 < passes["fast"] < steps * N, passes  # some drafts kept, some rejected

    # The previous-frame drafter on the same model: the context's counting half is copied in long
    # accepted runs, its noise half is rejected token by token, and later frames (all counting) go in
    # runs of draft_len + 1; the output is still plain greedy.
    model.config.drafter, model.config.draft_len = "previous", 15
    model.decode_mode = "fast"
    with torch.no_grad():
        calls["n"] = 0
        copied = model.imagine(_state_from_ids(model, ctx, actions[:, :1]), actions[:, 1:])
    assert torch.equal(copied, out["cached"])
    first = 1 + 2 + 32  # action slot, the counting half in two runs of 16, then the noise half one by one
    assert first - 2 <= calls["n"] - 2 * (1 + 4) <= first + 2, calls["n"]  # later frames: 1 + 64 / 16 passes


def test_tiny_overfit_and_actions_change_the_prediction():
    """Two clips share their first two frames; their actions differ and so do their third frames. The
    model must learn both, and its rollout must follow the action it is given."""
    model = make(depth=2, dim=32, heads=2)
    g = torch.Generator().manual_seed(0)
    ctx = torch.randint(0, model.vocab_size, (1, 2, 8, 8), generator=g).repeat(2, 1, 1, 1)
    nxt = torch.randint(0, model.vocab_size, (2, 1, 8, 8), generator=g)
    ids = torch.cat([ctx, nxt], dim=1)  # (2, 3, 8, 8)
    actions = torch.tensor([[0.0], [2.0]])[:, None].expand(2, 3, 1).clone()  # clip 0 acts 0, clip 1 acts 2
    batch = {"latents": ids.float(), "actions": actions}
    model.config.action_dropout = 0.0
    opt = torch.optim.Adam(model.net.parameters(), lr=3e-3)
    for _ in range(150):
        loss, logs = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert logs["ce"] < 0.05 and logs["acc"] == 1.0, logs
    model.eval()
    with torch.no_grad():
        logits, _ = model.teacher_forced(ids, actions)
        assert torch.equal(logits[:, -1].argmax(-1), nxt.flatten(1))
        for mode in ("cached", "fast"):  # from the shared context, each action gives its own frame
            model.decode_mode = mode
            state = _state_from_ids(model, ctx[:1].expand(2, -1, -1, -1), actions[:, :1])
            pred = model.imagine(state, actions[:, 1:2])[:, 0]
            assert torch.equal(pred, nxt[:, 0]), mode


def _state_from_ids(model, ids, context_actions):
    """init_state on frames whose tokens are ``ids`` (the untrained tokenizer is bypassed)."""
    real = model.encode_frames
    model.encode_frames = lambda f: ids
    try:
        return model.init_state(torch.zeros(ids.shape[0], ids.shape[1], 3, H, W), context_actions)
    finally:
        model.encode_frames = real


def test_sampling_rules():
    logits = torch.tensor([[0.0, 3.0, 2.9, -1.0]]).repeat(500, 1)
    greedy = sample(logits, Sampling())
    assert torch.equal(greedy, torch.ones(500, dtype=torch.long))
    assert torch.equal(sample(logits, Sampling(temperature=1.0, top_k=1)), greedy)
    assert torch.equal(sample(logits, Sampling(temperature=1.0, top_p=0.01)), greedy)
    two = sample(logits, Sampling(temperature=1.0, top_k=2))
    assert set(two.tolist()) == {1, 2}
    hot = sample(logits, Sampling(temperature=5.0))
    assert set(hot.tolist()) == {0, 1, 2, 3}
    with pytest.raises(ValueError):
        Sampling(top_p=0.0)


@pytest.mark.parametrize("drafter", ["medusa", "previous"])
def test_fast_sampling_keeps_the_base_distribution(monkeypatch, drafter):
    """Speculative sampling must draw from the base model: the marginals of the first decoded tokens
    match those of plain sampling up to sampling noise (two plain runs differ by ~0.2 here)."""
    monkeypatch.setattr("worldline.models.autoregressive.decoding.FAST_MAX_BATCH", 10_000)
    model = scramble(make(depth=1, medusa_heads=2, drafter=drafter), std=0.3).eval()
    model.sampling = Sampling(temperature=1.0)
    B = 1000
    ctx, actions = frames(1, 1).expand(B, -1, -1, -1, -1), torch.zeros(B, 1, 1)
    out = {}
    with torch.no_grad():
        state = model.init_state(ctx)
        for mode in ("fast", "cached"):
            model.decode_mode = mode
            out[mode] = model.imagine(state, actions)[:, 0].flatten(1)  # (B, N)
    for j in range(1, 4):
        fast, ref = (torch.bincount(out[m][:, j], minlength=model.vocab_size).float() / B for m in ("fast", "cached"))
        assert ref.max() < 0.5  # a spread-out distribution, so a bias towards the drafts would show
        assert (fast - ref).abs().sum() < 0.4, j


def test_bad_inputs_raise_worldline_errors(tmp_path):
    model = make().eval()
    ids = torch.zeros(1, 2, 8, 8, dtype=torch.long)
    with pytest.raises(WorldlineError, match="vocabulary"):
        model.teacher_forced(ids + model.vocab_size, torch.zeros(1, 2, 1))
    with pytest.raises(WorldlineError, match="vocabulary"):
        model.loss({"latents": (ids - 1).float(), "actions": torch.zeros(1, 2, 1)})
    with pytest.raises(WorldlineError, match="context_frames"):
        model.init_state(frames(1, model.config.context_frames + 1))
    with pytest.raises(WorldlineError, match="text"):
        model.init_state(frames(1, 1), text=["push the T"])
    with pytest.raises(WorldlineError, match="discrete"):
        make(tokenizer=to_dict(RunConfig.from_dict(load_preset("tokenizer-continuous", "debug")).model))

    # model weights saved with one tokenizer (64 ids), loaded with a config naming another (1000 ids)
    model.save_pretrained(tmp_path / "m")
    other = make()
    other.config.tokenizer = fsq_debug()
    other.save_pretrained(tmp_path / "other")
    (tmp_path / "other" / "model.safetensors").write_bytes((tmp_path / "m" / "model.safetensors").read_bytes())
    with pytest.raises(WorldlineError, match="does not match"):
        load_pretrained(tmp_path / "other")

    # training against a tokenizer dir that is not the one the model config embeds
    tok = build_model(RunConfig.from_dict(load_preset("tokenizer-fsq", "debug")).model)  # 1000 ids, the model has 64
    tok.save_pretrained(tmp_path / "tok")
    model.config.tokenizer_path = str(tmp_path / "tok")
    with pytest.raises(WorldlineError, match="levels"):
        model.prepare_for_training()


def test_latent_cache_stores_int16_ids_the_model_trains_on(tmp_path):
    from worldline.data.latent_cache import build_latent_store
    from worldline.data.windows import EpisodeStore, WindowSampler

    model = make()
    rng = np.random.default_rng(0)
    n = 8
    store = EpisodeStore({"frames": rng.integers(0, 256, (n, H, W, 3), dtype=np.uint8),
                          "actions": rng.integers(0, 3, (n, 1)).astype(np.float32)}, [0], [n])
    latents = build_latent_store(store, model.tokenizer, tmp_path / "cache", progress=False)
    z = latents.arrays["latents"]
    assert z.dtype == np.int16 and z.shape == (n, 8, 8)
    x = torch.from_numpy(store.arrays["frames"]).permute(0, 3, 1, 2)[None].float() / 127.5 - 1
    assert torch.equal(torch.from_numpy(np.array(z)).long(), model.encode_frames(x)[0])
    batch = WindowSampler(latents, model.window(), [0]).batch([0, 1])
    loss, logs = model.loss(batch)
    assert torch.isfinite(loss) and logs["ce"] > 0


def test_text_cross_attention_conditions_and_is_not_saved():
    model = make(text=True).eval()
    assert not any("text" in k or "minilm" in k.lower() for k in model.state_dict())  # the encoder is frozen and shared
    ids = torch.randint(0, model.vocab_size, (2, 3, 8, 8))
    batch = {"latents": ids.float(), "actions": torch.zeros(2, 3, 1), "text": ["push the T left", "push the T left"]}
    with torch.no_grad():
        a, _ = model.loss(batch)
        b, _ = model.loss({**batch, "text": ["a red ball bounces", "a red ball bounces"]})
        assert torch.isfinite(a) and not torch.equal(a, b)
        state = model.init_state(frames(1, 1), text=["push the T left"])
        assert state.text[0].shape[-1] == 384
        model.step(state, torch.zeros(1, 1))
    with pytest.raises(WorldlineError, match="prompts"):
        model.init_state(frames(1, 1), text=["one", "two"])
