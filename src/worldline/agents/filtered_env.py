"""FilteredEnv: a real pixel env seen through a world model, the counterpart of
``DreamEnv(observation="state")``.

Each real frame is filtered through the model's posterior — on reset ``filter_start(frame)``, after
each action ``filter_step(state, action, frame)`` (the memory steps with the action, then the latent
is read off the new frame) — and the observation is ``state_features(state)``, the same features a
dream hands out. An agent trained only inside ``DreamEnv(model, ..., observation="state")`` thus
runs unchanged in ``FilteredEnv(env_id, model)``; rewards and episode ends are the real env's.

Posterior samples are drawn under a torch seed taken from the wrapper's own generator (seeded by
``reset(seed=...)``), so a seeded episode replays exactly and the real env's randomness is untouched.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from worldline.agents.dream_env import _gym_space, _to_model, action_row, need_state_features, seeded_torch
from worldline.core.contracts import device_of
from worldline.core.errors import WorldlineError


def frame_tensor(frame: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """One (H, W, 3) uint8 frame -> (1, 3, H, W) float in [-1, 1], the models' input scale."""
    return _to_model(np.array(frame)[None, None], torch.device(device))[:, 0]


class FilteredEnv(gym.Wrapper):
    """A real env whose observation is the world model's filtered state features (float32, (F,)).

    Args:
        env: a gymnasium id or name of a built-in world (made with ``make_env`` at the model's
            resolution), or an env whose ``render()`` returns the model's (H, W, 3) uint8 frames.
        world_model: a model with ``state_features``, ``filter_start``, ``filter_step`` and an
            ``actions`` feature map (the rssm family: ``rssm`` and ``vmc``).
        max_steps: episode cap when ``env`` is an id (default: the env's own).
        sample: sample the posterior latents (as the Dreamer's player does, and as the dream's
            prior samples look) or take their mode (deterministic features).
    """

    def __init__(self, env: gym.Env | str, world_model, *, max_steps: int | None = None, sample: bool = True):
        need_state_features(world_model)
        if not all(callable(getattr(world_model, name, None)) for name in ("filter_start", "filter_step", "actions")):
            raise WorldlineError(f"{type(world_model).__name__} cannot filter real frames (no filter_start/filter_step/actions)")
        size = tuple(world_model.config.image_size)
        if isinstance(env, str):
            from worldline.envs.registry import make_env

            if size[0] != size[1]:
                raise WorldlineError(f"the world model sees {size[0]}x{size[1]} frames; make_env renders square ones: pass an env")
            env, _ = make_env(env, size[0], max_steps=max_steps)
        super().__init__(env)
        self.world_model = world_model.eval()
        self.spec_ = world_model.action_spec
        self.device = device_of(world_model)
        model_space = _gym_space(self.spec_)
        if type(model_space) is not type(env.action_space) or getattr(model_space, "n", None) != getattr(env.action_space, "n", None) \
                or model_space.shape != env.action_space.shape:
            raise WorldlineError(f"the env's action space {env.action_space} is not the world model's {model_space}")
        self.sample = sample
        self._rng = np.random.default_rng()
        self.state = None
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            f = world_model.state_features(world_model.filter_start(torch.zeros(1, 3, *size, device=self.device)))  # (1, F)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=tuple(f.shape[1:]), dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        _, info = self.env.reset(seed=seed, options=options)
        with torch.no_grad(), seeded_torch(self._rng, self.device):
            self.state = self.world_model.filter_start(self._frame(), sample=self.sample)
        return self._observe(), info

    def step(self, action):
        if self.state is None:
            raise WorldlineError("FilteredEnv.step called before reset")
        row = action_row(action, self.env.action_space, self.spec_)
        _, reward, terminated, truncated, info = self.env.step(action)
        with torch.no_grad(), seeded_torch(self._rng, self.device):
            feats = self.world_model.actions(torch.from_numpy(row)[None].to(self.device))  # (1, A)
            self.state = self.world_model.filter_step(self.state, feats, self._frame(), sample=self.sample)
        return self._observe(), float(reward), bool(terminated), bool(truncated), info

    def _frame(self) -> torch.Tensor:
        frame = self.env.render()
        H, W = self.world_model.config.image_size
        if not isinstance(frame, np.ndarray) or frame.shape != (H, W, 3) or frame.dtype != np.uint8:
            got = (frame.shape, frame.dtype) if isinstance(frame, np.ndarray) else type(frame).__name__
            raise WorldlineError(f"the env must render ({H}, {W}, 3) uint8 frames for this world model, got {got}")
        return frame_tensor(frame, self.device)

    def _observe(self) -> np.ndarray:
        with torch.no_grad():
            return self.world_model.state_features(self.state)[0].float().cpu().numpy().astype(np.float32)
