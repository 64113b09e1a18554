"""Solvers: Caffe's update rules, learning-rate policies and training loop.

- ``rules``: the six update rules as pure functions over all parameters at once,
  registered in ``pipeline.registry.SOLVERS`` under Caffe's ``type`` strings
- ``lr_policies``: the ``lr_policy`` formulas, registered in ``LR_POLICIES``
- ``solver``: ``Solver`` (``Solver::Step``/``Solve``/``Test``), pycaffe's
  ``SGDSolver`` ... ``AdamSolver`` and ``get_solver``
- ``snapshot``: ``.caffemodel`` / ``.solverstate`` (binary or HDF5) and the
  ``.pipeline`` sidecar that makes resuming exact
- ``glog``: Caffe's log-line format for the ``logging`` records the solver emits
"""

from . import lr_policies, rules  # noqa: F401  (fill LR_POLICIES and SOLVERS)
from .solver import (
    AdaDeltaSolver,
    AdaGradSolver,
    AdamSolver,
    NesterovSolver,
    RMSPropSolver,
    SGDSolver,
    Solver,
    get_solver,
)

__all__ = [
    "Solver",
    "get_solver",
    "SGDSolver",
    "NesterovSolver",
    "AdaGradSolver",
    "RMSPropSolver",
    "AdaDeltaSolver",
    "AdamSolver",
]
