"""SSD's layers (weiliu89/caffe, branch ssd): Normalize, PriorBox, Permute, DetectionOutput.

Each follows the fork's ``src/caffe/layers/<name>_layer.cpp``; box arithmetic lives
in ``ssd_boxes.py``. MultiBoxLoss is in ``fork_multibox.py``. Every class carries
``fork`` (the attribution ``pipeline summary`` prints).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import ConfigError
from ..fillers import Filler, fill
from ..formats import forks
from ..proto import caffe_pb2
from ..registry import LAYERS
from . import ssd_boxes
from .base import TRAIN, Layer


def _fmt(shape) -> str:
    return str(tuple(int(d) for d in shape))


def _legacy(shape, i: int) -> int:
    """Caffe's num()/channels()/height()/width(): axis ``i``, 1 when absent."""
    return int(shape[i]) if len(shape) > i else 1


def _opt(msg, field):
    return getattr(msg, field) if msg.HasField(field) else None


@LAYERS.register()
class Normalize(Layer):
    """L2-normalise each sample (or each position) across channels, then scale (SSD's conv4_3_norm).

    Caffe (``normalize_layer.cpp``), with x of shape (N, C, H, W):

    - ``across_spatial`` (default): ``norm_n = sqrt(sum_{c,h,w} x^2 + eps)``,
      ``y = x * (1 / norm_n)``;
    - otherwise: ``norm_{n,h,w} = sqrt(eps + sum_c x^2)``, ``y = x / norm``;

    then ``y *= scale`` (one learnable value when ``channel_shared``, else one per
    channel). Caffe's hand-written backward is the exact gradient of these formulas,
    which autograd gives.

    Args:
        across_spatial: one norm per sample (True) or per position (False).
        channel_shared: one scale for all channels (default True) or one per channel.
        eps: added under the square root (default 1e-10).
        scale_filler: the scale's filler (default constant 1; SSD300 uses 20).

    Shape: (N, C, H, W) (2 to 4 axes) -> same. Blob 0: the scale, shape () or (C,).
    """

    type = "Normalize"
    fork = forks.SSD
    exact_bottoms = 1
    exact_tops = 1

    def __init__(self, across_spatial=True, channel_shared=True, eps=1e-10, scale_filler=None,
                 name: str = "", phase: int = TRAIN):
        super().__init__(name, phase)
        self.across_spatial = bool(across_spatial)
        self.channel_shared = bool(channel_shared)
        self.eps = float(eps)
        self.scale_filler = Filler.coerce(scale_filler, Filler(type="constant", value=1.0))

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        p = param.norm_param
        filler = p.scale_filler if p.HasField("scale_filler") else None
        return cls(p.across_spatial, p.channel_shared, p.eps, filler, name=param.name, phase=phase)

    def _check(self, shape):
        if not 2 <= len(shape) <= 4:
            self.fail(f"bottom {_fmt(shape)} must have 2 to 4 axes (N, C[, H[, W]])")

    def setup(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        self._check(shape)
        blob = () if self.channel_shared else (int(shape[1]),)
        self.add_blob(fill(self.scale_filler, blob))

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        self._check(shape)
        want = () if self.channel_shared else (int(shape[1]),)
        if tuple(self.blobs[0].shape) != want:
            self.fail(f"scale blob {_fmt(self.blobs[0].shape)} does not fit bottom {_fmt(shape)}; "
                      f"expected {_fmt(want)} (channel_shared={self.channel_shared})")
        return [shape]

    def forward(self, x):
        n, c = x.shape[0], x.shape[1]
        v = x.reshape(n, c, -1)
        eps = torch.tensor(self.eps, dtype=x.dtype, device=x.device)
        if self.across_spatial:
            norm = torch.sqrt((v * v).sum(dim=(1, 2), keepdim=True) + eps)
            y = v * (1 / norm)
        else:
            norm = torch.sqrt(eps + (v * v).sum(dim=1, keepdim=True))
            y = v / norm
        scale = self.blobs[0]
        y = y * (scale if self.channel_shared else scale.reshape(1, c, 1))
        return y.reshape(x.shape)


@LAYERS.register()
class PriorBox(Layer):
    """The default (prior) boxes of one feature map, with their variances.

    Caffe (``prior_box_layer.cpp``), for each cell (h, w) of bottom 0's H x W grid,
    centre ``((w + offset) * step_w, (h + offset) * step_h)`` with ``step = image /
    grid`` unless given, and for each ``min_size`` s (truncated to an integer, as
    Caffe does):

    1. a square of side s;
    2. with ``max_size`` m: a square of side sqrt(s * m) (m truncated too);
    3. for each aspect ratio r != 1 (``aspect_ratio`` values deduplicated, each
       followed by 1/r when ``flip``): width ``b * sqrt(r)``, height ``b / sqrt(r)``
       with b = sqrt(s * m) when max sizes are given, else s.

    Each box is written as (xmin, ymin, xmax, ymax) / image size, clipped to [0, 1]
    when ``clip``. Channel 1 holds the variance: one value repeated, or four per box.

    Args:
        min_size (required), max_size (as many as min_size), aspect_ratio, flip
        (default True), clip (default False), variance (default 0.1; one or four
        values), img_size or img_h/img_w (default: bottom 1's size), step or
        step_h/step_w (default image / grid), offset (default 0.5).

    Shape: bottoms (N, C, H, W) feature map and (N, C', H_img, W_img) image ->
    (1, 2, H * W * num_priors * 4). The values depend on shapes only.
    """

    type = "PriorBox"
    fork = forks.SSD
    exact_bottoms = 2
    exact_tops = 1

    def __init__(self, min_size=(), max_size=(), aspect_ratio=(), flip=True, clip=False,
                 variance=(), img_size=None, img_h=None, img_w=None, step=None, step_h=None,
                 step_w=None, offset=0.5, name: str = "", phase: int = TRAIN):
        super().__init__(name, phase)
        self.min_sizes = [float(s) for s in min_size]
        self.max_sizes = [float(s) for s in max_size]
        self.flip, self.clip, self.offset = bool(flip), bool(clip), float(offset)
        if not self.min_sizes:
            self.fail("prior_box_param: give at least one min_size", ConfigError)
        if any(s <= 0 for s in self.min_sizes):
            self.fail(f"prior_box_param.min_size {self.min_sizes} must be positive", ConfigError)
        if self.max_sizes:
            if len(self.max_sizes) != len(self.min_sizes):
                self.fail(f"prior_box_param: {len(self.max_sizes)} max_size values for "
                          f"{len(self.min_sizes)} min_size values; give one per min_size", ConfigError)
            for lo, hi in zip(self.min_sizes, self.max_sizes):
                if not hi > lo:
                    self.fail(f"prior_box_param: max_size {hi:g} must be greater than min_size {lo:g}",
                              ConfigError)
        ars = [np.float32(1.0)]
        for r in aspect_ratio:
            r = np.float32(r)
            if any(abs(float(r) - float(a)) < 1e-6 for a in ars):
                continue
            ars.append(r)
            if self.flip:
                ars.append(np.float32(1.0 / float(r)))
        self.aspect_ratios = ars
        self.num_priors = len(ars) * len(self.min_sizes) + len(self.max_sizes)
        variance = [float(v) for v in variance]
        if len(variance) > 1 and len(variance) != 4:
            self.fail(f"prior_box_param: give one variance or four, got {len(variance)}", ConfigError)
        if any(v <= 0 for v in variance):
            self.fail(f"prior_box_param.variance {variance} must be positive", ConfigError)
        self.variance = variance or [0.1]
        self.img_hw = self._pair("img", img_size, img_h, img_w, int)
        self.step_hw = self._pair("step", step, step_h, step_w, float)

    def _pair(self, what, one, h, w, kind):
        if h is not None or w is not None:
            if one is not None:
                self.fail(f"prior_box_param: give {what}_size or {what}_h/{what}_w, not both"
                          if what == "img" else "prior_box_param: give step or step_h/step_w, not both",
                          ConfigError)
            h, w = kind(h or 0), kind(w or 0)
            if h <= 0 or w <= 0:
                self.fail(f"prior_box_param: {what}_h and {what}_w must both be > 0 (got {h}, {w})",
                          ConfigError)
            return h, w
        if one is not None:
            if kind(one) <= 0:
                self.fail(f"prior_box_param: {what} must be > 0 (got {one})", ConfigError)
            return kind(one), kind(one)
        return None

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        p = param.prior_box_param
        return cls(list(p.min_size), list(p.max_size), list(p.aspect_ratio), p.flip, p.clip,
                   list(p.variance), _opt(p, "img_size"), _opt(p, "img_h"), _opt(p, "img_w"),
                   _opt(p, "step"), _opt(p, "step_h"), _opt(p, "step_w"), p.offset,
                   name=param.name, phase=phase)

    def reshape(self, bottom_shapes):
        feat = tuple(bottom_shapes[0])
        n = _legacy(feat, 2) * _legacy(feat, 3) * self.num_priors * 4
        if n <= 0:
            self.fail(f"bottom 0 {_fmt(feat)} has an empty grid")
        return [(1, 2, n)]

    def priors(self, feat_hw, img_hw) -> np.ndarray:
        """(2, H * W * num_priors * 4) float32: boxes, then variances (Caffe's arithmetic)."""
        lh, lw = feat_hw
        ih, iw = self.img_hw or img_hw
        if self.step_hw is None:
            step_w, step_h = np.float32(iw) / np.float32(lw), np.float32(ih) / np.float32(lh)
        else:
            step_h, step_w = np.float32(self.step_hw[0]), np.float32(self.step_hw[1])
        off = np.float32(self.offset)
        cx = ((np.arange(lw, dtype=np.float32) + off) * step_w).astype(np.float64)
        cy = ((np.arange(lh, dtype=np.float32) + off) * step_h).astype(np.float64)
        sizes = []  # (box_w, box_h) per prior, float32 as Caffe's floats
        for s, smin in enumerate(self.min_sizes):
            mn = int(smin)
            sizes.append((np.float32(mn), np.float32(mn)))
            if self.max_sizes:
                mx = int(self.max_sizes[s])
                b = np.float32(math.sqrt(mn * mx))
                sizes.append((b, b))
            base = math.sqrt(mn * int(self.max_sizes[s])) if self.max_sizes else float(mn)
            for r in self.aspect_ratios:
                if abs(float(r) - 1.0) < 1e-6:
                    continue
                root = math.sqrt(float(r))
                sizes.append((np.float32(base * root), np.float32(base / root)))
        bw = np.array([w for w, _ in sizes], dtype=np.float64)
        bh = np.array([h for _, h in sizes], dtype=np.float64)
        gx, gy = np.meshgrid(cx, cy)  # (lh, lw)
        gx, gy = gx[..., None], gy[..., None]
        boxes = np.stack([(gx - bw / 2.0) / iw, (gy - bh / 2.0) / ih,
                          (gx + bw / 2.0) / iw, (gy + bh / 2.0) / ih], axis=-1).astype(np.float32)
        boxes = boxes.reshape(-1)
        if self.clip:
            boxes = np.clip(boxes, 0.0, 1.0)
        var = np.resize(np.array(self.variance, dtype=np.float32), boxes.shape)
        return np.stack([boxes, var])

    def forward(self, feat, image):
        feat_hw = (_legacy(feat.shape, 2), _legacy(feat.shape, 3))
        img_hw = (_legacy(image.shape, 2), _legacy(image.shape, 3))
        out = torch.from_numpy(self.priors(feat_hw, img_hw)).to(device=feat.device, dtype=feat.dtype)
        return out.unsqueeze(0)


@LAYERS.register()
class Permute(Layer):
    """Reorder a blob's axes (SSD's conv -> (N, H, W, C) before flattening the predictions).

    Caffe (``permute_layer.cpp``): the listed ``order`` first, then the axes not
    listed, in their order; an order equal to the identity shares the bottom.

    Args:
        order: axis indices, each < the number of axes, no repeats.

    Shape: ``top.shape[i] = bottom.shape[order[i]]``.
    """

    type = "Permute"
    fork = forks.SSD
    exact_bottoms = 1
    exact_tops = 1

    def __init__(self, order=(), name: str = "", phase: int = TRAIN):
        super().__init__(name, phase)
        self.order = tuple(int(o) for o in order)

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        return cls(list(param.permute_param.order), name=param.name, phase=phase)

    def _orders(self, ndim: int) -> tuple:
        seen = []
        for o in self.order:
            if o >= ndim:
                self.fail(f"permute_param.order {o} is not an axis of a {ndim}-axis bottom", ConfigError)
            if o in seen:
                self.fail(f"permute_param.order {list(self.order)} repeats axis {o}", ConfigError)
            seen.append(o)
        return tuple(seen + [i for i in range(ndim) if i not in seen])

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        return [tuple(shape[o] for o in self._orders(len(shape)))]

    def forward(self, x):
        orders = self._orders(x.dim())
        if orders == tuple(range(x.dim())):
            return x
        return x.permute(orders).contiguous()


@LAYERS.register()
class DetectionOutput(Layer):
    """Decode the predicted offsets against the priors, NMS per class, keep the best.

    Caffe (``detection_output_layer.cpp``), per image: decode every prior's offsets
    (``code_type``, variances from bottom 2 unless ``variance_encoded_in_target``);
    for each class but ``background_label_id``, SSD's ApplyNMSFast over the scores
    above ``confidence_threshold`` (``nms_param``: threshold, ``top_k``, ``eta``);
    if more than ``keep_top_k`` survive, keep the ``keep_top_k`` highest scores of
    the image. Rows ``[image, label, score, xmin, ymin, xmax, ymax]`` come out image
    by image, classes ascending, scores descending within a class. No gradient
    (Caffe's Backward is NOT_IMPLEMENTED).

    Which SSD commit: boxes are written clipped to [0, 1] and an output without
    detections is one row of -1, as in weiliu89/caffe@d9f9dfe (CPU and GPU alike);
    later commits write the decoded boxes unclipped and one fake row per image.
    NMS runs on the unclipped boxes in both. The adaptive ``eta`` of later commits
    is supported (default 1 = plain NMS). Sorting ties keep prior order (Caffe's
    final ``std::sort`` is unstable). ``save_output_param`` and ``visualize`` are
    accepted and ignored: results are never written to files or shown.

    Shape: bottoms loc (N, P * L * 4), conf (N, P * C) (softmax probabilities),
    priors (1, 2, P * 4), optionally the image (ignored) -> top (1, 1, K, 7), K
    known only after forward (the top is reshaped then, as Caffe does).
    """

    type = "DetectionOutput"
    fork = forks.SSD
    min_bottoms = 3
    max_bottoms = 4
    exact_tops = 1

    def __init__(self, num_classes=None, share_location=True, background_label_id=0,
                 nms_threshold=0.3, top_k=None, eta=1.0, code_type="CORNER",
                 variance_encoded_in_target=False, keep_top_k=-1, confidence_threshold=None,
                 name: str = "", phase: int = TRAIN):
        super().__init__(name, phase)
        if num_classes is None:
            self.fail("detection_output_param.num_classes is required", ConfigError)
        self.num_classes = int(num_classes)
        self.share_location = bool(share_location)
        self.num_loc_classes = 1 if self.share_location else self.num_classes
        self.background_label_id = int(background_label_id)
        if self.share_location and self.background_label_id == -1:
            self.fail("share_location with background_label_id -1 is not supported (SSD skips the "
                      "shared location predictions as 'background' and then fails)", ConfigError)
        if nms_threshold < 0:
            self.fail(f"nms_param.nms_threshold={nms_threshold} must be >= 0", ConfigError)
        if not 0 < eta <= 1:
            self.fail(f"nms_param.eta={eta} must be in (0, 1]", ConfigError)
        self.nms_threshold, self.eta = float(nms_threshold), float(eta)
        self.top_k = -1 if top_k is None else int(top_k)
        if code_type not in ssd_boxes.CODE_TYPES:
            self.fail(f"code_type {code_type!r} is not one of {ssd_boxes.CODE_TYPES}", ConfigError)
        self.code_type = code_type
        self.variance_encoded_in_target = bool(variance_encoded_in_target)
        self.keep_top_k = int(keep_top_k)
        self.confidence_threshold = -np.finfo(np.float32).max if confidence_threshold is None \
            else float(confidence_threshold)

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        p = param.detection_output_param
        nms = p.nms_param
        return cls(_opt(p, "num_classes"), p.share_location, p.background_label_id,
                   nms.nms_threshold, _opt(nms, "top_k"), nms.eta,
                   caffe_pb2.PriorBoxParameter.CodeType.Name(p.code_type),
                   p.variance_encoded_in_target, p.keep_top_k, _opt(p, "confidence_threshold"),
                   name=param.name, phase=phase)

    def _num_priors(self, bottom_shapes) -> int:
        loc, conf, prior = (tuple(s) for s in bottom_shapes[:3])
        if loc[0] != conf[0]:
            self.fail(f"loc {_fmt(loc)} and conf {_fmt(conf)} must have the same batch size")
        p = _legacy(prior, 2) // 4
        if p * self.num_loc_classes * 4 != _legacy(loc, 1):
            self.fail(f"{p} priors (bottom 2 {_fmt(prior)}) need {p * self.num_loc_classes * 4} "
                      f"location values per image, bottom 0 {_fmt(loc)} has {_legacy(loc, 1)}")
        if p * self.num_classes != _legacy(conf, 1):
            self.fail(f"{p} priors x {self.num_classes} classes need {p * self.num_classes} "
                      f"confidences per image, bottom 1 {_fmt(conf)} has {_legacy(conf, 1)}")
        return p

    def reshape(self, bottom_shapes):
        self._num_priors(bottom_shapes)
        return [(1, 1, 1, 7)]

    def detect(self, loc: np.ndarray, conf: np.ndarray, prior: np.ndarray) -> np.ndarray:
        """The (K, 7) detections for arrays loc (N, P*L*4), conf (N, P*C), prior (2, P*4)."""
        n = loc.shape[0]
        p = prior.shape[1] // 4
        dt = loc.dtype
        boxes_p, var_p = prior[0].reshape(p, 4).astype(dt), prior[1].reshape(p, 4).astype(dt)
        loc = loc.reshape(n, p, self.num_loc_classes, 4)
        conf = conf.reshape(n, p, self.num_classes)
        rows = []
        for i in range(n):
            decoded = {}
            for c in range(self.num_loc_classes):
                label = -1 if self.share_location else c
                if label == self.background_label_id:
                    continue
                b = ssd_boxes.decode(boxes_p, var_p, loc[i, :, c], self.code_type,
                                     self.variance_encoded_in_target)
                decoded[label] = (b, ssd_boxes.bbox_size(b))
            kept = {}
            for c in range(self.num_classes):
                if c == self.background_label_id:
                    continue
                b, s = decoded[-1 if self.share_location else c]
                kept[c] = ssd_boxes.nms_fast(b, s, conf[i, :, c], self.confidence_threshold,
                                             self.nms_threshold, self.eta, self.top_k)
            total = sum(len(v) for v in kept.values())
            if -1 < self.keep_top_k < total:
                flat = [(conf[i, j, c], c, j) for c, idx in kept.items() for j in idx]
                order = sorted(range(len(flat)), key=lambda k: -flat[k][0])[: self.keep_top_k]
                kept = {}
                for k in order:
                    kept.setdefault(flat[k][1], []).append(flat[k][2])
            for c in sorted(kept):
                b, _ = decoded[-1 if self.share_location else c]
                for j in kept[c]:
                    box = np.clip(b[j], 0, 1)
                    rows.append([i, c, conf[i, j, c], *box])
        if not rows:
            return np.full((1, 7), -1, dtype=dt)
        return np.array(rows, dtype=dt)

    def forward(self, loc, conf, prior, image=None):
        self._num_priors([loc.shape, conf.shape, prior.shape])
        n = loc.shape[0]
        with torch.no_grad():
            det = self.detect(loc.detach().reshape(n, -1).cpu().numpy(),
                              conf.detach().reshape(n, -1).cpu().numpy(),
                              prior.detach().reshape(2, -1).cpu().numpy())
        return torch.from_numpy(det).to(device=loc.device).reshape(1, 1, -1, 7)

