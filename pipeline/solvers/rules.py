"""Caffe's update rules as pure functions over all learnable parameters at once.

Every function works on lists of float32 tensors in Caffe's ``learnable_params``
order and changes them in place, exactly as Caffe's ``ComputeUpdateValue`` does:
the gradient list ``g`` is overwritten with the *update value*, and the caller then
subtracts it (``Net::Update``: w <- w - g). ``history`` is the rule's state, laid
out as in Caffe's ``SolverState.history``: one tensor per parameter, twice as many
for AdaDelta and Adam (second half: the second moment). ``rates`` holds the
per-parameter local rate ``lr * lr_mult``.

Rules (h: history; AdaDelta/Adam: h1 = history[i], h2 = history[n + i]):

- SGD:      h = m*h + rate*g ;  g = h
            (Caffe's form: torch.optim keeps b = m*b + g and steps lr*b, which differs
            once the rate changes)
- Nesterov: h_new = m*h + rate*g ;  g = (1 + m)*h_new - m*h
- AdaGrad:  h = h + g^2 ;  g = rate * g / (sqrt(h) + delta)
- RMSProp:  h = (1 - d)*g^2 + d*h ;  g = rate * g / (sqrt(h) + delta)   (d = rms_decay)
- AdaDelta: h1 = (1 - m)*g^2 + m*h1 ;  g = g * sqrt((h2 + delta) / (h1 + delta)) ;
            h2 = (1 - m)*g^2 + m*h2 ;  g = rate * g
- Adam:     h1 = (1 - b1)*g + b1*h1 ;  h2 = (1 - b2)*g^2 + b2*h2 ;
            g = rate * sqrt(1 - b2^t) / (1 - b1^t) * h1 / (sqrt(h2) + delta),  t = iter + 1
            (Caffe adds delta to sqrt(v) *before* the bias correction: torch.optim.Adam
            adds it after, i.e. its epsilon is effectively delta * sqrt(1 - b2^t))

``ApplyUpdate`` order (``apply_update``): clip_gradients (global L2 norm of the
accumulated gradient), then per parameter normalize (g *= 1/iter_size),
regularize (L2: g += wd*decay_mult*w; L1: g += wd*decay_mult*sign(w)), the rule,
and finally w -= g.

Scalars are rounded to float32 as Caffe's ``Dtype`` arithmetic rounds them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError
from ..registry import SOLVERS

f32 = np.float32


def _f(x) -> float:
    """A Python float holding the float32 rounding of ``x``."""
    return float(f32(x))


def _one_minus(x) -> float:
    return _f(f32(1) - f32(x))


# ------------------------------------------------------------------- rules
def _add_scaled_(targets, sources, factors) -> None:
    """targets[i] += factors[i] * sources[i], one fused pass per distinct factor
    (no temporaries: a net usually has one or two distinct rates or decays)."""
    groups: dict[float, list[int]] = {}
    for i, f in enumerate(factors):
        groups.setdefault(f, []).append(i)
    for f, idx in groups.items():
        torch._foreach_add_([targets[i] for i in idx], [sources[i] for i in idx], alpha=f)


def sgd(grads, history, rates, *, momentum):
    """h = m*h + rate*g ; g = h."""
    torch._foreach_mul_(history, _f(momentum))
    _add_scaled_(history, grads, rates)
    torch._foreach_copy_(grads, history)


def nesterov(grads, history, rates, *, momentum):
    """h_new = m*h + rate*g ; g = (1 + m)*h_new - m*h_old."""
    m = _f(momentum)
    old = torch._foreach_mul(history, m)  # m*h_old, also the first term of h_new
    torch._foreach_copy_(history, torch._foreach_add(old, torch._foreach_mul(grads, rates)))
    torch._foreach_copy_(grads, torch._foreach_mul(history, _f(f32(1) + f32(m))))
    torch._foreach_sub_(grads, old)


def adagrad(grads, history, rates, *, delta):
    """h = h + g^2 ; g = rate * g / (sqrt(h) + delta)."""
    torch._foreach_add_(history, torch._foreach_mul(grads, grads))
    denom = torch._foreach_sqrt(history)
    torch._foreach_add_(denom, _f(delta))
    torch._foreach_div_(grads, denom)
    torch._foreach_mul_(grads, rates)


def rmsprop(grads, history, rates, *, rms_decay, delta):
    """h = (1 - d)*g^2 + d*h ; g = rate * g / (sqrt(h) + delta)."""
    sq = torch._foreach_mul(grads, grads)
    torch._foreach_mul_(sq, _one_minus(rms_decay))
    torch._foreach_mul_(history, _f(rms_decay))
    torch._foreach_add_(history, sq)
    denom = torch._foreach_sqrt(history)
    torch._foreach_add_(denom, _f(delta))
    torch._foreach_div_(grads, denom)
    torch._foreach_mul_(grads, rates)


def adadelta(grads, history, rates, *, momentum, delta):
    """h1 = (1-m)*g^2 + m*h1 ; g *= sqrt((h2 + delta) / (h1 + delta)) ; h2 = (1-m)*g^2 + m*h2 ; g *= rate."""
    n = len(grads)
    h1, h2 = history[:n], history[n:]
    m, d, om = _f(momentum), _f(delta), _one_minus(momentum)
    sq = torch._foreach_mul(grads, grads)
    torch._foreach_mul_(sq, om)
    torch._foreach_mul_(h1, m)
    torch._foreach_add_(h1, sq)
    ratio = torch._foreach_add(h2, d)
    torch._foreach_div_(ratio, torch._foreach_add(h1, d))
    torch._foreach_sqrt_(ratio)
    torch._foreach_mul_(grads, ratio)
    sq = torch._foreach_mul(grads, grads)
    torch._foreach_mul_(sq, om)
    torch._foreach_mul_(h2, m)
    torch._foreach_add_(h2, sq)
    torch._foreach_mul_(grads, rates)


def adam_correction(momentum, momentum2, t: int) -> float:
    """sqrt(1 - b2^t) / (1 - b1^t) as Caffe computes it (double, then rounded to float)."""
    b1, b2 = float(f32(momentum)), float(f32(momentum2))
    return _f(math.sqrt(1.0 - b2**t) / (1.0 - b1**t))


def adam(grads, history, rates, *, momentum, momentum2, delta, t: int):
    """h1 = (1-b1)*g + b1*h1 ; h2 = (1-b2)*g^2 + b2*h2 ;
    g = (rate * correction) * h1 / (sqrt(h2) + delta), correction = sqrt(1-b2^t)/(1-b1^t)."""
    n = len(grads)
    m1, m2 = history[:n], history[n:]
    b1, b2 = _f(momentum), _f(momentum2)
    sq = torch._foreach_mul(grads, grads)
    torch._foreach_mul_(grads, _one_minus(b1))
    torch._foreach_mul_(m1, b1)
    torch._foreach_add_(m1, grads)
    torch._foreach_mul_(sq, _one_minus(b2))
    torch._foreach_mul_(m2, b2)
    torch._foreach_add_(m2, sq)
    denom = torch._foreach_sqrt(m2)
    torch._foreach_add_(denom, _f(delta))
    torch._foreach_copy_(grads, m1)
    torch._foreach_div_(grads, denom)
    corr = f32(adam_correction(b1, b2, t))
    torch._foreach_mul_(grads, [_f(f32(r) * corr) for r in rates])


# ------------------------------------------------------------- the table
@dataclass(frozen=True)
class UpdateRule:
    """One solver type: its update function and what it needs.

    Attributes:
        type: Caffe's ``type`` string (the SOLVERS key).
        update: ``f(grads, history, rates, **hyper)``, in place.
        hyper: the SolverParameter fields (and ``t``) the function takes.
        history_per_param: 1, or 2 for AdaDelta and Adam.
    """

    type: str
    update: Callable
    hyper: tuple
    history_per_param: int = 1

    def check(self, p, where: str = "<solver>") -> None:
        """Caffe's constructor CHECKs for this rule, as ConfigError."""
        if self.type in ("AdaGrad", "RMSProp") and p.momentum != 0:
            raise ConfigError(f"{where}: Momentum cannot be used with {self.type} (momentum: {p.momentum})")
        if self.type == "RMSProp" and not 0 <= p.rms_decay < 1:
            raise ConfigError(f"{where}: rms_decay should lie in [0, 1) (got {p.rms_decay})")

    def hyperparameters(self, p, it: int) -> dict:
        values = {"momentum": p.momentum, "momentum2": p.momentum2, "delta": p.delta,
                  "rms_decay": p.rms_decay, "t": it + 1}
        return {k: values[k] for k in self.hyper}


for _rule in (
    UpdateRule("SGD", sgd, ("momentum",)),
    UpdateRule("Nesterov", nesterov, ("momentum",)),
    UpdateRule("AdaGrad", adagrad, ("delta",)),
    UpdateRule("RMSProp", rmsprop, ("rms_decay", "delta")),
    UpdateRule("AdaDelta", adadelta, ("momentum", "delta"), 2),
    UpdateRule("Adam", adam, ("momentum", "momentum2", "delta", "t"), 2),
):
    SOLVERS.register(_rule.type)(_rule)


# ------------------------------------------- the steps around the rule
def clip_gradients(grads, clip: float):
    """Scale every gradient by clip / ||g|| when the global L2 norm exceeds ``clip``.

    ``clip < 0`` disables clipping (Caffe's default -1). Returns the norm when it
    scaled (for Caffe's log line), else None.
    """
    if clip < 0 or not grads:
        return None
    norms = torch._foreach_norm(grads)
    total = float(torch.stack(norms).double().pow(2).sum().sqrt())
    if total > clip:
        torch._foreach_mul_(grads, _f(f32(clip) / f32(total)))
        return total
    return None


def normalize(grads, iter_size: int) -> None:
    """g *= 1 / iter_size (Caffe multiplies by the float reciprocal)."""
    if iter_size != 1:
        torch._foreach_mul_(grads, _f(f32(1) / f32(iter_size)))


def regularize(params, grads, decays, kind: str = "L2") -> None:
    """L2: g += decay*w ; L1: g += decay*sign(w); ``decays`` = weight_decay * decay_mult per param.

    Parameters whose decay is 0 are left alone (Caffe skips them).
    """
    idx = [i for i, d in enumerate(decays) if d]
    if not idx:
        return
    if kind not in ("L2", "L1"):
        raise ConfigError(f"Unknown regularization type: {kind!r} (known: L2, L1)")
    ws = [params[i].detach() for i in idx]
    if kind == "L1":
        ws = torch._foreach_sign(ws)
    _add_scaled_([grads[i] for i in idx], ws, [_f(decays[i]) for i in idx])


def local_values(base: float, mults) -> list[float]:
    """float32(base * mult) per parameter, as Caffe's ``rate * params_lr[i]``."""
    b = f32(base)
    return [_f(b * f32(m)) for m in mults]


def apply_update(rule: UpdateRule, params, grads, history, *, rate: float, lr_mults, decay_mults,
                 weight_decay: float, regularization_type: str, clip: float, iter_size: int, hyper: dict):
    """Caffe's ApplyUpdate after the rate is known: clip, normalize, regularize, rule, w -= g.

    Returns the gradient norm when clipping scaled the gradients (else None).
    """
    with torch.no_grad():
        norm = clip_gradients(grads, clip)
        normalize(grads, iter_size)
        regularize(params, grads, local_values(weight_decay, decay_mults), regularization_type)
        rule.update(grads, history, local_values(rate, lr_mults), **hyper)
        torch._foreach_sub_([p.detach() for p in params], grads)
    return norm
