"""Closed-loop goal reaching in the real env with a world model and a planner (``worldline plan``).

Protocol (stable-worldmodel / DINO-WM style): a held-out expert trajectory is played by the scripted
expert from a seed no dataset was recorded with; the env is reset to its state at a start step, the
goal is the picture of its state ``offset`` (25) env steps later, and the agent has ``budget`` (50)
env steps. Each decision the planner searches ``horizon`` model steps (MPC, ``execute`` of them are
carried out, then it replans from the real frames). A pusht episode succeeds as soon as the env's
success test for the goal state holds (the episode then stops, as the env would terminate it); a
reacher episode succeeds if the test holds at the end of the budget.

Success tests:
- pusht (DINO-WM's ``eval_state``): the (agent xy, block xy) vector within 20 px (of the 512 px
  world) of the goal's and the block angle within pi/9 (20 degrees); distance = that 4-D norm.
- reacher and reacher-pos (the same arm under joint-position control, envs/arm.py): the fingertip
  within 2 cm of the goal state's fingertip (the arena is 0.4 m across);
  distance = fingertip distance in metres. Tasks start from the expert episode's reset (arm at
  rest) at least 5 cm from the goal; the episode runs the whole budget and success is judged on
  its final state (random torques sweep the fingertip through the goal by chance half the time).

A model trained with proprioception (``model.proprio``) gets the robot's readings with each context
frame; with ``proprio_weight`` in the goal cost, the goal also holds the readings in the goal state
(DINO-WM's objective), otherwise the goal is the picture alone (V-JEPA 2-AC).

Baselines beside the planner: ``random`` (uniform random actions, same loop) and ``goal-copying``
(the expert's own actions from start to goal replayed open loop: the trajectory the goal was copied
from; it shows the goal is reachable within the budget and how repeatable the env is from a reset).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from einops import rearrange

from worldline.core.contracts import ActionSpec, WorldModel, device_of
from worldline.core.errors import WorldlineError
from worldline.core.io import write_json

PLANNING_ENVS = ("pusht", "reacher", "reacher-pos")
PUSHT_POS_TOL = 20.0  # px in the 512-px world
PUSHT_ANGLE_TOL = math.pi / 9
REACHER_TOL = 0.02  # m
REACHER_MIN_START = 0.05  # m: a reacher task starts at least this far from its goal (2.5 x the tolerance)


@dataclasses.dataclass
class GoalTask:
    """One start/goal pair cut from an expert trajectory."""

    seed: int  # env reset seed of the expert episode
    start: int  # env step of the start state within it
    start_state: np.ndarray
    goal_state: np.ndarray
    goal_frame: np.ndarray  # (H, W, 3) uint8
    expert_actions: np.ndarray  # (offset, A): what the expert did from start to goal


# ----------------------------------------------------------------------------------------------
# worlds: state get/set and the success test
# ----------------------------------------------------------------------------------------------


class PlanningWorld:
    """A built-in env with what planning needs: read/write its physical state, test success."""

    def __init__(self, name: str, resolution: int):
        from worldline.envs.registry import make_env

        if name not in PLANNING_ENVS:
            raise WorldlineError(f"the planning benchmark supports the envs {', '.join(PLANNING_ENVS)}, got {name!r}")
        self.name = name
        # PushT ends an episode once the goal pose is met (stable-worldmodel); a reacher episode runs
        # the whole budget and succeeds if the fingertip is on the goal at the end: flailing arms
        # sweep through any point, so touching it once says little.
        self.ends_on_success = name == "pusht"
        self.arm = name != "pusht"  # reacher (torques) or reacher-pos (joint positions): the same arm and tests
        self.env, self.info = make_env(name, resolution)
        self.env.reset(seed=0)

    @property
    def action_spec(self) -> ActionSpec:
        return self.info.action_spec

    def get_state(self) -> np.ndarray:
        u = self.env.unwrapped
        if self.name == "pusht":  # the pose first (what the success test reads), then the velocities
            return np.array([*u.agent.position, *u.block.position, u.block.angle, *u.agent.velocity,
                             *u.block.velocity, u.block.angular_velocity], dtype=np.float64)
        return np.concatenate([u.data.qpos, u.data.qvel]).astype(np.float64)

    def set_state(self, state: np.ndarray) -> np.ndarray:
        """Put the env in ``state`` and return its frame (H, W, 3) uint8."""
        if self.name == "pusht":
            u = self.env.unwrapped
            self.env.reset(options={"reset_to_state": np.asarray(state[:5], dtype=np.float64)})
            # gym-pusht sets the block's position before its angle, and turning about the centre of
            # mass then moves it (a few px); set the angle first, and restore the motion, which its
            # reset leaves at rest, so a replayed trajectory stays on the recorded one.
            u.block.angle = float(state[4])
            u.block.position = tuple(state[2:4])
            u.agent.position = tuple(state[0:2])
            if len(state) > 5:
                u.agent.velocity, u.block.velocity = tuple(state[5:7]), tuple(state[7:9])
                u.block.angular_velocity = float(state[9])
            self.env._obs = u.get_obs()  # the Rendered wrapper shows the observation: redraw it
        else:
            u = self.env.unwrapped
            nq = u.model.nq
            u.set_state(np.asarray(state[:nq]), np.asarray(state[nq:]))
        return self.env.render()

    def step(self, action: np.ndarray) -> np.ndarray:
        self.env.step(np.asarray(action, dtype=np.float32))
        return self.env.render()

    def proprio(self) -> np.ndarray:
        """The robot's own readings now, as ``worldline record`` stores them (observation.state)."""
        from worldline.envs.registry import read_proprio

        return read_proprio(self.env, self.info)

    def hold_action(self) -> np.ndarray:
        """The action that keeps the robot where it is, from its proprioception alone (pusht: the
        disc's own position as the PD target; reacher: no torque; reacher-pos: no joint step).
        Planning starts its search there."""
        if self.name == "pusht":
            return np.array(self.env.unwrapped.agent.position, dtype=np.float32)
        return np.zeros(self.action_spec.dim, dtype=np.float32)

    def fingertip(self, state: np.ndarray) -> np.ndarray:
        u = self.env.unwrapped
        saved = self.get_state()
        self.set_state(state)
        tip = np.array(u.get_body_com("fingertip")[:2])
        self.set_state(saved)
        return tip

    def distance(self, state: np.ndarray, goal: np.ndarray, goal_tip: np.ndarray | None = None) -> float:
        if self.name == "pusht":
            return float(np.linalg.norm(state[:4] - goal[:4]))
        tip = np.array(self.env.unwrapped.get_body_com("fingertip")[:2])  # of the current state
        return float(np.linalg.norm(tip - goal_tip))

    def success(self, state: np.ndarray, goal: np.ndarray, goal_tip: np.ndarray | None = None) -> bool:
        if self.name == "pusht":
            angle = abs(state[4] - goal[4]) % (2 * math.pi)
            angle = min(angle, 2 * math.pi - angle)
            return bool(np.linalg.norm(state[:4] - goal[:4]) < PUSHT_POS_TOL and angle < PUSHT_ANGLE_TOL)
        return self.distance(state, goal, goal_tip) < REACHER_TOL

    def close(self) -> None:
        self.env.close()


def expert_tasks(world: PlanningWorld, episodes: int, offset: int = 25, seed: int = 1_000_000,
                 max_start: int | None = None) -> list[GoalTask]:
    """``episodes`` start/goal pairs from scripted-expert trajectories at seeds ``seed + i``.

    The seeds lie far from the recorder's (0, 1, ...), so the trajectories are held out from any
    training data recorded with default seeds. The start step is drawn in [0, max_start) (default:
    60 for pusht; 1 for reacher, whose expert reaches the target within a few steps and then holds
    it, so every later start is already at its goal). A start too near its goal (pusht: it passes
    the success test; reacher: fingertip within ``REACHER_MIN_START``) moves to the latest earlier
    step that is not, and a trajectory with no such step is skipped for the next seed (at most
    4 x ``episodes`` seeds)."""
    from worldline.envs.policies import make_policy

    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise WorldlineError(f"need at least one expert trajectory (episodes >= 1), got {episodes!r}")
    if offset < 1:
        raise WorldlineError(f"goal offset must be >= 1 env step, got {offset}")
    if max_start is None:
        max_start = 60 if world.name == "pusht" else 1
    tasks = []
    rng = np.random.default_rng(seed)
    for i in range(4 * episodes):
        if len(tasks) == episodes:
            break
        s = seed + i
        _, info = world.env.reset(seed=s)
        policy = make_policy("expert", world.env, s)
        obs = world.env.unwrapped._get_obs() if world.arm else None
        start = int(rng.integers(0, max_start))
        states, actions = [world.get_state()], []
        obs_, info_ = (obs, info)
        for _ in range(start + offset):
            action = policy(obs_, info_)
            obs_, _, terminated, truncated, info_ = world.env.step(action)
            actions.append(np.asarray(action, np.float32).reshape(-1))
            states.append(world.get_state())
            if terminated or truncated:
                break
        if len(actions) < offset:
            continue
        start = min(start, len(actions) - offset)
        while start >= 0 and _too_near(world, states[start], states[start + offset]):
            start -= 1
        if start < 0:
            continue
        goal_state = states[start + offset]
        goal_frame = world.set_state(goal_state)
        tasks.append(GoalTask(s, start, states[start], goal_state, goal_frame, np.stack(actions[start : start + offset])))
    if not tasks:
        raise WorldlineError(f"no expert trajectory of {world.name} is {offset} steps long: the expert dataset is empty")
    return tasks


def _too_near(world: PlanningWorld, state: np.ndarray, goal: np.ndarray) -> bool:
    """Is ``state`` too near ``goal`` to make a task (pusht: already a success; reacher: within REACHER_MIN_START)?"""
    if world.name == "pusht":
        return world.success(state, goal)
    goal_tip, tip = world.fingertip(goal), world.fingertip(state)
    return float(np.linalg.norm(tip - goal_tip)) < REACHER_MIN_START


# ----------------------------------------------------------------------------------------------
# checks
# ----------------------------------------------------------------------------------------------


def check_action_space(model: WorldModel, env_spec: ActionSpec, env_name: str) -> None:
    """The env must act in the space the checkpoint was trained with."""
    want = getattr(getattr(model, "config", None), "action_space", None) or model.action_spec
    same = want.kind == env_spec.kind and want.dim == env_spec.dim and want.n == env_spec.n
    if same and want.kind == "continuous" and want.low is not None and env_spec.low is not None:
        same = np.allclose(want.low, env_spec.low) and np.allclose(want.high, env_spec.high)
    if not same:
        raise WorldlineError(
            f"env {env_name!r} acts in {env_spec.kind} dim {env_spec.dim} {env_spec.low}..{env_spec.high}, "
            f"the checkpoint was trained on {want.kind} dim {want.dim} {want.low}..{want.high}")


def frames_tensor(frames: Sequence[np.ndarray] | np.ndarray, device) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (1, T, 3, H, W) float in [-1, 1]."""
    x = torch.from_numpy(np.stack([np.asarray(f) for f in frames])).to(device)
    return rearrange(x, "t h w c -> 1 t c h w").float() / 127.5 - 1


def goal_embedding(model: WorldModel, goal_frame: np.ndarray) -> torch.Tensor:
    """Embedding (1, ...) of a goal picture (H, W, 3) uint8, checked against the model's frame size."""
    goal = np.asarray(goal_frame)
    size = tuple(getattr(model.config, "image_size", goal.shape[:2]))
    if goal.ndim != 3 or goal.shape[-1] != 3:
        raise WorldlineError(f"goal image must be (H, W, 3) RGB, got shape {goal.shape}")
    if tuple(goal.shape[:2]) != size:
        raise WorldlineError(f"goal image is {goal.shape[0]}x{goal.shape[1]}, the model sees {size[0]}x{size[1]} frames")
    with torch.no_grad():
        return model.embed(frames_tensor([goal], device_of(model)))[:, 0]


def goal_with_proprio(model: WorldModel, world: PlanningWorld, task: GoalTask, goal_z: torch.Tensor):
    """The goal embedding plus the robot's readings in the goal state, standardised as the model
    standardises them (DINO-WM plans towards both)."""
    from worldline.planning import Goal

    if not getattr(model, "uses_proprio", False):
        raise WorldlineError("a proprioception weight in the goal cost needs a model trained with model.proprio=true")
    world.set_state(task.goal_state)
    reading = torch.tensor(world.proprio(), device=goal_z.device)[None]
    with torch.no_grad():
        return Goal(goal_z, model.normalize_proprio(reading))


# ----------------------------------------------------------------------------------------------
# the closed loop
# ----------------------------------------------------------------------------------------------


def run_episode(model: WorldModel, world: PlanningWorld, task: GoalTask, mpc, budget: int,
                trace: bool = False) -> dict[str, Any]:
    """Play one task under ``mpc`` (an :class:`~worldline.planning.MPC`) or, with ``mpc=None``, replay
    the expert's actions. Returns success, final distance, decision times and (with ``trace``) frames."""
    k = int(getattr(model.config, "frameskip", 1))
    K = int(getattr(model.config, "context_frames", 1))
    goal_tip = world.fingertip(task.goal_state) if world.arm else None
    device = device_of(model)
    goal_z = goal_embedding(model, task.goal_frame) if mpc is not None else None
    if mpc is not None and getattr(getattr(mpc.planner, "cost", None), "proprio_weight", 0) > 0:
        goal_z = goal_with_proprio(model, world, task, goal_z)
    frame = world.set_state(task.start_state)
    frames, macro, times, executed = [frame], [], [], []
    proprio = getattr(model, "uses_proprio", False)
    readings = [world.proprio()] if proprio else []  # the robot's readings with each frame, for a model that reads them
    predicted: list[np.ndarray] = []  # probe picture of the plan's prediction for each executed model step
    steps, success = 0, world.ends_on_success and world.success(world.get_state(), task.goal_state, goal_tip)
    if mpc is not None:
        hold = np.tile(world.hold_action(), (1, mpc.horizon, k))  # (1, horizon, k * A)
        mpc.reset(torch.tensor(hold, device=device))
    while steps < budget and not success:
        if mpc is None:
            chunk = task.expert_actions[steps : steps + k]
            if len(chunk) == 0:
                break
            plan = np.concatenate([chunk, np.repeat(chunk[-1:], k - len(chunk), 0)]).reshape(1, -1)
        else:
            ctx = frames_tensor(frames[-K:], device)
            ctx_actions = None
            if K > 1 and len(macro) and ctx.shape[1] > 1:
                ctx_actions = torch.tensor(np.stack(macro[-(ctx.shape[1] - 1):]), device=device)[None].float()
            extra = {}
            if proprio:
                extra["context_proprio"] = torch.tensor(np.stack(readings[-ctx.shape[1]:]), device=device)[None]
            with torch.no_grad():
                state = model.init_state(ctx, ctx_actions, **extra)
            t0 = time.perf_counter()
            acts = mpc.act(model, state, goal_z)  # (1, execute, k*A)
            times.append(time.perf_counter() - t0)
            if trace:
                with torch.no_grad():
                    try:
                        pics = model.decode(model.imagine(state, acts))[0]  # (execute, 3, H, W)
                        predicted += list(((pics.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy())
                    except WorldlineError:
                        pass
            plan = acts[0].detach().cpu().numpy()
        for row in plan:
            env_actions = row.reshape(k, -1)
            for a in env_actions:
                if steps >= budget:
                    break
                frame = world.step(a)
                executed.append(a)
                steps += 1
                if world.ends_on_success and world.success(world.get_state(), task.goal_state, goal_tip):
                    success = True
                    break
            frames.append(frame)
            if proprio:
                readings.append(world.proprio())
            macro.append(row.astype(np.float32))
            if success or steps >= budget:
                break
    final = world.get_state()
    if not world.ends_on_success:
        success = world.success(final, task.goal_state, goal_tip)
    out = {"seed": task.seed, "start": task.start, "success": bool(success), "steps": steps,
           "final_distance": world.distance(final, task.goal_state, goal_tip), "decision_s": times}
    if trace:
        out["frames"], out["predicted"], out["actions"] = frames, predicted, [np.asarray(a).tolist() for a in executed]
    return out


def benchmark(model: WorldModel, env: str, planner_name: str = "cem", episodes: int = 50, *, budget: int = 50,
              offset: int = 25, horizon: int = 5, execute: int = 1, seed: int = 1_000_000, baselines: bool = True,
              traces: int = 3, out_dir: str | os.PathLike | None = None, planner_kwargs: dict | None = None,
              progress: bool = True) -> dict[str, Any]:
    """Success rate, mean final distance and time per decision of ``planner_name`` on ``episodes``
    expert goals of ``env``, with the random and goal-copying baselines; writes traces to ``out_dir``."""
    from worldline.planning import MPC, PLANNERS

    if planner_name not in PLANNERS:
        raise WorldlineError(f"unknown planner {planner_name!r} (known: {', '.join(PLANNERS)})")
    if budget < 1 or horizon < 1:
        raise WorldlineError(f"budget and horizon must be >= 1, got {budget=} {horizon=}")
    size = tuple(getattr(model.config, "image_size", (64, 64)))
    if size[0] != size[1]:
        raise WorldlineError(f"the built-in envs render square frames, the model sees {size[0]}x{size[1]}")
    model.eval()
    world = PlanningWorld(env, size[0])
    try:
        check_action_space(model, world.action_spec, env)
        want = list(getattr(model.config, "proprio_names", [])) if getattr(model, "uses_proprio", False) else []
        if want and want != list(world.info.proprio):
            raise WorldlineError(f"the checkpoint reads proprioception {want}, env {env!r} gives {list(world.info.proprio) or 'none'}")
        tasks = expert_tasks(world, episodes, offset, seed)
        runs = {planner_name: MPC(PLANNERS[planner_name](**(planner_kwargs or {})), horizon, execute)}
        if baselines and planner_name != "random":
            runs["random"] = MPC(PLANNERS["random"](seed=seed), horizon, execute)
        if baselines:
            runs["goal-copying"] = None
        results: dict[str, Any] = {"env": env, "planner": planner_name, "episodes": len(tasks), "budget": budget,
                                   "offset": offset, "horizon": horizon, "execute": execute,
                                   "frameskip": int(getattr(model.config, "frameskip", 1)), "methods": {}}
        traced: list[Path] = []
        bar = _bar(progress, len(tasks) * len(runs))
        for name, mpc in runs.items():
            rows = []
            for i, task in enumerate(tasks):
                want_trace = out_dir is not None and name == planner_name and i < traces
                rows.append(run_episode(model, world, task, mpc, budget, trace=want_trace))
                if want_trace:
                    traced.append(write_trace(Path(out_dir) / "traces", f"{env}_{name}_{i:02d}", rows[-1], task, size))
                if bar is not None:
                    bar[0].advance(bar[1])
                    bar[0].update(bar[1], description=f"{name}: {sum(r['success'] for r in rows)}/{len(rows)} reached")
            results["methods"][name] = summarize(rows)
        if bar is not None:
            bar[0].stop()
        results["traces"] = [str(p) for p in traced]
    finally:
        world.close()
    if out_dir is not None:
        write_json(Path(out_dir) / "planning.json", results)
    return results


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    times = [t for r in rows for t in r["decision_s"]]
    return {
        "success_rate": float(np.mean([r["success"] for r in rows])),
        "mean_final_distance": float(np.mean([r["final_distance"] for r in rows])),
        "decision_s_mean": float(np.mean(times)) if times else 0.0,
        "decision_s_median": float(np.median(times)) if times else 0.0,
        "decisions": len(times),
        "mean_steps": float(np.mean([r["steps"] for r in rows])),
        "per_episode": [{k: r[k] for k in ("seed", "start", "success", "steps", "final_distance")} for r in rows],
    }


def _bar(enabled: bool, total: int):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("eta"), TimeRemainingColumn())
    bar.start()
    return bar, bar.add_task("planning", total=total)


def write_trace(folder: Path, stem: str, row: dict[str, Any], task: GoalTask, size: tuple[int, int]) -> Path:
    """gif + mp4 of one episode: real frame | goal | the plan's predicted frame through the probe
    (black where the model has no probe), plus the chosen actions as JSON."""
    from worldline.data.video import write_video
    from worldline.eval.rollout import gif_scale, upscale, write_gif

    folder.mkdir(parents=True, exist_ok=True)
    H, W = size
    blank = np.zeros((H, W, 3), np.uint8)
    panels = []
    for t, real in enumerate(row["frames"]):
        pred = row["predicted"][t - 1] if 0 < t <= len(row["predicted"]) else blank
        sep = np.full((H, 2, 3), 255, np.uint8)
        panels.append(np.concatenate([real, sep, task.goal_frame, sep, pred], axis=1))
    video = np.stack(panels)
    video = np.pad(video, ((0, 0), (0, video.shape[1] % 2), (0, video.shape[2] % 2), (0, 0)), constant_values=255)
    big = upscale(video, gif_scale(H))
    write_video(folder / f"{stem}.mp4", big, 4.0, pix_fmt="yuv420p")
    gif = write_gif(folder / f"{stem}.gif", big, 4.0)
    write_json(folder / f"{stem}.json", {"success": row["success"], "steps": row["steps"],
                                         "final_distance": row["final_distance"], "actions": row["actions"]})
    return gif


def format_table(results: dict[str, Any]) -> str:
    lines = [f"{results['env']}: {results['episodes']} goals {results['offset']} steps ahead, budget {results['budget']} "
             f"steps, horizon {results['horizon']} x frameskip {results['frameskip']}",
             f"{'method':<14}{'success':>9}{'final dist':>12}{'s/decision':>12}"]
    for name, m in results["methods"].items():
        lines.append(f"{name:<14}{m['success_rate'] * 100:>8.0f}%{m['mean_final_distance']:>12.3f}{m['decision_s_mean']:>12.3f}")
    return "\n".join(lines)


def report_section(results: dict[str, Any], out: Path) -> str:
    """HTML for eval/report.py: the table and the traces (paths relative to ``out``)."""
    import html
    import shutil

    rows = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{m['success_rate'] * 100:.0f}%</td><td>{m['mean_final_distance']:.3f}</td>"
        f"<td>{m['decision_s_mean']:.3f} s</td></tr>" for n, m in results["methods"].items())
    unit = "px (agent+block xy, 512-px world)" if results["env"] == "pusht" else "m (fingertip)"
    parts = [f'<p class="note">{results["episodes"]} goals {results["offset"]} env steps ahead in held-out expert '
             f'trajectories, {results["budget"]}-step budget; distance in {unit}. Traces: real | goal | predicted '
             "(probe) frame.</p>",
             f"<table><tr><th>method</th><th>success</th><th>final distance</th><th>time/decision</th></tr>{rows}</table>"]
    figs = []
    for gif in results.get("traces", []):
        gif = Path(gif)
        if not gif.is_file():
            continue
        dest = out / "planning" / gif.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if gif.resolve() != dest.resolve():
            shutil.copyfile(gif, dest)
        figs.append(f'<figure><img src="planning/{html.escape(gif.name)}" alt="{html.escape(gif.stem)}">'
                    f"<figcaption>{html.escape(gif.stem)}</figcaption></figure>")
    parts.append(f'<div class="gifs">{"".join(figs)}</div>')
    return "".join(parts)
