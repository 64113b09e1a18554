"""Affine layers: InnerProduct, Scale, Bias, Embed, Parameter.

Each holds learnable blobs in Caffe's order (weight, then bias) so that
``.caffemodel`` blobs load by position. Unspecified fillers follow Caffe:
constant 0, except Scale's multiplier, which defaults to constant 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError
from ..fillers import Filler, fill, filler_or_default
from ..registry import LAYERS
from .base import TRAIN, Layer, canonical_axis, count

_ONE = Filler(type="constant", value=1.0)


# -- shared broadcast rules of Scale and Bias (scale_layer.cpp, bias_layer.cpp) ----
def _blob_shape(layer: Layer, shape, axis: int, num_axes: int, what: str) -> tuple:
    """Shape of a learnable multiplier/bias: ``shape[axis:axis + num_axes]`` (-1: to the end)."""
    if num_axes < -1:
        layer.fail(
            f"num_axes={num_axes}: must be non-negative, or -1 to extend to the end of bottom[0]",
            ConfigError,
        )
    a = canonical_axis(axis, len(shape), layer)
    if num_axes >= 0 and len(shape) < a + num_axes:
        layer.fail(
            f"the {what} blob's shape extends past bottom[0]'s shape {tuple(shape)} "
            f"(axis={a}, num_axes={num_axes})"
        )
    return tuple(shape[a:]) if num_axes == -1 else tuple(shape[a : a + num_axes])


def _broadcast_axis(layer: Layer, shape, pshape, axis: int, what: str) -> int:
    """Check that ``pshape`` equals ``shape[a:a + len(pshape)]``; return ``a``.

    A 0-axis (scalar) ``pshape`` always applies at axis 0, as Caffe does.
    """
    a = 0 if len(pshape) == 0 else canonical_axis(axis, len(shape), layer)
    if len(shape) < a + len(pshape):
        layer.fail(
            f"the {what} blob's shape {tuple(pshape)} extends past bottom[0]'s shape "
            f"{tuple(shape)} when applied starting at axis {a}"
        )
    for i, d in enumerate(pshape):
        if shape[a + i] != d:
            layer.fail(
                f"dimension mismatch between bottom[0] shape {tuple(shape)} (axis {a + i}: "
                f"{shape[a + i]}) and the {what} blob shape {tuple(pshape)} (axis {i}: {d})"
            )
    return a


def _expand(p: torch.Tensor, ndim: int, axis: int) -> torch.Tensor:
    """View ``p`` as (1,)*axis + p.shape + (1,)* rest, ready to broadcast over an ndim tensor."""
    return p.reshape((1,) * axis + tuple(p.shape) + (1,) * (ndim - axis - p.dim()))


@LAYERS.register()
class InnerProduct(Layer):
    """Fully connected layer (``inner_product_layer.cpp``).

    The axes from ``axis`` on are flattened into one vector of length K; the axes
    before it (M items in all) are independent:  y = x · Wᵀ + b  (x: M×K, W: N×K).

    Args:
        num_output: N, the output size (required, > 0).
        bias_term: add a learnable bias b (default True).
        weight_filler: filler of W (default constant 0).
        bias_filler: filler of b (default constant 0).
        axis: first axis to flatten (default 1; negative counts from the end).
        transpose: W is stored K×N instead of N×K (default False).

    Shape:
        bottom: (d0, ..., d_{axis-1}, d_axis, ..., d_end);  K = d_axis·...·d_end
        top: (d0, ..., d_{axis-1}, N)
        blobs: weight (N, K) or (K, N) if transpose; bias (N,)
    """

    type = "InnerProduct"
    exact_bottoms = 1
    exact_tops = 1

    def __init__(self, num_output: int = 0, bias_term: bool = True, weight_filler=None,
                 bias_filler=None, axis: int = 1, transpose: bool = False,
                 name: str = "", phase: int = TRAIN):
        super().__init__(name, phase)
        self.num_output = int(num_output)
        self.bias_term = bool(bias_term)
        self.weight_filler = Filler.coerce(weight_filler)
        self.bias_filler = Filler.coerce(bias_filler)
        self.axis = int(axis)
        self.transpose = bool(transpose)
        if self.num_output <= 0:
            self.fail(f"num_output={self.num_output}: must be positive", ConfigError)

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        p = param.inner_product_param
        return cls(
            num_output=p.num_output, bias_term=p.bias_term,
            weight_filler=filler_or_default(p, "weight_filler"),
            bias_filler=filler_or_default(p, "bias_filler"),
            axis=p.axis, transpose=p.transpose, name=param.name, phase=phase,
        )

    def setup(self, bottom_shapes):
        shape = bottom_shapes[0]
        k = count(shape, canonical_axis(self.axis, len(shape), self))
        n = self.num_output
        self.add_blob(fill(self.weight_filler, (k, n) if self.transpose else (n, k)))
        if self.bias_term:
            self.add_blob(fill(self.bias_filler, (n,)))

    def _k(self) -> int:
        w = self.blobs[0]
        return w.shape[0] if self.transpose else w.shape[1]

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        a = canonical_axis(self.axis, len(shape), self)
        k = count(shape, a)
        if k != self._k():
            self.fail(
                f"input size incompatible with inner product parameters: bottom {shape} "
                f"flattened from axis {a} gives K={k}, the weight expects K={self._k()}"
            )
        return [shape[:a] + (self.num_output,)]

    def forward(self, x):
        a = canonical_axis(self.axis, x.dim(), self)
        lead = tuple(x.shape[:a])
        x2 = x.reshape(count(lead), self._k())  # (M, K)
        w = self.blobs[0]
        bias = self.blobs[1] if self.bias_term else None
        y = F.linear(x2, w.t() if self.transpose else w, bias)  # (M, N): one addmm with the bias
        return y.reshape(lead + (self.num_output,))


@LAYERS.register()
class Scale(Layer):
    """Broadcast multiplication (``scale_layer.cpp``):  y = x · γ  (+ β).

    γ covers bottom[0]'s axes ``axis .. axis + num_axes - 1`` and is broadcast over
    the others. With one bottom γ is a learnable blob of shape
    ``bottom[0].shape[axis : axis + num_axes]`` (num_axes -1: to the end); with two
    bottoms γ = bottom[1], whose own shape defines the span (``num_axes`` is
    ignored) and which receives a gradient. A 0-axis γ is a scalar. With
    ``bias_term`` a learnable β of the same span (axis, and num_axes or
    bottom[1]'s number of axes) is added after scaling.

    Args:
        axis: first axis of bottom[0] that γ covers (default 1).
        num_axes: number of axes γ covers in the one-bottom form (default 1; -1 = all
            remaining; 0 = a scalar).
        filler: filler of the learnable γ (default constant 1).
        bias_term: also add a learnable β (default False).
        bias_filler: filler of β (default constant 0).

    Shape:
        bottom[0]: any; bottom[1] (optional): bottom[0].shape[axis : axis + k]
        top: bottom[0].shape
        blobs: one bottom: γ, then β if bias_term; two bottoms: β if bias_term.
    """

    type = "Scale"
    min_bottoms = 1
    max_bottoms = 2
    exact_tops = 1

    def __init__(self, axis: int = 1, num_axes: int = 1, filler=None, bias_term: bool = False,
                 bias_filler=None, name: str = "", phase: int = TRAIN):
        super().__init__(name, phase)
        self.axis = int(axis)
        self.num_axes = int(num_axes)
        self.filler = Filler.coerce(filler, _ONE)
        self.bias_term = bool(bias_term)
        self.bias_filler = Filler.coerce(bias_filler)
        if self.num_axes < -1:
            self.fail(
                f"num_axes={self.num_axes}: must be non-negative, or -1 to extend to the end "
                "of bottom[0]",
                ConfigError,
            )

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        p = param.scale_param
        return cls(
            axis=p.axis, num_axes=p.num_axes, filler=filler_or_default(p, "filler", _ONE),
            bias_term=p.bias_term, bias_filler=filler_or_default(p, "bias_filler"),
            name=param.name, phase=phase,
        )

    def setup(self, bottom_shapes):
        shape = bottom_shapes[0]
        if len(bottom_shapes) == 1:
            self.add_blob(fill(self.filler, _blob_shape(self, shape, self.axis, self.num_axes,
                                                        "scale")))
        if self.bias_term:
            # Caffe's inner Bias layer: same axis; num_axes from bottom[1] when given.
            nb = len(bottom_shapes[1]) if len(bottom_shapes) > 1 else self.num_axes
            self.add_blob(fill(self.bias_filler, _blob_shape(self, shape, self.axis, nb, "bias")))

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        two = len(bottom_shapes) > 1
        gamma = tuple(bottom_shapes[1]) if two else tuple(self.blobs[0].shape)
        _broadcast_axis(self, shape, gamma, self.axis, "scale")
        if self.bias_term:
            _broadcast_axis(self, shape, tuple(self.blobs[-1].shape), self.axis, "bias")
        return [shape]

    def forward(self, x, gamma=None):
        g = self.blobs[0] if gamma is None else gamma
        a = 0 if g.dim() == 0 else canonical_axis(self.axis, x.dim(), self)
        g = _expand(g, x.dim(), a)
        if not self.bias_term:
            return x * g
        b = self.blobs[-1]
        a = 0 if b.dim() == 0 else canonical_axis(self.axis, x.dim(), self)
        return torch.addcmul(_expand(b, x.dim(), a), x, g)  # b + x * g in one pass


@LAYERS.register()
class Bias(Layer):
    """Broadcast addition (``bias_layer.cpp``):  y = x + β.

    β covers bottom[0]'s axes ``axis .. axis + num_axes - 1`` with the same rules as
    Scale: with one bottom β is a learnable blob of shape
    ``bottom[0].shape[axis : axis + num_axes]``; with two bottoms β = bottom[1]
    (its shape defines the span, ``num_axes`` is ignored) and receives a gradient.

    Args:
        axis: first axis of bottom[0] that β covers (default 1).
        num_axes: number of axes β covers in the one-bottom form (default 1; -1 = all
            remaining; 0 = a scalar).
        filler: filler of the learnable β (default constant 0).

    Shape:
        bottom[0]: any; bottom[1] (optional): bottom[0].shape[axis : axis + k]
        top: bottom[0].shape
        blobs: β in the one-bottom form, none otherwise.
    """

    type = "Bias"
    min_bottoms = 1
    max_bottoms = 2
    exact_tops = 1

    def __init__(self, axis: int = 1, num_axes: int = 1, filler=None, name: str = "",
                 phase: int = TRAIN):
        super().__init__(name, phase)
        self.axis = int(axis)
        self.num_axes = int(num_axes)
        self.filler = Filler.coerce(filler)
        if self.num_axes < -1:
            self.fail(
                f"num_axes={self.num_axes}: must be non-negative, or -1 to extend to the end "
                "of bottom[0]",
                ConfigError,
            )

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        p = param.bias_param
        return cls(axis=p.axis, num_axes=p.num_axes, filler=filler_or_default(p, "filler"),
                   name=param.name, phase=phase)

    def setup(self, bottom_shapes):
        if len(bottom_shapes) == 1:
            shape = _blob_shape(self, bottom_shapes[0], self.axis, self.num_axes, "bias")
            self.add_blob(fill(self.filler, shape))

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        beta = tuple(bottom_shapes[1]) if len(bottom_shapes) > 1 else tuple(self.blobs[0].shape)
        _broadcast_axis(self, shape, beta, self.axis, "bias")
        return [shape]

    def forward(self, x, beta=None):
        b = self.blobs[0] if beta is None else beta
        a = 0 if b.dim() == 0 else canonical_axis(self.axis, x.dim(), self)
        return x + _expand(b, x.dim(), a)


@LAYERS.register()
class Embed(Layer):
    """Table lookup (``embed_layer.cpp``):  y[..., :] = W[int(x[...]), :] (+ b).

    bottom holds integer indices stored as floats (any shape). Caffe cannot
    back-propagate to the indices, so bottom gets no gradient; W and b do. An index
    outside [0, input_dim), or one that is not a whole number, is an error.

    Args:
        num_output: N, the embedding size (required, > 0).
        input_dim: K, the number of table rows (required, > 0).
        bias_term: add a learnable bias b (default True).
        weight_filler: filler of W (default constant 0).
        bias_filler: filler of b (default constant 0).

    Shape:
        bottom: any shape S;  top: S + (N,)
        blobs: weight (K, N) (transposed from InnerProduct); bias (N,)
    """

    type = "Embed"
    exact_bottoms = 1
    exact_tops = 1

    def __init__(self, num_output: int = 0, input_dim: int = 0, bias_term: bool = True,
                 weight_filler=None, bias_filler=None, name: str = "", phase: int = TRAIN):
        super().__init__(name, phase)
        self.num_output = int(num_output)
        self.input_dim = int(input_dim)
        self.bias_term = bool(bias_term)
        self.weight_filler = Filler.coerce(weight_filler)
        self.bias_filler = Filler.coerce(bias_filler)
        if self.num_output <= 0:
            self.fail(f"num_output={self.num_output}: must be positive", ConfigError)
        if self.input_dim <= 0:
            self.fail(f"input_dim={self.input_dim}: must be positive", ConfigError)

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        p = param.embed_param
        return cls(
            num_output=p.num_output, input_dim=p.input_dim, bias_term=p.bias_term,
            weight_filler=filler_or_default(p, "weight_filler"),
            bias_filler=filler_or_default(p, "bias_filler"), name=param.name, phase=phase,
        )

    def setup(self, bottom_shapes):
        self.add_blob(fill(self.weight_filler, (self.input_dim, self.num_output)))
        if self.bias_term:
            self.add_blob(fill(self.bias_filler, (self.num_output,)))

    def reshape(self, bottom_shapes):
        return [tuple(bottom_shapes[0]) + (self.num_output,)]

    def forward(self, x):
        idx = x.detach().long()  # truncates toward zero, like Caffe's static_cast<int>
        if idx.numel():
            if not torch.equal(idx.to(x.dtype), x.detach()):
                bad = x.detach()[idx.to(x.dtype) != x.detach()].reshape(-1)[0].item()
                self.fail(f"index {bad} is not a whole number", DataError)
            lo, hi = int(idx.min()), int(idx.max())
            if lo < 0 or hi >= self.input_dim:
                bad = lo if lo < 0 else hi
                self.fail(f"index {bad} is outside [0, input_dim={self.input_dim})", DataError)
        y = F.embedding(idx, self.blobs[0])
        if self.bias_term:
            y = y + self.blobs[1]
        return y


@LAYERS.register()
class Parameter(Layer):
    """A learnable blob exposed as a top (``parameter_layer.hpp``):  y = P.

    Caffe does not fill P: it starts at zero (load it from a ``.caffemodel`` or
    let the solver learn it).

    Args:
        shape: the blob's shape (``parameter_param.shape.dim``; default ()).

    Shape:
        no bottom;  top: shape;  blobs: P (shape)
    """

    type = "Parameter"
    exact_bottoms = 0
    exact_tops = 1

    def __init__(self, shape=(), name: str = "", phase: int = TRAIN):
        super().__init__(name, phase)
        self.shape = tuple(int(d) for d in shape)
        if any(d < 0 for d in self.shape):
            self.fail(f"shape {self.shape}: dimensions must be non-negative", ConfigError)

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        return cls(shape=tuple(param.parameter_param.shape.dim), name=param.name, phase=phase)

    def setup(self, bottom_shapes):
        self.add_blob(torch.zeros(self.shape))

    def reshape(self, bottom_shapes):
        return [tuple(self.blobs[0].shape)]

    def forward(self):
        # A copy, so that in-place ops on the top never touch the leaf parameter.
        return self.blobs[0].clone()
