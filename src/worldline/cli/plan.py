"""``worldline plan``: closed-loop goal reaching in a real env with a trained world model."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)


def plan(
    ckpt: Path = typer.Option(..., help="A trained world model directory (a run's final/)."),
    env: str = typer.Option("pusht", help="pusht, reacher (torques) or reacher-pos (joint positions)."),
    episodes: int = typer.Option(50, help="Goals (held-out expert trajectories) to reach."),
    planner: str = typer.Option("cem", help="cem, mppi, gradient or random."),
    horizon: int = typer.Option(5, help="Model steps planned per decision."),
    execute: int = typer.Option(1, help="Model steps carried out before replanning (receding horizon)."),
    budget: int = typer.Option(50, help="Env steps the agent has to reach the goal."),
    offset: int = typer.Option(25, help="The goal is the expert's state this many env steps after the start."),
    samples: Optional[int] = typer.Option(None, help="cem/mppi: action sequences per iteration; gradient: parallel starts."),
    iterations: Optional[int] = typer.Option(None, help="cem/mppi iterations or gradient steps."),
    cost: str = typer.Option("l1", help="Goal cost: l1 or l2 distance of embeddings."),
    path_weight: float = typer.Option(0.0, help="Add this times the mean goal distance over all planned steps to "
                                      "the last step's (rewards arriving early and staying; Reacher needs it)."),
    init_std: Optional[float] = typer.Option(None, help="cem/gradient: initial action std, mppi: noise std, in "
                                             "units of the action box's half-width (small for fast arms: Reacher 0.15)."),
    noise_beta: Optional[float] = typer.Option(None, help="cem: colour of the sampling noise over env steps "
                                               "(iCEM): 0 white (default), 2 smooth as a controller's actions."),
    proprio_weight: float = typer.Option(0.0, help="The goal also holds the robot's proprioception at the goal "
                                         "(DINO-WM's objective): weight of its distance to the predicted one. "
                                         "Needs a model trained with model.proprio=true."),
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

    if threads > 0:
        torch.set_num_threads(threads)
    model = load_pretrained(ckpt)
    if not isinstance(model, WorldModel):
        raise WorldlineError(f"{ckpt} holds a {type(model).__name__}, not a world model")
    try:
        kwargs = planner_kwargs(planner, samples=samples, iterations=iterations, cost=cost, path_weight=path_weight,
                                init_std=init_std, noise_beta=noise_beta, proprio_weight=proprio_weight, seed=seed)
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


def planner_kwargs(planner: str, *, samples: int | None = None, iterations: int | None = None, cost: str = "l1",
                   path_weight: float = 0.0, init_std: float | None = None, noise_beta: float | None = None,
                   proprio_weight: float = 0.0, seed: int = 1_000_000) -> dict:
    """The planner's constructor arguments from the command line's options (None: the planner's default)."""
    from worldline.core.errors import WorldlineError
    from worldline.planning import GoalCost

    if noise_beta is not None and planner != "cem":
        raise WorldlineError(f"--noise-beta is a cem option, the planner is {planner!r}")
    if planner == "random":
        if proprio_weight:
            raise WorldlineError("--proprio-weight weighs a goal cost; the random planner has none")
        return {"seed": seed}
    kwargs: dict = {"cost": GoalCost(kind=cost, path_weight=path_weight, proprio_weight=proprio_weight), "seed": seed}
    if planner == "gradient":
        pairs = (("starts", samples), ("steps", iterations), ("init_std", init_std))
    else:
        pairs = (("samples", samples), ("iterations", iterations), ("noise_std" if planner == "mppi" else "init_std", init_std))
    kwargs.update({k: v for k, v in pairs + (("noise_beta", noise_beta),) if v is not None})
    if planner == "cem" and samples is not None:
        kwargs["elites"] = max(2, min(samples // 8, 64))
        kwargs["keep_elites"] = min(kwargs["elites"], 8)
    return kwargs
