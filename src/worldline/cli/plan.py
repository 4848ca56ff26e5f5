"""``worldline plan``: closed-loop goal reaching in a real env with a trained world model."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)


def plan(
    ckpt: Path = typer.Option(..., help="A trained world model directory (a run's final/)."),
    env: str = typer.Option("pusht", help="pusht or reacher."),
    episodes: int = typer.Option(50, help="Goals (held-out expert trajectories) to reach."),
    planner: str = typer.Option("cem", help="cem, mppi, gradient or random."),
    horizon: int = typer.Option(5, help="Model steps planned per decision."),
    execute: int = typer.Option(1, help="Model steps carried out before replanning (receding horizon)."),
    budget: int = typer.Option(50, help="Env steps the agent has to reach the goal."),
    offset: int = typer.Option(25, help="The goal is the expert's state this many env steps after the start."),
    samples: Optional[int] = typer.Option(None, help="cem/mppi: action sequences per iteration; gradient: parallel starts."),
    iterations: Optional[int] = typer.Option(None, help="cem/mppi iterations or gradient steps."),
    cost: str = typer.Option("l1", help="Goal cost: l1 or l2 distance of embeddings."),
    seed: int = typer.Option(1_000_000, help="First seed of the held-out expert trajectories."),
    baselines: bool = typer.Option(True, help="Also run the random and goal-copying baselines."),
    traces: int = typer.Option(3, help="Episodes saved as gif/mp4 planning traces."),
    out: Optional[Path] = typer.Option(None, help="Folder for planning.json, traces and an HTML report."),
    threads: int = typer.Option(1, help="torch CPU threads."),
):
    """Plan towards goal images in the real env (CEM / MPPI / gradient, MPC) and report success,
    final distance and time per decision, beside random and goal-copying baselines."""
    import torch

    from worldline.cli.main import console
    from worldline.core.errors import WorldlineError
    from worldline.core.pretrained import load_pretrained
    from worldline.core.contracts import WorldModel
    from worldline.eval.planning import benchmark, format_table, report_section
    from worldline.planning import GoalCost

    if threads > 0:
        torch.set_num_threads(threads)
    model = load_pretrained(ckpt)
    if not isinstance(model, WorldModel):
        raise WorldlineError(f"{ckpt} holds a {type(model).__name__}, not a world model")
    kwargs: dict = {"cost": GoalCost(kind=cost), "seed": seed}
    if planner == "random":
        kwargs = {"seed": seed}
    elif planner == "gradient":
        kwargs.update({k: v for k, v in (("starts", samples), ("steps", iterations)) if v is not None})
    else:
        kwargs.update({k: v for k, v in (("samples", samples), ("iterations", iterations)) if v is not None})
        if planner == "cem" and samples is not None:
            kwargs["elites"] = max(2, min(samples // 8, 64))
            kwargs["keep_elites"] = min(kwargs["elites"], 8)
    try:
        results = benchmark(model, env, planner, episodes, budget=budget, offset=offset, horizon=horizon,
                            execute=execute, seed=seed, baselines=baselines, traces=traces if out else 0,
                            out_dir=out, planner_kwargs=kwargs)
    except (TypeError, ValueError) as e:
        raise WorldlineError(f"planner {planner!r}: {e}") from None
    console.print(format_table(results), markup=False, highlight=False)
    if out is not None:
        from worldline.eval.report import write_report

        out.mkdir(parents=True, exist_ok=True)
        index = write_report(out, title=f"worldline plan: {env}",
                             sections=[(f"Planning ({planner}, {env})", report_section(results, out))])
        console.print(f"results in [bold]{out / 'planning.json'}[/bold], report [bold]{index}[/bold]")
