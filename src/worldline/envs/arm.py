"""Reacher's arm under joint-position control: the reaching task of a position-controlled robot.

MuJoCo's Reacher-v5 drives its two joints with torques, so the arm coasts and overshoots, and a
planner must brake it onto the goal from pictures alone. Robot arms are mostly position-controlled
(V-JEPA 2-AC plans end-effector displacements of a Franka arm): the servos track each commanded
pose within the control step. :class:`JointPositionReacher` is that arm: the action is the change
of the two joint angles, ``MAX_STEP`` radians per unit, and the arm stands still at the commanded
pose after every step (no velocity carries over). The scene, camera, target and reset are Reacher's.

Its expert (:class:`JointPositionExpert`) moves the fingertip straight at the target through the
arm's Jacobian; random and smooth (the generic policies) walk the joints about.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np

from worldline.envs.policies import Policy, to_box

GYM_ID = "worldline/ReacherJointPosition-v0"
MAX_STEP = 0.15  # rad per unit action and env step: 25 steps turn a joint up to 3.75 rad (the elbow spans 6)
LINKS = (0.1, 0.11)  # m, shoulder to elbow and elbow to fingertip


class JointPositionReacher(gym.Wrapper):
    """Reacher-v5 whose action in [-1, 1]^2 moves the two joint angles by ``MAX_STEP * action``.

    The elbow stays within its joint range; the reward is Reacher's (minus the fingertip's distance
    to the target, minus 0.1 x the squared action). Episodes are truncated after ``max_steps``."""

    def __init__(self, env: gym.Env, max_steps: int):
        super().__init__(env)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.max_steps, self.steps = max_steps, 0
        self._spec = gym.envs.registration.EnvSpec(GYM_ID, max_episode_steps=max_steps)

    @property
    def spec(self):
        return self._spec

    def reset(self, **kwargs):
        self.steps = 0
        return self.env.reset(**kwargs)

    def step(self, action):
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -1.0, 1.0)
        u = self.env.unwrapped
        qpos = u.data.qpos.copy()
        qpos[:2] += MAX_STEP * a
        low, high = u.model.jnt_range[1]
        qpos[1] = np.clip(qpos[1], low, high)
        u.set_state(qpos, np.zeros_like(u.data.qvel))  # the servo holds the pose: nothing coasts
        dist = float(np.linalg.norm(u.get_body_com("fingertip") - u.get_body_com("target")))
        ctrl = float(np.square(a).sum())
        self.steps += 1
        info = {"reward_dist": -dist, "reward_ctrl": -0.1 * ctrl}
        return u._get_obs(), -dist - 0.1 * ctrl, False, self.steps >= self.max_steps, info


def fingertip_jacobian(q0: float, q1: float) -> np.ndarray:
    """d(fingertip xy) / d(q0, q1) of the two-link arm."""
    l1, l2 = LINKS
    s0, s01, c0, c01 = math.sin(q0), math.sin(q0 + q1), math.cos(q0), math.cos(q0 + q1)
    return np.array([[-l1 * s0 - l2 * s01, -l2 * s01], [l1 * c0 + l2 * c01, l2 * c01]])


class JointPositionExpert(Policy):
    """Resolved-rate reaching: the joint change J^+ (gain x (target - tip)), a fraction of the gap
    per step, plus a little noise; gain and noise are drawn per episode so episodes differ.

    From the Reacher-v5 observation: cos q (2), sin q (2), target xy (2), q velocity (2), tip - target (2)."""

    def reset(self, seed):
        super().reset(seed)
        self.gain = self.rng.uniform(0.2, 0.5)  # fraction of the fingertip's gap closed per step
        self.noise = self.rng.uniform(0.02, 0.1)

    def act(self, obs, info):
        obs = np.asarray(obs, float)
        q0, q1 = math.atan2(obs[2], obs[0]), math.atan2(obs[3], obs[1])
        dq = np.linalg.pinv(fingertip_jacobian(q0, q1), rcond=0.05) @ (-self.gain * obs[8:10])
        return to_box(self.space, dq / MAX_STEP + self.noise * self.rng.standard_normal(2))
