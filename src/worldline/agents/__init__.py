"""Agents that learn inside world models, and the gymnasium environment any world model becomes.

- :mod:`~worldline.agents.dream_env`: ``DreamEnv``, any world model as a ``gymnasium.Env``, and
  :mod:`~worldline.agents.filtered_env`: ``FilteredEnv``, a real env seen through a model's state, so an
  agent trained on ``DreamEnv(observation="state")`` runs unchanged for real; :mod:`~worldline.agents.reinforce`,
  the small policy-gradient agent behind ``worldline dream-agent``;
- :mod:`~worldline.agents.imagination`: DreamerV3's actor-critic trained on imagined rollouts
  (networks in :mod:`~worldline.agents.networks`), and :mod:`~worldline.agents.dreamer`, the online
  loop behind ``worldline dreamer``;
- :mod:`~worldline.agents.controller`: the V-M-C linear controller and CMA-ES in the dream, and
  :mod:`~worldline.agents.vmc`, the pipeline behind ``worldline vmc``.
"""
