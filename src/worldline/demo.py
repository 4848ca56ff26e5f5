"""``make demo``: the whole path on a built-in default, PushT at 64x64.

record PushT -> train the continuous 1x4x4 tokenizer -> measure it on held-out episodes -> train the
diffusion world model in its latent space (and, for comparison, the deterministic baseline) ->
evaluate prediction against copy-last-frame, shuffled actions and the baseline -> write rollouts ->
write the HTML report. Each stage is skipped when its output
already exists (training resumes from its last checkpoint), so an interrupted demo continues.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from rich.console import Console


@dataclasses.dataclass
class DemoSize:
    episodes: int  # PushT episodes recorded
    max_steps: int  # steps per episode
    tokenizer_size: str  # size of preset tokenizer-continuous
    world_model_size: str  # size of preset wm-diffusion (the model the demo shows)
    eval_windows: int  # held-out windows in the prediction table
    rollouts: int  # held-out episodes shown as videos
    tokenizer_set: tuple[str, ...] = ()  # --set overrides of the tokenizer preset
    world_model_set: tuple[str, ...] = ()  # --set overrides of the world-model preset
    baseline: bool = True  # also train wm-deterministic (same size) and show it in the prediction comparison

# PushT's action is the pusher's target, a place in the image: the diffusion model reads it through the
# shared pointer map (model.action_xy). It sets only the world model; the baseline keeps its preset.
POINTER = ("model.action_xy=[0,1]",)

DEMO_SIZES = {
    # debug trains long enough that the smoke test can check the tokenizer learned something
    "debug": DemoSize(episodes=4, max_steps=40, tokenizer_size="debug", world_model_size="debug", eval_windows=8,
                      rollouts=1, tokenizer_set=("train.steps=60", "train.lr=3e-3"), world_model_set=POINTER),
    # small: 64 windows, as each diffusion rollout step is a DiT call (~1 min for 64 windows on a lightly loaded
    # 2-core machine); the baseline comparison costs ~3 min more (its training + evaluation), about 10.5 min in all.
    "small": DemoSize(episodes=60, max_steps=200, tokenizer_size="small", world_model_size="small", eval_windows=64, rollouts=4,
                      world_model_set=POINTER),
}
WORLD_MODEL, BASELINE = "wm-diffusion", "wm-deterministic"
WORLD = "pusht"
POLICY = "expert"  # the scripted pusher moves the block, so the world model sees contacts, not just jitter
CONTEXT, HORIZON = 4, 16


def stale_run(run_config, out_dir: Path, console: Console) -> bool:
    """True if ``out_dir`` holds a run of another config (a demo left by an earlier version or size): the
    demo is a built-in job, so it trains that stage again instead of refusing as ``worldline train`` does."""
    from worldline.train.trainer import config_differences, existing_run_config

    old = existing_run_config(Path(out_dir))
    diffs = config_differences(old, run_config.to_dict()) if old is not None else []
    if diffs:
        console.print(f"{out_dir}: its config changed since it was trained ({diffs[0]}); training it again")
    return bool(diffs)


def _stage(console: Console, title: str) -> float:
    console.rule(f"[bold]{title}")
    return time.time()


def run_demo(out: str | Path = "demo", size: str = "small", episodes: int | None = None, seed: int = 0,
             console: Console | None = None) -> dict:
    from worldline.core.config import apply_overrides, load_preset
    from worldline.core.errors import WorldlineError
    from worldline.core.io import write_json
    from worldline.core.pretrained import load_pretrained
    from worldline.data.format import Dataset
    from worldline.envs.recorder import record
    from worldline.eval.prediction import evaluate_prediction, format_table as prediction_table
    from worldline.eval.report import write_report
    from worldline.eval.rollout import write_rollouts
    from worldline.eval.tokenizer import evaluate_dataset, format_table as tokenizer_table
    from worldline.data.windows import split_episodes
    from worldline.train.config import RunConfig
    from worldline.train.run import train

    console = console or Console()
    if size not in DEMO_SIZES:
        raise WorldlineError(f"unknown demo size {size!r} (known: {', '.join(DEMO_SIZES)})")
    spec = DEMO_SIZES[size]
    n_episodes = episodes or spec.episodes
    out = Path(out)
    data_dir, runs = out / "data", out / "runs"
    timings: dict[str, float] = {}
    t_all = time.time()

    # 1. record ---------------------------------------------------------------------------------
    t = _stage(console, f"1/7 record {n_episodes} {WORLD} episodes ({POLICY} policy)")
    existing, recorded = None, False
    if (data_dir / "meta" / "info.json").is_file():
        existing = Dataset(data_dir)
    if existing is not None and existing.num_episodes == n_episodes:
        console.print(f"reusing {data_dir} ({existing.num_frames} frames)")
    else:
        record(WORLD, n_episodes, data_dir, policy=POLICY, resolution=64, seed=seed,
               max_steps=spec.max_steps, mode="overwrite", progress=True)
        recorded = True  # runs trained on the old recording are stale
    dataset = Dataset(data_dir)
    timings["record"] = time.time() - t

    # 2. tokenizer --------------------------------------------------------------------------------
    t = _stage(console, f"2/7 train the tokenizer (tokenizer-continuous/{spec.tokenizer_size})")
    tok_cfg = apply_overrides(load_preset("tokenizer-continuous", spec.tokenizer_size), list(spec.tokenizer_set))
    tok_cfg.setdefault("data", {})["path"] = str(data_dir)
    tok_cfg.setdefault("train", {})["seed"] = seed
    tok_run = RunConfig.from_dict(tok_cfg)
    retrain = recorded or stale_run(tok_run, runs / "tokenizer", console)
    tok_final = train(tok_run, runs / "tokenizer", resume=not retrain, progress=True)
    timings["tokenizer"] = time.time() - t

    # 3. tokenizer quality ---------------------------------------------------------------------------
    t = _stage(console, "3/7 tokenizer quality on held-out episodes")
    tokenizer = load_pretrained(tok_final)
    run_cfg = RunConfig.from_dict(tok_cfg)
    tok_eval = {"dataset": evaluate_dataset(tokenizer, data_dir, data_cfg=run_cfg.data, max_windows=spec.eval_windows * 4)}
    console.print(tokenizer_table(tok_eval))
    timings["tokenizer_eval"] = time.time() - t

    # 4. world model ------------------------------------------------------------------------------
    def world_model_run(preset: str, overrides: tuple[str, ...]) -> RunConfig:
        cfg = apply_overrides(load_preset(preset, spec.world_model_size), list(overrides))
        cfg.setdefault("data", {})["path"] = str(data_dir)
        cfg.setdefault("train", {})["seed"] = seed
        cfg.setdefault("model", {})["tokenizer_path"] = str(tok_final)
        return RunConfig.from_dict(cfg)

    t = _stage(console, f"4/7 train the world model ({WORLD_MODEL}/{spec.world_model_size})")
    wm_run = world_model_run(WORLD_MODEL, spec.world_model_set)
    fresh = retrain or stale_run(wm_run, runs / "world_model", console)  # a new tokenizer makes every latent model stale
    wm_final = train(wm_run, runs / "world_model", resume=not fresh, progress=True)
    timings["world_model"] = time.time() - t

    base_final = None
    if spec.baseline:
        t = _stage(console, f"5/7 train the deterministic baseline for comparison ({BASELINE}/{spec.world_model_size})")
        base_run = world_model_run(BASELINE, ())
        fresh = retrain or stale_run(base_run, runs / "baseline", console)
        base_final = train(base_run, runs / "baseline", resume=not fresh, progress=True)
        timings["baseline"] = time.time() - t

    # 5. prediction benchmark + rollouts --------------------------------------------------------------
    t = _stage(console, f"6/7 prediction on held-out episodes (context {CONTEXT}, horizon {HORIZON})")
    model = load_pretrained(wm_final)
    prediction = evaluate_prediction(model, data_dir, context=CONTEXT, horizon=HORIZON,
                                     max_windows=spec.eval_windows, data_cfg=wm_run.data, seed=seed)
    console.print(prediction_table(prediction))
    baseline = None
    if base_final is not None:
        baseline = evaluate_prediction(load_pretrained(base_final), data_dir, context=CONTEXT, horizon=HORIZON,
                                       max_windows=spec.eval_windows, data_cfg=wm_run.data, seed=seed)
        console.print(_comparison_table(prediction, baseline))
    _, val_ids = split_episodes(dataset.num_episodes, wm_run.data.val_fraction, wm_run.data.split_seed)
    rollout_ids = [int(i) for i in list(val_ids)[: spec.rollouts]]
    gifs = write_rollouts(model, data_dir, out / "report" / "rollouts", rollout_ids, context=CONTEXT, horizon=HORIZON)
    timings["eval"] = time.time() - t

    # 6. report -------------------------------------------------------------------------------------
    _stage(console, "7/7 report")
    timings["total"] = time.time() - t_all  # the report itself takes a second; it prints this table
    report = write_report(
        out / "report",
        runs={"tokenizer": runs / "tokenizer", "world model": runs / "world_model",
              **({"baseline": runs / "baseline"} if base_final is not None else {})},
        prediction=prediction,
        tokenizer_eval=tok_eval,
        rollouts=[p for p in gifs if Path(p).suffix == ".gif"],
        title=f"worldline demo: {WORLD} 64x64, {n_episodes} episodes ({size})",
        timings=timings,
        sections=[("Diffusion vs the deterministic baseline", _comparison_html(prediction, baseline))] if baseline else (),
    )
    headline = {
        "report": str(report),
        "tokenizer_psnr_db": tok_eval["dataset"]["psnr"],
        "tokenizer_ssim": tok_eval["dataset"]["ssim"],
        "model_psnr_db": prediction["model"]["psnr_mean"],
        "copy_last_psnr_db": prediction["copy_last"]["psnr_mean"],
        "shuffled_actions_psnr_db": prediction["shuffled_actions"]["psnr_mean"],
        "model_ssim": prediction["model"]["ssim_mean"],
        "copy_last_ssim": prediction["copy_last"]["ssim_mean"],
        "model_action_gain_h8_db": _gain_at(prediction, 8),
        "baseline_psnr_db": baseline["model"]["psnr_mean"] if baseline else None,
        "baseline_ssim": baseline["model"]["ssim_mean"] if baseline else None,
        "seconds": timings,
    }
    write_json(out / "headline.json", headline)
    console.rule("[bold green]done")
    console.print(f"report: [bold]{report}[/bold]")
    console.print(
        f"tokenizer (held-out): {headline['tokenizer_psnr_db']:.2f} dB PSNR, SSIM {headline['tokenizer_ssim']:.3f}\n"
        f"world model, horizon {HORIZON}: {headline['model_psnr_db']:.2f} dB mean PSNR "
        f"(copy-last-frame {headline['copy_last_psnr_db']:.2f} dB, shuffled actions "
        f"{headline['shuffled_actions_psnr_db']:.2f} dB), SSIM {headline['model_ssim']:.3f} "
        f"(copy-last {headline['copy_last_ssim']:.3f})\n"
        f"total {timings['total'] / 60:.1f} min"
    )
    return headline


def _gain_at(prediction: dict, steps: int) -> float:
    """Mean PSNR gain of the true over shuffled actions over the first ``steps`` horizon steps."""
    gains = prediction["action_gain"]["psnr_db_steps"][:steps]
    return float(sum(gains) / len(gains))


def _rows(prediction: dict, baseline: dict) -> list[tuple[str, float, float, float]]:
    """(method, mean PSNR, mean SSIM, action gain over steps 1-8) for the comparison."""
    return [
        ("diffusion (this demo)", prediction["model"]["psnr_mean"], prediction["model"]["ssim_mean"], _gain_at(prediction, 8)),
        ("deterministic baseline", baseline["model"]["psnr_mean"], baseline["model"]["ssim_mean"], _gain_at(baseline, 8)),
        ("copy-last-frame", prediction["copy_last"]["psnr_mean"], prediction["copy_last"]["ssim_mean"], float("nan")),
    ]


def _comparison_table(prediction: dict, baseline: dict):
    from rich.table import Table

    table = Table(title=f"world models on the same {prediction['num_windows']} held-out windows (horizon {prediction['horizon']})")
    for col in ("model", "mean PSNR dB", "mean SSIM", "true - shuffled actions, PSNR dB (steps 1-8)"):
        table.add_column(col, justify="right")
    for name, p, s, g in _rows(prediction, baseline):
        table.add_row(name, f"{p:.2f}", f"{s:.3f}", "" if g != g else f"{g:+.2f}")
    return table


def _comparison_html(prediction: dict, baseline: dict) -> str:
    import html

    head = "<tr><th>model</th><th>mean PSNR dB</th><th>mean SSIM</th><th>true - shuffled actions, PSNR dB (steps 1-8)</th></tr>"
    body = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{p:.2f}</td><td>{s:.3f}</td><td>{'' if g != g else f'{g:+.2f}'}</td></tr>"
        for n, p, s, g in _rows(prediction, baseline)
    )
    return f"<table>{head}{body}</table>"
