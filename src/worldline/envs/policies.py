"""Policies that drive a world while it is recorded.

A policy is ``policy(obs, info) -> action`` (the env's own action type) with ``reset(seed)`` called
at the start of every episode, so an episode is a pure function of its seed. Every env has
``random``; continuous (Box) worlds also have ``smooth``, and the built-in worlds have a scripted
``expert``:

- ``random``  independent uniform actions each step (Gaussian on unbounded Box dimensions).
- ``smooth``  the action walks at a random speed towards random waypoints of the action box, so
  actions are coherent in time as a controller's are. Under uniform jitter the PushT disc darts
  about (4x the travel of smooth sweeps) and the block moves in 5% of the steps; under smooth
  sweeps in 8%, under the expert in 17% (20 episodes of 300 steps each).
- ``expert``  pusht: picks the contact point on the T whose push best moves the block towards its
  goal pose, goes round the block to it and pushes (49/50 episodes reach 95% coverage within 300
  steps; random: 0/50). breakout: the paddle follows the ball, read from the console RAM, aiming
  where it will cross the paddle row, and serves. reacher: joint-velocity control towards the
  velocities that move the fingertip to the target (Jacobian pseudo-inverse); reacher-pos: the
  joint steps that do so (envs/arm.py). Gains and noise are drawn per episode so episodes differ.
- ``gentle`` (reacher) Gaussian torques at a per-episode scale of 0.05..0.4: the regime a planner
  searches in (uniform torques spin the arm several turns a second).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from worldline.core.errors import WorldlineError


class Policy:
    """Base class: subclasses implement ``act``; ``reset(seed)`` reseeds the policy's generator."""

    def __init__(self, env: gym.Env, seed: int = 0):
        self.env = env
        self.space = env.action_space
        self.reset(seed)

    def reset(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs: Any, info: dict) -> Any:
        return self.act(obs, info)

    def act(self, obs: Any, info: dict) -> Any:
        raise NotImplementedError


def _box_scale(space: gym.spaces.Box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre and half-width of each Box dimension (0 and 1 where a bound is infinite), and which are bounded."""
    low, high = space.low.astype(np.float64), space.high.astype(np.float64)
    bounded = np.isfinite(low) & np.isfinite(high)
    centre = np.where(bounded, (low + high) / 2, 0.0)
    half = np.where(bounded, (high - low) / 2, 1.0)
    return centre, half, bounded


def to_box(space: gym.spaces.Box, a: np.ndarray) -> np.ndarray:
    """``a`` clipped into the Box and cast to its dtype (scripted policies outside this module use it too)."""
    return np.clip(a, space.low, space.high).astype(space.dtype)


# ----------------------------------------------------------------------------------------------
# Generic policies
# ----------------------------------------------------------------------------------------------


class RandomPolicy(Policy):
    """Independent uniform actions; seeded by the policy's generator, not the space's."""

    def act(self, obs, info):
        space = self.space
        if isinstance(space, gym.spaces.Discrete):
            return int(space.start + self.rng.integers(space.n))
        if isinstance(space, gym.spaces.Box):
            centre, half, bounded = _box_scale(space)
            u = np.where(bounded, self.rng.uniform(-1, 1, space.shape), self.rng.standard_normal(space.shape))
            return to_box(space, centre + half * u)
        raise WorldlineError(f"the random policy does not support action space {space}")


class SmoothPolicy(Policy):
    """Random-waypoint walk in the normalised action box [-1, 1]^A.

    Each waypoint is uniform in the box and approached in a straight line at a speed drawn per
    waypoint from ``speed``, with a little Gaussian jitter; a new waypoint is drawn on arrival.
    """

    speed = (0.03, 0.15)  # normalised units per step: 7..33 steps to cross half the box
    jitter = 0.02  # std of per-step noise, so straight sweeps are not perfectly straight

    def reset(self, seed):
        super().reset(seed)
        if not isinstance(self.space, gym.spaces.Box):
            raise WorldlineError(f"the smooth policy needs a continuous (Box) action space, got {self.space}")
        self.centre, self.half, _ = _box_scale(self.space)
        self.x = self.rng.uniform(-1, 1, self.space.shape)
        self._new_waypoint()

    def _new_waypoint(self):
        self.waypoint = self.rng.uniform(-1, 1, self.space.shape)
        self.step_size = self.rng.uniform(*self.speed)

    def act(self, obs, info):
        delta = self.waypoint - self.x
        dist = float(np.linalg.norm(delta))
        if dist <= self.step_size:
            self.x = self.waypoint
            self._new_waypoint()
        else:
            self.x = self.x + delta * (self.step_size / dist)
        self.x = np.clip(self.x + self.jitter * self.rng.standard_normal(self.x.shape), -1, 1)
        return to_box(self.space, self.centre + self.half * self.x)


# ----------------------------------------------------------------------------------------------
# PushT expert
# ----------------------------------------------------------------------------------------------


def _pusht_outline() -> tuple[np.ndarray, np.ndarray]:
    """Contact candidates on the T's outline in the block frame: points (K, 2) and outward normals (K, 2).

    The T (gym-pusht ``add_tee``, scale 30) is a 120x30 bar on top of a 30x90 stem. Points within a
    disc radius (and a margin) of the two inner corners are left out: the disc cannot touch there.
    """
    corners = [(-60, 0), (60, 0), (60, 30), (15, 30), (15, 120), (-15, 120), (-15, 30), (-60, 30)]
    inner = {(15, 30), (-15, 30)}
    points, normals = [], []
    for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1]):
        a, b = np.array([x0, y0], float), np.array([x1, y1], float)
        length = float(np.linalg.norm(b - a))
        tangent = (b - a) / length
        normal = np.array([tangent[1], -tangent[0]])  # outward for this (clockwise in y-down) order
        lo = PUSHT_DISC_RADIUS + 5 if (x0, y0) in inner else 4.0
        hi = length - (PUSHT_DISC_RADIUS + 5 if (x1, y1) in inner else 4.0)
        for s in np.arange(lo, hi + 1e-6, 5.0):
            points.append(a + s * tangent)
            normals.append(normal)
    return np.array(points), np.array(normals)


PUSHT_DISC_RADIUS = 15.0  # gym-pusht agent circle
PUSHT_COG = np.array([0.0, 45.0])  # centre of gravity of the T in its frame (mean of its two parts)
PUSHT_REACH = 77.0  # farthest point of the T from its centre of gravity


def _rot(theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s], [s, c]])


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2 * math.pi) - math.pi


class PushTExpert(Policy):
    """Quasi-static pushing controller for gym-pusht, from the block and goal poses in ``info``.

    The block stops as soon as it is not pushed (the space has damping 0), so a push at point p along
    the inward normal d moves it roughly by the twist (d, r x d / rho^2), r = p - cog (an ellipsoidal
    limit surface with radius of gyration rho). Each step the expert scores every contact candidate
    by how well that twist agrees with the twist that would bring the block to the goal, commits to
    the best one (switching only for a clearly better one), travels round the block to a point just
    outside it and pushes through it. Gains and noise are drawn per episode for diverse data.
    """

    rho = 40.0  # radius of gyration of the T (px): trades rotation against translation
    switch_margin = 0.15  # a new contact must score this much better to abandon the current one
    travel_cost = 0.002  # score lost per px the disc must travel to a new contact
    push_gain = 0.8  # px pushed per px of pose error: below 1 as the disc overshoots a little
    done_error = 1.0  # px-equivalent pose error under which the expert stops pushing (95% coverage needs ~2 px)

    def __init__(self, env, seed=0):
        self.points, self.normals = _pusht_outline()
        super().__init__(env, seed)

    def reset(self, seed):
        super().reset(seed)
        self.contact = None
        self.push_depth = self.rng.uniform(20, 40)  # px: the longest push of one step
        self.noise = self.rng.uniform(1.0, 6.0)  # px std of the target noise
        self.clearance = self.rng.uniform(6, 14)  # gap kept from the block while going round it

    def _score(self, c, v_des, w_des, points, inward):
        r = points - c
        moment = r[:, 0] * inward[:, 1] - r[:, 1] * inward[:, 0]  # r x d (z component)
        v_point = inward @ v_des + moment * w_des  # d . (v + w x r)
        return v_point / np.sqrt(1 + (moment / self.rho) ** 2)

    def act(self, obs, info):
        agent = np.asarray(info["pos_agent"], float)
        block = np.asarray(info["block_pose"], float)
        goal = np.asarray(info["goal_pose"], float)
        R, Rg = _rot(block[2]), _rot(goal[2])
        c = block[:2] + R @ PUSHT_COG
        cg = goal[:2] + Rg @ PUSHT_COG
        v_des = cg - c
        w_des = _wrap(goal[2] - block[2]) * self.rho
        error = math.hypot(*v_des) + abs(w_des)
        points = block[:2] + self.points @ R.T
        inward = -(self.normals @ R.T)

        if error < self.done_error:
            return self._out(agent + self._away(agent, c))

        scores = self._score(c, v_des / max(error, 1e-6), w_des / max(error, 1e-6), points, inward)
        approach = points - inward * (PUSHT_DISC_RADIUS + 2)
        reachable = np.all((approach > 5 + PUSHT_DISC_RADIUS) & (approach < 506 - PUSHT_DISC_RADIUS), axis=1)
        scores = np.where(reachable, scores, -np.inf)
        travel = np.linalg.norm(approach - agent, axis=1)
        best = int(np.argmax(scores - self.travel_cost * travel))
        if self.contact is None or scores[best] > scores[self.contact] + self.switch_margin:
            self.contact = best
        k = self.contact
        p, d = points[k], inward[k]
        pre = p - d * (PUSHT_DISC_RADIUS + self.clearance)

        to_pre = pre - agent
        behind = float((agent - p) @ -d)  # distance of the disc centre outside the surface, along the normal
        lateral = abs(float((agent - p) @ np.array([-d[1], d[0]])))
        in_place = PUSHT_DISC_RADIUS - 4 < behind < PUSHT_DISC_RADIUS + self.clearance + 8 and lateral < 6
        if in_place:
            step = min(self.push_depth, self.push_gain * error + 1)  # how far to move the contact point
            target = p + d * (step - PUSHT_DISC_RADIUS)  # the disc centre sits a radius behind the contact
        elif self._clear(agent, pre, R, block[:2]):
            target = agent + to_pre * min(1.0, 60.0 / max(np.linalg.norm(to_pre), 1e-6))  # at most 60 px ahead
        else:
            target = self._go_round(agent, pre, c)
        noise = self.noise * min(1.0, error / 40)  # diverse paths far away, precise pushes near the goal
        return self._out(target + noise * self.rng.standard_normal(2))

    def _clear(self, a, b, R, origin) -> bool:
        """Whether the disc can slide from a to b without touching the block (sampled segment test)."""
        ts = np.linspace(0, 1, 12)[:, None]
        pts = a + ts * (b - a)
        local = (pts - origin) @ R  # world -> block frame (R orthonormal)
        margin = PUSHT_DISC_RADIUS + 1
        in_bar = (np.abs(local[:, 0]) < 60 + margin) & (local[:, 1] > -margin) & (local[:, 1] < 30 + margin)
        in_stem = (np.abs(local[:, 0]) < 15 + margin) & (local[:, 1] > -margin) & (local[:, 1] < 120 + margin)
        return not bool(np.any(in_bar | in_stem))

    def _go_round(self, a, b, c):
        """Step along a circle round the block's centre towards b's side, moving out to a safe radius."""
        radius = PUSHT_REACH + PUSHT_DISC_RADIUS + self.clearance
        ra, rb = a - c, b - c
        angle_a = math.atan2(ra[1], ra[0])
        turn = _wrap(math.atan2(rb[1], rb[0]) - angle_a)
        if abs(turn) < 0.3:  # on b's side already: only the block's corner is in the way, slide in
            return b
        step = math.copysign(min(abs(turn), 0.6), turn)
        goal_angle = angle_a + step
        return c + radius * np.array([math.cos(goal_angle), math.sin(goal_angle)])

    def _away(self, a, c):
        """Back off from the finished block until clear of it, then stay."""
        d = a - c
        n = float(np.linalg.norm(d))
        if n > PUSHT_REACH + PUSHT_DISC_RADIUS + 10 or n < 1e-6:
            return np.zeros(2)
        return 10.0 * d / n

    def _out(self, target):
        return np.clip(target, 0, 512).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Breakout expert
# ----------------------------------------------------------------------------------------------


class BreakoutExpert(Policy):
    """Paddle follows the ball; serves (FIRE) when no ball is in play.

    Reads the Atari RAM: byte 99 is the ball's x, 101 its y (0 while no ball is in play) and 72 the
    paddle's x. In screen pixels the ball's centre is x = ram[99] - 48.5 and the 16-px paddle's
    centre is ram[72] - 39.5. With probability ``epsilon`` a random action is taken for diversity.
    """

    NOOP, FIRE, RIGHT, LEFT = 0, 1, 2, 3

    def reset(self, seed):
        super().reset(seed)
        self.epsilon = self.rng.uniform(0.02, 0.1)
        self.deadband = self.rng.uniform(3, 6)  # px: a paddle step moves ~20 px, so some slack avoids dithering
        self.aim = self.rng.uniform(-5, 5)  # px offset of where on the paddle the ball is caught
        self.last_ball = None

    def act(self, obs, info):
        if self.rng.random() < self.epsilon:
            return int(self.rng.integers(4))
        ram = self.env.unwrapped.ale.getRAM()
        ball_x, ball_y, paddle_x = float(ram[99]) - 48.5, float(ram[101]), float(ram[72]) - 39.5
        if ball_y == 0:
            self.last_ball = None
            return self.FIRE
        target = ball_x
        if self.last_ball is not None:
            vx, vy = ball_x - self.last_ball[0], ball_y - self.last_ball[1]
            if vy > 0:  # falling: aim where it will cross the paddle row, bouncing off the side walls
                steps = max(0.0, (189 - 10.5 - ball_y) / vy)
                target = _reflect(ball_x + vx * steps, 8.0, 152.0)
        self.last_ball = (ball_x, ball_y)
        error = target + self.aim - paddle_x
        if abs(error) < self.deadband:
            return self.NOOP
        return self.RIGHT if error > 0 else self.LEFT


def _reflect(x: float, lo: float, hi: float) -> float:
    span = hi - lo
    y = (x - lo) % (2 * span)
    return lo + (y if y <= span else 2 * span - y)


# ----------------------------------------------------------------------------------------------
# Reacher expert
# ----------------------------------------------------------------------------------------------


class ReacherExpert(Policy):
    """Resolved-rate control: joint velocities J^+ K (target - tip), tracked with a joint PD.

    From the Reacher-v5 observation: cos q (2), sin q (2), target xy (2), q velocity (2), tip - target
    (2). Links are 0.1 and 0.11 m long (to the fingertip). Gains are drawn per episode.
    """

    lengths = (0.1, 0.11)

    def reset(self, seed):
        super().reset(seed)
        self.k_task = self.rng.uniform(10, 20)  # 1/s: how fast the tip is asked to close the gap
        self.k_vel = self.rng.uniform(0.05, 0.1)  # torque per rad/s of joint-velocity error
        self.noise = self.rng.uniform(0.02, 0.1)

    def act(self, obs, info):
        obs = np.asarray(obs, float)
        q0, q1 = math.atan2(obs[2], obs[0]), math.atan2(obs[3], obs[1])
        qvel, err = obs[6:8], -obs[8:10]
        l1, l2 = self.lengths
        s0, s01, c0, c01 = math.sin(q0), math.sin(q0 + q1), math.cos(q0), math.cos(q0 + q1)
        J = np.array([[-l1 * s0 - l2 * s01, -l2 * s01], [l1 * c0 + l2 * c01, l2 * c01]])
        qvel_des = np.linalg.pinv(J, rcond=0.05) @ (self.k_task * err)
        qvel_des = np.clip(qvel_des, -20, 20)
        torque = self.k_vel * (qvel_des - qvel) + self.noise * self.rng.standard_normal(2)
        return to_box(self.space, torque)


class ReacherGentle(Policy):
    """Independent Gaussian torques at a scale drawn per episode in [0.05, 0.4] of the box.

    Uniform torques spin the arm several turns per second (torque 1 for 25 steps turns the shoulder
    21 rad), far from the small torques a goal-reaching controller or a planner uses; a world model
    planned with must have seen those."""

    def reset(self, seed):
        super().reset(seed)
        self.scale = self.rng.uniform(0.05, 0.4)

    def act(self, obs, info):
        return to_box(self.space, self.scale * self.rng.standard_normal(self.space.shape))


# ----------------------------------------------------------------------------------------------
# Lookup
# ----------------------------------------------------------------------------------------------

GENERIC: dict[str, Callable[..., Policy]] = {"random": RandomPolicy, "smooth": SmoothPolicy}
EXPERTS: dict[str, Callable[..., Policy]] = {  # keyed by gymnasium id
    "gym_pusht/PushT-v0": PushTExpert,
    "ALE/Breakout-v5": BreakoutExpert,
    "Reacher-v5": ReacherExpert,
}


SCRIPTED: dict[str, dict[str, str]] = {  # gymnasium id -> policy name -> "module:class", imported when made
    "worldline/CoinRun-v0": {"hold": "worldline.envs.coinrun:HoldPolicy"},
    "Reacher-v5": {"gentle": "worldline.envs.policies:ReacherGentle"},  # small torques, for planning data (issue 6)
    "worldline/ReacherJointPosition-v0": {"expert": "worldline.envs.arm:JointPositionExpert"},
    "CarRacing-v3": {"driver": "worldline.agents.carracing:RoadDriver"},  # data for V-M-C (issue 9)
}


def available_policies(env: gym.Env) -> list[str]:
    """Policy names that can drive ``env``: random, smooth for Box actions, expert where scripted."""
    names = ["random"]
    if isinstance(env.action_space, gym.spaces.Box):
        names.append("smooth")
    if env.spec is not None and env.spec.id in EXPERTS:
        names.append("expert")
    if env.spec is not None:
        names.extend(SCRIPTED.get(env.spec.id, {}))
    return names


def make_policy(name: str, env: gym.Env, seed: int = 0) -> Policy:
    """``policy(obs, info) -> action`` for ``env``; unknown names raise WorldlineError listing those available."""
    names = available_policies(env)
    if name not in names:
        env_name = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
        raise WorldlineError(f"unknown policy {name!r} for env {env_name} (available: {', '.join(names)})")
    if name == "expert" and env.spec.id in EXPERTS:
        return EXPERTS[env.spec.id](env, seed)
    if name in GENERIC:
        return GENERIC[name](env, seed)
    import importlib

    module, cls = SCRIPTED[env.spec.id][name].split(":")
    return getattr(importlib.import_module(module), cls)(env, seed)
