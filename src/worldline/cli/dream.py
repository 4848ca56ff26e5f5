"""Commands of the agents area: ``worldline dreamer`` (online DreamerV3 loop) and ``worldline vmc``
(Ha & Schmidhuber's V-M-C: random rollouts, V+M training, CMA-ES controller in the dream)."""

from __future__ import annotations

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


def register(app: typer.Typer) -> None:
    @app.command("dreamer")
    def dreamer(
        env: str = typer.Option(..., "--env", help="built-in world (pusht, breakout, reacher, coinrun) or a gymnasium id rendering rgb_array, e.g. CartPole-v1"),
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
        policy: str = typer.Option("smooth", help="exploration policy of the recording"),
        preset: str = typer.Option("vmc"),
        size: str = typer.Option("small"),
        generations: int = typer.Option(50, help="CMA-ES generations in the dream"),
        popsize: int = typer.Option(16, help="CMA-ES candidates per generation"),
        rollouts: int = typer.Option(16, help="dreams per candidate"),
        horizon: int = typer.Option(100, help="dream steps per rollout"),
        eval_episodes: int = typer.Option(5, help="real evaluation episodes (controller and random, same seeds)"),
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
            cmaes = CMAESConfig(generations=generations, popsize=popsize, rollouts=rollouts, horizon=horizon, seed=seed)
        except ValueError as e:
            raise WorldlineError(str(e)) from None
        summary = train_vmc(env, out, episodes=episodes, max_steps=max_steps, policy=policy, preset=preset, size=size,
                            overrides=list(set_ or []), cmaes=cmaes, eval_episodes=eval_episodes, seed=seed)
        typer.echo(json.dumps({k: summary[k] for k in ("env", "seed", "controller_mean", "random_mean")}))
