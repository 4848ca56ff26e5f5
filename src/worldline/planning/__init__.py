"""Planners over any :class:`~worldline.core.contracts.WorldModel`: they see only ``imagine`` and the
model's ``action_spec``, hold no weights, and return actions in the env's units.

- :class:`CEM` cross-entropy method with momentum and elites kept across iterations; categorical for
  discrete action spaces;
- :class:`MPPI` model-predictive path integral (softmax-weighted samples);
- :class:`GradientPlanner` Adam on the actions through the differentiable predictor;
- :class:`RandomPlanner` uniform random actions (the baseline every planner must beat);
- :class:`MPC` receding-horizon control around any of them; :class:`GoalCost` L1/L2 to a goal embedding,
  or to a :class:`Goal` that also holds the robot's proprioception at the goal (DINO-WM's objective).
"""

from worldline.planning.cem import CEM
from worldline.planning.common import ActionBox, expand_state, select_state
from worldline.planning.gradient import GradientPlanner
from worldline.planning.mpc import MPC
from worldline.planning.mppi import MPPI
from worldline.planning.objectives import Goal, GoalCost
from worldline.planning.random import RandomPlanner

PLANNERS = {"cem": CEM, "mppi": MPPI, "gradient": GradientPlanner, "random": RandomPlanner}

__all__ = ["CEM", "MPC", "MPPI", "PLANNERS", "ActionBox", "Goal", "GoalCost", "GradientPlanner", "RandomPlanner",
           "expand_state", "select_state"]
