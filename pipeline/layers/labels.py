"""Label handling shared by the losses and Accuracy (Caffe's conventions).

Labels arrive as float tensors holding integers and are truncated toward zero, as
Caffe's ``static_cast<int>`` does; ``ignore_label`` positions are masked; a label
outside [0, classes) is an error naming the layer (Caffe only DCHECKs it).
"""

from __future__ import annotations

import torch

from ..errors import DataError
from .base import Layer, canonical_axis, count


# torch.compiler.is_compiling is torch >= 2.3; torch._dynamo's name serves the older releases we admit
_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None) or torch._dynamo.is_compiling


def fmt_shape(shape) -> str:
    """``(2, 3)``: a shape for messages."""
    return str(tuple(int(d) for d in shape))


def ignore_label_of(msg) -> int | None:
    """The message's ``ignore_label`` if set, else None."""
    return int(msg.ignore_label) if msg.HasField("ignore_label") else None


class Labels:
    """Integer labels of shape (outer, inner), their validity mask and range check."""

    def __init__(self, layer: Layer, label, outer: int, inner: int, classes: int, ignore):
        lab = label.detach().reshape(outer, inner).to(torch.long)  # truncates like static_cast<int>
        self.valid = None if ignore is None else lab != ignore
        if self.valid is not None:
            lab = torch.where(self.valid, lab, torch.zeros_like(lab))
        bad = (lab < 0) | (lab >= classes)
        if _compiling():  # inside torch.compile: an assert in the graph, no break
            torch._assert_async(~bad.any(), f"{layer.type} layer '{layer.name}': a label is outside [0, {classes - 1}] "
                                            "and not ignored")
        elif bool(bad.any()):  # Caffe only DCHECKs this; an index error here would be cryptic
            v = label.detach().reshape(-1)[bad.reshape(-1)][0].item()
            layer.fail(f"label {v:g} is outside [0, {classes - 1}] and not ignored", DataError)
        self.index = lab
        self.count = outer * inner if self.valid is None else self.valid.sum()

    def mask(self, values: torch.Tensor) -> torch.Tensor:
        """Zero ``values`` (outer, inner) where the label is ignored."""
        if self.valid is None:
            return values
        return torch.where(self.valid, values, torch.zeros_like(values))


def normalizer(mode: str, outer: int, inner: int, valid_count):
    """Caffe's ``get_normalizer``, floored at 1 (``valid_count``: an int or a 0-d tensor)."""
    n = {"FULL": outer * inner, "VALID": valid_count, "BATCH_SIZE": outer, "NONE": 1}[mode]
    return n.clamp_min(1) if isinstance(n, torch.Tensor) else max(n, 1)


def class_dims(layer: Layer, shape, axis: int, field: str):
    """``(axis, outer, classes, inner)`` around a class axis (``CanonicalAxisIndex``)."""
    axis = canonical_axis(axis, len(shape), layer, field)
    return axis, count(shape, 0, axis), int(shape[axis]), count(shape, axis + 1)


def check_label_count(layer: Layer, bottom_shapes, axis: int, field: str):
    """``outer * inner == label count``, with the hint Caffe gives."""
    shape, lab = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
    axis, outer, _, inner = class_dims(layer, shape, axis, field)
    if outer * inner != count(lab):
        layer.fail(
            f"label {fmt_shape(lab)} holds {count(lab)} values but prediction {fmt_shape(shape)} with "
            f"{field} {axis} needs {outer * inner} (outer {outer} x inner {inner}); e.g. for "
            "(N, C, H, W) and axis 1 the labels must be N*H*W integers in {0, ..., C-1}"
        )
    return shape[axis]
