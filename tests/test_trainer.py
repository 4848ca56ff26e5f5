"""The trainer: schedule, optimiser groups, EMA, checkpoints, exact resume, kills, run-dir safety.

A tiny registered model (conv + embedding + GroupNorm, with input noise and dropout so the RNG
matters) trains on a synthetic EpisodeStore. The same file is also the subprocess entry point
(``python tests/test_trainer.py MODE ...``) for the SIGKILL/SIGINT tests and for tests/test_ddp.py.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from worldline.core.config import ModelConfig, register_model
from worldline.core.errors import WorldlineError
from worldline.core.pretrained import PretrainedMixin, load_pretrained
from worldline.data.windows import EpisodeStore, WindowSampler
from worldline.train import checkpoint as ckpt
from worldline.train.config import RunConfig, TrainConfig
from worldline.train.ema import EMA
from worldline.train.trainer import Trainer, lr_at, param_groups

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent


# ----------------------------------------------------------------------------------------------
# A tiny model and a synthetic store
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class TinyConfig(ModelConfig):
    channels: int = 3
    hidden: int = 8
    frames: int = 2
    actions: int = 4
    dropout: float = 0.2  # dropout and input noise make the loss depend on the RNG stream
    noise: float = 0.1
    prepared: bool = False  # set by prepare_for_training, as a world model records its tokenizer

    def bind_dataset(self, info: dict, stats: dict) -> None:
        self.actions = int(info["worldline"]["action_space"]["n"])


@register_model("_tiny_train_test", TinyConfig)
class TinyModel(PretrainedMixin, nn.Module):
    """Predicts frame t+1 from frame t and action t."""

    def __init__(self, config: TinyConfig):
        super().__init__()
        self.config = config
        self.conv = nn.Conv2d(config.channels, config.hidden, 3, padding=1)
        self.norm = nn.GroupNorm(1, config.hidden)
        self.action = nn.Embedding(config.actions, config.hidden)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Conv2d(config.hidden, config.channels, 1)

    def window(self) -> int:
        return self.config.frames

    def prepare_for_training(self) -> None:
        self.config.prepared = True

    def loss(self, batch):
        x = batch["frames"]  # (B, T, C, H, W)
        prev, nxt = x[:, 0], x[:, 1]
        h = self.conv(prev + self.config.noise * torch.randn_like(prev))
        h = h + self.action(batch["actions"][:, 0, 0].long())[:, :, None, None]
        pred = self.head(self.drop(F.gelu(self.norm(h))))
        loss = F.mse_loss(pred, nxt)
        return loss, {"mse": float(loss.detach())}

    def forward(self, batch):
        return self.loss(batch)


def make_store(episodes: int = 6, length: int = 12, size: int = 8) -> EpisodeStore:
    """Squares that move by their action each frame: learnable, and different per episode."""
    rng = np.random.default_rng(0)
    n = episodes * length
    frames = np.zeros((n, size, size, 3), np.uint8)
    actions = rng.integers(0, 4, size=(n, 1)).astype(np.float32)
    moves = [(0, 1), (1, 0), (0, -1), (-1, 0)]
    for e in range(episodes):
        y, x = rng.integers(0, size - 3, size=2)
        colour = rng.integers(64, 255, size=3)
        for t in range(length):
            row = e * length + t
            frames[row, y : y + 3, x : x + 3] = colour
            dy, dx = moves[int(actions[row, 0])]
            y, x = int(np.clip(y + dy, 0, size - 3)), int(np.clip(x + dx, 0, size - 3))
    starts = np.arange(episodes) * length
    return EpisodeStore(
        {"frames": frames, "actions": actions, "rewards": np.zeros(n, np.float32), "dones": np.zeros(n, bool)},
        starts,
        np.full(episodes, length),
    )


def samplers():
    store = make_store()
    return WindowSampler(store, 2, [0, 1, 2, 3, 4]), WindowSampler(store, 2, [5])


def run_config(**train) -> RunConfig:
    base = dict(steps=8, batch_size=4, lr=3e-3, warmup_steps=2, log_every=1, eval_every=4, eval_batches=2,
                ckpt_every=2, keep_last=2, ema_decay=0.9, grad_accum=2, threads=1, seed=3)
    base.update(train)
    return RunConfig(model=TinyConfig(), train=TrainConfig(**base))


def make_trainer(out: Path, cfg: RunConfig | None = None, model_seed: int = 0) -> Trainer:
    cfg = cfg or run_config()
    torch.manual_seed(model_seed)
    model = TinyModel(cfg.model)
    train_s, val_s = samplers()
    return Trainer(cfg, model, train_s, val_s, out, progress=False)


def read_metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def train_losses(out: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(out) if r["split"] == "train"]


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------------------------
# Pieces
# ----------------------------------------------------------------------------------------------


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(steps=100, lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    lrs = [lr_at(s, cfg) for s in range(cfg.steps)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] == pytest.approx(1e-4)
    assert lrs[55] == pytest.approx(1e-4 + 0.5 * 9e-4 * (1 + math.cos(math.pi * 45 / 89)))


def test_weight_decay_only_on_matrices_and_kernels():
    model = TinyModel(TinyConfig())
    groups = param_groups(model, 0.05)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(model.conv.weight), id(model.head.weight)}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    model.norm.weight.requires_grad_(False)
    assert sum(len(g["params"]) for g in param_groups(model, 0.05)) == len(list(model.parameters())) - 1


def test_ema_update_follows_the_formula_and_swaps_back():
    model = nn.Linear(3, 2)
    ema = EMA(model, decay=0.5)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # warm-up decay min(0.5, 1/10) = 0.1
    expected = 0.1 * start + 0.9 * (start + 1)
    torch.testing.assert_close(ema.shadow["weight"], expected)
    trained = model.weight.detach().clone()
    with ema.applied(model):
        torch.testing.assert_close(model.weight.detach(), expected)
    assert torch.equal(model.weight.detach(), trained)


def test_optimizer_state_round_trips_through_a_checkpoint(tmp_path):
    model = TinyModel(TinyConfig())
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-3, betas=(0.9, 0.95))
    train_s, _ = samplers()
    for step in range(2):
        model.loss(train_s.sample(4, step, 0))[0].backward()
        opt.step()
    path = ckpt.save_checkpoint(tmp_path, 2, model, opt, run_config={"a": 1})
    assert path.name == "step-000002"
    assert "pickle" not in (path / ckpt.STATE_JSON).read_text()
    loaded = ckpt.load_checkpoint(path)
    fresh = torch.optim.AdamW(param_groups(TinyModel(TinyConfig()), 0.1), lr=1e-3)
    fresh.load_state_dict(loaded.optimizer_state)
    a, b = opt.state_dict(), fresh.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for i in a["state"]:
        for key in a["state"][i]:
            assert torch.equal(a["state"][i][key], b["state"][i][key])
    assert loaded.run_config == {"a": 1} and loaded.step == 2
    # a checkpoint is also a save_pretrained dir of the (training) weights
    again = load_pretrained(path)
    assert torch.equal(again.conv.weight, model.conv.weight)


def test_corrupt_checkpoint_is_a_one_line_error(tmp_path):
    model = TinyModel(TinyConfig())
    path = ckpt.save_checkpoint(tmp_path, 1, model, None)
    data = (path / ckpt.STATE_TENSORS).read_bytes()
    (path / ckpt.STATE_TENSORS).write_bytes(data[: len(data) // 2])
    with pytest.raises(WorldlineError, match="trainer_state.safetensors") as e:
        ckpt.load_checkpoint(path)
    assert "\n" not in str(e.value)


def test_keep_last_and_hidden_leftovers_are_ignored(tmp_path):
    model = TinyModel(TinyConfig())
    (tmp_path / ".step-000009.tmp-abc").mkdir()  # a killed write
    for step in (1, 2, 3):
        ckpt.save_checkpoint(tmp_path, step, model, None, keep_last=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000002", "step-000003"]


# ----------------------------------------------------------------------------------------------
# fit
# ----------------------------------------------------------------------------------------------


def test_fit_writes_logs_checkpoints_and_ema_export(tmp_path):
    out = tmp_path / "run"
    trainer = make_trainer(out, run_config(steps=12, lr=1e-2))
    final = trainer.fit()
    assert final == out / "final"

    rows = read_metrics(out)
    train_rows = [r for r in rows if r["split"] == "train"]
    val_rows = [r for r in rows if r["split"] == "val"]
    assert [r["step"] for r in train_rows] == list(range(1, 13))
    assert [r["step"] for r in val_rows] == [4, 8, 12]
    for key in ("loss", "mse", "lr", "grad_norm", "steps_per_s", "samples_per_s", "time"):
        assert all(math.isfinite(r[key]) for r in train_rows), key
    assert train_rows[1]["lr"] == pytest.approx(1e-2)  # end of warm-up
    assert train_rows[-1]["lr"] == pytest.approx(1e-3)  # cosine floor
    assert np.mean([r["loss"] for r in train_rows[-3:]]) < np.mean([r["loss"] for r in train_rows[:3]])
    assert list((out / "tb").glob("events.out.tfevents.*"))

    assert [s for s, _ in ckpt.list_checkpoints(out / "checkpoints")] == [10, 12]
    assert (out / "config.yaml").is_file()
    loaded = load_pretrained(final)
    info = json.loads((final / "config.json").read_text())
    assert info["extra"]["step"] == 12 and info["extra"]["run"]["train"]["lr"] == 1e-2
    # the export carries the EMA weights, the checkpoint the raw ones
    for name, p in loaded.named_parameters():
        assert torch.equal(p, trainer.ema.shadow[name]), name
    raw = load_file(str(out / "checkpoints" / "step-000012" / "model.safetensors"))
    assert torch.equal(raw["conv.weight"], trainer.model.conv.weight.detach())
    assert not torch.equal(raw["conv.weight"], loaded.conv.weight)


def test_gradients_are_clipped_to_the_global_norm(tmp_path):
    trainer = make_trainer(tmp_path / "run", run_config(steps=3, grad_clip=1e-3, ema_decay=0.0, eval_every=0))
    seen = []

    def pre_step(opt, args, kwargs):
        seen.append(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in trainer.params])).item())

    trainer.optimizer.register_step_pre_hook(pre_step)
    trainer.fit()
    logged = [r["grad_norm"] for r in read_metrics(tmp_path / "run") if r["split"] == "train"]
    assert all(n <= 1e-3 * 1.001 for n in seen)
    assert all(n > 1e-2 for n in logged)  # the pre-clip norm is what gets logged


def test_bf16_autocast_on_request_and_a_diverged_loss_stops_the_run(tmp_path):
    trainer = make_trainer(tmp_path / "bf16", run_config(steps=2, precision="bf16", eval_every=0))
    dtypes = []
    trainer.model.conv.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    trainer.fit()
    assert dtypes and all(d == torch.bfloat16 for d in dtypes)
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # master weights stay fp32

    cfg = run_config(steps=4, eval_every=0, ckpt_every=1)
    cfg = dataclasses.replace(cfg, model=TinyConfig(noise=float("nan")))
    with pytest.raises(WorldlineError, match="training loss became nan at step 1"):
        make_trainer(tmp_path / "nan", cfg).fit()
    assert ckpt.list_checkpoints(tmp_path / "nan" / "checkpoints") == []


def test_interrupted_and_resumed_run_matches_an_uninterrupted_one_bitwise(tmp_path):
    ref = make_trainer(tmp_path / "ref")
    ref.fit()
    for stop_after in (3, 2):  # stop mid-way (checkpoint at 3), then again at 5
        make_trainer(tmp_path / "resumed").fit(max_steps=stop_after)
    assert not (tmp_path / "resumed" / "final").exists()
    resumed = make_trainer(tmp_path / "resumed", model_seed=123)  # init weights are overwritten by the checkpoint
    resumed.fit()
    assert train_losses(tmp_path / "resumed") == train_losses(tmp_path / "ref")
    vals = lambda out: [r["loss"] for r in read_metrics(out) if r["split"] == "val"]  # noqa: E731
    assert vals(tmp_path / "resumed") == vals(tmp_path / "ref")
    a = load_file(str(tmp_path / "ref" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_of_a_finished_run_does_nothing_and_a_different_config_is_refused(tmp_path):
    out = tmp_path / "run"
    make_trainer(out, run_config(steps=2, eval_every=0)).fit()
    before = (out / "final" / "model.safetensors").stat().st_mtime_ns
    make_trainer(out, run_config(steps=2, eval_every=0, log_every=5)).fit()  # logging changes are fine
    assert (out / "final" / "model.safetensors").stat().st_mtime_ns == before

    with pytest.raises(WorldlineError, match=r"train\.lr: 0\.003 -> 0\.01") as e:
        make_trainer(out, run_config(steps=2, eval_every=0, lr=1e-2)).fit()
    assert "\n" not in str(e.value) and "overwrite" in str(e.value)
    make_trainer(out, run_config(steps=3, eval_every=0, lr=1e-2)).fit(resume=False)
    assert [r["step"] for r in read_metrics(out)] == [1, 2, 3]
    assert json.loads((out / "final" / "config.json").read_text())["extra"]["step"] == 3


def test_checkpoint_of_another_architecture_is_a_one_line_error(tmp_path):
    """Same config, different network code (a family changed between releases): no raw RuntimeError."""
    make_trainer(tmp_path / "run", run_config(steps=2, ckpt_every=2)).fit()
    cfg = run_config(steps=2, ckpt_every=2)
    cfg.model.hidden = 2 * cfg.model.hidden
    other = make_trainer(tmp_path / "other", cfg)
    newest = sorted((tmp_path / "run" / "checkpoints").glob("step-*"))[-1]
    with pytest.raises(WorldlineError, match="does not match the model.*size mismatch"):
        other.load_checkpoint(newest)


def test_train_runs_the_whole_flow_from_a_dataset(tmp_path):
    from worldline.core.contracts import ActionSpec
    from worldline.data.config import DataConfig
    from worldline.data.format import DatasetWriter
    from worldline.train.run import train

    store = make_store(episodes=4, length=10, size=16)
    with DatasetWriter(tmp_path / "ds", fps=10, image_shape=(16, 16, 3), action_spec=ActionSpec(kind="discrete", dim=1, n=4)) as w:
        for e in range(4):
            ep = store.episode(e)
            w.add_episode(np.ascontiguousarray(ep["frames"]), ep["actions"])
    cfg = RunConfig(
        model=TinyConfig(actions=99),  # bind_dataset corrects it from the dataset
        train=TrainConfig(steps=4, batch_size=2, warmup_steps=1, log_every=1, eval_every=2, eval_batches=1, ckpt_every=2, threads=1),
        data=DataConfig(path=str(tmp_path / "ds"), val_fraction=0.25),
    )
    out = tmp_path / "run"
    final = train(cfg, out, progress=False)
    model = load_pretrained(final)
    assert model.config.actions == 4 and model.config.prepared
    import yaml

    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["model"]["actions"] == 4 and saved["model"]["prepared"] is True
    assert [r["step"] for r in read_metrics(out) if r["split"] == "val"] == [2, 4]
    assert train(cfg, out, progress=False) == final  # same config: nothing left to do
    with pytest.raises(WorldlineError, match="different config"):
        train(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=5)), out, progress=False)
    with pytest.raises(WorldlineError, match="data.path"):
        train(dataclasses.replace(cfg, data=DataConfig()), out, progress=False)


# ----------------------------------------------------------------------------------------------
# Killed runs (subprocesses)
# ----------------------------------------------------------------------------------------------


def _spawn(mode: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(HERE), mode, *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"child exited early ({proc.returncode}):\n{proc.stdout.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {path}")
        time.sleep(0.05)


def test_sigkill_mid_checkpoint_write_keeps_the_previous_ones_and_resume_is_exact(tmp_path):
    out, marker = tmp_path / "killed", tmp_path / "in-checkpoint-6"
    child = _spawn("hang-in-checkpoint", out, marker)
    try:
        make_trainer(tmp_path / "ref").fit()
        _wait_for(marker, child)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)

    ckdir = out / "checkpoints"
    assert [s for s, _ in ckpt.list_checkpoints(ckdir)] == [2, 4]
    leftovers = [p.name for p in ckdir.iterdir() if p.name.startswith(".step-000006.tmp-")]
    assert leftovers, "the kill should have hit the write of step 6"
    for _, path in ckpt.list_checkpoints(ckdir):
        assert ckpt.load_checkpoint(path).step in (2, 4)
    assert not (out / "final").exists()

    make_trainer(out, model_seed=7).fit()
    assert train_losses(out) == train_losses(tmp_path / "ref")
    a = load_file(str(tmp_path / "ref" / "final" / "model.safetensors"))
    b = load_file(str(out / "final" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not [p for p in ckdir.iterdir() if p.name.startswith(".")]


def test_sigint_finishes_the_step_checkpoints_and_exits(tmp_path):
    out = tmp_path / "run"
    child = _spawn("slow", out)
    try:
        _wait_for(out / "checkpoints" / "step-000002", child)
        child.send_signal(signal.SIGINT)
        log, _ = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode != 0
    assert "checkpoint saved" in log
    steps = [s for s, _ in ckpt.list_checkpoints(out / "checkpoints")]
    last = train_losses(out)[-1][0]
    assert steps[-1] == last and last < 1000  # stopped early, on a checkpointed step
    state = ckpt.load_checkpoint(out / "checkpoints" / ckpt.step_dir_name(last))
    assert state.step == last


# ----------------------------------------------------------------------------------------------
# Subprocess entry points
# ----------------------------------------------------------------------------------------------


def _main(argv: list[str]) -> None:
    mode = argv[0]
    if mode == "hang-in-checkpoint":
        out, marker = Path(argv[1]), Path(argv[2])
        real_save = ckpt.save_file

        def save_file(tensors, filename, metadata=None):
            real_save(tensors, filename, metadata=metadata)
            if ".step-000006.tmp-" in filename and filename.endswith(ckpt.STATE_TENSORS):
                marker.touch()
                time.sleep(600)

        ckpt.save_file = save_file
        make_trainer(out).fit()
    elif mode == "slow":
        out = Path(argv[1])
        real_loss = TinyModel.loss

        def slow_loss(self, batch):
            time.sleep(0.02)
            return real_loss(self, batch)

        TinyModel.loss = slow_loss
        make_trainer(out, run_config(steps=1000, eval_every=0, grad_accum=1)).fit()
    elif mode == "ddp":
        # under torchrun (tests/test_ddp.py): a reference run, then a run stopped after 4 steps and
        # resumed by fresh Trainer and model objects from its checkpoint
        from safetensors.torch import save_file

        from worldline.train import distributed as D

        out = Path(argv[1])
        info = D.setup("cpu")
        cfg = run_config(steps=6, grad_accum=2, eval_every=3, ckpt_every=3)

        def trainer(path: Path, init_seed: int, record: list | None = None) -> Trainer:
            torch.manual_seed(init_seed)  # different inits per rank: DDP must broadcast rank 0's
            model = TinyModel(cfg.model)
            train_s, val_s = samplers()
            if record is not None:
                real_sample = train_s.sample

                def sample(batch_size, step, seed, rank=0, world_size=1):
                    record.append([step, train_s.sample_indices(batch_size, step, seed, rank, world_size).tolist()])
                    return real_sample(batch_size, step, seed, rank, world_size)

                train_s.sample = sample
            return Trainer(cfg, model, train_s, val_s, path, progress=False, dist=info)

        seen: list = []
        runs = {"ref": trainer(out / "ref", info.rank, seen)}
        runs["ref"].fit()
        trainer(out / "resumed", info.rank).fit(max_steps=4)
        runs["resumed"] = trainer(out / "resumed", 100 + info.rank)
        runs["resumed"].fit()
        for name, t in runs.items():
            weights = {k: v.detach().contiguous() for k, v in t.model.state_dict().items()}
            save_file(weights, str(out / f"{name}-rank{info.rank}.safetensors"))
        (out / f"rank{info.rank}.json").write_text(json.dumps({"seen": seen, "world_size": info.world_size}))
        D.cleanup()
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    _main(sys.argv[1:])


def test_init_from_starts_a_run_from_another_models_weights(tmp_path):
    from worldline.core.config import build_model, load_preset
    from worldline.train.run import _init_from

    tok_cfg = RunConfig.from_dict(load_preset("tokenizer-fsq", "debug")).model
    torch.manual_seed(0)
    trained = build_model(tok_cfg)
    trained.save_pretrained(tmp_path / "tok")
    torch.manual_seed(1)
    fresh = build_model(tok_cfg)
    assert any(not torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), trained.state_dict().values()))
    _init_from(fresh, str(tmp_path / "tok"))
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), trained.state_dict().values()))

    other = build_model(RunConfig.from_dict(load_preset("tokenizer-continuous", "debug")).model)
    with pytest.raises(WorldlineError, match="holds a fsq model, this run trains a continuous model"):
        _init_from(other, str(tmp_path / "tok"))
    with pytest.raises(WorldlineError, match="not found"):
        _init_from(fresh, str(tmp_path / "nowhere"))
