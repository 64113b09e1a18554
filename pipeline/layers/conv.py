"""Convolution family: Convolution, Deconvolution, Im2col.

All three read ``convolution_param`` and share its geometry rules (Caffe's
``BaseConvolutionLayer::LayerSetUp``): the channel axis is ``axis`` (default 1), the
spatial axes are every axis after it, and ``kernel_size`` / ``pad`` / ``stride`` /
``dilation`` are given once for all spatial axes or once per axis. The 2-d-only
forms ``kernel_h/kernel_w``, ``pad_h/pad_w``, ``stride_h/stride_w`` cannot be mixed
with the repeated forms. With k the kernel, d the dilation, p the pad and s the
stride of one spatial axis, the kernel extent is ``e = d(k - 1) + 1`` and

    Convolution / Im2col:  out = floor((H + 2p - e) / s) + 1
    Deconvolution:         out = s(H - 1) + e - 2p
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..fillers import Filler, fill, filler_or_default
from ..registry import LAYERS
from .base import TRAIN, Layer, canonical_axis, count

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _ints(value) -> tuple:
    """An int, a sequence of ints or None -> a tuple of ints."""
    if value is None:
        return ()
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)


def _opt(msg, field: str):
    """``msg.field`` if set, else None (proto2 presence)."""
    return getattr(msg, field) if msg.HasField(field) else None


class _ConvGeometry(Layer):
    """Shared ``convolution_param`` geometry: reading, validation, output sizes."""

    def __init__(
        self,
        name: str = "",
        phase: int = TRAIN,
        *,
        kernel_size=(),
        pad=(),
        stride=(),
        dilation=(),
        kernel_h: int | None = None,
        kernel_w: int | None = None,
        pad_h: int | None = None,
        pad_w: int | None = None,
        stride_h: int | None = None,
        stride_w: int | None = None,
        axis: int = 1,
    ):
        super().__init__(name, phase)
        self.kernel_size, self.pad, self.stride = _ints(kernel_size), _ints(pad), _ints(stride)
        self.dilation = _ints(dilation)
        self.kernel_hw = (kernel_h, kernel_w)
        self.pad_hw = (pad_h, pad_w)
        self.stride_hw = (stride_h, stride_w)
        self.axis = int(axis)
        # Resolved per spatial axis by _resolve_geometry (at setup).
        self.kernel: tuple = ()
        self.pads: tuple = ()
        self.strides: tuple = ()
        self.dilations: tuple = ()
        self.channel_axis = 1
        self.num_spatial = 0

    @staticmethod
    def _geometry_kwargs(cp) -> dict:
        """The geometry fields of a ``ConvolutionParameter`` as constructor kwargs."""
        return dict(
            kernel_size=tuple(cp.kernel_size),
            pad=tuple(cp.pad),
            stride=tuple(cp.stride),
            dilation=tuple(cp.dilation),
            kernel_h=_opt(cp, "kernel_h"),
            kernel_w=_opt(cp, "kernel_w"),
            pad_h=_opt(cp, "pad_h"),
            pad_w=_opt(cp, "pad_w"),
            stride_h=_opt(cp, "stride_h"),
            stride_w=_opt(cp, "stride_w"),
            axis=cp.axis,
        )

    def _per_axis(self, field, prefix, values, hw, default, nsp):
        """One value per spatial axis from the repeated ``field`` or the ``prefix``_h/_w pair."""
        if hw[0] is not None or hw[1] is not None:
            if nsp != 2:
                self.fail(
                    f"convolution_param.{prefix}_h/{prefix}_w can only be used with 2 spatial "
                    f"axes; the input has {nsp}",
                    ConfigError,
                )
            if values:
                self.fail(
                    f"convolution_param: give either {field} or {prefix}_h/{prefix}_w, not both",
                    ConfigError,
                )
            # Caffe reads both halves; an unset one is 0 (rejected below for kernel/stride).
            return (hw[0] or 0, hw[1] or 0)
        if len(values) == 0 and default is not None:
            return (default,) * nsp
        if len(values) not in (1, nsp):
            self.fail(
                f"convolution_param.{field} must be given once, or once per spatial axis "
                f"(given {len(values)} times for {nsp} spatial axes)",
                ConfigError,
            )
        return tuple(values) * nsp if len(values) == 1 else tuple(values)

    def _resolve_geometry(self, shape, min_spatial=1, max_spatial=None) -> None:
        """Caffe's LayerSetUp geometry checks against the first bottom's shape."""
        self.channel_axis = canonical_axis(self.axis, len(shape), self, "convolution_param.axis")
        nsp = len(shape) - self.channel_axis - 1
        if nsp < min_spatial or (max_spatial is not None and nsp > max_spatial):
            hi = f" to {max_spatial}" if max_spatial is not None else " or more"
            self.fail(
                f"needs {min_spatial}{hi} spatial axes after channel axis "
                f"{self.channel_axis}; input shape {tuple(shape)} has {nsp}"
            )
        self.num_spatial = nsp
        self.kernel = self._per_axis("kernel_size", "kernel", self.kernel_size,
                                     self.kernel_hw, None, nsp)
        self.strides = self._per_axis("stride", "stride", self.stride, self.stride_hw, 1, nsp)
        self.pads = self._per_axis("pad", "pad", self.pad, self.pad_hw, 0, nsp)
        self.dilations = self._per_axis("dilation", "dilation", self.dilation, (None, None),
                                        1, nsp)
        for field, vals in (("kernel_size", self.kernel), ("stride", self.strides),
                            ("dilation", self.dilations)):
            if any(v <= 0 for v in vals):
                self.fail(f"convolution_param.{field}={list(vals)}: every value must be > 0",
                          ConfigError)

    def _check_bottoms(self, bottom_shapes) -> None:
        """Same number of axes as at setup, and all bottoms of one shape."""
        first = tuple(bottom_shapes[0])
        if len(first) != self.channel_axis + 1 + self.num_spatial:
            self.fail(f"input must keep {self.channel_axis + 1 + self.num_spatial} axes; "
                      f"got shape {first}")
        for i, s in enumerate(bottom_shapes[1:], start=1):
            if tuple(s) != first:
                self.fail(f"all bottoms must have the same shape; bottom 0 is {first}, "
                          f"bottom {i} is {tuple(s)}")

    def _conv_out(self, spatial) -> tuple:
        """floor((H + 2p - e) / s) + 1 per spatial axis; the kernel must fit."""
        out = []
        for h, k, s, p, d in zip(spatial, self.kernel, self.strides, self.pads, self.dilations):
            extent = d * (k - 1) + 1
            if h + 2 * p < extent:
                self.fail(f"kernel extent {extent} (kernel {k}, dilation {d}) is larger than "
                          f"the padded input {h} + 2*{p}")
            out.append((h + 2 * p - extent) // s + 1)
        return tuple(out)


class _BaseConv(_ConvGeometry):
    """Convolution and Deconvolution: learnable weight (+ bias), groups, N bottoms -> N tops."""

    min_bottoms = 1
    min_tops = 1
    transposed = False

    def __init__(
        self,
        name: str = "",
        phase: int = TRAIN,
        num_output: int = 0,
        bias_term: bool = True,
        group: int = 1,
        weight_filler=None,
        bias_filler=None,
        **geometry,
    ):
        super().__init__(name, phase, **geometry)
        self.num_output = int(num_output)
        self.bias_term = bool(bias_term)
        self.group = int(group)
        self.weight_filler = Filler.coerce(weight_filler)
        self.bias_filler = Filler.coerce(bias_filler)
        self.channels = 0

    @classmethod
    def from_param(cls, param, phase: int = TRAIN):
        cp = param.convolution_param
        return cls(
            name=param.name,
            phase=phase,
            num_output=cp.num_output,
            bias_term=cp.bias_term,
            group=cp.group,
            weight_filler=filler_or_default(cp, "weight_filler"),
            bias_filler=filler_or_default(cp, "bias_filler"),
            **cls._geometry_kwargs(cp),
        )

    def weight_shape(self) -> tuple:
        if self.transposed:  # [C_in, num_output / group, *kernel]
            return (self.channels, self.num_output // self.group, *self.kernel)
        return (self.num_output, self.channels // self.group, *self.kernel)

    def setup(self, bottom_shapes) -> None:
        shape = tuple(bottom_shapes[0])
        self._resolve_geometry(shape, 1, 3)
        self.channels = int(shape[self.channel_axis])
        if self.num_output <= 0:
            self.fail(f"convolution_param.num_output={self.num_output} must be > 0", ConfigError)
        if self.group <= 0:
            self.fail(f"convolution_param.group={self.group} must be > 0", ConfigError)
        if self.channels % self.group:
            self.fail(f"convolution_param.group={self.group}: input channels "
                      f"({self.channels}) must be divisible by group", ConfigError)
        if self.num_output % self.group:
            self.fail(f"convolution_param.group={self.group}: num_output "
                      f"({self.num_output}) must be divisible by group", ConfigError)
        wshape = self.weight_shape()
        bshape = (self.num_output,)
        if len(self.blobs) == 0:
            self.add_blob(fill(self.weight_filler, wshape))
            if self.bias_term:
                self.add_blob(fill(self.bias_filler, bshape))
            return
        # Blobs already present (shared or loaded): check them as Caffe does.
        if len(self.blobs) != 1 + self.bias_term:
            self.fail(f"expected {1 + self.bias_term} blobs, found {len(self.blobs)}")
        if tuple(self.blobs[0].shape) != wshape:
            self.fail(f"weight shape {tuple(self.blobs[0].shape)} should be {wshape}")
        if self.bias_term and tuple(self.blobs[1].shape) != bshape:
            self.fail(f"bias shape {tuple(self.blobs[1].shape)} should be {bshape}")

    def _out_spatial(self, spatial) -> tuple:
        return self._conv_out(spatial)

    def reshape(self, bottom_shapes):
        if self.num_bottoms and self.num_tops and self.num_bottoms != self.num_tops:
            self.fail(f"needs as many tops as bottoms; got {self.num_bottoms} bottoms, "
                      f"{self.num_tops} tops", ConfigError)
        self._check_bottoms(bottom_shapes)
        shape = tuple(bottom_shapes[0])
        ax = self.channel_axis
        if shape[ax] != self.channels:
            self.fail(f"input has {shape[ax]} channels on axis {ax}; the layer was set up "
                      f"for {self.channels}")
        top = (*shape[:ax], self.num_output, *self._out_spatial(shape[ax + 1:]))
        return [top] * len(bottom_shapes)

    def _convolve(self, x: torch.Tensor) -> torch.Tensor:
        ax = self.channel_axis
        flat = ax == 1 and x.dim() == self.num_spatial + 2  # (num, C, *spatial) already
        lead = x.shape[:ax]
        xs = x if flat else x.reshape(count(lead), x.shape[ax], *x.shape[ax + 1:])
        bias = self.blobs[1] if self.bias_term else None
        if self.transposed:
            y = _CONV_T[self.num_spatial](xs, self.blobs[0], bias, self.strides, self.pads,
                                          0, self.group, self.dilations)
        else:
            y = _CONV[self.num_spatial](xs, self.blobs[0], bias, self.strides, self.pads,
                                        self.dilations, self.group)
        return y if flat else y.reshape(*lead, *y.shape[1:])

    def forward(self, *bottoms):
        tops = tuple(self._convolve(x) for x in bottoms)
        return tops[0] if len(tops) == 1 else tops

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, num_output={self.num_output}, kernel={self.kernel}, "
                f"stride={self.strides}, pad={self.pads}, dilation={self.dilations}, "
                f"group={self.group}")


@LAYERS.register()
class Convolution(_BaseConv):
    """N-d convolution with learnable filters (Caffe ``ConvolutionLayer``).

    For each output channel o and output position y (group g holds input channels
    ``g*C/G .. (g+1)*C/G``)::

        top[o, y] = bias[o] + sum_{c in group(o), k} weight[o, c, k] * bottom[c, y*s - p + d*k]

    with zero padding. ``out = floor((H + 2p - (d(k-1)+1)) / s) + 1`` per spatial axis.

    Args:
        num_output: number of filters (required, > 0).
        bias_term: learn a bias per filter (default True).
        kernel_size, pad, stride, dilation: one value or one per spatial axis
            (defaults: required, 0, 1, 1); or the 2-d-only kernel_h/kernel_w,
            pad_h/pad_w, stride_h/stride_w.
        group: split channels and filters into this many groups (default 1).
        weight_filler, bias_filler: fillers (default constant 0, as Caffe).
        axis: the channel axis (default 1); the axes after it are spatial (1 to 3).

    Shape:
        bottom: (*lead, C, *spatial), several bottoms of one shape allowed;
        top: (*lead, num_output, *out) per bottom.
        blobs: weight (num_output, C / group, *kernel), bias (num_output,).
    """

    type = "Convolution"


@LAYERS.register()
class Deconvolution(_BaseConv):
    """Transposed convolution (Caffe ``DeconvolutionLayer``): the gradient of Convolution.

    ``out = s(H - 1) + d(k - 1) + 1 - 2p`` per spatial axis; weight layout is that of
    ``conv_transpose``: [C_in, num_output / group, *kernel]. Often used with a
    ``bilinear`` weight_filler for upsampling.

    Args:
        Same as Convolution (num_output, bias_term, kernel_size / pad / stride /
        dilation or their _h/_w forms, group, weight_filler, bias_filler, axis).

    Shape:
        bottom: (*lead, C, *spatial); top: (*lead, num_output, *out).
        blobs: weight (C, num_output / group, *kernel), bias (num_output,).
    """

    type = "Deconvolution"
    transposed = True

    def _out_spatial(self, spatial) -> tuple:
        out = []
        for h, k, s, p, d in zip(spatial, self.kernel, self.strides, self.pads, self.dilations):
            o = s * (h - 1) + d * (k - 1) + 1 - 2 * p
            if o <= 0:
                self.fail(f"output size s(H-1) + d(k-1) + 1 - 2p = {s}*({h}-1) + {d}*({k}-1) "
                          f"+ 1 - 2*{p} = {o} must be > 0")
            out.append(o)
        return tuple(out)


@LAYERS.register()
class Im2col(_ConvGeometry):
    """Rearrange image patches into columns (Caffe ``Im2colLayer``), as convolution sees them.

    ``top[c*K + i*kw + j, oh, ow] = bottom[c, oh*s_h - p_h + d_h*i, ow*s_w - p_w + d_w*j]``
    (K = kh*kw; zero outside the image; N-d likewise, kernel offsets in row-major order).

    Args:
        kernel_size, pad, stride, dilation (or the 2-d _h/_w forms) and axis from
        ``convolution_param``; num_output, group and fillers are ignored.

    Shape:
        bottom: (*lead, C, *spatial); top: (*lead, C * prod(kernel), *out) with
        ``out = floor((H + 2p - (d(k-1)+1)) / s) + 1``.
    """

    type = "Im2col"
    exact_bottoms = 1
    exact_tops = 1

    @classmethod
    def from_param(cls, param, phase: int = TRAIN):
        return cls(name=param.name, phase=phase,
                   **cls._geometry_kwargs(param.convolution_param))

    def setup(self, bottom_shapes) -> None:
        self._resolve_geometry(tuple(bottom_shapes[0]), 1, None)

    def reshape(self, bottom_shapes):
        if not self.kernel:
            self.setup(bottom_shapes)
        self._check_bottoms(bottom_shapes)
        shape = tuple(bottom_shapes[0])
        ax = self.channel_axis
        out = self._conv_out(shape[ax + 1:])
        return [(*shape[:ax], shape[ax] * math.prod(self.kernel), *out)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ax = self.channel_axis
        lead, c, spatial = x.shape[:ax], x.shape[ax], x.shape[ax + 1:]
        xs = x.reshape(count(lead), c, *spatial)
        out = self._conv_out(spatial)
        if self.num_spatial == 2:
            # F.unfold orders rows as (c, i, j) -> c*kh*kw + i*kw + j, Caffe's im2col order.
            cols = F.unfold(xs, self.kernel, self.dilations, self.pads, self.strides)
        else:
            cols = _unfold_nd(xs, self.kernel, self.dilations, self.pads, self.strides)
        return cols.reshape(*lead, c * math.prod(self.kernel), *out)


def _unfold_nd(x, kernel, dilation, pad, stride):
    """N-d im2col: (num, C, *S) -> (num, C * prod(kernel), prod(out)), Caffe's row order."""
    nsp = len(kernel)
    padding = []
    for p in reversed(pad):  # F.pad wants the last axis first
        padding += [p, p]
    x = F.pad(x, padding)
    for i, (k, d, s) in enumerate(zip(kernel, dilation, stride)):
        # Windows of the full extent along axis 2+i, then keep every d-th tap.
        x = x.unfold(2 + i, d * (k - 1) + 1, s)[..., ::d]
    # x: (num, C, *out, *kernel) -> (num, C, *kernel, *out)
    perm = [0, 1, *range(2 + nsp, 2 + 2 * nsp), *range(2, 2 + nsp)]
    x = x.permute(perm)
    return x.reshape(x.shape[0], -1, math.prod(x.shape[2 + nsp:]))
