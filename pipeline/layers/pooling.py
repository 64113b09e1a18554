"""Pooling family: Pooling (MAX / AVE / STOCHASTIC) and SPP (spatial pyramid pooling).

Caffe's output size (``PoolingLayer::Reshape``), per spatial axis with input H,
kernel k, stride s, pad p::

    CEIL (default): out = ceil((H + 2p - k) / s) + 1      FLOOR: floor(...) + 1
    if any pad > 0 and (out - 1) * s >= H + p: out -= 1   (last window starts inside)

Window ``oh`` covers rows ``[oh*s - p, oh*s - p + k)``. MAX clips it to the image
(padding acts as -inf); AVE sums the in-image cells and divides by
``(min(hs + k, H + p) - hs) * (min(ws + k, W + p) - ws)`` with ``hs = oh*s - p``,
i.e. padded cells count but overrun past ``H + p`` does not. torch's own pooling ops
implement these rules only for ``p <= k/2``; beyond that the input is padded
explicitly so results stay equal to Caffe's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..proto import caffe_pb2
from ..registry import LAYERS
from .base import TRAIN, Layer

_METHODS = ("MAX", "AVE", "STOCHASTIC")
_ROUND_MODES = ("CEIL", "FLOOR")
FLT_MIN = 1.1754943508222875e-38  # Caffe's STOCHASTIC TEST denominator seed


def _name(value, names, field, owner) -> str:
    """Accept an enum number or its name; return the name."""
    if isinstance(value, str) and value.upper() in names:
        return value.upper()
    if isinstance(value, int) and 0 <= value < len(names):
        return names[value]
    raise ConfigError(f"{owner}: {field}={value!r} is not one of {', '.join(names)}")


def _opt(msg, field: str):
    return getattr(msg, field) if msg.HasField(field) else None


def pooled_size(size: int, k: int, s: int, p: int, ceil: bool, any_pad: bool) -> int:
    """Caffe's pooled output size along one axis (see the module docstring)."""
    num = size + 2 * p - k
    out = (-(-num // s) if ceil else num // s) + 1
    if any_pad and (out - 1) * s >= size + p:
        out -= 1
    return out


def pool_geometry(layer, hw, kernel, stride, pad, ceil=True, where=""):
    """Validate one pooling configuration on an (H, W) input; return (out_h, out_w)."""
    any_pad = pad[0] > 0 or pad[1] > 0
    out = []
    for axis, size, k, s, p in zip("hw", hw, kernel, stride, pad):
        o = pooled_size(size, k, s, p, ceil, any_pad)
        if o < 1:
            layer.fail(f"{where}kernel_{axis}={k} does not fit the input ({size} + 2*{p} pad)")
        if (o - 1) * s >= size + p:
            # Caffe CHECKs this when padded; unpadded it would pool an empty window.
            layer.fail(f"{where}the last window along {axis} would start at {(o - 1) * s - p}, "
                       f"outside the input of size {size} (kernel {k}, stride {s}, pad {p})")
        out.append(o)
    return tuple(out)


# -- the pooling kernels --------------------------------------------------------------
def _torch_native_ok(hw, kernel, stride, pad, out, ceil) -> bool:
    """True when torch's own max/avg_pool2d computes exactly Caffe's windows."""
    for size, k, s, p, o in zip(hw, kernel, stride, pad, out):
        if 2 * p > k or size + 2 * p < k:
            return False
        if pooled_size(size, k, s, p, ceil, True) != o:  # torch applies the clip rule always
            return False
    return True


def _explicit_pad(x, kernel, stride, pad, out, value):
    """Pad top/left by p and bottom/right to cover every window (Caffe's hanging windows)."""
    extra = [(o - 1) * s + k - size - p for size, k, s, p, o in
             zip(x.shape[-2:], kernel, stride, pad, out)]
    return F.pad(x, (pad[1], max(extra[1], 0), pad[0], max(extra[0], 0)), value=value)


def _ave_divisor(hw, kernel, stride, pad, out, like):
    """(out_h, out_w) tensor of Caffe's AVE pool sizes, padded cells included."""
    sizes = []
    for size, k, s, p, o in zip(hw, kernel, stride, pad, out):
        start = torch.arange(o, device=like.device) * s - p
        sizes.append(torch.clamp(start + k, max=size + p) - start)
    return (sizes[0][:, None] * sizes[1][None, :]).to(like.dtype)


def _windows(x, kernel, stride, out):
    """Unpadded windows, zero-filled past the edge: (N, C, kh*kw, out_h, out_w)."""
    n, c = x.shape[:2]
    xp = _explicit_pad(x, kernel, stride, (0, 0), out, 0.0)
    cols = F.unfold(xp.reshape(n * c, 1, *xp.shape[-2:]), kernel, stride=stride)
    oh_full = (xp.shape[-2] - kernel[0]) // stride[0] + 1
    cols = cols.reshape(n, c, kernel[0] * kernel[1], oh_full, -1)
    return cols[..., : out[0], : out[1]]


def pool2d(x, method, kernel, stride, pad, out, *, ceil=True, train=True, want_mask=False):
    """Caffe's 2-d pooling of x (N, C, H, W); returns (top, mask or None)."""
    kernel, stride, pad, out = tuple(kernel), tuple(stride), tuple(pad), tuple(out)
    hw = tuple(x.shape[-2:])
    if method == "STOCHASTIC":
        return _stochastic(x, kernel, stride, out, train), None
    if _torch_native_ok(hw, kernel, stride, pad, out, ceil):
        if method == "AVE":
            return F.avg_pool2d(x, kernel, stride, pad, ceil_mode=ceil,
                                count_include_pad=True), None
        if want_mask:
            top, idx = F.max_pool2d(x, kernel, stride, pad, ceil_mode=ceil, return_indices=True)
            return top, idx.to(x.dtype)  # h * W + w in the unpadded plane, as Caffe
        return F.max_pool2d(x, kernel, stride, pad, ceil_mode=ceil), None
    if method == "AVE":
        xp = _explicit_pad(x, kernel, stride, pad, out, 0.0)
        total = F.avg_pool2d(xp, kernel, stride, divisor_override=1)[..., : out[0], : out[1]]
        return total / _ave_divisor(hw, kernel, stride, pad, out, x), None
    xp = _explicit_pad(x, kernel, stride, pad, out, float("-inf"))
    if not want_mask:
        return F.max_pool2d(xp, kernel, stride)[..., : out[0], : out[1]], None
    top, idx = F.max_pool2d(xp, kernel, stride, return_indices=True)
    top, idx = top[..., : out[0], : out[1]], idx[..., : out[0], : out[1]]
    wp = xp.shape[-1]
    mask = (idx // wp - pad[0]) * hw[1] + (idx % wp - pad[1])
    return top, mask.to(x.dtype)


def _stochastic(x, kernel, stride, out, train):
    """STOCHASTIC pooling (no padding; Caffe's Forward_gpu, as Forward_cpu has none).

    TRAIN: pick one cell per window with probability value / window sum (inputs are
    assumed non-negative); the gradient flows to that cell only. TEST: the
    probability-weighted mean sum(x^2) / (FLT_MIN + sum(x)).
    """
    win = _windows(x, kernel, stride, out)  # (N, C, K, oh, ow); cells past the edge are 0
    if not train:
        return (win * win).sum(2) / (FLT_MIN + win.sum(2))
    with torch.no_grad():
        cum = win.cumsum(2)
        u = torch.rand(cum[:, :, 0].shape, device=x.device, dtype=x.dtype)
        thres = u * cum[:, :, -1]
        # First cell whose running sum reaches the threshold. Zero cells past the edge
        # never come first: their running sum equals the cell before them.
        pick = (cum < thres.unsqueeze(2)).sum(2).clamp_(max=win.shape[2] - 1)
        n_out_h, n_out_w = out
        oh = torch.arange(n_out_h, device=x.device)[:, None] * stride[0]
        ow = torch.arange(n_out_w, device=x.device)[None, :] * stride[1]
        h = torch.clamp(oh + pick // kernel[1], max=x.shape[-2] - 1)
        w = torch.clamp(ow + pick % kernel[1], max=x.shape[-1] - 1)
        flat = (h * x.shape[-1] + w).reshape(*x.shape[:2], -1)
    top = x.reshape(*x.shape[:2], -1).gather(2, flat)
    return top.reshape(*x.shape[:2], *out)


# -- layers ---------------------------------------------------------------------------
@LAYERS.register()
class Pooling(Layer):
    """2-d max / average / stochastic pooling (Caffe ``PoolingLayer``).

    Output size, windows and AVE divisor follow Caffe exactly (module docstring).
    MAX may write a second top: the argmax as a float index ``h * W + w`` within the
    unpadded input plane. STOCHASTIC (no padding) samples one cell per window with
    probability proportional to its value in TRAIN and outputs
    ``sum(x^2) / sum(x)`` over the window in TEST.

    Args:
        pool: "MAX" (default), "AVE" or "STOCHASTIC" (or the enum number).
        kernel_size, or kernel_h and kernel_w: window size (required unless global).
        stride (default 1), or stride_h and stride_w.
        pad (default 0), or pad_h and pad_w; must be < kernel; MAX and AVE only.
        global_pooling: kernel = (H, W); pad must be 0 and stride 1 (default False).
        round_mode: "CEIL" (default) or "FLOOR" for the output size; ``from_param``
            also reads DenseNet ports' ``ceil_mode`` (false = FLOOR).

    Shape:
        bottom: (N, C, H, W); top: (N, C, out_h, out_w); optional MAX mask top of
        the same shape.
    """

    type = "Pooling"
    exact_bottoms = 1
    min_tops = 1
    max_tops = 2

    def __init__(self, name: str = "", phase: int = TRAIN, pool="MAX", kernel_size=None,
                 kernel_h=None, kernel_w=None, stride=None, stride_h=None, stride_w=None,
                 pad=None, pad_h=None, pad_w=None, global_pooling: bool = False,
                 round_mode="CEIL"):
        super().__init__(name, phase)
        owner = f"{self.type} layer '{name}'"
        self.pool = _name(pool, _METHODS, "pooling_param.pool", owner)
        self.round_mode = _name(round_mode, _ROUND_MODES, "pooling_param.round_mode", owner)
        self.kernel_args = (kernel_size, kernel_h, kernel_w)
        self.stride_args = (stride, stride_h, stride_w)
        self.pad_args = (pad, pad_h, pad_w)
        self.global_pooling = bool(global_pooling)
        self.kernel = self.stride = self.pad = None  # resolved (h, w) pairs

    @classmethod
    def from_param(cls, param, phase: int = TRAIN):
        pp = param.pooling_param
        round_mode = pp.round_mode
        if pp.HasField("ceil_mode"):  # DenseNet ports (BVLC PR #3057): ceil_mode false = FLOOR
            fork_mode = "CEIL" if pp.ceil_mode else "FLOOR"
            if pp.HasField("round_mode") and _ROUND_MODES[pp.round_mode] != fork_mode:
                raise ConfigError(f"Pooling layer '{param.name}': pooling_param.ceil_mode: "
                                  f"{str(pp.ceil_mode).lower()} contradicts round_mode: "
                                  f"{_ROUND_MODES[pp.round_mode]}")
            round_mode = fork_mode
        return cls(
            name=param.name, phase=phase, pool=pp.pool,
            kernel_size=_opt(pp, "kernel_size"), kernel_h=_opt(pp, "kernel_h"),
            kernel_w=_opt(pp, "kernel_w"), stride=_opt(pp, "stride"),
            stride_h=_opt(pp, "stride_h"), stride_w=_opt(pp, "stride_w"),
            pad=_opt(pp, "pad"), pad_h=_opt(pp, "pad_h"), pad_w=_opt(pp, "pad_w"),
            global_pooling=pp.global_pooling, round_mode=round_mode,
        )

    def _pair(self, field, args, default):
        """Caffe's 'field OR field_h and field_w' rule -> (h, w)."""
        one, h, w = args
        if h is None and w is None:
            return (default, default) if one is None else (one, one)
        if one is None and h is not None and w is not None:
            return (h, w)
        self.fail(f"pooling_param: give {field}, or both {field}_h and {field}_w "
                  f"(got {field}={one}, {field}_h={h}, {field}_w={w})", ConfigError)

    def _resolve(self) -> None:
        """Caffe's LayerSetUp checks; sets self.kernel / stride / pad (kernel None if global)."""
        ks, kh, kw = self.kernel_args
        if self.global_pooling:
            if ks is not None or kh is not None or kw is not None:
                self.fail("pooling_param: with global_pooling the kernel size cannot be given",
                          ConfigError)
            self.kernel = None
        elif (ks is not None) == (kh is not None and kw is not None):
            self.fail(f"pooling_param: give kernel_size, or both kernel_h and kernel_w "
                      f"(got kernel_size={ks}, kernel_h={kh}, kernel_w={kw})", ConfigError)
        else:
            self.kernel = (ks, ks) if ks is not None else (kh, kw)
            if min(self.kernel) <= 0:
                self.fail(f"pooling_param: kernel {self.kernel} must be > 0", ConfigError)
        self.pad = self._pair("pad", self.pad_args, 0)
        self.stride = self._pair("stride", self.stride_args, 1)
        if min(self.stride) <= 0:
            self.fail(f"pooling_param: stride {self.stride} must be > 0", ConfigError)
        if self.global_pooling and (self.pad != (0, 0) or self.stride != (1, 1)):
            self.fail(f"pooling_param: with global_pooling only pad 0 and stride 1 are "
                      f"allowed (got pad={self.pad}, stride={self.stride})", ConfigError)
        if self.pad != (0, 0):
            if self.pool == "STOCHASTIC":
                self.fail("pooling_param: padding is implemented only for MAX and AVE "
                          f"pooling (got pad={self.pad} with STOCHASTIC)", ConfigError)
            if self.kernel is not None and any(p >= k for p, k in zip(self.pad, self.kernel)):
                self.fail(f"pooling_param: pad {self.pad} must be smaller than kernel "
                          f"{self.kernel}", ConfigError)

    def setup(self, bottom_shapes) -> None:
        self._resolve()
        if self.num_tops > 1 and self.pool != "MAX":
            self.fail(f"only MAX pooling has a second (mask) top; pool is {self.pool}",
                      ConfigError)

    def _geometry(self, shape):
        if self.stride is None:
            self._resolve()
        if len(shape) != 4:
            self.fail(f"input must have 4 axes (N, C, H, W); got shape {tuple(shape)}")
        hw = tuple(int(d) for d in shape[2:])
        kernel = hw if self.global_pooling else self.kernel
        out = pool_geometry(self, hw, kernel, self.stride, self.pad,
                            self.round_mode == "CEIL")
        return kernel, out

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        _, out = self._geometry(shape)
        return [(shape[0], shape[1], *out)] * max(self.num_tops, 1)

    def forward(self, x: torch.Tensor):
        kernel, out = self._geometry(x.shape)
        want_mask = self.num_tops > 1
        top, mask = pool2d(x, self.pool, kernel, self.stride, self.pad, out,
                           ceil=self.round_mode == "CEIL", train=self.phase == TRAIN,
                           want_mask=want_mask)
        return (top, mask) if want_mask else top

    def extra_repr(self) -> str:
        k = "global" if self.global_pooling else self.kernel
        return (f"name={self.name!r}, pool={self.pool}, kernel={k}, stride={self.stride}, "
                f"pad={self.pad}, round_mode={self.round_mode}")


def spp_level(level: int, size_hw) -> tuple:
    """Caffe's SPPLayer::GetPoolingParam for one level: (kernel, stride, pad) pairs.

    With b = 2**level bins: k = ceil(H / b), pad = (k*b - H + 1) // 2, stride = k.
    """
    bins = 2**level
    kernel = tuple(math.ceil(s / bins) for s in size_hw)
    pad = tuple((k * bins - s + 1) // 2 for k, s in zip(kernel, size_hw))
    return kernel, kernel, pad


@LAYERS.register()
class SPP(Layer):
    """Spatial pyramid pooling (Caffe ``SPPLayer``).

    Level l = 0 .. pyramid_height-1 pools the input into 2^l x 2^l bins with Caffe's
    Pooling rules using kernel ``ceil(H / 2^l)``, stride = kernel and pad
    ``(kernel * 2^l - H + 1) // 2`` (each axis alike); each level is flattened to
    (N, C * bins) and the levels are concatenated in order. With pyramid_height 1
    Caffe pools straight into the top, which stays 4-d: (N, C, 1, 1).

    The internal pooling layers are built without a phase, which Caffe defaults to
    TRAIN, so STOCHASTIC SPP samples in both phases, as it does in Caffe.

    Args:
        pyramid_height: number of levels (required, >= 1).
        pool: "MAX" (default), "AVE" or "STOCHASTIC".

    Shape:
        bottom: (N, C, H, W); top: (N, C * sum_l bins_l) — normally
        (N, C * (4^L - 1) / 3) — or (N, C, 1, 1) when pyramid_height is 1.
    """

    type = "SPP"
    exact_bottoms = 1
    exact_tops = 1

    def __init__(self, name: str = "", phase: int = TRAIN, pyramid_height: int = 0, pool="MAX"):
        super().__init__(name, phase)
        self.pyramid_height = int(pyramid_height)
        self.pool = _name(pool, _METHODS, "spp_param.pool", f"{self.type} layer '{name}'")

    @classmethod
    def from_param(cls, param, phase: int = TRAIN):
        sp = param.spp_param
        return cls(name=param.name, phase=phase, pyramid_height=sp.pyramid_height,
                   pool=caffe_pb2.SPPParameter.PoolMethod.Name(sp.pool))

    def _levels(self, shape):
        """[(kernel, stride, pad, out)] per level, validated like Caffe's PoolingLayer."""
        if self.pyramid_height < 1:
            self.fail(f"spp_param.pyramid_height={self.pyramid_height} must be >= 1",
                      ConfigError)
        if len(shape) != 4:
            self.fail(f"input must have 4 axes (N, C, H, W); got shape {tuple(shape)}")
        hw = tuple(int(d) for d in shape[2:])
        if min(hw) <= 0:
            self.fail(f"input height and width must be > 0; got {hw}")
        levels = []
        for lvl in range(self.pyramid_height):
            kernel, stride, pad = spp_level(lvl, hw)
            where = f"pyramid level {lvl} ({2**lvl}x{2**lvl} bins on {hw[0]}x{hw[1]}): "
            if pad != (0, 0) and self.pool == "STOCHASTIC":
                self.fail(f"{where}needs pad {pad}, but STOCHASTIC pooling has no padding")
            if any(p >= k for p, k in zip(pad, kernel)):
                self.fail(f"{where}needs pad {pad} >= kernel {kernel}; Caffe's pooling "
                          f"requires pad < kernel (the input is too small for this level)")
            out = pool_geometry(self, hw, kernel, stride, pad, True, where)
            levels.append((kernel, stride, pad, out))
        return levels

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        levels = self._levels(shape)
        if self.pyramid_height == 1:
            return [(shape[0], shape[1], *levels[0][3])]
        return [(shape[0], shape[1] * sum(o[0] * o[1] for *_, o in levels))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = []
        for kernel, stride, pad, out in self._levels(x.shape):
            top, _ = pool2d(x, self.pool, kernel, stride, pad, out, train=True)
            parts.append(top)
        if self.pyramid_height == 1:
            return parts[0]
        return torch.cat([p.reshape(p.shape[0], -1) for p in parts], dim=1)
