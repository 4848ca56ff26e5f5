"""The online Dreamer loop (``worldline dreamer --env ID``): act in the real env, add the step to the
replay, train the world model on replayed windows, train the agent in imagination from the model's
posterior states (the actor only after ``actor_warmup`` updates); evaluate the policy's mode and
samples from the policy against a random policy on the same seeds.

Outputs in ``out_dir``: ``world_model/`` (save_pretrained), ``agent/`` (safetensors + JSON),
``metrics.jsonl`` (every episode and update log), ``summary.json``, ``curve.png``, and with
``save_data`` the real experience as a worldline dataset.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from worldline.agents.config import ActorCriticConfig, DreamerConfig
from worldline.agents.filtered_env import frame_tensor
from worldline.agents.imagination import ImaginationTrainer
from worldline.agents.networks import ActorCritic, Policy
from worldline.agents.replay import Replay
from worldline.core.config import from_dict, to_dict
from worldline.core.errors import WorldlineError
from worldline.core.io import atomic_dir, read_json, write_json
from worldline.models.rssm.model import RSSMState, RSSMWorldModel


# ----------------------------------------------------------------------------------------------
# acting in a real env
# ----------------------------------------------------------------------------------------------


class Player:
    """Filters real frames through the world model (``filter_start``/``filter_step``, as
    :class:`~worldline.agents.filtered_env.FilteredEnv` does) and acts with the agent (one env, batch 1)."""

    def __init__(self, world_model: RSSMWorldModel, agent: ActorCritic):
        self.wm, self.agent = world_model, agent
        self.state: RSSMState | None = None

    @torch.no_grad()
    def reset(self, frame: np.ndarray) -> None:
        self.state = self.wm.filter_start(frame_tensor(frame))

    @torch.no_grad()
    def act(self, explore: bool) -> tuple[Any, np.ndarray, torch.Tensor]:
        """(env action, dataset action row, world-model action features (1, A))."""
        policy = self.agent.policy(self.state.feat)
        feats = Policy.to_world(policy.sample() if explore else policy.mode(), self.agent.kind)
        row = self.wm.actions.to_actions(feats)[0].numpy().astype(np.float32)
        action = int(row[0]) if self.agent.kind == "discrete" else row
        return action, row, feats

    @torch.no_grad()
    def observe(self, frame: np.ndarray, action_feats: torch.Tensor) -> None:
        self.state = self.wm.filter_step(self.state, action_feats, frame_tensor(frame))


def run_episodes(env_id: str, act: Callable[[np.ndarray, Any], Any], episodes: int, seed: int,
                 max_steps: int, resolution: int = 64, reset_fn: Callable[[np.ndarray], None] | None = None) -> list[float]:
    """Returns of ``episodes`` real episodes, episode i reset with ``seed + i``. ``act(frame, env)``
    picks the action; ``reset_fn(frame)`` is told each first frame."""
    from worldline.envs.registry import make_env

    env, _ = make_env(env_id, resolution, max_steps=max_steps)
    returns = []
    try:
        for i in range(episodes):
            env.reset(seed=seed + i)
            env.action_space.seed(seed + i)
            frame = env.render()
            if reset_fn is not None:
                reset_fn(frame)
            total, done = 0.0, False
            while not done:
                _, reward, terminated, truncated, _ = env.step(act(frame, env))
                total += float(reward)
                done = terminated or truncated
                frame = env.render()
            returns.append(total)
    finally:
        env.close()
    return returns


def evaluate_agent(world_model: RSSMWorldModel, agent: ActorCritic, env_id: str, episodes: int, seed: int,
                   max_steps: int, resolution: int = 64, explore: bool = False) -> list[float]:
    """Returns in the real env of the policy's mode, or with ``explore`` of samples from it (the mode of a
    policy that is still near uniform is one constant action: 9 steps on CartPole, below random).
    Latent and action samples are drawn under a torch seed of ``seed``: the same agent gives the same
    returns, and the caller's random stream is left as it was."""
    player = Player(world_model, agent)
    last: dict[str, torch.Tensor] = {}

    def act(frame, env):
        if "feats" in last:
            player.observe(frame, last["feats"])
        action, _, last["feats"] = player.act(explore=explore)
        return action

    def reset(frame):
        last.clear()
        player.reset(frame)

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return run_episodes(env_id, act, episodes, seed, max_steps, resolution, reset)


def random_returns(env_id: str, episodes: int, seed: int, max_steps: int, resolution: int = 64) -> list[float]:
    return run_episodes(env_id, lambda frame, env: env.action_space.sample(), episodes, seed, max_steps, resolution)


# ----------------------------------------------------------------------------------------------
# saving an agent
# ----------------------------------------------------------------------------------------------


def save_agent(agent: ActorCritic, directory: str | Path) -> Path:
    from safetensors.torch import save_file

    from worldline.core.pretrained import state_dict_for_save

    with atomic_dir(directory, overwrite=True) as tmp:
        write_json(tmp / "config.json", {"feat_dim": agent.feat_dim, "action_kind": agent.kind,
                                         "action_dim": agent.action_dim, "actor_critic": to_dict(agent.config)})
        save_file(state_dict_for_save(agent), str(tmp / "agent.safetensors"))
    return Path(directory)


def load_agent(directory: str | Path) -> ActorCritic:
    from safetensors.torch import load_file

    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise WorldlineError(f"{directory}: not a saved agent (no config.json)")
    raw = read_json(directory / "config.json")
    try:
        cfg = from_dict(ActorCriticConfig, raw["actor_critic"], where=f"{directory}/config.json: actor_critic")
        agent = ActorCritic(int(raw["feat_dim"]), str(raw["action_kind"]), int(raw["action_dim"]), cfg)
    except KeyError as e:
        raise WorldlineError(f"{directory}/config.json: missing field {e.args[0]!r}") from None
    agent.load_state_dict(load_file(str(directory / "agent.safetensors")))
    return agent.eval()


# ----------------------------------------------------------------------------------------------
# the online loop
# ----------------------------------------------------------------------------------------------


def train_dreamer(env_id: str, model_config, agent_config: ActorCriticConfig, config: DreamerConfig,
                  out_dir: str | Path, resolution: int = 64, save_data: str | Path | None = None,
                  progress: bool = True, log: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Train a world model and an agent online in ``env_id``; returns the summary it writes."""
    from worldline.envs.registry import make_env

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    env, world = make_env(env_id, resolution, max_steps=config.max_episode_steps)
    spec = world.action_spec
    if spec.kind not in ("discrete", "continuous"):
        raise WorldlineError(f"env {env_id!r} has no actions to learn ({spec.kind})")
    model_config = dataclasses.replace(model_config, action_space=spec, image_size=(resolution, resolution),
                                       sequence_length=config.sequence_length, reward_head=True)
    wm = RSSMWorldModel(model_config)
    agent = ActorCritic(wm.feat_dim, spec.kind, wm.actions.dim, agent_config)
    behaviour = ImaginationTrainer(agent)
    wm_opt = torch.optim.Adam(wm.parameters(), lr=config.model_lr, eps=1e-8)
    replay = Replay(config.env_steps, (resolution, resolution, 3), spec.dim)
    player = Player(wm, agent)
    metrics = (out_dir / "metrics.jsonl").open("w")

    def emit(row: dict) -> None:
        metrics.write(json.dumps(row) + "\n")
        metrics.flush()
        if log is not None:
            log(row)

    baseline = random_returns(env_id, config.eval_episodes, 10_000 + config.seed, config.max_episode_steps, resolution)
    emit({"kind": "random", "env_steps": 0, "returns": baseline, "mean": float(np.mean(baseline))})

    bar = _progress(progress, config.env_steps)
    start, updates, episode_return, episodes, evals = time.perf_counter(), 0, 0.0, 0, []
    env.reset(seed=config.seed)
    env.action_space.seed(config.seed)
    frame, first = env.render(), True
    player.reset(frame)
    try:
        for step in range(config.env_steps):
            if step < config.prefill:
                action = env.action_space.sample()
                row = np.asarray(action, np.float32).reshape(-1)
                feats = wm.actions(torch.from_numpy(row)[None])
            else:
                action, row, feats = player.act(explore=True)
            _, reward, terminated, truncated, _ = env.step(action)
            end = bool(terminated or truncated)
            replay.add(frame, row, float(reward), bool(terminated), end or step == config.env_steps - 1, first)
            episode_return += float(reward)
            if end:
                episodes += 1
                emit({"kind": "train", "env_steps": step + 1, "return": episode_return, "episode": episodes})
                bar(step + 1, f"episode {episodes} return {episode_return:.1f}")
                env.reset()
                frame, first, episode_return = env.render(), True, 0.0
                player.reset(frame)
            else:
                frame, first = env.render(), False
                player.observe(frame, feats)

            if step + 1 >= config.prefill and len(replay) >= config.sequence_length and (step + 1) % config.train_every == 0:
                logs = train_step(wm, wm_opt, behaviour, replay.sample(config.batch_size, config.sequence_length, rng), config.model_grad_clip,
                                  train_actor=updates >= config.actor_warmup)
                updates += 1
                if updates % 50 == 0:
                    emit({"kind": "update", "env_steps": step + 1, "updates": updates,
                          "seconds": time.perf_counter() - start, **logs})
            if config.eval_every and (step + 1) % config.eval_every == 0 and step + 1 > config.prefill:
                returns = evaluate_agent(wm, agent, env_id, config.eval_episodes, 10_000 + config.seed, config.max_episode_steps, resolution)
                sampled = evaluate_agent(wm, agent, env_id, config.eval_episodes, 10_000 + config.seed, config.max_episode_steps, resolution, explore=True)
                evals.append((step + 1, float(np.mean(returns)), float(np.mean(sampled))))
                emit({"kind": "eval", "env_steps": step + 1, "returns": returns, "mean": float(np.mean(returns)),
                      "sample_returns": sampled, "sample_mean": float(np.mean(sampled)), "seconds": time.perf_counter() - start})
            bar(step + 1, None)
    finally:
        bar.close()
        metrics.close()
        env.close()

    final = evaluate_agent(wm, agent, env_id, config.eval_episodes, 10_000 + config.seed, config.max_episode_steps, resolution)
    final_sampled = evaluate_agent(wm, agent, env_id, config.eval_episodes, 10_000 + config.seed, config.max_episode_steps,
                                   resolution, explore=True)
    wm.save_pretrained(out_dir / "world_model")
    save_agent(agent, out_dir / "agent")
    if save_data:
        replay.to_dataset(save_data, world.fps, spec, env_id, world.task)
    summary = {
        "env": env_id, "seed": config.seed, "env_steps": config.env_steps, "updates": updates,
        "seconds": time.perf_counter() - start, "random_mean": float(np.mean(baseline)), "random_returns": baseline,
        "final_mean": float(np.mean(final)), "final_returns": final,
        "final_sample_mean": float(np.mean(final_sampled)), "final_sample_returns": final_sampled,
        "evals": evals,  # (env steps, mean return of the policy's mode, of samples from the policy)
    }
    write_json(out_dir / "summary.json", summary)
    plot_curve(out_dir / "metrics.jsonl", out_dir / "curve.png")
    return summary


def train_step(wm: RSSMWorldModel, wm_opt: torch.optim.Optimizer, behaviour: ImaginationTrainer,
               batch: dict[str, torch.Tensor], grad_clip: float, train_actor: bool = True) -> dict[str, float]:
    """One world-model update, then one actor-critic update from its posterior states."""
    wm.train()
    loss, logs, starts = wm.loss_and_states(batch)
    wm_opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(wm.parameters(), grad_clip)
    wm_opt.step()
    wm.eval()
    logs = {"model_loss": loss.item(), **logs}
    logs.update(behaviour.train(wm, starts, train_actor=train_actor))  # it freezes the world model while it trains the agent
    return logs


def plot_curve(metrics_path: Path, out_png: Path) -> None:
    """Episode returns (training, with exploration) and evaluation means against env steps, random as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from worldline.core.io import atomic_path

    rows = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    train = [(r["env_steps"], r["return"]) for r in rows if r["kind"] == "train"]
    evals = [(r["env_steps"], r["mean"]) for r in rows if r["kind"] == "eval"]
    sampled = [(r["env_steps"], r["sample_mean"]) for r in rows if r["kind"] == "eval" and "sample_mean" in r]
    random = [r["mean"] for r in rows if r["kind"] == "random"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if train:
        ax.plot(*zip(*train), ".", alpha=0.3, label="training episodes")
    if evals:
        ax.plot(*zip(*evals), "o-", label="evaluation (policy mode)")
    if sampled:
        ax.plot(*zip(*sampled), "s-", label="evaluation (sampled policy)")
    if random:
        ax.axhline(random[0], color="grey", ls="--", label="random policy")
    ax.set_xlabel("env steps")
    ax.set_ylabel("return")
    ax.legend()
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


class _progress:
    """Rich progress over env steps (rate, ETA, last episode), or nothing."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.text = enabled, ""
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.p = Progress(TextColumn("dreamer"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                              TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
            self.task = self.p.add_task("steps", total=total, rate="", info="")
            self.p.start()
            self.t0 = time.perf_counter()

    def __call__(self, done: int, info: str | None) -> None:
        if not self.enabled:
            return
        if info is not None:
            self.text = info
        if done % 50 == 0 or info is not None:
            rate = done / max(time.perf_counter() - self.t0, 1e-9)
            self.p.update(self.task, completed=done, rate=f"{rate:.1f} steps/s", info=self.text)

    def close(self) -> None:
        if self.enabled:
            self.p.stop()
