"""Normalization layers: LRN, BatchNorm, MVN (Caffe's numerics).

- LRN ACROSS_CHANNELS: ``scale = k + (alpha / n) * sum_{c' in window(c)} x_{c'}^2``
  (window of n channels centred on c, zero padded), ``y = x * scale^-beta``.
- LRN WITHIN_CHANNEL: ``y = x * (1 + (alpha / n^2) * sum_{n x n window} x^2)^-beta``
  (k unused).
- BatchNorm: ``y = (x - mu) / sqrt(var + eps)`` per channel, with batch or stored
  statistics; no scale/shift (Caffe pairs it with a ``Scale`` layer).
- MVN: ``y = (x - mean) / (std + eps)`` over each instance (and channel).

Autograd supplies Caffe's Backward; for BatchNorm in batch-statistics mode it is
the full derivative through the mean and the variance, as Caffe's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..proto import caffe_pb2
from ..registry import LAYERS
from .base import TEST, TRAIN, Layer

_NORM_REGIONS = {
    caffe_pb2.LRNParameter.ACROSS_CHANNELS: "ACROSS_CHANNELS",
    caffe_pb2.LRNParameter.WITHIN_CHANNEL: "WITHIN_CHANNEL",
}


@LAYERS.register()
class LRN(Layer):
    """Local response normalization.

    ACROSS_CHANNELS (Caffe ``CrossChannelForward``)::

        scale[n, c, h, w] = k + alpha / size * sum_{|c' - c| <= (size-1)/2} x[n, c', h, w]^2
        y = x * scale^-beta          (channels outside [0, C) count as 0)

    WITHIN_CHANNEL: Caffe builds it from an AVE pooling layer (kernel ``size``,
    stride 1, pad ``(size-1)/2``) followed by Power(shift 1, scale alpha, power
    -beta). Caffe's AVE pooling divides by the window size clipped to the *padded*
    extent, computed before clipping to the image; with this pad and stride every
    window lies inside the padded extent, so the divisor is ``size^2`` everywhere,
    borders included::

        y = x * (1 + alpha / size^2 * sum_{size x size window, zero padded} x^2)^-beta

    ``k`` is ignored in this mode, as in Caffe.

    Args:
        local_size: window size n, must be odd (default 5).
        alpha: scaling (default 1).
        beta: exponent (default 0.75).
        norm_region: ``"ACROSS_CHANNELS"`` (default) or ``"WITHIN_CHANNEL"``.
        k: additive constant of ACROSS_CHANNELS (default 1).

    Shape: ``(N, C, H, W)`` (exactly 4 axes); top = bottom.
    """

    type = "LRN"
    exact_bottoms = 1
    exact_tops = 1

    def __init__(self, local_size: int = 5, alpha: float = 1.0, beta: float = 0.75,
                 norm_region: str = "ACROSS_CHANNELS", k: float = 1.0, name: str = "",
                 phase: int = TRAIN):
        super().__init__(name, phase)
        self.local_size = int(local_size)
        self.alpha, self.beta, self.k = float(alpha), float(beta), float(k)
        self.norm_region = str(norm_region)
        if self.local_size % 2 != 1:
            self.fail(f"lrn_param.local_size={self.local_size}: LRN only supports odd "
                      "values for local_size", ConfigError)
        if self.norm_region not in _NORM_REGIONS.values():
            self.fail(f"lrn_param.norm_region={self.norm_region!r} is not one of "
                      f"{sorted(_NORM_REGIONS.values())}", ConfigError)
        self.pre_pad = (self.local_size - 1) // 2

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        p = param.lrn_param
        return cls(p.local_size, p.alpha, p.beta, _NORM_REGIONS[p.norm_region], p.k,
                   name=param.name, phase=phase)

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        if len(shape) != 4:
            self.fail(f"input must have 4 axes (num, channels, height, width), got shape {shape}")
        return [shape]

    def forward(self, x):
        n, p = self.local_size, self.pre_pad
        sq = x * x
        if self.norm_region == "ACROSS_CHANNELS":
            # sum of x^2 over a window of n channels, zero padded on axis 1: n shifted
            # slices added up (one pass each, fast in NCHW and channels_last alike)
            c = x.shape[1]
            padded = F.pad(sq, (0, 0, 0, 0, p, p))  # (N, C + n - 1, H, W)
            win = padded[:, 0:c].clone()  # (N, C, H, W)
            for i in range(1, n):
                win.add_(padded[:, i : i + c])
            scale = win.mul_(self.alpha / n).add_(self.k)
        else:
            # divisor is n*n everywhere (see the class docstring)
            win = F.avg_pool2d(sq, n, stride=1, padding=p, count_include_pad=True)
            scale = 1.0 + self.alpha * win
        return x * scale.pow(-self.beta)


@LAYERS.register()
class BatchNorm(Layer):
    """Batch normalization without the affine part (Caffe's ``BatchNorm``).

    Statistics are per channel (axis 1) over every other axis. With batch
    statistics (TRAIN default)::

        mu = mean(x), var = mean((x - mu)^2)            (biased)
        y  = (x - mu) / sqrt(var + eps)
        b2 <- maf * b2 + 1
        b0 <- maf * b0 + mu
        b1 <- maf * b1 + m / (m - 1) * var              (m = count / C; factor 1 if m = 1)

    and the gradient flows through mu and var (Caffe's Backward). With global
    statistics (TEST default) ``f = 0 if b2 == 0 else 1 / b2``, ``mu = f * b0``,
    ``var = f * b1`` and the blobs are left unchanged.

    Args:
        use_global_stats: use the stored statistics; None (default) means
            ``phase == TEST``.
        moving_average_fraction: maf (default 0.999).
        eps: added to the variance (default 1e-5).

    Attributes:
        blobs[0], blobs[1]: running sums of means and variances, shape ``(C,)``;
        blobs[2]: the normalising weight, shape ``(1,)``. All start at 0 and never
        require a gradient (Caffe forces their lr_mult to 0); they are updated in
        place by the forward pass.

    Shape: ``(N, C, ...)`` with at least 2 axes; top = bottom.
    """

    type = "BatchNorm"
    exact_bottoms = 1
    exact_tops = 1

    def __init__(self, use_global_stats: bool | None = None,
                 moving_average_fraction: float = 0.999, eps: float = 1e-5, name: str = "",
                 phase: int = TRAIN):
        super().__init__(name, phase)
        if use_global_stats is None:
            use_global_stats = phase == TEST
        self.use_global_stats = bool(use_global_stats)
        self.moving_average_fraction = float(moving_average_fraction)
        self.eps = float(eps)

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        for i, spec in enumerate(param.param[:3]):
            if spec.lr_mult != 0.0:
                raise ConfigError(
                    f"BatchNorm layer '{param.name}': param[{i}].lr_mult={spec.lr_mult}: "
                    "Cannot configure batch normalization statistics as layer parameters "
                    "(their lr_mult must be 0)"
                )
        p = param.batch_norm_param
        ugs = p.use_global_stats if p.HasField("use_global_stats") else None
        return cls(ugs, p.moving_average_fraction, p.eps, name=param.name, phase=phase)

    def _check_axes(self, shape):
        if len(shape) < 2:
            self.fail(f"bottom must have at least 2 axes (N, C, ...), got shape {shape}")

    def setup(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        self._check_axes(shape)
        c = int(shape[1])
        for size in (c, c, 1):
            self.add_blob(torch.zeros(size)).requires_grad_(False)

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        self._check_axes(shape)
        c = self.blobs[0].numel()
        if shape[1] != c:
            self.fail(f"bottom has {shape[1]} channels but the statistics blobs hold {c}")
        return [shape]

    def forward(self, x, weight=None, bias=None):
        """``weight``/``bias`` (shape ``(C,)``): a following in-place Scale layer's γ and
        β, applied in the same kernel (``pipeline.fastpath.BatchNormScale``)."""
        c = x.shape[1]
        if self.use_global_stats:
            b0, b1, b2 = (b.detach() for b in self.blobs)
            factor = b2.reciprocal().nan_to_num_(0.0, 0.0, 0.0)  # 0 where b2 == 0
            return F.batch_norm(x, b0 * factor, b1 * factor, weight, bias, False, 0.0, self.eps)
        m = x.numel() // c
        if m > 1:
            # One native kernel (forward and backward, the full derivative through mu and
            # var). With momentum 1 the "running" buffers receive this batch's mean and its
            # unbiased variance m/(m-1)*var -- the terms Caffe adds to its blobs.
            batch_mean, batch_var, one = self._scratch(x)
            y = F.batch_norm(x, batch_mean, batch_var, weight, bias, True, 1.0, self.eps)
            self._accumulate(batch_mean, batch_var, one)
            return y
        # one value per channel: var = 0 and Caffe's correction factor is 1
        dims = [0] + list(range(2, x.dim()))
        bshape = (1, c) + (1,) * (x.dim() - 2)  # broadcast (1, C, 1, ...)
        mean = x.mean(dim=dims)
        var = (x - mean.view(bshape)).pow(2).mean(dim=dims)
        self._accumulate(mean.detach(), var.detach())
        y = (x - mean.view(bshape)) / torch.sqrt(var.view(bshape) + self.eps)
        if weight is not None:
            y = y * weight.view(bshape)
        return y if bias is None else y + bias.view(bshape)

    def _scratch(self, x):
        """(mean, var, one): buffers F.batch_norm overwrites with this batch's statistics
        (momentum 1: ``0 * old + new``), kept between calls, and the constant 1 for b2."""
        stats = self.blobs[0].dtype
        s = self.__dict__.get("_stats")
        if s is None or s[0].device != x.device or s[0].dtype != stats or s[0].numel() != x.shape[1]:
            z = torch.zeros(x.shape[1], dtype=stats, device=x.device)
            s = self.__dict__["_stats"] = (z, z.clone(), torch.ones(1, dtype=stats, device=x.device))
        return s

    @torch.no_grad()
    def _accumulate(self, mean, corrected_var, one=None):
        """b2 <- maf*b2 + 1, b0 <- maf*b0 + mean, b1 <- maf*b1 + corrected_var."""
        b0, b1, b2 = self.blobs
        if one is None:
            one = torch.ones_like(b2)
        torch._foreach_mul_([b0, b1, b2], self.moving_average_fraction)
        if mean.dtype != b0.dtype:
            mean, corrected_var = mean.to(b0.dtype), corrected_var.to(b0.dtype)
        torch._foreach_add_([b0, b1, b2], [mean, corrected_var, one])


@LAYERS.register()
class MVN(Layer):
    """Mean-variance normalization of each instance (Caffe's ``MVN``).

    Each group is one (n, c) plane, or all of instance n when ``across_channels``::

        y = x - mean(x)                                   (normalize_variance false)
        y = (x - mean(x)) / (sqrt(mean((x - mean(x))^2)) + eps)

    ``eps`` is added to the standard deviation, not the variance, as Caffe does.
    Where a group is constant (std 0, e.g. 1x1 planes) the gradient is taken with
    d(std)/dx = 0, which is what Caffe's Backward computes there.

    Args:
        normalize_variance: divide by the standard deviation (default True).
        across_channels: normalise over C, H, W together (default False).
        eps: added to the standard deviation (default 1e-9).

    Shape: up to 4 axes, read as Caffe's legacy ``(num, channels, height, width)``
    with missing trailing axes of 1; the top has that 4-axis shape (so an
    ``(N, C)`` bottom gives an ``(N, C, 1, 1)`` top, as in Caffe).
    """

    type = "MVN"
    exact_bottoms = 1
    exact_tops = 1

    def __init__(self, normalize_variance: bool = True, across_channels: bool = False,
                 eps: float = 1e-9, name: str = "", phase: int = TRAIN):
        super().__init__(name, phase)
        self.normalize_variance = bool(normalize_variance)
        self.across_channels = bool(across_channels)
        self.eps = float(eps)

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        p = param.mvn_param
        return cls(p.normalize_variance, p.across_channels, p.eps, name=param.name,
                   phase=phase)

    def _legacy_shape(self, shape):
        shape = tuple(int(d) for d in shape)
        if not 1 <= len(shape) <= 4:
            self.fail(f"bottom must have 1 to 4 axes (num, channels, height, width), "
                      f"got shape {shape}")
        return shape + (1,) * (4 - len(shape))

    def reshape(self, bottom_shapes):
        return [self._legacy_shape(bottom_shapes[0])]

    def forward(self, x):
        shape = self._legacy_shape(x.shape)
        groups = shape[0] if self.across_channels else shape[0] * shape[1]
        flat = x.reshape(groups, -1)  # (groups, dim)
        y = flat - flat.mean(dim=1, keepdim=True)
        if self.normalize_variance:
            var = (y * y).mean(dim=1, keepdim=True)
            positive = var > 0
            # sqrt whose gradient is 0 (not inf * 0 = nan) where the variance is 0
            std = torch.where(positive, torch.sqrt(torch.where(positive, var, 1.0)), 0.0)
            y = y / (std + self.eps)
        return y.reshape(shape)
