"""Region layers of the two-stage detectors: ROIPooling and SmoothL1Loss (py-faster-rcnn,
``rbgirshick/caffe-fast-rcnn``) and PSROIPooling (R-FCN, ``daijifeng001/caffe-rfcn``).

Each follows its fork's ``src/caffe/layers/<name>_layer.{cpp,cu}``. Regions of
interest arrive as rows ``[batch_index, x1, y1, x2, y2]`` in image pixels; the bins
are computed on the host exactly as the forks do (floats of the blob's type, C's
``round`` = half away from zero) and the pooling itself is done with torch ops, so
autograd gives the forks' backward.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..formats import forks
from ..registry import LAYERS
from .base import TRAIN, Layer


def _fmt(shape) -> str:
    return str(tuple(int(d) for d in shape))


def _np_dtype(t: torch.Tensor):
    return np.float64 if t.dtype == torch.float64 else np.float32


def _c_round(v: np.ndarray) -> np.ndarray:
    """C's round(): halves away from zero (numpy rounds them to even)."""
    v = v.astype(np.float64)
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


class _RoiLayer(Layer):
    """Shared checks: bottom 0 (N, C, H, W) features, bottom 1 (R, 5) regions."""

    exact_bottoms = 2
    exact_tops = 1

    def _check(self, bottom_shapes):
        feat, rois = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        if len(feat) != 4:
            self.fail(f"bottom 0 {_fmt(feat)} must be 4-d (N, C, H, W)")
        per_roi = int(np.prod(rois[1:])) if len(rois) > 1 else 1
        if not rois or per_roi != 5:
            self.fail(f"bottom 1 {_fmt(rois)} must hold 5 values per region "
                      "([batch_index, x1, y1, x2, y2]); C x H x W must be 5")
        return feat, rois

    def _batch_index(self, value, batch: int) -> int:
        b = int(value)  # static_cast<int>: truncation
        if not 0 <= b < batch:
            self.fail(f"region batch index {value:g} is outside [0, {batch - 1}]", DataError)
        return b


@LAYERS.register()
class ROIPooling(_RoiLayer):
    """Max-pool each region of interest into a fixed pooled_h x pooled_w grid (Fast R-CNN).

    py-faster-rcnn: the region corners are scaled by ``spatial_scale`` and rounded
    (``round(x1 * s)``, ...); the region is ``max(x2 - x1 + 1, 1)`` wide (same for
    the height) and bin (ph, pw) covers rows ``[floor(ph * bh), ceil((ph + 1) * bh))``
    shifted by the region's start and clipped to the map, ``bh = height / pooled_h``.
    Each output is the bin's maximum (the first one in row-major order on ties),
    0 for an empty bin; the gradient goes to that maximum.

    Args:
        pooled_h, pooled_w: the output grid (both > 0).
        spatial_scale: feature-map pixels per image pixel (default 1, e.g. 1/16).

    Shape: (N, C, H, W) and (R, 5) -> (R, C, pooled_h, pooled_w).
    """

    type = "ROIPooling"
    fork = forks.FASTER_RCNN

    def __init__(self, pooled_h=0, pooled_w=0, spatial_scale=1.0, name: str = "", phase: int = TRAIN):
        super().__init__(name, phase)
        self.pooled_h, self.pooled_w = int(pooled_h), int(pooled_w)
        if self.pooled_h <= 0 or self.pooled_w <= 0:
            self.fail(f"roi_pooling_param: pooled_h and pooled_w must be > 0 "
                      f"(got {self.pooled_h}, {self.pooled_w})", ConfigError)
        self.spatial_scale = float(spatial_scale)

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        p = param.roi_pooling_param
        return cls(p.pooled_h, p.pooled_w, p.spatial_scale, name=param.name, phase=phase)

    def reshape(self, bottom_shapes):
        feat, rois = self._check(bottom_shapes)
        return [(rois[0], feat[1], self.pooled_h, self.pooled_w)]

    def bins(self, roi: np.ndarray, hw) -> tuple:
        """(row starts, row ends, col starts, col ends) of one region's bins, clipped."""
        dt = roi.dtype.type
        start_w, start_h, end_w, end_h = (int(v) for v in _c_round(roi[1:5] * dt(self.spatial_scale)))
        rh = max(end_h - start_h + 1, 1)
        rw = max(end_w - start_w + 1, 1)
        out = []
        for n_bins, size, start, full in ((self.pooled_h, rh, start_h, hw[0]),
                                          (self.pooled_w, rw, start_w, hw[1])):
            bin_size = dt(size) / dt(n_bins)
            idx = np.arange(n_bins).astype(roi.dtype)
            lo = np.floor(idx * bin_size).astype(np.int64) + start
            hi = np.ceil((idx + 1) * bin_size).astype(np.int64) + start
            out += [np.clip(lo, 0, full), np.clip(hi, 0, full)]
        return tuple(out)

    def forward(self, x, rois):
        self._check([x.shape, rois.shape])
        n_rois, (_, c, h, w) = rois.shape[0], x.shape
        r = rois.detach().reshape(n_rois, 5).cpu().numpy().astype(_np_dtype(x))
        outs = []
        hs, ws = np.arange(h), np.arange(w)
        for k in range(n_rois):
            b = self._batch_index(r[k, 0], x.shape[0])
            h0, h1, w0, w1 = self.bins(r[k], (h, w))
            col = torch.from_numpy((ws >= w0[:, None]) & (ws < w1[:, None])).to(x.device)  # (pw, W)
            row = torch.from_numpy((hs >= h0[:, None]) & (hs < h1[:, None])).to(x.device)  # (ph, H)
            fm = x[b]  # (C, H, W)
            # max over each bin's columns, then over its rows: the first maximum in
            # row-major order, as the fork's strict ">" scan finds it
            v = fm[:, :, None, :].masked_fill(~col[None, None], float("-inf"))
            v = v.max(dim=3).values  # (C, H, pw)
            v = v[:, None].masked_fill(~row[None, :, :, None], float("-inf"))  # (C, ph, H, pw)
            v = v.max(dim=2).values  # (C, ph, pw)
            empty = torch.from_numpy((h1 <= h0)[:, None] | (w1 <= w0)[None, :]).to(x.device)
            outs.append(v.masked_fill(empty[None], 0.0))
        if not outs:
            return x.new_zeros((0, c, self.pooled_h, self.pooled_w))
        return torch.stack(outs)


@LAYERS.register()
class PSROIPooling(_RoiLayer):
    """Position-sensitive average pooling of regions of interest (R-FCN).

    R-FCN: with k = ``group_size``, the region ``[round(x1), round(x2) + 1) *
    spatial_scale`` (same for y; at least 0.1 wide) is cut into k x k bins of size
    ``roi / k``; bin (i, j) covers ``[floor(i * b + start), ceil((i + 1) * b + start))``
    clipped to the map. Output channel ``o`` at bin (i, j) averages input channel
    ``(o * k + i) * k + j`` over the bin (0 for an empty bin); the gradient is spread
    evenly over the bin.

    Args:
        spatial_scale: feature-map pixels per image pixel (required).
        output_dim: channels of the top (required); group_size: k (required). The
            input must have ``output_dim * k * k`` channels.

    Shape: (N, output_dim * k * k, H, W) and (R, 5) -> (R, output_dim, k, k).
    """

    type = "PSROIPooling"
    fork = forks.RFCN

    def __init__(self, spatial_scale=None, output_dim=None, group_size=None, name: str = "",
                 phase: int = TRAIN):
        super().__init__(name, phase)
        for field, v in (("spatial_scale", spatial_scale), ("output_dim", output_dim),
                         ("group_size", group_size)):
            if v is None:
                self.fail(f"psroi_pooling_param.{field} is required", ConfigError)
        self.spatial_scale = float(spatial_scale)
        self.output_dim, self.group_size = int(output_dim), int(group_size)
        if self.output_dim <= 0 or self.group_size <= 0:
            self.fail(f"psroi_pooling_param: output_dim and group_size must be > 0 "
                      f"(got {self.output_dim}, {self.group_size})", ConfigError)

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        p = param.psroi_pooling_param

        def opt(f):
            return getattr(p, f) if p.HasField(f) else None

        return cls(opt("spatial_scale"), opt("output_dim"), opt("group_size"), name=param.name, phase=phase)

    def reshape(self, bottom_shapes):
        feat, rois = self._check(bottom_shapes)
        k = self.group_size
        if feat[1] != self.output_dim * k * k:
            self.fail(f"bottom 0 {_fmt(feat)} has {feat[1]} channels; output_dim {self.output_dim} x "
                      f"group_size {k} x {k} needs {self.output_dim * k * k}")
        return [(rois[0], self.output_dim, k, k)]

    def bins(self, roi: np.ndarray, hw) -> tuple:
        """(row starts, row ends, col starts, col ends) of one region's k bins, clipped."""
        dt = roi.dtype.type
        s = dt(self.spatial_scale)
        start_w, start_h = dt(_c_round(roi[1:2])[0]) * s, dt(_c_round(roi[2:3])[0]) * s
        end_w = dt(_c_round(np.array([np.float64(roi[3]) + 1.0]))[0]) * s  # C++: float + 1. is double
        end_h = dt(_c_round(np.array([np.float64(roi[4]) + 1.0]))[0]) * s
        k = self.group_size
        idx = np.arange(k).astype(roi.dtype)
        out = []
        for start, end, full in ((start_h, end_h, hw[0]), (start_w, end_w, hw[1])):
            bin_size = max(end - start, dt(0.1)) / dt(k)
            lo = np.floor(idx * bin_size + start).astype(np.int64)
            hi = np.ceil((idx + 1) * bin_size + start).astype(np.int64)
            out += [np.clip(lo, 0, full), np.clip(hi, 0, full)]
        return tuple(out)

    def forward(self, x, rois):
        self._check([x.shape, rois.shape])
        n_rois, (_, _, h, w) = rois.shape[0], x.shape
        k, o = self.group_size, self.output_dim
        r = rois.detach().reshape(n_rois, 5).cpu().numpy().astype(_np_dtype(x))
        hs, ws = np.arange(h), np.arange(w)
        outs = []
        for n in range(n_rois):
            b = self._batch_index(r[n, 0], x.shape[0])
            h0, h1, w0, w1 = self.bins(r[n], (h, w))
            mh = torch.from_numpy((hs >= h0[:, None]) & (hs < h1[:, None])).to(x)  # (k, H)
            mw = torch.from_numpy((ws >= w0[:, None]) & (ws < w1[:, None])).to(x)  # (k, W)
            g = x[b].reshape(o, k, k, h, w)  # channel (o * k + i) * k + j
            sums = torch.einsum("oijhw,jw->oijh", g, mw)
            sums = torch.einsum("oijh,ih->oij", sums, mh)
            area = torch.from_numpy(np.outer(h1 - h0, w1 - w0)).to(x)
            outs.append(torch.where(area > 0, sums / area.clamp_min(1), torch.zeros_like(sums)))
        if not outs:
            return x.new_zeros((0, o, k, k))
        return torch.stack(outs)


@LAYERS.register()
class SmoothL1Loss(Layer):
    """Smooth L1 loss of box regression (Fast R-CNN; the SSD fork's variant too).

    py-faster-rcnn: ``d = w_in * (b0 - b1)``, ``f(d) = 0.5 * sigma^2 * d^2`` when
    ``|d| < 1 / sigma^2`` else ``|d| - 0.5 / sigma^2``, loss ``= sum(w_out * f(d)) / N``
    with N = bottom 0's first dimension. Four bottoms give inside and outside
    weights (py-faster-rcnn); three bottoms give inside weights only (the SSD fork's
    form). Gradients reach bottoms 0 and 1 (with opposite signs), never the weights.

    Args:
        sigma: ``smooth_l1_loss_param.sigma`` (default 1).

    Shape: (N, ...) predictions, targets and weights of one shape -> loss ().
    """

    type = "SmoothL1Loss"
    fork = forks.FASTER_RCNN
    min_bottoms = 2
    max_bottoms = 4
    exact_tops = 1
    is_loss = True

    def __init__(self, sigma=1.0, name: str = "", phase: int = TRAIN):
        super().__init__(name, phase)
        self.sigma2 = float(sigma) * float(sigma)
        if self.sigma2 == 0:
            self.fail("smooth_l1_loss_param.sigma must not be 0", ConfigError)

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        return cls(param.smooth_l1_loss_param.sigma, name=param.name, phase=phase)

    def reshape(self, bottom_shapes):
        first = tuple(bottom_shapes[0])
        if not first:
            self.fail("bottom 0 must have a batch axis")
        for i, s in enumerate(bottom_shapes[1:], start=1):
            if tuple(s) != first:
                what = ("targets", "inside weights", "outside weights")[i - 1]
                self.fail(f"bottom {i} ({what}) {_fmt(s)} must have the shape of bottom 0 {_fmt(first)}")
        return [()]

    def forward(self, pred, target, w_in=None, w_out=None):
        d = pred - target
        if w_in is not None:
            d = w_in.detach() * d
        a = d.abs()
        f = torch.where(a < 1.0 / self.sigma2, 0.5 * d * d * self.sigma2, a - 0.5 / self.sigma2)
        if w_out is not None:
            f = w_out.detach() * f
        return f.sum() / pred.shape[0]

