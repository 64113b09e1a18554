"""Caffe's learning-rate policies (``SGDSolver::GetLearningRate``), one pure function each.

``it`` is the number of updates already made (Caffe's ``iter_``): the rate for the
first update uses ``it = 0``. Every policy is ``f(p, it, current_step) ->
(rate, current_step)`` where ``p`` is a ``SolverParameter`` (or anything with its
field names); only ``step`` and ``multistep`` change ``current_step``, which the
solver keeps and saves in ``SolverState.current_step``.

- fixed:     base_lr
- step:      base_lr * gamma ^ floor(it / stepsize)          (current_step = floor(it / stepsize))
- exp:       base_lr * gamma ^ it
- inv:       base_lr * (1 + gamma * it) ^ (-power)
- multistep: base_lr * gamma ^ current_step, where current_step += 1 (once per call)
             when current_step < len(stepvalue) and it >= stepvalue[current_step]
- poly:      base_lr * (1 - it / max_iter) ^ power
- sigmoid:   base_lr / (1 + exp(-gamma * (it - stepsize)))

Rates are float32, computed as Caffe computes them: ``pow(gamma, int)`` promotes to
double before the product is rounded to float (step, exp, multistep), while inv, poly
and sigmoid use the float overloads of ``pow``/``exp``. Results equal Caffe's to
the last float bit except where the C library's ``powf``/``expf`` and numpy's
differ (at most 1 ulp).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError
from ..registry import LR_POLICIES

f32 = np.float32


def _rate(x) -> float:
    """A Python float holding a float32 value (what Caffe's ``Dtype rate`` holds)."""
    return float(f32(x))


def _need(cond: bool, policy: str, what: str) -> None:
    if not cond:
        raise ConfigError(f"lr_policy \"{policy}\" needs {what}")


@LR_POLICIES.register("fixed")
def fixed(p, it: int, current_step: int = 0):
    """base_lr."""
    return _rate(p.base_lr), current_step


@LR_POLICIES.register("step")
def step(p, it: int, current_step: int = 0):
    """base_lr * gamma ^ floor(it / stepsize); current_step becomes floor(it / stepsize)."""
    _need(p.stepsize > 0, "step", f"stepsize > 0 (got {p.stepsize})")
    _need(p.gamma >= 0, "step", f"gamma >= 0 (got {p.gamma})")
    current_step = it // p.stepsize
    return _rate(p.base_lr * float(p.gamma) ** current_step), current_step


@LR_POLICIES.register("exp")
def exp(p, it: int, current_step: int = 0):
    """base_lr * gamma ^ it."""
    _need(p.gamma >= 0, "exp", f"gamma >= 0 (got {p.gamma})")
    return _rate(p.base_lr * float(p.gamma) ** it), current_step


@LR_POLICIES.register("inv")
def inv(p, it: int, current_step: int = 0):
    """base_lr * (1 + gamma * it) ^ (-power), in float32 as Caffe's ``pow(float, float)``."""
    _need(p.gamma >= 0, "inv", f"gamma >= 0 (got {p.gamma})")
    with np.errstate(all="ignore"):
        base = f32(1) + f32(p.gamma) * f32(it)
        return _rate(f32(p.base_lr) * np.power(base, -f32(p.power))), current_step


@LR_POLICIES.register("multistep")
def multistep(p, it: int, current_step: int = 0):
    """base_lr * gamma ^ current_step; current_step advances by one when ``it`` reaches
    ``stepvalue[current_step]`` (stateful: the value is carried between calls)."""
    _need(p.gamma >= 0, "multistep", f"gamma >= 0 (got {p.gamma})")
    values = list(p.stepvalue)
    if current_step < len(values) and it >= values[current_step]:
        current_step += 1
    return _rate(p.base_lr * float(p.gamma) ** current_step), current_step


@LR_POLICIES.register("poly")
def poly(p, it: int, current_step: int = 0):
    """base_lr * (1 - it / max_iter) ^ power."""
    _need(p.max_iter > 0, "poly", f"max_iter > 0 (got {p.max_iter})")
    with np.errstate(all="ignore"):
        frac = f32(1) - f32(it) / f32(p.max_iter)
        return _rate(f32(p.base_lr) * np.power(frac, f32(p.power))), current_step


@LR_POLICIES.register("sigmoid")
def sigmoid(p, it: int, current_step: int = 0):
    """base_lr / (1 + exp(-gamma * (it - stepsize)))."""
    _need(p.gamma >= 0, "sigmoid", f"gamma >= 0 (got {p.gamma})")
    _need(p.stepsize > 0, "sigmoid", f"stepsize > 0 (got {p.stepsize})")
    with np.errstate(all="ignore"):
        e = np.exp(-f32(p.gamma) * (f32(it) - f32(p.stepsize)))
        return _rate(f32(p.base_lr) * (f32(1) / (f32(1) + e))), current_step


def learning_rate(p, it: int, current_step: int = 0, where: str = ""):
    """The rate for the update after ``it`` updates: ``(rate, new current_step)``.

    Looks ``p.lr_policy`` up in ``LR_POLICIES`` (a miss lists the known policies).
    """
    if not p.lr_policy:
        raise ConfigError(f"{where + ': ' if where else ''}lr_policy is not set "
                          f"(known: {', '.join(LR_POLICIES)})")
    policy = LR_POLICIES.get(p.lr_policy, where=where or "lr_policy")
    try:
        return policy(p, it, current_step)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}" if where else str(e)) from None


def check(p, where: str = "") -> None:
    """Fail early (before any training) on a policy that could not produce a rate."""
    rate, _ = learning_rate(p, 0, 0, where)
    if math.isnan(rate):
        raise ConfigError(f"{where + ': ' if where else ''}lr_policy \"{p.lr_policy}\" gives NaN at iteration 0")
