"""Commands of the agents area: ``worldline dreamer`` (online DreamerV3 loop), ``worldline vmc``
(Ha & Schmidhuber's V-M-C: random rollouts, V+M training, CMA-ES controller in the dream) and
``worldline dream-agent`` (a gymnasium agent trained only inside DreamEnv, evaluated for real)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

import typer


def _split_sets(sets: list[str] | None, sections: tuple[str, ...]) -> dict[str, list[str]]:
    from worldline.core.errors import WorldlineError

    out: dict[str, list[str]] = {s: [] for s in sections}
    for text in sets or []:
        head = text.split("=", 1)[0].split(".", 1)
        if len(head) != 2 or head[0] not in sections:
            raise WorldlineError(f"--set {text!r}: the key must start with one of {', '.join(s + '.' for s in sections)}")
        out[head[0]].append(text.split(".", 1)[1])
    return out


def _dataclass_with(cls, overrides: list[str], where: str, **values):
    from worldline.core.config import apply_overrides, from_dict

    return from_dict(cls, apply_overrides(values, overrides), where=where)


def _vmc_log(row: dict) -> None:
    if "reward_check" in row:
        typer.echo(f"reward head on held-out episodes: {json.dumps(row['reward_check'])}")
    elif row["generation"] == 1 or row["generation"] % 10 == 0:
        typer.echo(f"generation {row['generation']}: dream return of the CMA-ES mean {row['distribution_mean']:.2f}, "
                   f"best candidate {row['best']:.2f}, sigma {row['sigma']:.3f}")


def register(app: typer.Typer) -> None:
    @app.command("dreamer")
    def dreamer(
        env: str = typer.Option(..., "--env", help="built-in world (pusht, breakout, reacher, reacher-pos, coinrun) or a gymnasium id rendering rgb_array, e.g. CartPole-v1"),
        out: Path = typer.Option(..., "--out", help="run directory: world_model/, agent/, metrics.jsonl, curve.png, summary.json"),
        preset: str = typer.Option("wm-rssm", help="world-model preset of the rssm family"),
        size: str = typer.Option("small", help="preset size"),
        steps: int = typer.Option(20000, "--steps", help="real env steps in all"),
        prefill: int = typer.Option(1000, help="random steps before the first update"),
        train_every: int = typer.Option(4, help="env steps per update (model + agent)"),
        batch_size: int = typer.Option(16, help="replayed windows per update"),
        seq_len: int = typer.Option(32, help="replayed window length"),
        actor_warmup: int = typer.Option(150, help="updates that train only the model and critic before the actor"),
        eval_every: int = typer.Option(2000, help="env steps between evaluations; 0 disables"),
        eval_episodes: int = typer.Option(5, help="episodes per evaluation (random baseline too)"),
        max_episode_steps: int = typer.Option(500, help="cap of a real episode"),
        resolution: int = typer.Option(64, help="frame size the agent sees"),
        seed: int = typer.Option(0),
        save_data: Optional[Path] = typer.Option(None, help="also write the real experience as a worldline dataset"),
        set_: Optional[list[str]] = typer.Option(None, "--set", help="model.KEY=V (world model) or agent.KEY=V (actor-critic)"),
    ) -> None:
        """Train a DreamerV3 agent online: act, add to replay, train the RSSM, train the actor-critic in imagination."""
        import torch

        from worldline.agents.config import ActorCriticConfig, DreamerConfig
        from worldline.agents.dreamer import train_dreamer
        from worldline.core.config import apply_overrides, load_preset
        from worldline.core.errors import WorldlineError
        from worldline.models.rssm.config import RSSMConfig
        from worldline.train.config import RunConfig

        torch.set_num_threads(1)
        sets = _split_sets(set_, ("model", "agent"))
        raw = load_preset(preset, size)
        raw["model"] = apply_overrides(raw["model"], sets["model"])
        model_cfg = RunConfig.from_dict(raw).model
        if not isinstance(model_cfg, RSSMConfig):
            raise WorldlineError(f"preset {preset!r} is a {type(model_cfg).type_name()!r} model; dreamer needs the rssm family")
        agent_cfg = _dataclass_with(ActorCriticConfig, sets["agent"], "agent")
        try:
            cfg = DreamerConfig(env_steps=steps, prefill=prefill, train_every=train_every, batch_size=batch_size,
                                sequence_length=seq_len, actor_warmup=actor_warmup, eval_every=eval_every, eval_episodes=eval_episodes,
                                max_episode_steps=max_episode_steps, seed=seed)
        except ValueError as e:
            raise WorldlineError(str(e)) from None
        summary = train_dreamer(env, model_cfg, agent_cfg, cfg, out, resolution=resolution, save_data=save_data)
        typer.echo(json.dumps({k: summary[k] for k in ("env", "seed", "env_steps", "updates", "random_mean", "final_mean", "final_sample_mean")}))

    @app.command("vmc")
    def vmc(
        env: str = typer.Option(..., "--env", help="built-in world or gymnasium id, e.g. CarRacing-v3"),
        out: Path = typer.Option(..., "--out", help="run directory: data/, model/, controller/, summary.json, cmaes.png"),
        episodes: int = typer.Option(20, help="real episodes recorded to train V and M"),
        max_steps: int = typer.Option(300, help="cap of every real episode (recorded and evaluated)"),
        policy: str = typer.Option("smooth", help="policy of the recording; comma-separated names alternate per episode, e.g. driver,driver,smooth on CarRacing-v3"),
        preset: str = typer.Option("vmc"),
        size: str = typer.Option("small"),
        generations: int = typer.Option(50, help="CMA-ES generations in the dream"),
        popsize: int = typer.Option(16, help="CMA-ES candidates per generation"),
        rollouts: int = typer.Option(16, help="dreams per candidate"),
        horizon: int = typer.Option(100, help="dream steps per rollout"),
        sigma0: float = typer.Option(0.1, help="CMA-ES initial step on the controller's parameters"),
        temperature: Optional[float] = typer.Option(None, help="M's sampling temperature in the dream (default: the model's; > 1 is harder to exploit)"),
        context: int = typer.Option(4, help="real frames M reads before each dream"),
        model: Optional[Path] = typer.Option(None, "--model", help="a saved V+M (e.g. OUT/model/checkpoints/step-001000) to search with instead of training one"),
        eval_episodes: int = typer.Option(20, help="real evaluation episodes, seeds 10000+seed on (controller, random, untrained and bias-only controllers)"),
        seed: int = typer.Option(0),
        set_: Optional[list[str]] = typer.Option(None, "--set", help="model.KEY=V or train.KEY=V for V+M training"),
    ) -> None:
        """V-M-C (Ha & Schmidhuber): record, train V+M, evolve a linear controller by CMA-ES in the dream, evaluate for real."""
        import torch

        from worldline.agents.controller import CMAESConfig
        from worldline.agents.vmc import train_vmc
        from worldline.core.errors import WorldlineError

        torch.set_num_threads(1)
        try:
            cmaes = CMAESConfig(generations=generations, popsize=popsize, rollouts=rollouts, horizon=horizon, sigma0=sigma0, seed=seed)
        except ValueError as e:
            raise WorldlineError(str(e)) from None
        summary = train_vmc(env, out, episodes=episodes, max_steps=max_steps, policy=policy, preset=preset, size=size,
                            overrides=list(set_ or []), cmaes=cmaes, eval_episodes=eval_episodes, context=context, seed=seed,
                            temperature=temperature, model=model, log=_vmc_log)
        typer.echo(json.dumps({k: summary[k] for k in ("env", "seed", "reward_check", "controller_mean", "controller_std", "random_mean",
                                                        "random_std", "initial_controller_mean", "bias_only_mean")}))

    @app.command("dream-agent")
    def dream_agent(
        wm: Path = typer.Option(..., "--wm", help="a saved world model with state features (rssm or vmc), e.g. RUN/world_model"),
        env: str = typer.Option(..., "--env", help="the real env the model was trained on, e.g. CartPole-v1"),
        out: Path = typer.Option(..., "--out", help="output directory: policy/, summary.json"),
        contexts: Optional[Path] = typer.Option(None, help="dataset whose clips start the dreams (default: first frames of --starts real resets)"),
        context_frames: int = typer.Option(1, help="real frames the model filters before a dream starts"),
        starts: int = typer.Option(32, help="real first frames (reset seeds 20000+) to start dreams from, without --contexts"),
        episodes: int = typer.Option(2000, help="dream episodes to train on"),
        batch: int = typer.Option(16, help="dream episodes per update"),
        lr: float = typer.Option(3e-3),
        gamma: float = typer.Option(0.99),
        hidden: int = typer.Option(64, help="0: linear policy; > 0: one hidden layer"),
        entropy: float = typer.Option(0.03, help="entropy bonus"),
        baseline: str = typer.Option("ridge", help="ridge (least-squares value of the observation) or batch (per-step batch mean)"),
        lam: float = typer.Option(0.95, help="GAE lambda against the ridge value (1: returns-to-go minus the value)"),
        dream_steps: int = typer.Option(200, help="cap of a dream episode"),
        eval_episodes: int = typer.Option(50, help="real episodes (seeds 10000+) for the policy and a random one"),
        max_steps: int = typer.Option(500, help="cap of a real episode"),
        seed: int = typer.Option(0),
    ) -> None:
        """Train a REINFORCE policy ONLY inside DreamEnv(observation='state'), then run it in the real env through FilteredEnv."""
        import time

        import numpy as np
        import torch

        from worldline.agents.dream_env import DreamEnv
        from worldline.agents.filtered_env import FilteredEnv
        from worldline.agents.reinforce import ReinforceConfig, run_policy, save_policy, train_reinforce
        from worldline.core.errors import WorldlineError
        from worldline.core.io import write_json
        from worldline.core.pretrained import load_pretrained

        torch.set_num_threads(1)
        try:
            cfg = ReinforceConfig(episodes=episodes, batch=batch, lr=lr, gamma=gamma, hidden=hidden, entropy=entropy, baseline=baseline, lam=lam, seed=seed)
        except ValueError as e:
            raise WorldlineError(str(e)) from None
        if starts < 1:
            raise WorldlineError(f"--starts must be >= 1, got {starts}")
        t0 = time.perf_counter()
        model = load_pretrained(wm)
        real = FilteredEnv(env, model, max_steps=max_steps)
        if contexts is None:
            clips = []
            for i in range(starts):
                real.reset(seed=20_000 + i)
                clips.append(real.render()[None])
            contexts, context_frames = np.stack(clips), 1  # (starts, 1, H, W, 3)
        dream = DreamEnv(model, contexts, context_frames=context_frames, observation="state", max_steps=dream_steps)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn("dream episodes"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      TextColumn("{task.fields[info]}")) as bar:
            task = bar.add_task("train", total=cfg.episodes, info="")
            policy, dream_returns = train_reinforce(dream, cfg, log=lambda row: bar.update(
                task, completed=row["episodes"], info=f"batch return {row['mean_return']:.1f}"))
        t_train = time.perf_counter()
        save_policy(policy, out / "policy")

        def stats(x):
            return {"mean": float(np.mean(x)), "std": float(np.std(x)), "returns": x}

        head = dream_returns[: min(100, len(dream_returns))]
        summary = {
            "world_model": str(wm), "env": env, "config": dataclasses.asdict(cfg), "eval_seeds": [10_000, 10_000 + eval_episodes - 1],
            "dream_first100": float(np.mean(head)), "dream_last100": float(np.mean(dream_returns[-100:])), "dream_returns": dream_returns,
            "real_mode": stats(run_policy(real, policy, eval_episodes, 10_000)),
            "real_sampled": stats(run_policy(real, policy, eval_episodes, 10_000, explore=True)),
            "random": stats(run_policy(real, None, eval_episodes, 10_000)),
            "seconds": {"train": t_train - t0, "total": time.perf_counter() - t0},
        }
        real.close()
        write_json(out / "summary.json", summary)
        typer.echo(json.dumps({"env": env, "dream_first100": summary["dream_first100"], "dream_last100": summary["dream_last100"],
                               **{k: summary[k]["mean"] for k in ("real_mode", "real_sampled", "random")}}))
