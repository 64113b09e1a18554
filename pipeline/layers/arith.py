"""Arithmetic layers: Eltwise, Reduction, ArgMax, Softmax.

None of them has learnable blobs. Importing this module registers them.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..proto import caffe_pb2
from ..registry import LAYERS
from .base import TRAIN, Layer, canonical_axis, count

_ELTWISE_OPS = ("PROD", "SUM", "MAX")
_REDUCTION_OPS = ("SUM", "ASUM", "SUMSQ", "MEAN")


@LAYERS.register()
class Eltwise(Layer):
    """Element-wise combination of equally shaped bottoms (``eltwise_layer.cpp``).

    - SUM:  y = Σ_i c_i · x_i  (c_i from ``coeff``, one per bottom, default all 1)
    - PROD: y = Π_i x_i;  ∂y/∂x_i = Π_{j≠i} x_j (the stable form, also zero-safe)
    - MAX:  y = max_i x_i;  the gradient goes to the chosen bottom only.
      Choice, as Caffe's CPU code makes it: between bottoms 0 and 1 bottom 0 wins
      only if strictly greater (a tie goes to bottom 1); each later bottom then wins
      only if strictly greater than the running max (a tie keeps the earlier one).

    Args:
        operation: "SUM" (default), "PROD" or "MAX".
        coeff: per-bottom coefficients, SUM only (Caffe rejects them for PROD and
            ignores them for MAX); empty (default) means all 1.
        stable_prod_grad: accepted for compatibility; the PROD gradient is always
            the product of the other bottoms (default True).

    Shape:
        bottoms (≥ 2): all the same shape S;  top: S
    """

    type = "Eltwise"
    min_bottoms = 2
    exact_tops = 1

    def __init__(self, operation: str = "SUM", coeff=(), stable_prod_grad: bool = True,
                 name: str = "", phase: int = TRAIN):
        super().__init__(name, phase)
        self.operation = str(operation).upper()
        self.coeff = tuple(float(c) for c in coeff)
        self.stable_prod_grad = bool(stable_prod_grad)
        if self.operation not in _ELTWISE_OPS:
            self.fail(f"operation={operation!r}: must be one of {', '.join(_ELTWISE_OPS)}",
                      ConfigError)
        if self.coeff and self.operation == "PROD":
            self.fail("coeff is only allowed for operation SUM (got PROD)", ConfigError)

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        p = param.eltwise_param
        return cls(
            operation=caffe_pb2.EltwiseParameter.EltwiseOp.Name(p.operation),
            coeff=tuple(p.coeff), stable_prod_grad=p.stable_prod_grad,
            name=param.name, phase=phase,
        )

    def reshape(self, bottom_shapes):
        if self.coeff and len(self.coeff) != len(bottom_shapes):
            self.fail(
                f"takes one coefficient per bottom blob: {len(self.coeff)} coeff for "
                f"{len(bottom_shapes)} bottoms",
                ConfigError,
            )
        first = tuple(bottom_shapes[0])
        for i, s in enumerate(bottom_shapes[1:], start=1):
            if tuple(s) != first:
                self.fail(f"bottom[{i}] shape {tuple(s)} differs from bottom[0] shape {first}")
        return [first]

    def forward(self, *xs):
        if self.operation == "SUM":
            c = self.coeff or (1.0,) * len(xs)
            y = xs[0] if c[0] == 1.0 else c[0] * xs[0]
            for ci, x in zip(c[1:], xs[1:]):
                y = y + (x if ci == 1.0 else ci * x)
            return y
        if self.operation == "PROD":
            y = xs[0] * xs[1]
            for x in xs[2:]:
                y = y * x
            return y
        # MAX: torch.where routes each element's gradient to the chosen branch only.
        y = torch.where(xs[0] > xs[1], xs[0], xs[1])
        for x in xs[2:]:
            y = torch.where(x > y, x, y)
        return y


@LAYERS.register()
class Reduction(Layer):
    """Reduce all axes from ``axis`` on to one number each (``reduction_layer.cpp``).

    For each of the count(0, axis) leading positions, over its D = count(axis, end)
    values:  SUM: Σx,  ASUM: Σ|x|,  SUMSQ: Σx²,  MEAN: Σx / D;  then × coeff.
    The ASUM gradient is coeff · sign(x), with sign(0) = 0.

    Args:
        operation: "SUM" (default), "ASUM", "SUMSQ" or "MEAN".
        axis: first reduced axis (default 0: reduce everything to a scalar).
        coeff: output scale (default 1.0).

    Shape:
        bottom: (d0, ..., d_end);  top: (d0, ..., d_{axis-1}) (``()`` for axis 0)
    """

    type = "Reduction"
    exact_bottoms = 1
    exact_tops = 1

    def __init__(self, operation: str = "SUM", axis: int = 0, coeff: float = 1.0,
                 name: str = "", phase: int = TRAIN):
        super().__init__(name, phase)
        self.operation = str(operation).upper()
        self.axis = int(axis)
        self.coeff = float(coeff)
        if self.operation not in _REDUCTION_OPS:
            self.fail(f"operation={operation!r}: must be one of {', '.join(_REDUCTION_OPS)}",
                      ConfigError)

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        p = param.reduction_param
        return cls(
            operation=caffe_pb2.ReductionParameter.ReductionOp.Name(p.operation),
            axis=p.axis, coeff=p.coeff, name=param.name, phase=phase,
        )

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        a = canonical_axis(self.axis, len(shape), self)
        if self.operation == "MEAN" and count(shape, a) == 0:
            self.fail(f"MEAN over an empty range: bottom {shape} has no values from axis {a} on")
        return [shape[:a]]

    def forward(self, x):
        a = canonical_axis(self.axis, x.dim(), self)
        lead = tuple(x.shape[:a])
        dim = count(x.shape, a)
        rows = x.reshape(count(lead), dim)  # (num, D)
        if self.operation == "ASUM":
            r = rows.abs().sum(dim=1)
        elif self.operation == "SUMSQ":
            r = (rows * rows).sum(dim=1)
        else:  # SUM, MEAN
            r = rows.sum(dim=1)
        coeff = self.coeff / dim if self.operation == "MEAN" else self.coeff
        if coeff != 1.0:
            r = r * coeff
        return r.reshape(lead)


def _caffe_topk(x: torch.Tensor, dim: int, k: int):
    """Top k along ``dim`` in the order of Caffe's partial_sort over (value, index)
    pairs with std::greater: larger value first, and on equal values the larger
    index first. Returns (values, indices-as-x.dtype)."""
    n = x.shape[dim]
    # A stable descending sort keeps equal values in input order; flipping first
    # makes that order "larger original index first".
    vals, order = torch.sort(x.flip(dim), dim=dim, descending=True, stable=True)
    vals, order = vals.narrow(dim, 0, k), order.narrow(dim, 0, k)
    return vals, (n - 1 - order).to(x.dtype)


@LAYERS.register()
class ArgMax(Layer):
    """Indices (and optionally values) of the top_k largest inputs (``argmax_layer.cpp``).

    Without ``axis``: per item (axis 0), over all its other values flattened; the top
    has shape (N, 1, top_k) holding indices, or (N, 2, top_k) holding indices in
    [:, 0] and values in [:, 1] when out_max_val; padded with trailing 1s to
    bottom's number of axes. With ``axis``: along that axis; the top is the bottom
    shape with that axis replaced by top_k, holding values when out_max_val, else
    indices. Order: larger value first; equal values, larger index first (Caffe's
    partial_sort with std::greater on (value, index) pairs). Indices are stored as
    floats. There is no backward (the tops carry no gradient).

    Args:
        out_max_val: output the values too (no axis) or instead (axis) (default False).
        top_k: how many (default 1; at most the searched size).
        axis: the axis to search (default None: per item, all values flattened).

    Shape:
        bottom: (N, ...);  top: see above
    """

    type = "ArgMax"
    exact_bottoms = 1
    exact_tops = 1

    def __init__(self, out_max_val: bool = False, top_k: int = 1, axis: int | None = None,
                 name: str = "", phase: int = TRAIN):
        super().__init__(name, phase)
        self.out_max_val = bool(out_max_val)
        self.top_k = int(top_k)
        self.axis = None if axis is None else int(axis)
        if self.top_k < 1:
            self.fail(f"top_k={self.top_k}: must not be less than 1", ConfigError)

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        p = param.argmax_param
        return cls(out_max_val=p.out_max_val, top_k=p.top_k,
                   axis=p.axis if p.HasField("axis") else None, name=param.name, phase=phase)

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        if self.axis is not None:
            a = canonical_axis(self.axis, len(shape), self)
            if self.top_k > shape[a]:
                self.fail(f"top_k={self.top_k} must be at most the size of axis {a} of bottom "
                          f"{shape} ({shape[a]})")
            return [shape[:a] + (self.top_k,) + shape[a + 1 :]]
        if len(shape) < 1:
            self.fail("bottom must have at least one axis when axis is not set")
        if self.top_k > count(shape, 1):
            self.fail(f"top_k={self.top_k} must be at most the flattened size per item of "
                      f"bottom {shape} ({count(shape, 1)})")
        top = [1] * max(len(shape), 3)
        top[0] = shape[0]
        top[1] = 2 if self.out_max_val else 1
        top[2] = self.top_k
        return [tuple(top)]

    def forward(self, x):
        x = x.detach()
        if self.axis is not None:
            vals, idx = _caffe_topk(x, canonical_axis(self.axis, x.dim(), self), self.top_k)
            return vals if self.out_max_val else idx
        top_shape = self.reshape([tuple(x.shape)])[0]
        vals, idx = _caffe_topk(x.reshape(x.shape[0], -1), 1, self.top_k)  # (N, k)
        out = torch.stack((idx, vals), dim=1) if self.out_max_val else idx.unsqueeze(1)
        return out.reshape(top_shape)


@LAYERS.register()
class Softmax(Layer):
    """Softmax along one axis (``softmax_layer.cpp``), numerically stable:

        y_i = exp(x_i − max_j x_j) / Σ_j exp(x_j − max_j x_j)

    Args:
        axis: the normalised axis (default 1; negative counts from the end).
        (``engine`` is accepted and ignored.)

    Shape:
        bottom: any;  top: bottom's shape
    """

    type = "Softmax"
    exact_bottoms = 1
    exact_tops = 1

    def __init__(self, axis: int = 1, name: str = "", phase: int = TRAIN):
        super().__init__(name, phase)
        self.axis = int(axis)

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        return cls(axis=param.softmax_param.axis, name=param.name, phase=phase)

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        canonical_axis(self.axis, len(shape), self)
        return [shape]

    def forward(self, x):
        return torch.softmax(x, dim=canonical_axis(self.axis, x.dim(), self))
