"""DreamEnv: any :class:`~worldline.core.contracts.WorldModel` as a ``gymnasium.Env``.

An agent library that speaks gymnasium (stable-baselines3, cleanrl, ...) can then train inside a
worldline world model exactly as it would in the real environment: ``reset`` starts the dream from a
real context clip of a dataset, ``step`` asks the world model for the next frame.

Observations are the generated frames, ``(H, W, 3)`` uint8 like the recorded data; with
``observation="latent"`` the world model's latent ``embed`` of each frame (float32) — what planners
and latent-space agents want; or with ``observation="state"`` the model's own state features
(float32, ``world_model.state_features(state)``: concat(h, z) for the RSSM, [z, h] for V-M-C) —
what the model knows, including what its decoder may not draw (the RSSM keeps CartPole's pole angle
in its state while its 64x64 frames show the pole upright). An agent trained on state observations
runs unchanged in the real env through :class:`~worldline.agents.filtered_env.FilteredEnv`, which
filters each real frame through the same model.

Rewards and episode ends come from the world model's heads when it has them (a model with a
``reward_and_continue(state) -> (reward (B,), continue (B,))`` method, such as the RSSM family),
else from a user-supplied ``reward_fn(obs, action, next_obs) -> float``; asking for a reward from
neither is an error, never a silent zero.

Sampling world models (diffusion, autoregressive) draw random numbers in ``step``; each step runs
under a torch seed drawn from the env's ``np_random``, so a seeded ``reset`` replays the same dream.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch

from worldline.core.contracts import ActionSpec, WorldModel, device_of
from worldline.core.errors import WorldlineError

RewardFn = Callable[[np.ndarray, np.ndarray, np.ndarray], float]


class DreamEnv(gym.Env):
    """A world model wrapped as a single (unbatched) gymnasium environment.

    Args:
        world_model: any worldline world model (loaded with ``load_pretrained``).
        contexts: where dreams start — a worldline dataset (path or :class:`~worldline.data.format.Dataset`)
            whose episodes are cut into context clips (filtered with the actions played between
            their frames), or an array of clips (N, K, H, W, 3) uint8 (filtered as a world running
            on its own).
        context_frames: real frames the world model sees before the first step.
        observation: "frame" (uint8 image), "latent" (the model's ``embed`` of the frame) or
            "state" (the model's ``state_features`` of its dream state).
        reward_fn: reward for a model without a reward head; overrides the head when both exist.
        max_steps: steps before the episode is truncated.
        termination: how the continue head ends an episode: "sample" ends it with probability
            1 - continue at each step (drawn from the env's seeded generator; the dream's episode
            lengths then follow the model, as DreamerV3's imagination weights them), "threshold"
            ends it when continue < 0.5 (a deterministic dream; a model whose continue never dips
            that low then never ends an episode, and an agent learns nothing about ends).
        episodes: dataset episodes to draw contexts from (default all; pass the held-out ones to
            keep the agent's starts out of the world model's training data).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        world_model: WorldModel,
        contexts: Any,
        *,
        context_frames: int = 4,
        observation: str = "frame",
        reward_fn: RewardFn | None = None,
        max_steps: int = 200,
        episodes: list[int] | None = None,
        render_mode: str | None = None,
        termination: str = "sample",
    ):
        if observation not in ("frame", "latent", "state"):
            raise WorldlineError(f"observation must be 'frame', 'latent' or 'state', got {observation!r}")
        if observation == "state":
            need_state_features(world_model)
        if context_frames < 1 or max_steps < 1:
            raise WorldlineError(f"context_frames and max_steps must be >= 1, got {context_frames} and {max_steps}")
        if termination not in ("sample", "threshold"):
            raise WorldlineError(f"termination must be 'sample' or 'threshold', got {termination!r}")
        self.termination = termination
        if render_mode not in (None, "rgb_array"):
            raise WorldlineError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.world_model = world_model.eval()
        self.spec_ = world_model.action_spec
        self.context_frames = context_frames
        self.observation = observation
        self.reward_fn = reward_fn
        self.max_steps = max_steps
        self.render_mode = render_mode
        self.device = device_of(world_model)
        # a family may ship heads that a checkpoint turned off (rssm with model.reward_head=false)
        self._has_heads = callable(getattr(world_model, "reward_and_continue", None)) and bool(getattr(world_model, "has_reward_head", True))
        if reward_fn is None and not self._has_heads:
            raise WorldlineError(f"{type(world_model).__name__} has no reward head: pass reward_fn(obs, action, next_obs) -> float")
        # a dataset's clips come with the actions between their frames, so the model filters the
        # context as it was played (zero actions read as "the world ran on its own")
        self._clips, self._clip_actions = _context_clips(contexts, context_frames, episodes)
        H, W = self._clips.shape[2:4]
        size = getattr(getattr(world_model, "config", None), "image_size", None)
        if size is not None and tuple(size) != (H, W):
            raise WorldlineError(f"contexts are {H}x{W} frames, the world model was trained on {size[0]}x{size[1]}")

        self.action_space = _gym_space(self.spec_)
        if observation == "frame":
            self.observation_space = gym.spaces.Box(0, 255, shape=(H, W, 3), dtype=np.uint8)
        elif observation == "state":
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                f = world_model.state_features(self._init_state(0))  # (1, F)
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=tuple(f.shape[1:]), dtype=np.float32)
        else:
            with torch.no_grad():
                z = world_model.embed(_to_model(self._clips[:1, -1:], self.device))  # (1, 1, ...)
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=tuple(z.shape[2:]), dtype=np.float32)
        # state observations need no pixels: a model with dream_step steps without decoding a frame
        # (the RSSM's decoder is 3/4 of a step) unless a reward_fn or render wants one
        self._skip_frames = (observation == "state" and reward_fn is None and render_mode is None
                             and callable(getattr(world_model, "dream_step", None)) and callable(getattr(world_model, "actions", None)))
        self._state = None
        self._frame: np.ndarray | None = None
        self._t = 0

    # ------------------------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        index = int(options["context"]) if options and "context" in options else int(self.np_random.integers(len(self._clips)))
        if not 0 <= index < len(self._clips):
            raise WorldlineError(f"options['context'] = {index} is outside 0..{len(self._clips) - 1}")
        clip = self._clips[index : index + 1]  # (1, K, H, W, 3)
        with torch.no_grad(), self._seeded():
            self._state = self._init_state(index)
        self._frame = np.ascontiguousarray(clip[0, -1])
        self._t = 0
        return self._observe(self._frame), {"context": index}

    def step(self, action):
        if self._state is None:
            raise WorldlineError("DreamEnv.step called before reset")
        row = self._action_row(action)
        with torch.no_grad(), self._seeded():
            action_t = torch.from_numpy(row)[None].to(self.device)  # (1, A)
            if self._skip_frames:
                self._state, frame = self.world_model.dream_step(self._state, self.world_model.actions(action_t)), None
            else:
                self._state, frame = self.world_model.step(self._state, action_t)
            heads = self.world_model.reward_and_continue(self._state) if self._has_heads else None
        previous, self._frame = self._frame, (None if frame is None else _to_uint8(frame[0]))
        self._t += 1
        terminated = False
        if heads is not None:
            reward, cont = float(heads[0][0]), float(heads[1][0])
            terminated = bool(self.np_random.random() >= cont) if self.termination == "sample" else cont < 0.5
        if self.reward_fn is not None:
            reward = float(self.reward_fn(previous, np.asarray(action), self._frame))
        truncated = self._t >= self.max_steps
        return self._observe(self._frame), reward, terminated, truncated, {}

    def _init_state(self, index: int):
        """The world model's state after the context clip ``index`` (with its actions, where known)."""
        clip = _to_model(self._clips[index : index + 1], self.device)  # (1, K, 3, H, W)
        if self._clip_actions is None or self._clip_actions.shape[1] == 0 or self.spec_.kind == "none":
            return self.world_model.init_state(clip)
        return self.world_model.init_state(clip, torch.from_numpy(self._clip_actions[index : index + 1]).to(self.device))

    def render(self):
        if self.render_mode == "rgb_array":
            return None if self._frame is None else self._frame.copy()
        return None

    # ------------------------------------------------------------------------------------------

    def _observe(self, frame: np.ndarray):
        if self.observation == "frame":
            return frame.copy()
        if self.observation == "state":
            with torch.no_grad():
                f = self.world_model.state_features(self._state)[0]
            return f.float().cpu().numpy().astype(np.float32)
        with torch.no_grad():
            z = self.world_model.embed(_to_model(frame[None, None], self.device))[0, 0]
        return z.float().cpu().numpy().astype(np.float32)

    def _action_row(self, action) -> np.ndarray:
        return action_row(action, self.action_space, self.spec_)

    def _seeded(self):
        return seeded_torch(self.np_random, self.device)


def action_row(action, space: gym.Space, spec: ActionSpec) -> np.ndarray:
    """The action as one float32 row of the world model's action column, or a clear error."""
    if spec.kind == "none":
        return np.zeros(0, dtype=np.float32)
    if not space.contains(np.asarray(action, dtype=space.dtype)):
        raise WorldlineError(f"action {action!r} is outside the action space {space}")
    return np.asarray(action, dtype=np.float32).reshape(-1)


@contextlib.contextmanager
def seeded_torch(rng: np.random.Generator, device: torch.device):
    """A torch RNG scope seeded from ``rng``, so sampling models replay under a seed and the
    caller's global torch RNG is left as it was."""
    seed = int(rng.integers(2**31 - 1))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def need_state_features(world_model) -> None:
    """A clear error for a model that does not expose its state to agents."""
    if not callable(getattr(world_model, "state_features", None)):
        raise WorldlineError(f"{type(world_model).__name__} has no state_features(state): observation='state' needs a model that exposes its state (rssm, vmc)")


def _gym_space(spec: ActionSpec) -> gym.Space:
    if spec.kind == "discrete":
        return gym.spaces.Discrete(spec.n)
    if spec.kind == "continuous":
        low = np.array(spec.low if spec.low is not None else [-np.inf] * spec.dim, dtype=np.float32)
        high = np.array(spec.high if spec.high is not None else [np.inf] * spec.dim, dtype=np.float32)
        return gym.spaces.Box(low, high, dtype=np.float32)
    return gym.spaces.Discrete(1)  # a video-only model: the one "action" is to let the world run


def _context_clips(contexts: Any, k: int, episodes: list[int] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """(N, k, H, W, 3) uint8 clips from a dataset's episodes (evenly spaced starts) or an array, and
    from a dataset the (N, k-1, A) actions taken between each clip's frames (None for an array)."""
    if isinstance(contexts, np.ndarray):
        if contexts.ndim != 5 or contexts.shape[-1] != 3 or contexts.dtype != np.uint8 or contexts.shape[1] < k or not len(contexts):
            raise WorldlineError(f"context clips must be (N, >={k}, H, W, 3) uint8, got {contexts.shape} {contexts.dtype}")
        return contexts[:, -k:], None
    from worldline.data.cache import frame_store
    from worldline.data.format import Dataset

    dataset = contexts if isinstance(contexts, Dataset) else Dataset(contexts)
    store = frame_store(dataset, progress=False)
    ids = range(dataset.num_episodes) if episodes is None else episodes
    clips, actions = [], []
    for e in ids:
        if not 0 <= e < dataset.num_episodes:
            raise WorldlineError(f"{dataset.root}: no episode {e} (it has {dataset.num_episodes})")
        start, length = int(store.episode_starts[e]), int(store.episode_lengths[e])
        for s in range(0, length - k + 1, max(k, length // 8)):  # up to ~8 starts per episode
            clips.append(np.asarray(store.arrays["frames"][start + s : start + s + k]))
            actions.append(np.asarray(store.arrays["actions"][start + s : start + s + k - 1], dtype=np.float32))  # actions[t] leads to frame t+1
    if not clips:
        raise WorldlineError(f"{dataset.root}: no episode has {k} frames for a context")
    return np.stack(clips), np.stack(actions).reshape(len(clips), k - 1, -1)


def _to_model(clip: np.ndarray, device: torch.device) -> torch.Tensor:
    """(B, T, H, W, 3) uint8 -> (B, T, 3, H, W) float in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(clip)).to(device).permute(0, 1, 4, 2, 3)  # (B, T, 3, H, W)
    return x.float() / 127.5 - 1.0


def _to_uint8(frame: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) uint8."""
    x = ((frame.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 0).cpu().numpy()
