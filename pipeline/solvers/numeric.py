"""Stopping on a NaN or infinite loss, and saying where it came from.

Caffe keeps training when the loss becomes NaN or infinite (every later update is
NaN too, and every later snapshot is worthless). The solver here stops instead,
unless ``allow_nonfinite`` is set (``pipeline train --allow_nonfinite``):

- the hot path costs one ``isfinite`` on the loss, a host float the solver already has;
- only when it fails are the layers walked, in net order, for the first top blob
  holding a non-finite value (``first_nonfinite_top``), and the learnable parameters
  for the first non-finite one (a bad update shows up there);
- a snapshot is never written from non-finite parameters (``check_params``), so the
  newest snapshot on disk is always a good one to resume from.

A top blob overwritten in place (``ReLU`` with ``top == bottom``) is reported under
the first layer that produced it, since only the final value is kept.
"""

from __future__ import annotations

import math

import torch

from ..errors import NumericError


def first_nonfinite_top(net) -> tuple[str, str, str] | None:
    """``(layer name, layer type, top name)`` of the first layer whose top holds a NaN or
    inf after the last forward, or None."""
    values = net._values
    for plan in net._plans:
        for top in plan.tops:
            v = values.get(top)
            if v is not None and v.is_floating_point() and not bool(torch.isfinite(v).all()):
                return plan.name, plan.type, top
    return None


def first_nonfinite_param(net) -> str | None:
    """``"layer[i]"`` of the first learnable parameter holding a NaN or inf, or None."""
    for name, q in zip(net.learnable_names, net.learnable_params):
        if not bool(torch.isfinite(q.detach()).all()):
            return name
    return None


def loss_error(net, iteration: int, loss: float, snapshot: str | None) -> NumericError:
    """The error for a non-finite ``loss`` at ``iteration``: which layer went first, which
    parameter is bad, what snapshot is left and how to carry on."""
    first = first_nonfinite_top(net)
    where = (f"the first layer whose output is non-finite is '{first[0]}' (type {first[1]}, top '{first[2]}')"
             if first else "every layer output is finite (the loss overflowed when summed)")
    bad = first_nonfinite_param(net)
    params = f"; parameter {bad} is already non-finite" if bad else ""
    kept = (f"the last good snapshot is {snapshot} (resume with --snapshot {snapshot})" if snapshot
            else "no snapshot was written before it")
    msg = (f"{net.name}: iteration {iteration}: the loss is {loss} ({_kind(loss)}); {where}{params}. "
           f"Training stopped; {kept}. Lower base_lr or clip_gradients, or pass --allow_nonfinite to carry "
           "on as Caffe does")
    return NumericError(msg, iteration=iteration, layer=first[0] if first else None,
                        top=first[2] if first else None, snapshot=snapshot)


def check_params(net, iteration: int, snapshot: str | None) -> None:
    """Raise NumericError if a learnable parameter is non-finite (checked before a snapshot)."""
    bad = first_nonfinite_param(net)
    if bad is None:
        return
    kept = (f"the last good snapshot is {snapshot} (resume with --snapshot {snapshot})" if snapshot
            else "no snapshot was written before it")
    raise NumericError(
        f"{net.name}: iteration {iteration}: parameter {bad} is non-finite after the update, so no snapshot was "
        f"written; {kept}. Lower base_lr or clip_gradients, or pass --allow_nonfinite to carry on as Caffe does",
        iteration=iteration, snapshot=snapshot,
    )


def _kind(x: float) -> str:
    return "NaN" if math.isnan(x) else "infinite"
