"""Small fork layers: Upsample (SegNet / YOLOv3 ports), Interp (DeepLab), ShuffleChannel
(ShuffleNet), ReLU6 (MobileNet ports) and Axpy (SENet).

Each follows its fork's layer source; autograd gives the backward passes, which in
the forks are the adjoints of these forwards.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..formats import forks
from ..registry import LAYERS
from .base import TRAIN, Layer, count


def _fmt(shape) -> str:
    return str(tuple(int(d) for d in shape))


def _opt(msg, field):
    return getattr(msg, field) if msg.HasField(field) else None


class _Unpool(torch.autograd.Function):
    """SegNet's max-unpooling: forward ``top[mask[i]] = x[i]``, backward ``dx[i] = dtop[mask[i]]``.

    Written out (not ``max_unpool2d``, which insists on a pooling geometry) so the
    backward is the fork's gather even when two cells share an index (overlapping
    pooling windows with the same maximum, whose values are then equal).
    """

    @staticmethod
    def forward(ctx, x, idx, uh: int, uw: int):
        n, c = x.shape[:2]
        flat = idx.reshape(n, c, -1)
        ctx.save_for_backward(flat)
        ctx.in_shape = x.shape
        out = x.new_zeros((n, c, uh * uw))
        out.scatter_(2, flat, x.reshape(n, c, -1))
        return out.reshape(n, c, uh, uw)

    @staticmethod
    def backward(ctx, grad):
        (flat,) = ctx.saved_tensors
        n, c = flat.shape[:2]
        return grad.reshape(n, c, -1).gather(2, flat).reshape(ctx.in_shape), None, None, None


@LAYERS.register()
class Upsample(Layer):
    """Upsampling, in the two forms forks use under this type name.

    *SegNet* (two bottoms: data and the MAX pooling mask of the matching Pooling
    layer): the top (N, C, uh, uw) is zero except ``top[mask[i]] = data[i]`` per
    plane (max-unpooling); the gradient of ``data[i]`` is ``top_diff[mask[i]]``.
    The size is ``upsample_h`` x ``upsample_w`` when both are given, else
    ``H * scale_h - pad_out_h`` x ``W * scale_w - pad_out_w`` (``scale`` for both
    by default 2; ``pad_out_*`` only with a scale of 2).

    *YOLOv3 ports* (one bottom): nearest-neighbour upsampling by the integer
    ``scale``, ``top[h, w] = bottom[h // scale, w // scale]``; the gradient sums
    each block. (Those ports declare ``scale`` as int32 with default 1; here the
    shared schema's SegNet default 2 applies when it is omitted.)

    Shape: (N, C, H, W) [+ mask of the same shape] -> (N, C, H', W').
    """

    type = "Upsample"
    fork = forks.SEGNET
    min_bottoms = 1
    max_bottoms = 2
    exact_tops = 1

    def __init__(self, scale=None, scale_h=None, scale_w=None, pad_out_h=False, pad_out_w=False,
                 upsample_h=None, upsample_w=None, name: str = "", phase: int = TRAIN):
        super().__init__(name, phase)
        self.scale = None if scale is None else int(scale)
        self.scale_h = None if scale_h is None else int(scale_h)
        self.scale_w = None if scale_w is None else int(scale_w)
        self.pad_out = (bool(pad_out_h), bool(pad_out_w))
        self.upsample = (upsample_h, upsample_w)

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        p = param.upsample_param
        return cls(_opt(p, "scale"), _opt(p, "scale_h"), _opt(p, "scale_w"), p.pad_out_h, p.pad_out_w,
                   _opt(p, "upsample_h"), _opt(p, "upsample_w"), name=param.name, phase=phase)

    def _segnet_size(self, hw):
        uh, uw = self.upsample
        if uh is not None and uw is not None:
            if uh <= 1 or uw <= 1:
                self.fail(f"upsample_param: upsample_h and upsample_w must be > 1 (got {uh}, {uw})",
                          ConfigError)
            return int(uh), int(uw)
        if self.scale_h is None and self.scale_w is None:
            sh = sw = 2 if self.scale is None else self.scale
        elif self.scale is None and self.scale_h is not None and self.scale_w is not None:
            sh, sw = self.scale_h, self.scale_w
        else:
            self.fail("upsample_param: give upsample_h and upsample_w, or scale, or both scale_h "
                      "and scale_w", ConfigError)
        if sh <= 1 or sw <= 1:
            self.fail(f"upsample_param: the scale must be > 1 (got {sh} x {sw})", ConfigError)
        for pad, s, axis in ((self.pad_out[0], sh, "h"), (self.pad_out[1], sw, "w")):
            if pad and s != 2:
                self.fail(f"upsample_param.pad_out_{axis} needs scale_{axis} == 2 (got {s})", ConfigError)
        return hw[0] * sh - int(self.pad_out[0]), hw[1] * sw - int(self.pad_out[1])

    def _nearest_scale(self) -> int:
        if self.scale_h is not None or self.scale_w is not None or self.upsample != (None, None):
            self.fail("with one bottom (nearest-neighbour form) only upsample_param.scale applies; "
                      "scale_h/scale_w/upsample_h/upsample_w need the SegNet form's mask bottom",
                      ConfigError)
        s = 2 if self.scale is None else self.scale
        if s < 1:
            self.fail(f"upsample_param.scale must be >= 1 (got {s})", ConfigError)
        return s

    def reshape(self, bottom_shapes):
        x = tuple(bottom_shapes[0])
        if len(x) != 4:
            self.fail(f"bottom 0 {_fmt(x)} must be 4-d (N, C, H, W)")
        if self.num_bottoms == 1:
            s = self._nearest_scale()
            return [(x[0], x[1], x[2] * s, x[3] * s)]
        if tuple(bottom_shapes[1]) != x:
            self.fail(f"mask {_fmt(bottom_shapes[1])} must have the shape of bottom 0 {_fmt(x)}")
        return [(x[0], x[1], *self._segnet_size(x[2:]))]

    def forward(self, x, mask=None):
        if mask is None:
            s = self._nearest_scale()
            return x.repeat_interleave(s, dim=2).repeat_interleave(s, dim=3)
        uh, uw = self._segnet_size(tuple(x.shape[2:]))
        idx = mask.detach().to(torch.int64)  # static_cast<int>
        bad = (idx < 0) | (idx >= uh * uw)
        if bool(bad.any()):
            v = mask.detach().reshape(-1)[bad.reshape(-1)][0].item()
            self.fail(f"mask index {v:g} is outside the {uh} x {uw} output; the scale must match "
                      "the pooling layer that made the mask", DataError)
        return _Unpool.apply(x, idx, uh, uw)


def interp_axis(n_in: int, n_out: int, dtype):
    """DeepLab's caffe_cpu_interp2 along one axis: (index, next-step, lambda1, lambda0).

    ``r = (n_in - 1) / (n_out - 1)`` in float (0 when n_out is 1); output i reads
    ``pos = r * i`` (float), ``i0 = int(pos)``, ``step = 1 if i0 < n_in - 1 else 0``,
    ``lambda1 = pos - i0``, ``lambda0 = 1 - lambda1`` (in the blob's type).
    """
    r = np.float32(n_in - 1) / np.float32(n_out - 1) if n_out > 1 else np.float32(0)
    pos = r * np.arange(n_out, dtype=np.float32)
    i0 = pos.astype(np.int64)
    step = (i0 < n_in - 1).astype(np.int64)
    lam1 = (pos - i0.astype(np.float32)).astype(dtype)
    return i0, step, lam1, (dtype(1) - lam1).astype(dtype)


@LAYERS.register()
class Interp(Layer):
    """Bilinear resize with aligned corners (DeepLab's Interp; PSPNet's two-bottom form).

    DeepLab: the input, cropped by ``pad_beg`` / ``pad_end`` (<= 0) to
    ``H_eff = H + pad_beg + pad_end``, is resized to the output size given by, in
    Caffe's order: ``shrink_factor`` s alone: ``(H_eff - 1) / s + 1``;
    ``zoom_factor`` z alone: ``H_eff + (H_eff - 1) * (z - 1)``; ``height`` and
    ``width``; both factors: shrink, then zoom. With a second bottom (PSPNet) its
    H x W is the output size. Output (i, j) reads the four neighbours of
    ``(i * (H_eff - 1) / (H_out - 1), j * ...)`` with bilinear weights computed in
    float as DeepLab does (``interp_axis``); equal sizes copy.

    Shape: (N, C, H, W) [, (N', C', H2, W2)] -> (N, C, H_out, W_out).
    """

    type = "Interp"
    fork = forks.DEEPLAB
    min_bottoms = 1
    max_bottoms = 2
    exact_tops = 1

    def __init__(self, height=None, width=None, zoom_factor=None, shrink_factor=None, pad_beg=0,
                 pad_end=0, name: str = "", phase: int = TRAIN):
        super().__init__(name, phase)
        self.height, self.width = height, width
        self.zoom, self.shrink = zoom_factor, shrink_factor
        self.pad_beg, self.pad_end = int(pad_beg), int(pad_end)
        if self.pad_beg > 0 or self.pad_end > 0:
            self.fail(f"interp_param: only non-positive padding (cropping) is supported "
                      f"(pad_beg={self.pad_beg}, pad_end={self.pad_end})", ConfigError)

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        p = param.interp_param
        return cls(_opt(p, "height"), _opt(p, "width"), _opt(p, "zoom_factor"), _opt(p, "shrink_factor"),
                   p.pad_beg, p.pad_end, name=param.name, phase=phase)

    def _sizes(self, bottom_shapes):
        x = tuple(bottom_shapes[0])
        if len(x) != 4:
            self.fail(f"bottom 0 {_fmt(x)} must be 4-d (N, C, H, W)")
        eff = (x[2] + self.pad_beg + self.pad_end, x[3] + self.pad_beg + self.pad_end)
        if len(bottom_shapes) > 1:
            ref = tuple(bottom_shapes[1])
            if len(ref) != 4:
                self.fail(f"bottom 1 {_fmt(ref)} must be 4-d; its height and width are the output size")
            out = ref[2:]
        else:
            for f, v in (("shrink_factor", self.shrink), ("zoom_factor", self.zoom)):
                if v is not None and v < 1:
                    self.fail(f"interp_param.{f}={v} must be >= 1", ConfigError)
            if self.shrink is not None and self.zoom is None:
                out = tuple((e - 1) // self.shrink + 1 for e in eff)
            elif self.zoom is not None and self.shrink is None:
                out = tuple(e + (e - 1) * (self.zoom - 1) for e in eff)
            elif self.height is not None and self.width is not None:
                out = (int(self.height), int(self.width))
            elif self.shrink is not None and self.zoom is not None:
                out = tuple((e - 1) // self.shrink + 1 for e in eff)
                out = tuple(o + (o - 1) * (self.zoom - 1) for o in out)
            else:
                self.fail("interp_param: give shrink_factor and/or zoom_factor, or height and width",
                          ConfigError)
        if min(eff) <= 0 or min(out) <= 0:
            self.fail(f"input {_fmt(x)} cropped by pad_beg {self.pad_beg} / pad_end {self.pad_end} "
                      f"gives {_fmt(eff)} -> output {_fmt(out)}; both must be positive")
        return x, eff, tuple(int(o) for o in out)

    def reshape(self, bottom_shapes):
        x, _, out = self._sizes(bottom_shapes)
        return [(x[0], x[1], *out)]

    def forward(self, x, ref=None):
        shapes = [x.shape] + ([ref.shape] if ref is not None else [])
        _, eff, out = self._sizes(shapes)
        b = -self.pad_beg
        x = x[:, :, b : b + eff[0], b : b + eff[1]]
        if tuple(eff) == tuple(out):
            return x.clone()
        dt = np.float64 if x.dtype == torch.float64 else np.float32
        h0, hp, h1l, h0l = interp_axis(eff[0], out[0], dt)
        w0, wp, w1l, w0l = interp_axis(eff[1], out[1], dt)

        def t(a):
            return torch.from_numpy(a).to(x.device)

        rows0, rows1 = x.index_select(2, t(h0)), x.index_select(2, t(h0 + hp))
        a, bb = rows0.index_select(3, t(w0)), rows0.index_select(3, t(w0 + wp))
        c, d = rows1.index_select(3, t(w0)), rows1.index_select(3, t(w0 + wp))
        hl0, hl1 = t(h0l).to(x.dtype)[:, None], t(h1l).to(x.dtype)[:, None]
        wl0, wl1 = t(w0l).to(x.dtype)[None, :], t(w1l).to(x.dtype)[None, :]
        return hl0 * (wl0 * a + wl1 * bb) + hl1 * (wl0 * c + wl1 * d)


@LAYERS.register()
class ShuffleChannel(Layer):
    """Interleave channel groups (ShuffleNet).

    farmingyard/ShuffleNet: with g = ``group`` and C = g * k, input channel
    ``i * k + j`` goes to output channel ``j * g + i`` - a (g, k) -> (k, g) transpose
    of the channel axis; the backward is the inverse permutation.

    Shape: (N, C, ...) -> same; C must be divisible by ``group``.
    """

    type = "ShuffleChannel"
    fork = forks.SHUFFLENET
    exact_bottoms = 1
    exact_tops = 1

    def __init__(self, group=1, name: str = "", phase: int = TRAIN):
        super().__init__(name, phase)
        self.group = int(group)
        if self.group <= 0:
            self.fail(f"shuffle_channel_param.group must be > 0 (got {self.group})", ConfigError)

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        return cls(param.shuffle_channel_param.group, name=param.name, phase=phase)

    def reshape(self, bottom_shapes):
        x = tuple(bottom_shapes[0])
        if len(x) < 2 or x[1] % self.group:
            self.fail(f"bottom {_fmt(x)}: its channels must be divisible by group {self.group}")
        return [x]

    def forward(self, x):
        n, c = x.shape[0], x.shape[1]
        v = x.reshape(n, self.group, c // self.group, -1).transpose(1, 2)
        return v.reshape(x.shape)


@LAYERS.register()
class ReLU6(Layer):
    """ReLU clipped at 6 (MobileNet ports): ``y = min(max(x, 0), 6)``.

    The gradient is the top's where ``0 < x < 6`` and 0 elsewhere, the ports'
    ``(x > 0 && x < 6)`` test (so 0 at exactly 0 and 6).

    Shape: any; top = bottom.
    """

    type = "ReLU6"
    fork = forks.MOBILENET
    exact_bottoms = 1
    exact_tops = 1

    def forward(self, x):
        inside = (x > 0) & (x < 6)
        return torch.where(inside, x, torch.where(x <= 0, 0.0, 6.0).to(x.dtype))


@LAYERS.register()
class Axpy(Layer):
    """``top = a * x + y`` with one scale per (sample, channel): SENet's fused SE scaling + shortcut.

    hujie-frank/SENet: bottoms ``a`` (N, C) or (N, C, 1, 1) (the excitation),
    ``x`` (N, C, H, W) (the residual branch) and ``y`` (the shortcut, same shape as
    x); ``top[n, c] = a[n, c] * x[n, c] + y[n, c]``. Gradients: ``da = sum_hw(x *
    dtop)``, ``dx = a * dtop``, ``dy = dtop``.

    Shape: (N, C[, 1, 1]), (N, C, ...), (N, C, ...) -> (N, C, ...).
    """

    type = "Axpy"
    fork = forks.SENET
    exact_bottoms = 3
    exact_tops = 1

    def reshape(self, bottom_shapes):
        a, x, y = (tuple(s) for s in bottom_shapes)
        if len(a) < 2 or len(x) < 2 or a[:2] != x[:2] or count(a) != a[0] * a[1]:
            self.fail(f"the scale {_fmt(a)} must be (N, C) or (N, C, 1, 1) for x {_fmt(x)}")
        if x != y:
            self.fail(f"x {_fmt(x)} and y {_fmt(y)} must have the same shape")
        return [x]

    def forward(self, a, x, y):
        return a.reshape(a.shape[0], a.shape[1], *([1] * (x.dim() - 2))) * x + y
