"""Planners on toy systems with known answers, on the deterministic family, and the plan benchmark/CLI."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from torch import Tensor

from worldline.core.contracts import ActionSpec, State, WorldModel
from worldline.core.errors import WorldlineError
from worldline.planning import CEM, MPC, MPPI, GoalCost, GradientPlanner, RandomPlanner, expand_state


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@dataclasses.dataclass
class ToyState(State):
    x: Tensor  # (B, D)

    def clone(self):
        return ToyState(self.x.clone())


class LinearWorld(WorldModel):
    """x' = A x + B a with actions in ``spec``; the latent is the state itself."""

    def __init__(self, A: Tensor, Bm: Tensor, spec: ActionSpec, identity: bool = False):
        super().__init__()
        self.A, self.Bm, self.action_spec, self.identity = A, Bm, spec, identity

    def loss(self, batch):
        raise NotImplementedError

    def window(self):
        return 1

    def init_state(self, context_frames, context_actions=None, text=None):
        return ToyState(context_frames)

    def step(self, state, action):
        return ToyState(state.x @ self.A.T + action @ self.Bm.T), None

    def embed(self, frames):
        return frames

    def imagine(self, state, actions):
        if self.identity:  # the "trajectory" is the action sequence: cost = a known quadratic of the actions
            return actions
        x, out = state.x, []
        for t in range(actions.shape[1]):
            x = x @ self.A.T + actions[:, t] @ self.Bm.T
            out.append(x)
        return torch.stack(out, 1)


BOX = ActionSpec(kind="continuous", dim=2, low=[-2.0, -2.0], high=[2.0, 2.0])


def linear_world():
    A = torch.tensor([[1.0, 0.1], [0.0, 1.0]])  # a damped-free double integrator
    Bm = torch.tensor([[0.0, 0.0], [0.1, 0.3]])
    return LinearWorld(A, Bm, BOX)


class BlindLinearWorld(LinearWorld):
    """The linear system seen through a camera that shows nothing (a constant embedding), with its state
    as the robot's proprioception: only a goal that holds proprioception can steer it."""

    uses_proprio = True

    def imagine(self, state, actions):
        return torch.zeros(actions.shape[0], actions.shape[1], 3)

    def imagine_proprio(self, state, actions):
        return self.imagine(state, actions), super().imagine(state, actions)


@pytest.mark.parametrize("planner", [CEM(samples=128, iterations=5, elites=16, seed=0, cost=GoalCost(kind="l2", proprio_weight=1.0)),
                                     MPPI(samples=128, iterations=6, seed=0, cost=GoalCost(kind="l2", proprio_weight=1.0)),
                                     GradientPlanner(starts=4, steps=60, lr=0.1, seed=0, cost=GoalCost(kind="l2", proprio_weight=1.0))])
def test_a_goal_with_proprioception_steers_where_the_picture_cannot(planner):
    from worldline.planning import Goal

    base = linear_world()
    world = BlindLinearWorld(base.A, base.Bm, BOX)
    x0, want = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.5, 0.4]])
    goal = Goal(torch.zeros(1, 3), want)
    assert goal.shape == (1, 3) and goal[0:1].proprio.shape == (1, 2)
    plan = planner.plan(world, ToyState(x0), goal, horizon=6)
    reached = _cost_of(base, x0, plan, want)
    assert reached < 0.2 * _cost_of(base, x0, torch.zeros(1, 6, 2), want), reached
    # the same cost without the weight sees a flat landscape; a model without proprioception is refused
    flat = GoalCost(kind="l2").score(world, ToyState(x0.expand(4, 2)), torch.randn(4, 6, 2), goal)
    assert torch.equal(flat, torch.zeros(4))
    with pytest.raises(WorldlineError, match="needs a model that predicts it"):
        GoalCost(proprio_weight=1.0).score(base, ToyState(x0), torch.zeros(1, 6, 2), goal)
    with pytest.raises(WorldlineError, match=r"goal proprioception must be \(1, P\)"):
        Goal(torch.zeros(1, 3), torch.zeros(2, 2))


def test_cem_finds_the_minimum_of_a_known_quadratic():
    world = LinearWorld(None, None, BOX, identity=True)
    target = torch.tensor([[[0.7, -1.3], [1.5, 0.2], [-0.4, 0.9]]])  # (1, H=3, A): inside the box
    cost = GoalCost(kind="l2", path_weight=0.0)

    class AllSteps(GoalCost):  # the whole action sequence must match the target: a quadratic with one minimum
        def __call__(self, z, goal):
            return (z - goal[:, None] if goal.dim() == 2 else z - goal).square().flatten(1).sum(1)

    cem = CEM(samples=200, iterations=12, elites=20, keep_elites=5, momentum=0.1, cost=AllSteps(), seed=0)
    plan = cem.plan(world, ToyState(torch.zeros(1, 2)), target, horizon=3)
    assert plan.shape == (1, 3, 2)
    assert torch.allclose(plan, target, atol=0.05), plan
    assert cost.kind == "l2"


def _cost_of(world, x0, plan, goal):
    return GoalCost(kind="l2")(world.imagine(ToyState(x0), plan), goal).item()


@pytest.mark.parametrize("planner", [MPPI(samples=128, iterations=6, seed=0, cost=GoalCost(kind="l2")),
                                     GradientPlanner(starts=4, steps=60, lr=0.1, seed=0),
                                     CEM(samples=128, iterations=5, elites=16, seed=0, cost=GoalCost(kind="l2"))])
def test_planners_improve_the_cost_on_a_linear_system(planner):
    world = linear_world()
    x0, goal = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.5, 0.4]])
    plan = planner.plan(world, ToyState(x0), goal, horizon=6)
    assert plan.shape == (1, 6, 2) and (plan.abs() <= 2.0 + 1e-6).all()
    planned = _cost_of(world, x0, plan, goal)
    random = np.mean([_cost_of(world, x0, RandomPlanner(seed=s).plan(world, ToyState(x0), goal, 6), goal) for s in range(20)])
    assert planned < 0.2 * _cost_of(world, x0, torch.zeros(1, 6, 2), goal)
    assert planned < 0.2 * random


def test_categorical_cem_on_a_discrete_toy():
    """A walker on a line: 0 = left, 1 = stay, 2 = right; the goal is 3 steps right, a 5-step horizon."""
    spec = ActionSpec(kind="discrete", dim=1, n=3)

    class Walker(LinearWorld):
        def imagine(self, state, actions):
            self.action_spec.check(actions)
            return state.x[:, None] + torch.cumsum(actions - 1, dim=1)

    world = Walker(None, None, spec)
    cem = CEM(samples=64, iterations=4, elites=8, keep_elites=4, seed=0)
    plan = cem.plan(world, ToyState(torch.zeros(1, 1)), torch.tensor([[3.0]]), horizon=5)
    assert plan.shape == (1, 5, 1) and set(plan.unique().tolist()) <= {0.0, 1.0, 2.0}
    assert (plan - 1).sum().item() == 3.0
    for continuous_only in (MPPI(), GradientPlanner()):
        with pytest.raises(WorldlineError, match="needs continuous actions; use --planner cem"):
            continuous_only.plan(world, ToyState(torch.zeros(1, 1)), torch.tensor([[3.0]]), horizon=5)


@pytest.mark.parametrize("steps", [25, 24])
def test_colored_noise_has_unit_variance_and_the_asked_smoothness(steps):
    from worldline.planning.common import colored_noise

    lag1 = {}
    for beta in (0.0, 1.0, 2.0):
        x = colored_noise(2000, steps, 3, beta, torch.Generator().manual_seed(0))
        assert x.shape == (2000, steps, 3)
        per_step = x.var(dim=(0, 2))
        assert ((per_step > 0.85) & (per_step < 1.15)).all()  # unit variance at every step, ends included
        lag1[beta] = float((x[:, 1:] * x[:, :-1]).mean() / x.var())
    assert abs(lag1[0.0]) < 0.05 and 0.4 < lag1[1.0] < lag1[2.0] and lag1[2.0] > 0.75


def test_cem_with_smooth_noise_colours_across_frameskip_substeps():
    """With frameskip k the CEM's samples are coloured over the k * horizon env steps, not per model step."""
    seen = []

    class Skip(LinearWorld):
        config = dataclasses.make_dataclass("Cfg", [("frameskip", int, 3)])()

        def imagine(self, state, actions):
            seen.append(actions.clone())
            return actions.mean(-1, keepdim=True).expand(-1, -1, 2)

    spec = ActionSpec(kind="continuous", dim=6, low=[-1.0] * 6, high=[1.0] * 6)
    CEM(samples=512, iterations=1, elites=8, keep_elites=0, init_std=0.3, noise_beta=2.0, seed=0).plan(
        Skip(None, None, spec), ToyState(torch.zeros(1, 2)), torch.zeros(1, 2), horizon=4)
    env = seen[0][1:].reshape(511, 12, 2)  # the env-step sequence behind each sample
    across = float((env[:, 3] * env[:, 2]).mean() / env.var())  # last env step of model step 0 vs first of model step 1
    assert across > 0.6
    with pytest.raises(ValueError, match="noise_beta"):
        CEM(noise_beta=-1.0)


def test_mpc_warm_starts_and_batched_states():
    world = linear_world()
    mpc = MPC(CEM(samples=32, iterations=2, elites=4, keep_elites=2, seed=0), horizon=4, execute=2)
    first = mpc.act(world, ToyState(torch.zeros(1, 2)), torch.tensor([[0.5, 0.4]]))
    assert first.shape == (1, 2, 2) and mpc.plan.shape == (1, 4, 2)
    many = expand_state(ToyState(torch.ones(1, 2)), 5)
    assert many.x.shape == (5, 2)
    plans = CEM(samples=16, iterations=1, elites=4, keep_elites=1, seed=0).plan(world, ToyState(torch.randn(3, 2)), torch.zeros(1, 2), 3)
    assert plans.shape == (3, 3, 2)
    with pytest.raises(WorldlineError):
        CEM().plan(world, ToyState(torch.zeros(1, 2)), torch.zeros(1, 2), horizon=0)


def test_mpc_first_search_starts_from_the_given_plan_and_later_ones_from_the_last():
    seen = []

    class Recorder(RandomPlanner):
        def plan(self, world_model, state, goal_z, horizon, init=None):
            seen.append(None if init is None else init.clone())
            return torch.full((1, horizon, 2), float(len(seen)))

    world, hold = linear_world(), torch.full((1, 4, 2), 0.7)
    mpc = MPC(Recorder(seed=0), horizon=4, execute=1)
    mpc.reset(hold)
    for _ in range(2):
        mpc.act(world, ToyState(torch.zeros(1, 2)), torch.zeros(1, 2))
    assert torch.equal(seen[0], hold)  # the given plan, not shifted
    assert torch.equal(seen[1], torch.ones(1, 4, 2))  # the last plan, shifted
    mpc.reset()
    mpc.act(world, ToyState(torch.zeros(1, 2)), torch.zeros(1, 2))
    assert seen[2] is None
    with pytest.raises(WorldlineError, match="initial plan must be"):
        mpc.reset(torch.zeros(1, 3, 2))


def test_hold_action_keeps_the_pusht_disc_in_place():
    """Planning's first guess on PushT is the disc's own position as its PD target: the disc stays put."""
    from worldline.eval.planning import PlanningWorld, expert_tasks

    world = PlanningWorld("pusht", 32)
    try:
        task = expert_tasks(world, 1)[0]
        world.set_state(task.start_state)
        hold = world.hold_action()
        assert np.allclose(hold, task.start_state[:2], atol=1e-3)
        for _ in range(5):
            world.step(hold)
        assert np.linalg.norm(world.get_state()[:2] - task.start_state[:2]) < 10.0
        assert np.all((hold >= 0) & (hold <= 512))
    finally:
        world.close()
    reacher = PlanningWorld("reacher", 32)
    try:
        assert np.array_equal(reacher.hold_action(), np.zeros(2, np.float32))
    finally:
        reacher.close()


# ----------------------------------------------------------------------------------------------
# real families
# ----------------------------------------------------------------------------------------------

PUSHT = ActionSpec(kind="continuous", dim=2, low=[0.0, 0.0], high=[512.0, 512.0], names=["x", "y"])


def deterministic_model():
    from worldline.core.config import build_model, load_preset, to_dict
    from worldline.train.config import RunConfig

    cfg = RunConfig.from_dict(load_preset("wm-deterministic", "debug")).model
    cfg.action_space = PUSHT
    cfg.tokenizer = to_dict(RunConfig.from_dict(load_preset("tokenizer-continuous", "debug")).model)
    torch.manual_seed(0)
    return build_model(cfg).eval()


def jepa_model(frameskip=1):
    from worldline.core.config import build_model, load_preset
    from worldline.train.config import RunConfig

    cfg = RunConfig.from_dict(load_preset("jepa-ac", "debug")).model
    cfg.action_space, cfg.frameskip = PUSHT, frameskip
    torch.manual_seed(0)
    return build_model(cfg).eval()


@pytest.mark.parametrize("make", [deterministic_model, jepa_model])
def test_planners_work_on_real_families(make):
    model = make()
    frames = torch.rand(1, 2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        state = model.init_state(frames)
        goal = model.embed(torch.rand(1, 1, 3, 64, 64) * 2 - 1)[:, 0]
    for planner in (CEM(samples=8, iterations=2, elites=2, keep_elites=1, seed=0), MPPI(samples=8, iterations=2, seed=0),
                    GradientPlanner(starts=2, steps=2, seed=0), RandomPlanner(seed=0)):
        plan = planner.plan(model, state, goal, horizon=2)
        assert plan.shape == (1, 2, 2) and torch.isfinite(plan).all()
        assert (plan >= 0).all() and (plan <= 512).all()
    # the gradient planner needs imagine to be differentiable in the actions
    a = torch.full((1, 2, 2), 256.0, requires_grad=True)
    GoalCost()(model.imagine(state, a), goal).sum().backward()
    assert a.grad is not None and torch.isfinite(a.grad).all()


# ----------------------------------------------------------------------------------------------
# the benchmark and the CLI
# ----------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
    from worldline.eval.planning import PlanningWorld, check_action_space, expert_tasks, goal_embedding

    model = jepa_model()
    with pytest.raises(WorldlineError, match="goal image is 32x32"):
        goal_embedding(model, np.zeros((32, 32, 3), np.uint8))
    reacher = ActionSpec(kind="continuous", dim=2, low=[-1.0, -1.0], high=[1.0, 1.0])
    with pytest.raises(WorldlineError, match="checkpoint was trained on"):
        check_action_space(model, reacher, "reacher")
    with pytest.raises(WorldlineError, match="discrete"):
        check_action_space(model, ActionSpec(kind="discrete", dim=1, n=4), "breakout")
    world = PlanningWorld("pusht", 64)
    try:
        with pytest.raises(WorldlineError, match="at least one expert trajectory"):
            expert_tasks(world, 0)
        with pytest.raises(WorldlineError, match="expert dataset is empty"):
            expert_tasks(world, 1, offset=100_000)
    finally:
        world.close()


def test_plan_cli_end_to_end(tmp_path):
    from typer.testing import CliRunner

    from worldline.cli.main import app

    jepa_model(frameskip=5).save_pretrained(tmp_path / "ckpt")
    out = tmp_path / "plan"
    args = ["plan", "--ckpt", str(tmp_path / "ckpt"), "--env", "pusht", "--episodes", "2", "--budget", "10",
            "--horizon", "2", "--samples", "8", "--iterations", "1", "--traces", "1", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    res = json.loads((out / "planning.json").read_text())
    assert set(res["methods"]) == {"cem", "random", "goal-copying"} and res["episodes"] == 2
    for m in res["methods"].values():
        assert 0 <= m["success_rate"] <= 1 and m["mean_final_distance"] >= 0
    assert res["methods"]["cem"]["decisions"] >= 2 and res["methods"]["cem"]["decision_s_mean"] > 0
    assert (out / "traces" / "pusht_cem_00.gif").is_file() and (out / "traces" / "pusht_cem_00.mp4").is_file()
    trace = json.loads((out / "traces" / "pusht_cem_00.json").read_text())
    assert len(trace["actions"]) == trace["steps"] and all(len(a) == 2 for a in trace["actions"])
    page = (out / "index.html").read_text()
    assert "Planning (cem, pusht)" in page and "planning/pusht_cem_00.gif" in page
    # a checkpoint trained on another action space is refused with one clear line
    bad = CliRunner().invoke(app, ["plan", "--ckpt", str(tmp_path / "ckpt"), "--env", "reacher", "--episodes", "1"])
    assert bad.exit_code != 0 and isinstance(bad.exception, WorldlineError)


@pytest.mark.parametrize("env", ["reacher", "reacher-pos"])
def test_expert_tasks_never_start_at_their_goal(env):
    """Reacher's expert parks on the target: a late start would pass the success test before any step."""
    from worldline.eval.planning import PlanningWorld, expert_tasks

    world = PlanningWorld(env, 32)
    try:
        tasks = expert_tasks(world, 6, offset=25)
        assert len(tasks) == 6
        for task in tasks:
            gap = np.linalg.norm(world.fingertip(task.start_state) - world.fingertip(task.goal_state))
            assert gap >= 0.05
    finally:
        world.close()


def test_path_weight_prefers_arriving_early_and_staying():
    goal = torch.zeros(1, 2)
    early = torch.tensor([[[0.0, 0.0], [0.0, 0.0], [0.1, 0.0]]])  # at the goal at once, drifts off at the end
    late = torch.tensor([[[3.0, 0.0], [2.0, 0.0], [0.1, 0.0]]])  # ends equally near, far on the way
    z = torch.cat([early, late])
    assert torch.allclose(*GoalCost(kind="l1")(z, goal))  # the last step alone cannot tell them apart
    c = GoalCost(kind="l1", path_weight=1.0)(z, goal)
    assert c[0] < c[1]
    with pytest.raises(ValueError, match="path_weight"):
        GoalCost(path_weight=-1.0)


def test_plan_options_reach_the_planners():
    from worldline.cli.plan import planner_kwargs
    from worldline.planning import PLANNERS

    for name, field in (("cem", "init_std"), ("mppi", "noise_std"), ("gradient", "init_std")):
        kw = planner_kwargs(name, samples=16, iterations=2, path_weight=0.5, init_std=0.15)
        planner = PLANNERS[name](**kw)
        assert getattr(planner, field) == 0.15 and planner.cost.path_weight == 0.5
    assert planner_kwargs("random", init_std=0.15) == {"seed": 1_000_000}
    assert PLANNERS["cem"](**planner_kwargs("cem", noise_beta=2.0)).noise_beta == 2.0
    with pytest.raises(WorldlineError, match="--noise-beta is a cem option"):
        planner_kwargs("mppi", noise_beta=2.0)
    with pytest.raises(ValueError, match="init_std"):
        CEM(**planner_kwargs("cem", init_std=0.0))
    assert PLANNERS["mppi"](**planner_kwargs("mppi", proprio_weight=0.5)).cost.proprio_weight == 0.5
    with pytest.raises(WorldlineError, match="the random planner has none"):
        planner_kwargs("random", proprio_weight=0.5)
    with pytest.raises(ValueError, match="proprio_weight must be >= 0"):
        GoalCost(proprio_weight=-1.0)


def test_reacher_gentle_policy_gives_small_reproducible_torques():
    """Planning data for Reacher: torques at a per-episode scale <= 0.4 (uniform ones spin the arm)."""
    from worldline.envs.policies import available_policies, make_policy
    from worldline.envs.registry import make_env

    env, _ = make_env("reacher", 32)
    try:
        assert "gentle" in available_policies(env)
        runs = []
        for seed in (3, 3, 4):
            obs, info = env.reset(seed=seed)
            policy = make_policy("gentle", env, seed)
            policy.reset(seed)
            runs.append(np.stack([policy(obs, info) for _ in range(200)]))
        assert np.array_equal(runs[0], runs[1]) and not np.array_equal(runs[0], runs[2])
        for acts in runs:
            assert 0.04 < acts.std() < 0.45 and np.abs(acts).max() <= 1
    finally:
        env.close()


def test_a_proprioceptive_model_plans_with_the_robots_own_readings(monkeypatch):
    from worldline.eval.planning import benchmark

    model = jepa_model()
    cfg = dataclasses.replace(model.config, proprio=True, proprio_names=["agent_x", "agent_y"],
                              proprio_mean=[256.0, 256.0], proprio_std=[100.0, 100.0])
    torch.manual_seed(0)
    model = type(model)(cfg).eval()
    seen = []
    init_state = model.init_state

    def spy(frames, actions=None, text=None, context_proprio=None):
        seen.append((frames.shape[1], context_proprio))
        return init_state(frames, actions, text, context_proprio)

    monkeypatch.setattr(model, "init_state", spy)
    res = benchmark(model, "pusht", "cem", episodes=1, budget=3, horizon=2, baselines=False, progress=False,
                    planner_kwargs={"samples": 8, "iterations": 1, "elites": 2, "keep_elites": 1, "seed": 0})
    assert res["methods"]["cem"]["decisions"] == 3 and len(seen) == 3
    for T, p in seen:  # one reading per context frame: the disc's position in the 512-px world
        assert p.shape == (1, T, 2) and ((p >= 0) & (p <= 512)).all()
    assert not torch.equal(seen[0][1][0, -1], seen[-1][1][0, -1])  # it follows the disc as it moves
    # DINO-WM's objective: the goal also holds the disc's position at the goal
    seen.clear()
    res = benchmark(model, "pusht", "cem", episodes=1, budget=2, horizon=2, baselines=False, progress=False,
                    planner_kwargs={"samples": 8, "iterations": 1, "elites": 2, "keep_elites": 1, "seed": 0,
                                    "cost": GoalCost(kind="l2", proprio_weight=1.0)})
    assert res["methods"]["cem"]["decisions"] == 2
    with pytest.raises(WorldlineError, match="needs a model trained with model.proprio=true"):
        benchmark(jepa_model(), "pusht", "cem", episodes=1, budget=1, baselines=False, progress=False,
                  planner_kwargs={"samples": 8, "iterations": 1, "elites": 2, "keep_elites": 1, "cost": GoalCost(proprio_weight=1.0)})
    other = type(model)(dataclasses.replace(cfg, proprio_names=["column", "row"])).eval()
    with pytest.raises(WorldlineError, match=r"reads proprioception \['column', 'row'\], env 'pusht' gives \['agent_x', 'agent_y'\]"):
        benchmark(other, "pusht", "cem", episodes=1, budget=1, baselines=False, progress=False)
