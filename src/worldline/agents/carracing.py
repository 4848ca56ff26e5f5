"""A noisy road-following driver for CarRacing, for RECORDING data only (``--policy driver``).

V-M-C learns its reward head from what the recording shows. Random and smooth-random driving on
CarRacing stays near the start, rarely visits new tiles and brakes half the time, so the head sees
almost no tile rewards and the dream's return is flat (sessions 3-5). This driver follows the track:
it reads the car's pose and the track's centre line from the simulator (never from pixels, and it is
never the evaluated controller), steers towards a point a few tiles ahead and holds a target speed.
Every episode draws its own gains, speed, look-ahead and steering noise, and the driver has lapses:
stretches of smooth-random actions that take the car off the road and leave it to recover, so the
data holds fast on-road driving, slow driving, spins and grass.
"""

from __future__ import annotations

import math

import numpy as np

from worldline.envs.policies import Policy, SmoothPolicy, to_box


class RoadDriver(Policy):
    gain = (0.6, 2.0)  # steer per radian of heading error towards the look-ahead point
    ahead = (2, 7)  # tiles ahead of the nearest one that the car aims at (inclusive)
    target_speed = (15.0, 70.0)  # simulator speed units; ~40 drives a lap safely
    steer_noise = (0.0, 0.4)  # std of Gaussian noise added to the steering
    lapse_rate = (0.0, 0.02)  # chance per step that a lapse starts
    lapse_steps = (10, 50)  # length of a lapse (inclusive)

    def reset(self, seed: int) -> None:
        super().reset(seed)
        r = self.rng
        self.k = r.uniform(*self.gain)
        self.look = int(r.integers(self.ahead[0], self.ahead[1] + 1))
        self.speed = r.uniform(*self.target_speed)
        self.noise = r.uniform(*self.steer_noise)
        self.lapse_p = r.uniform(*self.lapse_rate)
        self.lapse_left = 0
        self.smooth = SmoothPolicy(self.env, int(r.integers(2**31)))
        self.track = None

    def act(self, obs, info):
        u = self.env.unwrapped
        if self.track is None:  # the track is built by env.reset, after this policy's reset
            self.track = np.array([tile[2:4] for tile in u.track], np.float64)  # (N, 2) centre line
        if self.lapse_left == 0 and self.rng.random() < self.lapse_p:
            self.lapse_left = int(self.rng.integers(self.lapse_steps[0], self.lapse_steps[1] + 1))
        if self.lapse_left > 0:
            self.lapse_left -= 1
            return self.smooth.act(obs, info)
        hull = u.car.hull
        pos = np.array(hull.position, np.float64)
        nearest = int(np.argmin(((self.track - pos) ** 2).sum(1)))
        to_target = self.track[(nearest + self.look) % len(self.track)] - pos
        forward = np.array([-math.sin(hull.angle), math.cos(hull.angle)])
        # signed angle from the car's heading to the target, counter-clockwise positive; steering is clockwise-positive
        error = math.atan2(forward[0] * to_target[1] - forward[1] * to_target[0], forward @ to_target)
        steer = -self.k * error + self.noise * self.rng.standard_normal()
        speed = float(np.hypot(*hull.linearVelocity))
        gas = 0.5 if speed < self.speed else 0.0
        brake = 0.3 if speed > 1.3 * self.speed else 0.0
        return to_box(self.space, np.array([np.clip(steer, -1, 1), gas, brake]))
