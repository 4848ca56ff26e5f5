"""``worldline genie``: label unlabeled video with a Genie model's latent actions, and map them to true actions."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

genie_app = typer.Typer(help="Genie latent actions: label datasets, map codes to true actions, measure controllability.",
                        no_args_is_help=True)


def _load(ckpt: Path):
    from worldline.core.errors import WorldlineError
    from worldline.core.pretrained import load_pretrained
    from worldline.models.genie import GenieWorldModel

    model = load_pretrained(ckpt)
    if not isinstance(model, GenieWorldModel):
        raise WorldlineError(f"{ckpt} holds a {type(model).__name__} ({model.type_name!r}), not a genie model")
    return model


def _episodes(ds, which: str):
    from worldline.data.config import DataConfig
    from worldline.eval.prediction import episode_ids

    return episode_ids(ds.num_episodes, which, DataConfig())


@genie_app.command()
def label(
    data: Path = typer.Argument(..., help="Dataset to label (its frames are read; its actions, if any, are replaced)."),
    ckpt: Path = typer.Option(..., "--ckpt", help="A trained genie model directory (a run's final/)."),
    out: Optional[Path] = typer.Option(None, "--out", help="New dataset to write (default: DATA-latent)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace DATA itself (or an existing --out), once the new one is complete."),
):
    """Write the latent action of every frame as the dataset's discrete action column, so any family can train on it."""
    import torch
    from rich.progress import track

    from worldline.core.contracts import ActionSpec
    from worldline.core.errors import WorldlineError
    from worldline.data.format import Dataset, DatasetWriter
    from worldline.models.genie.evaluate import label_episode

    torch.set_num_threads(1)
    model = _load(ckpt)
    ds = Dataset(data)
    target = out if out is not None else (data if overwrite else data.with_name(data.name + "-latent"))
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise WorldlineError(f"{target} already exists; pass --overwrite to replace it")
    if tuple(ds.image_shape[:2]) != tuple(model.config.image_size):
        raise WorldlineError(f"{data} has {ds.image_shape[0]}x{ds.image_shape[1]} frames, the model was trained on "
                             f"{model.config.image_size[0]}x{model.config.image_size[1]}")
    n = model.config.num_latent_actions
    spec = ActionSpec(kind="discrete", dim=1, n=n, names=[f"latent {i}" for i in range(n)])
    counts = [0] * n
    with DatasetWriter(target, fps=ds.fps, image_shape=ds.image_shape, action_spec=spec, env_id=ds.env_id,
                       cameras=ds.cameras, mode="overwrite" if overwrite else "create") as writer:
        for e in track(range(ds.num_episodes), description="labelling episodes", transient=True):
            ep = ds.episode(e)
            frames = {cam: ds.episode_frames(e, cam) for cam in ds.cameras}
            ids = label_episode(model, frames[ds.default_camera])
            for i in ids:
                counts[int(i)] += 1
            writer.add_episode(frames, ids[:, None].astype("float32"), ep["rewards"], ep["dones"], task=ep["task"])
    used = sum(c > 0 for c in counts)
    typer.echo(f"wrote {target}: {ds.num_frames} frames of {ds.num_episodes} episodes, latent actions used {used}/{n}: {counts}")


@genie_app.command("map")
def map_(
    ckpt: Path = typer.Option(..., "--ckpt", help="A trained genie model directory."),
    data: Path = typer.Option(..., "--data", help="A dataset with discrete true actions."),
    episodes: str = typer.Option("val", help="val, train or all (the training split's held-out episodes by default)."),
):
    """Confusion table of true vs latent actions, its purity, codebook usage and a proposed key layout."""
    import numpy as np
    import torch
    from rich.console import Console
    from rich.progress import track
    from rich.table import Table

    from worldline.core.errors import WorldlineError
    from worldline.data.format import Dataset
    from worldline.models.genie.evaluate import codebook_usage, confusion, label_episode, propose_layout, purity

    torch.set_num_threads(1)
    model = _load(ckpt)
    ds = Dataset(data)
    spec = ds.action_spec
    if spec.kind != "discrete":
        raise WorldlineError(f"{data} has {spec.kind} actions; genie map needs discrete true actions")
    true, latent = [], []
    for e in track(_episodes(ds, episodes), description="inferring latent actions", transient=True):
        ep = ds.episode(e)
        if len(ep["frames"]) < 2:
            continue
        latent.append(label_episode(model, ep["frames"])[:-1])  # transitions only
        true.append(ep["actions"][:-1, 0].round().astype(np.int64))
    if not true:
        raise WorldlineError(f"{data}: no episode of 2 or more frames among the {episodes} episodes")
    n = model.config.num_latent_actions
    table = confusion(np.concatenate(true), np.concatenate(latent), spec.n, n)
    names = spec.names or [str(i) for i in range(spec.n)]

    console = Console()
    t = Table(title=f"true (rows) vs latent (columns) actions, {int(table.sum())} transitions")
    t.add_column("true action")
    for z in range(n):
        t.add_column(f"z{z}", justify="right")
    t.add_column("top code share", justify="right")
    for a in range(spec.n):
        t.add_row(names[a], *[str(v) for v in table[a]], f"{table[a].max() / max(table[a].sum(), 1):.0%}")
    console.print(t)
    p, u = purity(table), codebook_usage(table)
    console.print(f"purity true->latent {p['true_to_latent']:.3f}   latent->true {p['latent_to_true']:.3f}   "
                  f"one-to-one {p['one_to_one']:.3f}   "
                  f"codes used {u['codes_used']}/{u['codes']} (perplexity {u['perplexity']:.2f})")
    layout = {a: (z, s) for a, z, s in propose_layout(table)}
    keys = [f"{names[a]} -> latent {layout[a][0]} ({layout[a][1]:.0%})" if a in layout else f"{names[a]} -> none free"
            for a in range(spec.n)]
    console.print("proposed keys: " + ", ".join(keys))


@genie_app.command()
def controllability(
    ckpt: Path = typer.Option(..., "--ckpt", help="A trained genie model directory."),
    data: Path = typer.Option(..., "--data", help="Dataset to measure on."),
    context: Optional[int] = typer.Option(None, help="Context frames before the predicted ones (default: the model's window_frames - 1, what play keeps)."),
    horizon: int = typer.Option(4, help="Predicted frames (Genie reports delta-PSNR at 4)."),
    windows: int = typer.Option(64, help="Windows of held-out episodes to average over."),
    episodes: str = typer.Option("val", help="val, train or all."),
    seed: int = typer.Option(0),
):
    """Genie's delta-PSNR: frames generated from latent actions inferred from the real video vs random ones."""
    import numpy as np
    import torch

    from worldline.data.cache import frame_store
    from worldline.data.format import Dataset
    from worldline.data.windows import WindowSampler
    from worldline.models.genie.evaluate import controllability as measure

    torch.set_num_threads(1)
    model = _load(ckpt)
    if context is None:
        context = max(model.config.window_frames - 1, 1)
    ds = Dataset(data)
    sampler = WindowSampler(frame_store(ds), context + horizon, _episodes(ds, episodes))
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(sampler), size=min(windows, len(sampler)), replace=False))
    results = [measure(model, sampler.batch(c)["frames"], context, horizon, seed + i) for i, c in enumerate(np.array_split(chosen, max(len(chosen) // 16, 1)))]
    weights = [len(c) for c in np.array_split(chosen, max(len(chosen) // 16, 1))]
    mean = {k: np.average([r[k] for r in results], axis=0, weights=weights) for k in ("inferred", "random", "delta")}
    for step in range(horizon):
        typer.echo(f"step {step + 1}: PSNR inferred {mean['inferred'][step]:.2f} dB  random {mean['random'][step]:.2f} dB  "
                   f"delta {mean['delta'][step]:+.2f} dB")
    typer.echo(f"delta-PSNR at horizon {horizon}: {mean['delta'][-1]:+.2f} dB over {len(chosen)} windows "
               f"(context {context}, steps {model.maskgit_steps}, temperature {model.temperature})")


def register(app: typer.Typer) -> None:
    app.add_typer(genie_app, name="genie")
