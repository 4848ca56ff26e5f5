"""The ``worldline`` command: thin typer commands over library functions.

Every command turns a :class:`~worldline.core.errors.WorldlineError` into one ``error:`` line and exit
status 2, so bad input never ends in a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from worldline.cli.sampling import GUIDANCE_HELP, SAMPLER_HELP, STEPS_HELP, set_sampling
from worldline.core.errors import WorldlineError

app = typer.Typer(
    name="worldline",
    help="worldline: record worlds, train tokenizers and world models, roll out, evaluate and report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect and import datasets (LeRobot v3 layout).", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console()
err_console = Console(stderr=True)


def _parse_episodes(text: str | None) -> list[int] | None:
    if not text:
        return None
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                a, b = part.split("-", 1)
                out.extend(range(int(a), int(b) + 1))
            elif part:
                out.append(int(part))
        except ValueError:
            raise WorldlineError(f"--episodes {text!r}: expected indices like 0,3,5-7") from None
    return out


def _mode(append: bool, overwrite: bool) -> str:
    if append and overwrite:
        raise WorldlineError("--append and --overwrite are exclusive")
    return "append" if append else "overwrite" if overwrite else "create"


# ----------------------------------------------------------------------------------------------
# record / data
# ----------------------------------------------------------------------------------------------


@app.command()
def record(
    env: str = typer.Option(..., "--env", help="Built-in world (pusht, breakout, reacher, reacher-pos, coinrun) or any gymnasium id."),
    episodes: int = typer.Option(10, help="Episodes to record."),
    out: Path = typer.Option(..., "--out", help="Dataset directory to write."),
    policy: str = typer.Option("random", help="random, smooth, or a world's scripted policy (expert); comma-separated names alternate by episode (expert,random)."),
    resolution: int = typer.Option(64, help="Square frame size in pixels."),
    seed: int = typer.Option(0, help="Episode i is reset with seed+i, so recordings are reproducible."),
    max_steps: Optional[int] = typer.Option(None, help="Cap on steps per episode (default: the world's)."),
    append: bool = typer.Option(False, help="Add episodes to an existing dataset."),
    overwrite: bool = typer.Option(False, help="Replace an existing dataset (only once the new one is complete)."),
):
    """Record episodes of a gymnasium world into a worldline dataset."""
    from worldline.envs.recorder import record as do_record

    path = do_record(env, episodes, out, policy=policy, resolution=resolution, seed=seed,
                     max_steps=max_steps, mode=_mode(append, overwrite), progress=True)
    console.print(f"dataset written to [bold]{path}[/bold]")


@data_app.command("info")
def data_info(path: Path = typer.Argument(..., help="Dataset directory.")):
    """Print a summary of a dataset: episodes, frames, cameras, action space, statistics."""
    from worldline.data.format import summary

    console.print(summary(path))


@data_app.command("import")
def data_import(
    src: Path = typer.Argument(..., help="A folder of mp4 files, a LeRobot v2.1/v3 dataset, or an .h5/.hdf5/.npz file."),
    out: Path = typer.Option(..., "--out", help="Dataset directory to write."),
    resolution: Optional[int] = typer.Option(None, help="Resize frames to this square size (mp4 folders: 64)."),
    fps: Optional[float] = typer.Option(None, help="Frames per second (default: from the source)."),
    append: bool = typer.Option(False, help="Add to an existing dataset."),
    overwrite: bool = typer.Option(False, help="Replace an existing dataset."),
):
    """Import external video or episodes into a worldline dataset."""
    from worldline.data.importers import import_any

    path = import_any(src, out, resolution=resolution, fps=fps, mode=_mode(append, overwrite))
    console.print(f"dataset written to [bold]{path}[/bold]")


# top-level alias, as the issues write it: `worldline import DIR --out DATA`
app.command("import", help="Import external video or episodes into a worldline dataset (alias of `data import`).")(data_import)


# ----------------------------------------------------------------------------------------------
# config / train
# ----------------------------------------------------------------------------------------------


def resolve_config(preset: str | None, size: str, config_file: Path | None, overrides: list[str], data: Path | None):
    """Preset (or YAML file) <- --set overrides <- --data, built and validated as a RunConfig."""
    import yaml

    from worldline.core.config import apply_overrides, load_preset
    from worldline.train.config import RunConfig

    if config_file is not None:
        if not config_file.is_file():
            raise WorldlineError(f"config file not found: {config_file}")
        raw = yaml.safe_load(config_file.read_text()) or {}
    elif preset:
        raw = load_preset(preset, size)
    else:
        raise WorldlineError("give --preset NAME (see `worldline presets`) or --config FILE")
    raw = apply_overrides(raw, overrides)
    if data is not None:
        raw.setdefault("data", {})["path"] = str(data)
    return RunConfig.from_dict(raw)


@app.command()
def presets():
    """List the named presets and their sizes."""
    from rich.table import Table

    from worldline.core.config import list_presets

    table = Table("preset", "sizes", "description")
    for name, p in list_presets().items():
        table.add_row(name, ", ".join(p["sizes"]), p["description"])
    console.print(table)


@app.command()
def config(
    preset: Optional[str] = typer.Option(None, help="Preset name (see `worldline presets`)."),
    size: str = typer.Option("small", help="Preset size (every preset has debug)."),
    config_file: Optional[Path] = typer.Option(None, "--config", help="A run config YAML instead of a preset."),
    set_: list[str] = typer.Option([], "--set", help="Override a field: --set model.latent_channels=8 (repeatable)."),
    explain: bool = typer.Option(False, help="Also print what each field of the model config means."),
):
    """Print a resolved run config (preset <- --set), validated, as YAML."""
    import yaml

    from worldline.core.config import field_help

    cfg = resolve_config(preset, size, config_file, set_, None)
    console.print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="", markup=False, highlight=False)
    if explain:
        for section in (cfg.model, cfg.train, cfg.data):
            for name, text in field_help(type(section)).items():
                console.print(f"  [bold]{name}[/bold]: {text}")


@app.command()
def train(
    preset: Optional[str] = typer.Option(None, help="Preset name (see `worldline presets`)."),
    size: str = typer.Option("small", help="Preset size: debug (seconds, for tests), small (CPU demo), ..."),
    data: Optional[Path] = typer.Option(None, "--data", help="Dataset directory to train on."),
    out: Path = typer.Option(..., "--out", help="Run directory (config, metrics, TensorBoard, checkpoints, final/)."),
    config_file: Optional[Path] = typer.Option(None, "--config", help="A run config YAML instead of a preset."),
    set_: list[str] = typer.Option([], "--set", help="Override a field: --set train.steps=500 (repeatable)."),
    resume: bool = typer.Option(True, help="Resume from the run directory's latest checkpoint."),
):
    """Train a tokenizer or world model. Runs under `torchrun` too (DDP)."""
    from worldline.train.run import train as do_train

    cfg = resolve_config(preset, size, config_file, set_, data)
    if not cfg.data.path:
        raise WorldlineError("no dataset: pass --data DIR (or set data.path)")
    final = do_train(cfg, out, resume=resume, progress=True)
    console.print(f"trained model written to [bold]{final}[/bold]")


# ----------------------------------------------------------------------------------------------
# eval / rollout / report
# ----------------------------------------------------------------------------------------------


def _data_cfg_of(ckpt: Path):
    """The data config the checkpoint was trained with (same split), if it recorded one."""
    from worldline.core.config import from_dict
    from worldline.core.io import read_json
    from worldline.data.config import DataConfig

    raw = read_json(ckpt / "config.json")
    run = (raw.get("extra") or {}).get("run") or {}
    return from_dict(DataConfig, run.get("data", {}), "data") if run.get("data") else DataConfig()


@app.command("eval")
def eval_(
    suite: str = typer.Option(..., help="tokenizer, prediction or game (sprites of a game's rollouts)."),
    ckpt: Path = typer.Option(..., help="A trained model directory (a run's final/)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Dataset; held-out episodes are evaluated."),
    videos: Optional[Path] = typer.Option(None, help="tokenizer suite: also evaluate on a folder of real mp4 videos."),
    context: int = typer.Option(4, help="prediction suite: context frames."),
    horizon: int = typer.Option(16, help="prediction suite: predicted frames."),
    max_windows: int = typer.Option(256, help="Windows evaluated at most."),
    out: Optional[Path] = typer.Option(None, help="Write the results as JSON here."),
    temperature: Optional[float] = typer.Option(None, help="Token models: sample at this temperature (0 = greedy, the default)."),
    top_k: int = typer.Option(0, help="Token models: sample among the k most likely ids (0 = all)."),
    top_p: float = typer.Option(1.0, help="Token models: nucleus sampling mass."),
    sample_steps: Optional[int] = typer.Option(None, help=STEPS_HELP),
    sampler: Optional[str] = typer.Option(None, help=SAMPLER_HELP),
    guidance: Optional[float] = typer.Option(None, help=GUIDANCE_HELP),
):
    """Measure a model: tokenizer (PSNR, SSIM, frames/s), prediction (per-step PSNR/SSIM vs baselines)
    or game (does the rollout keep the game's sprites alive and obey the actions?)."""
    from worldline.core.io import write_json
    from worldline.core.pretrained import load_pretrained

    model = load_pretrained(ckpt)
    set_sampling(model, temperature, top_k, top_p, sample_steps, sampler, guidance)
    data_cfg = _data_cfg_of(ckpt)
    if suite == "tokenizer":
        from worldline.eval.tokenizer import evaluate_dataset, evaluate_on_videos, format_table

        if data is None and videos is None:
            raise WorldlineError("tokenizer suite: give --data DIR and/or --videos DIR")
        result = {}
        if data is not None:
            result["dataset"] = evaluate_dataset(model, data, data_cfg=data_cfg, max_windows=max_windows)
        if videos is not None:
            result["videos"] = evaluate_on_videos(model, videos)
        console.print(format_table(result))
    elif suite == "prediction":
        from worldline.eval.prediction import evaluate_prediction, format_table

        if data is None:
            raise WorldlineError("prediction suite: give --data DIR")
        result = evaluate_prediction(model, data, context=context, horizon=horizon, max_windows=max_windows, data_cfg=data_cfg)
        console.print(format_table(result))
    elif suite == "game":
        from worldline.eval.game import evaluate_game, format_table

        if data is None:
            raise WorldlineError("game suite: give --data DIR")
        result = evaluate_game(model, data, context=context, horizon=horizon, max_windows=max_windows, data_cfg=data_cfg)
        console.print(format_table(result))
    else:
        raise WorldlineError(f"unknown suite {suite!r} (known: tokenizer, prediction, game)")
    if out is not None:
        write_json(out, result)
        console.print(f"results written to [bold]{out}[/bold]")


@app.command()
def rollout(
    ckpt: Path = typer.Option(..., help="A trained world model directory."),
    data: Path = typer.Option(..., "--data", help="Dataset the episodes come from."),
    out: Path = typer.Option(..., "--out", help="Folder for the mp4/gif rollouts and metrics."),
    episodes: Optional[str] = typer.Option(None, help="Episode indices, e.g. 0,3,5-7 (default: 4 held-out ones)."),
    context: int = typer.Option(4, help="Context frames."),
    horizon: int = typer.Option(16, help="Frames to predict."),
    start: int = typer.Option(0, help="Frame of the episode where the context starts."),
    temperature: Optional[float] = typer.Option(None, help="Token models: sample at this temperature (0 = greedy, the default)."),
    top_k: int = typer.Option(0, help="Token models: sample among the k most likely ids (0 = all)."),
    top_p: float = typer.Option(1.0, help="Token models: nucleus sampling mass."),
    sample_steps: Optional[int] = typer.Option(None, help=STEPS_HELP),
    sampler: Optional[str] = typer.Option(None, help=SAMPLER_HELP),
    guidance: Optional[float] = typer.Option(None, help=GUIDANCE_HELP),
):
    """Roll a world model out on episodes: real|predicted videos (mp4, gif) and per-step metrics."""
    from worldline.core.pretrained import load_pretrained
    from worldline.data.format import Dataset
    from worldline.data.windows import split_episodes
    from worldline.eval.rollout import write_rollouts

    model = load_pretrained(ckpt)
    set_sampling(model, temperature, top_k, top_p, sample_steps, sampler, guidance)
    ids = _parse_episodes(episodes)
    if ids is None:
        ds = Dataset(data)
        d = _data_cfg_of(ckpt)
        _, val = split_episodes(ds.num_episodes, d.val_fraction, d.split_seed)
        ids = [int(i) for i in list(val)[:4]]
    paths = write_rollouts(model, data, out, ids, context=context, horizon=horizon, start=start)
    console.print(f"{len(paths)} rollouts written to [bold]{out}[/bold]")


@app.command()
def demo(
    out: Path = typer.Option(Path("demo"), help="Where the dataset, runs and report go."),
    size: str = typer.Option("small", help="small (the real demo, ~12 min on 2 cores) or debug (about a minute)."),
    episodes: Optional[int] = typer.Option(None, help="PushT episodes to record (default by size)."),
    seed: int = typer.Option(0, help="Seed for recording and training."),
):
    """The main job on a built-in default: record PushT, train a tokenizer and a world model, roll out, report."""
    from worldline.demo import run_demo

    run_demo(out, size=size, episodes=episodes, seed=seed, console=console)


# ----------------------------------------------------------------------------------------------
# commands of other areas: each lives in cli/<area>.py and registers itself here (one line each)
# ----------------------------------------------------------------------------------------------
from worldline.cli import plan as _plan; _plan.register(app)  # noqa: E402,E702
from worldline.cli import play as _play; _play.register(app)  # noqa: E402,E702
from worldline.cli import curate as _curate; _curate.register(app)  # noqa: E402,E702
from worldline.cli import genie as _genie; _genie.register(app)  # noqa: E402,E702
from worldline.cli import dream as _dream; _dream.register(app)  # noqa: E402,E702


def main() -> None:
    try:
        app()
    except WorldlineError as e:
        err_console.print(f"[bold red]error:[/bold red] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted; rerun the same command to resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
