"""From a NetParameter to a wiring plan, in Caffe's named steps (``Net::Init``).

1. ``filter_net(param, state)``: keep the layers whose include/exclude rules the
   state meets (``FilterNet`` / ``StateMeetsRule``).
2. ``plan_layers(param, source)``: check the wiring (every bottom produced earlier,
   no top produced twice unless in place) and collect per-layer bottoms, tops,
   loss weights and propagate_down flags.
3. ``output_blobs(plans)``: blobs produced and never consumed afterwards.

Splitting a blob consumed by several layers (Caffe's ``InsertSplits``) is not
needed: autograd adds the gradients of every consumer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import ConfigError, GraphError
from .proto import caffe_pb2


def state_meets_rule(state: caffe_pb2.NetState, rule: caffe_pb2.NetStateRule) -> bool:
    """Caffe's StateMeetsRule: every condition the rule sets must hold."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    if any(s not in stages for s in rule.stage):
        return False
    if any(s in stages for s in rule.not_stage):
        return False
    return True


def layer_included(layer: caffe_pb2.LayerParameter, state: caffe_pb2.NetState, source: str = "<net>") -> bool:
    """Included iff some include rule is met (when there are include rules), else
    unless some exclude rule is met. Both kinds at once is an error, as in Caffe."""
    if layer.include and layer.exclude:
        raise ConfigError(
            f"{source}: layer '{layer.name}' specifies both include and exclude rules; use one kind"
        )
    if layer.include:
        return any(state_meets_rule(state, r) for r in layer.include)
    return not any(state_meets_rule(state, r) for r in layer.exclude)


def filter_net(param: caffe_pb2.NetParameter, state: caffe_pb2.NetState, source: str = "<net>"):
    """A copy of ``param`` with only the layers ``state`` includes."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    for lp in param.layer:
        if layer_included(lp, state, source):
            out.layer.add().CopyFrom(lp)
    return out


@dataclass
class LayerPlan:
    """How one layer is wired into the net."""

    index: int
    name: str
    type: str
    param: caffe_pb2.LayerParameter
    bottoms: list[str]
    tops: list[str]
    loss_weights: list[float] = field(default_factory=list)  # one per top, explicit only
    propagate_down: list[bool] = field(default_factory=list)  # one per bottom


def plan_layers(param: caffe_pb2.NetParameter, source: str = "<net>") -> list[LayerPlan]:
    """Check the wiring of an already-filtered net and return one plan per layer."""
    available: set[str] = set()
    produced_by: dict[str, str] = {}
    plans = []
    for i, lp in enumerate(param.layer):
        name = lp.name or f"#{i}"
        for j, b in enumerate(lp.bottom):
            if b not in available:
                raise GraphError(
                    f"{source}: Unknown bottom blob '{b}' (layer '{name}', bottom index {j})"
                )
        bottoms = list(lp.bottom)
        for j, t in enumerate(lp.top):
            in_place = t in bottoms
            if t in produced_by and not in_place:
                raise GraphError(
                    f"{source}: Top blob '{t}' produced by multiple sources "
                    f"(layer '{produced_by[t]}' and layer '{name}', top index {j})"
                )
            if lp.top[:j].count(t):
                raise GraphError(f"{source}: layer '{name}' lists top '{t}' twice")
        if lp.loss_weight and len(lp.loss_weight) != len(lp.top):
            raise ConfigError(
                f"{source}: layer '{name}': loss_weight must be given once per top "
                f"({len(lp.top)}), got {len(lp.loss_weight)}"
            )
        if lp.propagate_down and len(lp.propagate_down) != len(lp.bottom):
            raise ConfigError(
                f"{source}: layer '{name}': propagate_down must be given once per bottom "
                f"({len(lp.bottom)}), got {len(lp.propagate_down)}"
            )
        for t in lp.top:
            available.add(t)
            produced_by.setdefault(t, name)
        plans.append(
            LayerPlan(
                index=i,
                name=name,
                type=lp.type,
                param=lp,
                bottoms=bottoms,
                tops=list(lp.top),
                loss_weights=list(lp.loss_weight),
                propagate_down=list(lp.propagate_down) or [True] * len(bottoms),
            )
        )
    return plans


def output_blobs(plans: list[LayerPlan]) -> list[str]:
    """Blobs that no later layer consumes (Caffe's net outputs), in production order."""
    outputs: list[str] = []
    for p in plans:
        for b in p.bottoms:
            if b in outputs:
                outputs.remove(b)
        for t in p.tops:
            if t not in outputs:
                outputs.append(t)
    return outputs


# Layers whose top is a new tensor that their own backward does not keep (it keeps the
# bottoms and parameters): an activation right after them may overwrite that top.
_FRESH_TOP = {"Convolution", "Deconvolution", "InnerProduct", "BatchNorm", "Scale", "Eltwise"}


def in_place_activations(plans: list[LayerPlan]) -> list[int]:
    """Indices of ReLU layers (negative_slope 0) that may run in place on their blob.

    Such a ReLU is in place in the prototxt (bottom == top, as Caffe runs it), follows
    directly the layer that wrote that blob -- one of ``_FRESH_TOP`` with a single top
    (and, for Eltwise, several bottoms, so the top is never a bottom passed through) --
    and propagates down. Nothing can read the overwritten pre-ReLU values: Caffe's blob
    holds the ReLU's output from then on too, and the producer's backward does not need
    them. Saves one activation-sized tensor and a pass over it per ReLU, as
    ``nn.ReLU(inplace=True)`` does.
    """
    found = []
    for i in range(1, len(plans)):
        p, prev = plans[i], plans[i - 1]
        if (p.type == "ReLU" and p.param.relu_param.negative_slope == 0
                and len(p.bottoms) == 1 and p.bottoms == p.tops and all(p.propagate_down)
                and prev.type in _FRESH_TOP and prev.tops == p.bottoms
                and (prev.type != "Eltwise" or len(prev.bottoms) > 1)):
            found.append(i)
    return found

