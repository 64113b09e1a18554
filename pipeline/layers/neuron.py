"""Neuron layers: one bottom, one top of the same shape, applied element by element.

Caffe's ``NeuronLayer`` family (``src/caffe/layers/<name>_layer.cpp``). Each layer
here is a few torch ops; autograd gives Caffe's Backward. Where Caffe's gradient
has a kink (ReLU, PReLU and AbsVal at 0, Clip at min and max) the one-sided value
autograd picks is the one Caffe's Backward uses.

Formulas (x = bottom, y = top):

- ReLU:      y = max(x, 0) + negative_slope * min(x, 0)
- PReLU:     y = max(x, 0) + a_c * min(x, 0), a learnable per channel (axis 1)
- ELU:       y = x if x > 0 else alpha * (exp(x) - 1)
- Sigmoid:   y = 1 / (1 + exp(-x))
- TanH:      y = tanh(x)
- AbsVal:    y = |x|
- BNLL:      y = x + log(1 + exp(-x)) if x > 0 else log(1 + exp(x))
- Power:     y = (shift + scale * x) ^ power
- Exp:       y = base ^ (shift + scale * x)             (base -1 means e)
- Log:       y = log_base(shift + scale * x)             (base -1 means e)
- Threshold: y = 1 if x > threshold else 0               (no gradient)
- Clip:      y = max(min, min(x, max))
- Swish:     y = x * sigmoid(beta * x)
- Dropout:   TRAIN: y = x * mask / (1 - p), mask ~ Bernoulli(1 - p); TEST: y = x
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..fillers import Filler, fill, filler_or_default
from ..registry import LAYERS
from .base import TRAIN, Layer


class NeuronLayer(Layer):
    """Base of the element-wise layers: exactly one bottom and one top, same shape."""

    exact_bottoms = 1
    exact_tops = 1

    def reshape(self, bottom_shapes):
        return [tuple(bottom_shapes[0])]


def _constant_like(x: torch.Tensor, value: float) -> torch.Tensor:
    """A tensor of ``value`` shaped like ``x``, still wired to ``x`` with zero gradient."""
    always = torch.ones_like(x, dtype=torch.bool)
    return torch.where(always, x.new_full((), value), x)


@LAYERS.register()
class ReLU(NeuronLayer):
    """Rectified linear unit, leaky when ``negative_slope`` is non-zero.

    Caffe: ``y = max(x, 0) + negative_slope * min(x, 0)``; the gradient at x = 0 is
    ``negative_slope`` (Caffe tests ``x > 0``).

    Args:
        negative_slope: slope for x <= 0 (default 0).

    Shape: any; top = bottom.
    """

    type = "ReLU"

    def __init__(self, negative_slope: float = 0.0, name: str = "", phase: int = TRAIN):
        super().__init__(name, phase)
        self.negative_slope = float(negative_slope)
        # set by Net where overwriting the bottom is safe (netgraph.in_place_activations)
        self.in_place = False

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        return cls(param.relu_param.negative_slope, name=param.name, phase=phase)

    def forward(self, x):
        if self.negative_slope == 0.0:
            if self.in_place and not (x.is_leaf and x.requires_grad):  # autograd cannot overwrite a leaf
                return F.relu_(x)
            return F.relu(x)
        return F.leaky_relu(x, self.negative_slope)


@LAYERS.register()
class PReLU(NeuronLayer):
    """Parametric ReLU with a learnable slope per channel (or one shared slope).

    Caffe: ``y = max(x, 0) + a_c * min(x, 0)`` with c the index on axis 1;
    ``da_c = sum over everything but axis 1 of dy * x * (x <= 0)``.

    Args:
        channel_shared: one slope for all channels (default False).
        filler: the slope filler (default constant 0.25).

    Attributes:
        blobs[0]: the slopes, shape ``(C,)``; shape ``()`` (a 0-axis blob holding one
            value, as Caffe creates it) when ``channel_shared``.

    Shape: ``(N, C, ...)`` with at least 2 axes; top = bottom.
    """

    type = "PReLU"

    def __init__(self, channel_shared: bool = False, filler=None, name: str = "",
                 phase: int = TRAIN):
        super().__init__(name, phase)
        self.channel_shared = bool(channel_shared)
        self.filler = Filler.coerce(filler, default=Filler(type="constant", value=0.25))

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        p = param.prelu_param
        filler = filler_or_default(p, "filler", Filler(type="constant", value=0.25))
        return cls(p.channel_shared, filler, name=param.name, phase=phase)

    def _check_axes(self, shape):
        if len(shape) < 2:
            self.fail(f"bottom must have at least 2 axes (N, C, ...), got shape {tuple(shape)}")

    def setup(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        self._check_axes(shape)
        blob_shape = () if self.channel_shared else (int(shape[1]),)
        self.add_blob(fill(self.filler, blob_shape))

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        self._check_axes(shape)
        n = self.blobs[0].numel()
        want = 1 if self.channel_shared else int(shape[1])
        if n != want:
            self.fail(
                f"slope blob has {n} value(s) but the bottom has {shape[1]} channels "
                f"(channel_shared={self.channel_shared}); the slope size is inconsistent "
                "with the prototxt"
            )
        return [shape]

    def forward(self, x):
        a = self.blobs[0].to(x.dtype)
        if not self.channel_shared:
            a = a.view((1, -1) + (1,) * (x.dim() - 2))  # (1, C, 1, ...)
        return torch.where(x > 0, x, a * x)


@LAYERS.register()
class ELU(NeuronLayer):
    """Exponential linear unit.

    Caffe: ``y = x if x > 0 else alpha * (exp(x) - 1)``; gradient 1 for x > 0 and
    ``alpha * exp(x)`` for x <= 0.

    Args:
        alpha: scale of the negative part (default 1).

    Shape: any; top = bottom.
    """

    type = "ELU"

    def __init__(self, alpha: float = 1.0, name: str = "", phase: int = TRAIN):
        super().__init__(name, phase)
        self.alpha = float(alpha)

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        return cls(param.elu_param.alpha, name=param.name, phase=phase)

    def forward(self, x):
        return F.elu(x, self.alpha)


@LAYERS.register()
class Sigmoid(NeuronLayer):
    """Logistic sigmoid ``y = 1 / (1 + exp(-x))``. Shape: any; top = bottom."""

    type = "Sigmoid"

    def forward(self, x):
        return torch.sigmoid(x)


@LAYERS.register()
class TanH(NeuronLayer):
    """Hyperbolic tangent ``y = tanh(x)``. Shape: any; top = bottom."""

    type = "TanH"

    def forward(self, x):
        return torch.tanh(x)


@LAYERS.register()
class AbsVal(NeuronLayer):
    """Absolute value ``y = |x|``; gradient sign(x) (0 at x = 0). Shape: any."""

    type = "AbsVal"

    def forward(self, x):
        return torch.abs(x)


@LAYERS.register()
class BNLL(NeuronLayer):
    """Binomial normal log likelihood (softplus) in Caffe's overflow-free form.

    Caffe: ``y = x + log(1 + exp(-x))`` for x > 0, else ``log(1 + exp(x))``;
    gradient ``sigmoid(x)``. Both branches only ever exponentiate a non-positive
    number, so neither overflows (nor does the branch ``where`` discards).

    Shape: any; top = bottom.
    """

    type = "BNLL"

    def forward(self, x):
        pos = x + torch.log1p(torch.exp(-x.clamp(min=0)))
        neg = torch.log1p(torch.exp(x.clamp(max=0)))
        return torch.where(x > 0, pos, neg)


@LAYERS.register()
class Power(NeuronLayer):
    """Power of an affine map: ``y = (shift + scale * x) ^ power``.

    Caffe's special cases: when ``power * scale == 0`` the output ignores the
    input (``y = 1`` if power is 0, else ``shift ^ power``) and the gradient is 0;
    power 1 is the plain affine map (gradient ``scale``). Otherwise the gradient is
    ``power * scale * (shift + scale * x) ^ (power - 1)``.

    Args:
        power: exponent (default 1).
        scale: multiplier of x (default 1).
        shift: offset (default 0).

    Shape: any; top = bottom.
    """

    type = "Power"

    def __init__(self, power: float = 1.0, scale: float = 1.0, shift: float = 0.0,
                 name: str = "", phase: int = TRAIN):
        super().__init__(name, phase)
        self.power = float(power)
        self.scale = float(scale)
        self.shift = float(shift)

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        p = param.power_param
        return cls(p.power, p.scale, p.shift, name=param.name, phase=phase)

    def forward(self, x):
        if self.power * self.scale == 0.0:
            if self.power == 0.0:
                value = 1.0
            else:  # torch.pow gives C's pow results (nan/inf), never a complex number
                value = torch.pow(torch.tensor(self.shift, dtype=torch.float64), self.power).item()
            return _constant_like(x, value)
        y = x if self.scale == 1.0 else x * self.scale
        if self.shift != 0.0:
            y = y + self.shift
        if self.power == 1.0:
            return y
        if self.power == 2.0:
            return y * y
        return torch.pow(y, self.power)


@LAYERS.register()
class Exp(NeuronLayer):
    """Exponential: ``y = base ^ (shift + scale * x)``.

    Caffe computes ``y = outer * exp(inner * x)`` with ``inner = ln(base) * scale``
    and ``outer = base ^ shift``; base -1 stands for e.

    Args:
        base: the base, -1 for e (default -1); otherwise must be > 0.
        scale: multiplier of x (default 1).
        shift: offset (default 0).

    Shape: any; top = bottom.
    """

    type = "Exp"

    def __init__(self, base: float = -1.0, scale: float = 1.0, shift: float = 0.0,
                 name: str = "", phase: int = TRAIN):
        super().__init__(name, phase)
        self.base, self.scale, self.shift = float(base), float(scale), float(shift)
        if self.base != -1.0 and not self.base > 0.0:
            self.fail(f"exp_param.base={self.base}: base must be strictly positive "
                      "(or -1 for e)", ConfigError)
        log_base = 1.0 if self.base == -1.0 else math.log(self.base)
        self.inner_scale = log_base * self.scale
        if self.shift == 0.0:
            self.outer_scale = 1.0
        elif self.base == -1.0:
            self.outer_scale = math.exp(self.shift)
        else:
            self.outer_scale = self.base ** self.shift

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        p = param.exp_param
        return cls(p.base, p.scale, p.shift, name=param.name, phase=phase)

    def forward(self, x):
        y = torch.exp(x if self.inner_scale == 1.0 else x * self.inner_scale)
        return y if self.outer_scale == 1.0 else y * self.outer_scale


@LAYERS.register()
class Log(NeuronLayer):
    """Logarithm: ``y = log_base(shift + scale * x) = ln(shift + scale * x) / ln(base)``.

    Args:
        base: the base, -1 for e (default -1); otherwise must be > 0 and not 1
            (Caffe rejects a base whose 1/ln(base) is infinite).
        scale: multiplier of x (default 1).
        shift: offset (default 0).

    Shape: any; top = bottom.
    """

    type = "Log"

    def __init__(self, base: float = -1.0, scale: float = 1.0, shift: float = 0.0,
                 name: str = "", phase: int = TRAIN):
        super().__init__(name, phase)
        self.base, self.scale, self.shift = float(base), float(scale), float(shift)
        if self.base != -1.0 and not self.base > 0.0:
            self.fail(f"log_param.base={self.base}: base must be strictly positive "
                      "(or -1 for e)", ConfigError)
        if self.base == 1.0:
            self.fail("log_param.base=1: 1 / ln(base) is infinite", ConfigError)
        self.base_scale = 1.0 if self.base == -1.0 else 1.0 / math.log(self.base)

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        p = param.log_param
        return cls(p.base, p.scale, p.shift, name=param.name, phase=phase)

    def forward(self, x):
        y = x if self.scale == 1.0 else x * self.scale
        if self.shift != 0.0:
            y = y + self.shift
        y = torch.log(y)
        return y if self.base_scale == 1.0 else y * self.base_scale


@LAYERS.register()
class Threshold(NeuronLayer):
    """Step function: ``y = 1 if x > threshold else 0``.

    Caffe has no Backward for this layer (NOT_IMPLEMENTED). Here the top is a
    non-differentiable output: it carries no autograd history, so nothing is ever
    back-propagated through it (the layers below get no gradient from this path).

    Args:
        threshold: the threshold (default 0).

    Shape: any; top = bottom.
    """

    type = "Threshold"

    def __init__(self, threshold: float = 0.0, name: str = "", phase: int = TRAIN):
        super().__init__(name, phase)
        self.threshold = float(threshold)

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        return cls(param.threshold_param.threshold, name=param.name, phase=phase)

    def forward(self, x):
        return (x.detach() > self.threshold).to(x.dtype)


@LAYERS.register()
class Clip(NeuronLayer):
    """Clip to an interval: ``y = max(min, min(x, max))``.

    The gradient passes where ``min <= x <= max`` (both ends included, as Caffe).

    Args:
        min: lower bound (required).
        max: upper bound (required, >= min).

    Shape: any; top = bottom.
    """

    type = "Clip"

    def __init__(self, min: float, max: float, name: str = "", phase: int = TRAIN):  # noqa: A002
        super().__init__(name, phase)
        self.min, self.max = float(min), float(max)
        if self.min > self.max:
            self.fail(f"clip_param.min={self.min} is greater than clip_param.max={self.max}",
                      ConfigError)

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        p = param.clip_param
        missing = [f for f in ("min", "max") if not p.HasField(f)]
        if missing:
            raise ConfigError(
                f"Clip layer '{param.name}': clip_param.{' and '.join(missing)} is required"
            )
        return cls(p.min, p.max, name=param.name, phase=phase)

    def forward(self, x):
        return torch.clamp(x, self.min, self.max)


@LAYERS.register()
class Swish(NeuronLayer):
    """Swish: ``y = x * sigmoid(beta * x)``.

    Args:
        beta: slope inside the sigmoid (default 1).

    Shape: any; top = bottom.
    """

    type = "Swish"

    def __init__(self, beta: float = 1.0, name: str = "", phase: int = TRAIN):
        super().__init__(name, phase)
        self.beta = float(beta)

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        return cls(param.swish_param.beta, name=param.name, phase=phase)

    def forward(self, x):
        return x * torch.sigmoid(x if self.beta == 1.0 else self.beta * x)


@LAYERS.register()
class Dropout(NeuronLayer):
    """Inverted dropout.

    Caffe: TRAIN: ``y = x * mask / (1 - p)`` with ``mask ~ Bernoulli(1 - p)`` drawn
    anew each forward (torch's global generator); TEST: ``y = x``.

    Args:
        dropout_ratio: p, the probability of dropping a unit, in [0, 1) (default 0.5).

    Shape: any; top = bottom.
    """

    type = "Dropout"

    def __init__(self, dropout_ratio: float = 0.5, name: str = "", phase: int = TRAIN):
        super().__init__(name, phase)
        self.dropout_ratio = float(dropout_ratio)
        if not 0.0 <= self.dropout_ratio < 1.0:
            self.fail(f"dropout_param.dropout_ratio={self.dropout_ratio} must be in [0, 1)",
                      ConfigError)

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        return cls(param.dropout_param.dropout_ratio, name=param.name, phase=phase)

    def forward(self, x):
        if self.phase != TRAIN:
            return x
        keep = 1.0 - self.dropout_ratio
        mask = torch.rand_like(x) < keep
        return x * mask.to(x.dtype) * (1.0 / keep)
