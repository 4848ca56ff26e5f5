"""Worlds to record: three built-in ones and any registered gymnasium id that renders rgb_array.

Built-in worlds (``worldline record --env NAME``):

``pusht``
    gym-pusht ``gym_pusht/PushT-v0``: a blue disc pushes a grey T onto a green T-shaped target. The
    action is the disc's target position in [0, 512]^2 (continuous, 2-D); the reward is the covered
    fraction of the target (scaled so 95% coverage counts as 1). The env draws its pixel observation
    directly at the chosen resolution. 10 frames/s, 300 steps. Policies: random, smooth, expert.
``breakout``
    Atari Breakout through ale-py ``ALE/Breakout-v5`` (frame skip 4, sticky actions 0.25, as v5
    defines them): 4 discrete actions NOOP, FIRE, RIGHT, LEFT. The 210x160 screen is box-filtered to
    the resolution. 15 frames/s (60 Hz / 4), 1000 steps. Policies: random, expert.
``coinrun``
    procgen CoinRun (the platform game Genie learnt latent actions on) through ``procgen-mirror``
    (optional: ``pip install --no-deps procgen-mirror gym3 gym gym_notices``), drawn at 64x64 and
    box-filtered to the resolution. 4 discrete actions NOOP, LEFT, RIGHT, UP (jump); the view scrolls
    with the runner. Episode seed s plays level s. 15 frames/s, 500 steps. Policies: random, hold
    (random actions held 4..16 steps; see envs/coinrun.py).
``reacher``
    MuJoCo ``Reacher-v5``: a two-link arm moves its fingertip to a red target; the action is the two
    joint torques in [-1, 1]. MuJoCo renders offscreen at the resolution from a top-down camera over
    the arena (EGL unless ``MUJOCO_GL`` says otherwise). 50 frames/s, 50 steps. Policies: random,
    smooth, expert, gentle (small torques).
``reacher-pos``
    The same arm and scene under joint-position control, as robot arms are driven (envs/arm.py):
    the action is the change of the two joint angles (0.15 rad per unit, in [-1, 1]) and the arm
    stands at each commanded pose. Policies: random, smooth, expert.

Any other id goes through ``gymnasium.make(id, render_mode="rgb_array")``; its frames are resized
with PIL's box filter (an area average, so thin objects fade rather than alias away). Its policies
are random, plus smooth for Box action spaces.
"""

from __future__ import annotations

import dataclasses
import os

# MuJoCo picks its GL backend when it is first imported; headless machines have no display, and EGL
# renders offscreen on CPU (Mesa) or GPU alike. OSMesa works too but is several times slower.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from worldline.core.contracts import ActionSpec  # noqa: E402
from worldline.core.errors import WorldlineError  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Builtin:
    """A built-in world: which gymnasium env it is and how it is recorded by default."""

    description: str
    gym_id: str
    max_steps: int  # default episode cap; episodes also end when the env terminates or truncates
    fps: int  # frames per second of the recorded video (env steps per second of simulated time)
    task: str  # task text stored with every episode (LeRobot "task")
    policies: tuple[str, ...]
    proprio: tuple[str, ...] = ()  # names of the robot's own readings recorded as observation.state (read_proprio)


BUILTIN: dict[str, Builtin] = {
    "pusht": Builtin(
        description="PushT (gym-pusht): a disc pushes a T-shaped block onto a T-shaped target; "
        "continuous 2-D action = target position of the disc in [0, 512]^2",
        gym_id="gym_pusht/PushT-v0",
        max_steps=300,
        fps=10,
        task="Push the T-shaped block onto the green T-shaped target.",
        policies=("random", "smooth", "expert"),
        proprio=("agent_x", "agent_y"),
    ),
    "breakout": Builtin(
        description="Atari Breakout (ale-py ALE/Breakout-v5, frame skip 4, sticky actions); "
        "4 discrete actions NOOP, FIRE, RIGHT, LEFT",
        gym_id="ALE/Breakout-v5",
        max_steps=1000,
        fps=15,
        task="Bounce the ball off the paddle to break all the bricks.",
        policies=("random", "expert"),
    ),
    "reacher": Builtin(
        description="MuJoCo Reacher-v5: a two-link arm moves its fingertip to a target; "
        "continuous 2-D action = joint torques in [-1, 1]",
        gym_id="Reacher-v5",
        max_steps=50,
        fps=50,
        task="Move the arm's fingertip onto the red target.",
        policies=("random", "smooth", "expert", "gentle"),
        proprio=("cos_shoulder", "cos_elbow", "sin_shoulder", "sin_elbow", "shoulder_velocity", "elbow_velocity"),
    ),
    "reacher-pos": Builtin(
        description="Reacher-v5's arm under joint-position control (envs/arm.py): the arm stands at each "
        "commanded pose; continuous 2-D action = change of the two joint angles, 0.15 rad per unit, in [-1, 1]",
        gym_id="worldline/ReacherJointPosition-v0",
        max_steps=50,
        fps=50,
        task="Move the arm's fingertip onto the red target.",
        policies=("random", "smooth", "expert"),
        proprio=("cos_shoulder", "cos_elbow", "sin_shoulder", "sin_elbow"),  # the arm stands still: no velocity
    ),
    "coinrun": Builtin(
        description="procgen CoinRun (procgen-mirror, easy levels, one level per episode seed): the camera "
        "follows the runner; 4 discrete actions NOOP, LEFT, RIGHT, UP (jump)",
        gym_id="worldline/CoinRun-v0",
        max_steps=500,
        fps=15,
        task="Run and jump past the lava, saws and walkers to the coin.",
        policies=("random", "hold"),
    ),
}


def read_proprio(env: gym.Env, world: "WorldInfo") -> np.ndarray:
    """The robot's own readings (``world.proprio`` channels, float32) in the env's current state:
    pusht the disc's position in px; the reachers cos and sin of both joint angles (an angle wraps,
    its cos/sin do not), plus joint velocities under torque control."""
    u = env.unwrapped
    if world.env_id == "pusht":
        values = list(u.agent.position)
    elif world.env_id in ("reacher", "reacher-pos"):
        q = np.asarray(u.data.qpos[:2], np.float64)
        values = [*np.cos(q), *np.sin(q)] + (list(u.data.qvel[:2]) if world.env_id == "reacher" else [])
    else:
        raise WorldlineError(f"env {world.env_id!r} has no proprioception (built-in robots: pusht, reacher, reacher-pos)")
    out = np.asarray(values, np.float32)
    assert len(out) == len(world.proprio), (world.env_id, len(out), world.proprio)
    return out


# Top-down over the 0.4 m arena: Reacher's own camera looks from the side and leaves the arm a few
# pixels long at 64x64.
REACHER_CAMERA = {"distance": 0.65, "elevation": -90.0, "azimuth": 90.0, "lookat": np.array([0.0, 0.0, 0.0])}

DEFAULT_MAX_STEPS = 1000  # cap for other gymnasium ids without a TimeLimit, so a recording ends
DEFAULT_FPS = 30  # for other gymnasium ids whose metadata has no render_fps


@dataclasses.dataclass
class WorldInfo:
    """What the recorder and the policies need to know about an env made by :func:`make_env`."""

    env_id: str  # the name the user gave ("pusht" or a gymnasium id); stored in meta/info.json
    gym_id: str
    resolution: int
    fps: int
    max_steps: int
    task: str
    policies: tuple[str, ...]
    action_spec: ActionSpec
    description: str = ""
    proprio: tuple[str, ...] = ()  # observation.state channels (built-in robots only; see read_proprio)


# ----------------------------------------------------------------------------------------------
# Action spaces
# ----------------------------------------------------------------------------------------------


def action_spec_from_space(space: gym.Space, names: list[str] | None = None) -> ActionSpec:
    """ActionSpec of a gymnasium space: Discrete -> one index column, 1-D Box -> continuous."""
    if isinstance(space, gym.spaces.Discrete):
        if int(space.start) != 0:
            raise WorldlineError(f"action space {space} is not supported: discrete actions must start at 0 (stored as indices)")
        n = int(space.n)
        if names is not None and len(names) != n:
            names = None
        return ActionSpec(kind="discrete", dim=1, n=n, names=names or [str(i) for i in range(n)])
    if isinstance(space, gym.spaces.Box):
        if len(space.shape) != 1:
            raise WorldlineError(f"action space {space} is not supported: a Box action must be 1-D, got shape {space.shape}")
        bounded = bool(np.isfinite(space.low).all() and np.isfinite(space.high).all())
        return ActionSpec(
            kind="continuous",
            dim=int(space.shape[0]),
            low=[float(x) for x in space.low] if bounded else None,  # no [-1, 1] scaling without bounds
            high=[float(x) for x in space.high] if bounded else None,
            names=names,
        )
    raise WorldlineError(f"action space {space} is not supported (only Discrete and 1-D Box)")


def action_row(spec: ActionSpec, action) -> np.ndarray:
    """An env action as one float32 row of the dataset's action column."""
    row = np.asarray(action, dtype=np.float32).reshape(-1)
    if row.shape[0] != spec.dim:
        raise WorldlineError(f"policy returned an action of size {row.shape[0]}, the env expects {spec.dim}")
    return row


# ----------------------------------------------------------------------------------------------
# Rendering at a fixed resolution
# ----------------------------------------------------------------------------------------------


def resize_frame(frame: np.ndarray, resolution: int) -> np.ndarray:
    """(H, W, 3|4) uint8 -> (resolution, resolution, 3) uint8 with PIL's box (area) filter."""
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[-1] not in (3, 4):
        raise WorldlineError(f"env rendered an array of shape {frame.shape}, expected (H, W, 3) RGB")
    if frame.dtype != np.uint8:
        frame = np.clip(frame, 0, 255).astype(np.uint8)
    frame = frame[..., :3]
    if frame.shape[:2] == (resolution, resolution):
        return frame.copy()  # an env may draw the next frame into the same buffer
    image = Image.fromarray(np.ascontiguousarray(frame)).resize((resolution, resolution), Image.Resampling.BOX)
    return np.asarray(image)


class Rendered(gym.Wrapper):
    """``render()`` returns the current frame as (resolution, resolution, 3) uint8.

    With ``frame_is_obs`` the observation already is the picture (PushT pixels, Atari screens), so
    it is reused instead of drawing the scene a second time.
    """

    def __init__(self, env: gym.Env, resolution: int, frame_is_obs: bool = False):
        super().__init__(env)
        self.resolution = resolution
        self.frame_is_obs = frame_is_obs
        self._obs = None

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._obs = obs
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._obs = obs
        return obs, reward, terminated, truncated, info

    def render(self) -> np.ndarray:
        frame = self._obs if self.frame_is_obs else self.env.render()
        if frame is None:
            raise WorldlineError(f"env {self.spec.id if self.spec else self.env} rendered nothing (call reset first)")
        return resize_frame(frame, self.resolution)


# ----------------------------------------------------------------------------------------------
# make_env
# ----------------------------------------------------------------------------------------------


def _register_plugins() -> None:
    """Register the env packages worldline knows of (ids gym_pusht/..., ALE/...) if installed."""
    try:
        import gym_pusht  # noqa: F401  (registers on import)
    except ImportError:
        pass
    try:
        import ale_py

        gym.register_envs(ale_py)
    except ImportError:
        pass


def _unknown(env_id: str) -> WorldlineError:
    return WorldlineError(f"unknown env id {env_id!r} (built-in: {', '.join(BUILTIN)}; or any registered gymnasium id)")


def _require(package: str, env_id: str) -> None:
    raise WorldlineError(f"env {env_id!r} needs the package {package!r}: pip install 'worldline[envs]'")


def _gl_error(e: Exception) -> WorldlineError:
    return WorldlineError(
        f"MuJoCo cannot render offscreen with MUJOCO_GL={os.environ.get('MUJOCO_GL')} ({type(e).__name__}: {e}); "
        "set MUJOCO_GL=egl (needs libEGL) or MUJOCO_GL=osmesa (needs libOSMesa)"
    )


def check_resolution(resolution: int) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 8 or resolution % 2:
        raise WorldlineError(f"resolution must be an even number of pixels >= 8 (H.264 needs even sizes), got {resolution!r}")
    return int(resolution)


def _fast_pusht_pixels(env) -> None:
    """Give gym-pusht's ``_get_img`` a faster canvas read with the same result.

    gym-pusht copies its 512x512 pygame canvas through a transposed ``surfarray`` view (~1.8 ms a
    frame, a third of a recording step); ``pygame.image.tobytes`` hands over the same RGB pixels,
    row-major, in ~0.7 ms. The drawn and resized picture is bit-identical (tests/test_envs.py).
    """
    import cv2
    import pygame

    original = env._get_img

    def _get_img(screen, width, height, render_action=False):
        if render_action:  # the 680x680 visualisation with the action marker: leave it as it is
            return original(screen, width, height, render_action)
        w, h = screen.get_size()
        canvas = np.frombuffer(pygame.image.tobytes(screen, "RGB"), np.uint8).reshape(h, w, 3)  # (H, W, 3)
        return cv2.resize(canvas, (width, height))

    env._get_img = _get_img


def _make_builtin(name: str, resolution: int, max_steps: int) -> gym.Env:
    if name == "pusht":
        try:
            import gym_pusht  # noqa: F401
        except ImportError:
            _require("gym-pusht", name)
        env = gym.make(
            BUILTIN[name].gym_id,
            obs_type="pixels",
            observation_width=resolution,
            observation_height=resolution,
            render_mode="rgb_array",
            max_episode_steps=max_steps,
            disable_env_checker=True,
        )
        _fast_pusht_pixels(env.unwrapped)
        return Rendered(env, resolution, frame_is_obs=True)
    if name == "breakout":
        try:
            import ale_py
        except ImportError:
            _require("ale-py", name)
        gym.register_envs(ale_py)
        env = gym.make(BUILTIN[name].gym_id, render_mode="rgb_array", max_episode_steps=max_steps, disable_env_checker=True)
        return Rendered(env, resolution, frame_is_obs=True)
    if name in ("reacher", "reacher-pos"):
        try:
            import mujoco  # noqa: F401
        except ImportError:
            _require("mujoco", name)
        except Exception as e:  # mujoco loads the MUJOCO_GL backend on import
            raise _gl_error(e) from None
        env = gym.make(
            BUILTIN["reacher"].gym_id,  # reacher-pos drives the same arm
            render_mode="rgb_array",
            width=resolution,
            height=resolution,
            default_camera_config=REACHER_CAMERA,
            max_episode_steps=max_steps,
            disable_env_checker=True,
        )
        # Soft shadows and multisampling cost ~20x the render time of a 64x64 frame and are invisible
        # at that size; the renderer reads these when it builds its context at the first render.
        env.unwrapped.model.vis.quality.shadowsize = 0
        env.unwrapped.model.vis.quality.offsamples = 0
        try:
            env.unwrapped.render()  # builds the GL context now, so a broken backend fails here with a clear line
        except Exception as e:
            env.close()
            raise _gl_error(e) from None
        if name == "reacher-pos":
            from worldline.envs.arm import JointPositionReacher

            env = JointPositionReacher(env, max_steps)
        return Rendered(env, resolution)
    if name == "coinrun":
        from worldline.envs.coinrun import CoinRunEnv

        env = CoinRunEnv()  # raises the install line when procgen is missing
        env.spec = gym.envs.registration.EnvSpec(BUILTIN[name].gym_id, max_episode_steps=max_steps)
        env = gym.wrappers.TimeLimit(env, max_episode_steps=max_steps)
        return Rendered(env, resolution, frame_is_obs=True)
    raise KeyError(name)


def make_env(env_id: str, resolution: int = 64, max_steps: int | None = None) -> tuple[gym.Env, WorldInfo]:
    """Make a built-in world or any registered gymnasium env whose ``render()`` gives RGB frames.

    Returns the env (its ``render()`` is (resolution, resolution, 3) uint8) and its :class:`WorldInfo`.
    ``max_steps`` replaces the env's own time limit (PushT 300, Reacher 50, ...) when given.
    """
    resolution = check_resolution(resolution)
    if env_id in BUILTIN:
        world = BUILTIN[env_id]
        env = _make_builtin(env_id, resolution, max_steps or world.max_steps)
        names = None
        if env_id == "breakout":
            names = [str(n) for n in env.unwrapped.get_action_meanings()]
        elif env_id == "pusht":
            names = ["x", "y"]
        elif env_id == "reacher":
            names = ["shoulder_torque", "elbow_torque"]
        elif env_id == "reacher-pos":
            names = ["shoulder_step", "elbow_step"]
        elif env_id == "coinrun":
            names = [str(n) for n in env.unwrapped.get_action_meanings()]
        info = WorldInfo(
            env_id=env_id,
            gym_id=world.gym_id,
            resolution=resolution,
            fps=world.fps,
            max_steps=max_steps or world.max_steps,
            task=world.task,
            policies=world.policies,
            action_spec=action_spec_from_space(env.action_space, names),
            description=world.description,
            proprio=world.proprio,
        )
        return env, info

    if not isinstance(env_id, str) or env_id not in gym.registry:
        _register_plugins()
    if not isinstance(env_id, str) or env_id not in gym.registry:
        raise _unknown(env_id)
    try:
        env = gym.make(env_id, render_mode="rgb_array", **({"max_episode_steps": max_steps} if max_steps else {}))
    except gym.error.DependencyNotInstalled as e:
        raise WorldlineError(f"env {env_id!r} needs a package that is not installed: {e}") from None
    except (TypeError, gym.error.Error) as e:
        raise WorldlineError(f"env {env_id!r} could not be made with render_mode='rgb_array': {e}") from None
    modes = list(env.metadata.get("render_modes") or [])
    if "rgb_array" not in modes:
        env.close()
        raise WorldlineError(f"env {env_id!r} cannot render rgb_array frames (its render modes: {', '.join(modes) or 'none'})")
    spec_ = action_spec_from_space(env.action_space)
    names = None
    if spec_.kind == "discrete" and hasattr(env.unwrapped, "get_action_meanings"):
        names = [str(n) for n in env.unwrapped.get_action_meanings()]
        spec_ = action_spec_from_space(env.action_space, names)
    fps = env.metadata.get("render_fps") or DEFAULT_FPS
    max_steps = max_steps or (env.spec.max_episode_steps if env.spec else None) or DEFAULT_MAX_STEPS
    from worldline.envs.policies import available_policies

    policies = tuple(available_policies(env))  # random, smooth for boxes, and any scripted one (CarRacing's driver)
    info = WorldInfo(
        env_id=env_id,
        gym_id=env_id,
        resolution=resolution,
        fps=int(round(fps)),
        max_steps=int(max_steps),
        task=env_id,
        policies=policies,
        action_spec=spec_,
        description=f"gymnasium {env_id}",
    )
    # an env whose observation is its RGB picture (CarRacing's 96x96 view, Atari screens) is recorded
    # from it, skipping a second, larger render (CarRacing: 7 ms a step instead of 16)
    space = env.observation_space
    frame_is_obs = isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3 and space.shape[-1] == 3
    return Rendered(env, resolution, frame_is_obs=frame_is_obs), info
