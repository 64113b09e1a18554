"""Loss layers.

SoftmaxWithLoss, EuclideanLoss, SigmoidCrossEntropyLoss, HingeLoss, InfogainLoss,
ContrastiveLoss, MultinomialLogisticLoss (``is_loss``: top 0 is a 0-d tensor);
Accuracy lives in ``accuracy.py``. Each follows BVLC Caffe master (``src/caffe/layers/<name>_layer.cpp``):
the same ``Reshape`` checks, forward values and backward rules.

Labels arrive as float tensors holding integers and are truncated toward zero, as
Caffe's ``static_cast<int>`` does. Gradients never flow into labels (nor into an
infogain matrix given as a bottom); Caffe refuses to back-propagate into them.

Loss normalisation (``loss_param.normalization``, Caffe's ``get_normalizer``):
FULL = outer * inner positions, VALID = positions whose label is not ignored,
BATCH_SIZE = outer, NONE = 1; the divisor is floored at 1 so that a batch with
every label ignored gives 0, not NaN.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError, ParseError, PipelineError
from ..formats.binary import read_blobproto
from ..formats.blob import blobproto_to_array
from ..proto import caffe_pb2
from ..registry import LAYERS
from .base import TRAIN, Layer, count
from .labels import Labels, check_label_count, class_dims, fmt_shape, ignore_label_of, normalizer

NORMALIZATIONS = ("FULL", "VALID", "BATCH_SIZE", "NONE")
FLT_MIN = torch.finfo(torch.float32).tiny  # Caffe's clamp before log in SoftmaxWithLoss
LOG_THRESHOLD = 1e-20  # Caffe's kLOG_THRESHOLD


def _normalization(loss_param, default: str) -> str:
    """``normalization`` if set, else the legacy ``normalize`` (true: VALID, false: BATCH_SIZE)."""
    if loss_param.HasField("normalization"):
        return caffe_pb2.LossParameter.NormalizationMode.Name(loss_param.normalization)
    if loss_param.HasField("normalize"):
        return "VALID" if loss_param.normalize else "BATCH_SIZE"
    return default


def _legacy4(layer: Layer, shape, what: str) -> tuple:
    """Caffe's legacy (num, channels, height, width) view of a shape (missing axes read 1)."""
    if len(shape) > 4:
        layer.fail(f"{what} {fmt_shape(shape)} has more than 4 axes; this layer takes at most 4")
    return tuple(int(d) for d in shape) + (1,) * (4 - len(shape))


class _KeepGradClamp(torch.autograd.Function):
    """``max(x, lo)`` whose backward passes the gradient through unchanged.

    Caffe clamps only the forward value (``log(max(p, FLT_MIN))``); its hand-written
    backwards (p - onehot, and the infogain row formula) ignore the clamp.
    """

    @staticmethod
    def forward(ctx, x, lo):
        return x.clamp_min(lo)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def _log_softmax(x, outer: int, classes: int, inner: int) -> torch.Tensor:
    """log softmax over the class axis, laid out (outer, inner, classes).

    The class axis is moved last because torch's CPU kernel for a middle axis is
    much slower on small blobs.
    """
    return torch.log_softmax(x.reshape(outer, classes, inner).transpose(1, 2), dim=2)


def _probs(logp: torch.Tensor, shape) -> torch.Tensor:
    """The softmax top in the bottom's layout, without gradient (Caffe ignores its diff)."""
    return logp.detach().exp().transpose(1, 2).reshape(shape)


class _Loss(Layer):
    """Shared arity and ``LossLayer::Reshape``: same first dimension, a 0-d top."""

    exact_bottoms = 2
    exact_tops = 1
    is_loss = True

    def _options(self, ignore_label, normalization: str):
        """Store ``ignore_label`` / ``normalization`` (layers that take loss_param)."""
        if normalization not in NORMALIZATIONS:
            self.fail(
                f"normalization {normalization!r} is not one of {NORMALIZATIONS}", ConfigError
            )
        self.ignore_label = None if ignore_label is None else int(ignore_label)
        self.normalization = normalization

    def reshape(self, bottom_shapes):
        a, b = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        if not a or not b or a[0] != b[0]:
            self.fail(f"bottoms {fmt_shape(a)} and {fmt_shape(b)} must have the same first dimension")
        return [()]


@LAYERS.register()
class SoftmaxWithLoss(_Loss):
    """Softmax followed by the multinomial logistic loss, in one numerically stable step.

    Caffe: ``p = softmax(x)`` over ``axis``; ``loss = -sum_{i not ignored}
    log(max(p[i, label_i], FLT_MIN)) / normalizer``; gradient ``(p - onehot) /
    normalizer`` (zero at ignored positions; the FLT_MIN clamp does not touch it).

    Args:
        axis: the class axis (``softmax_param.axis``, default 1).
        ignore_label: label value to skip (``loss_param.ignore_label``, default none).
        normalization: FULL, VALID (default), BATCH_SIZE or NONE; ``from_param`` maps the
            legacy ``normalize`` (true: VALID, false: BATCH_SIZE) when it is not set.

    Shape:
        x ``(N, C, H, W)`` (any shape), labels with ``outer * inner`` values, e.g.
        ``(N, H, W)`` or ``(N, 1, H, W)`` -> loss ``()``; optional top 1 = p, shape of x.
    """

    type = "SoftmaxWithLoss"
    exact_tops = None
    min_tops = 1
    max_tops = 2

    def __init__(self, axis=1, ignore_label=None, normalization="VALID", name="", phase=TRAIN):
        super().__init__(name, phase)
        self.axis = int(axis)
        self._options(ignore_label, normalization)

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        lp = param.loss_param
        axis = param.softmax_param.axis
        return cls(axis, ignore_label_of(lp), _normalization(lp, "VALID"), param.name, phase)

    def reshape(self, bottom_shapes):
        super().reshape(bottom_shapes)
        check_label_count(self, bottom_shapes, self.axis, "softmax_param.axis")
        return [(), tuple(bottom_shapes[0])] if self.num_tops >= 2 else [()]

    def forward(self, x, label):
        _, outer, classes, inner = class_dims(self, x.shape, self.axis, "softmax_param.axis")
        labels = Labels(self, label, outer, inner, classes, self.ignore_label)
        logp = _log_softmax(x, outer, classes, inner)  # (outer, inner, classes)
        picked = logp.gather(2, labels.index.unsqueeze(2)).squeeze(2)  # (outer, inner)
        picked = _KeepGradClamp.apply(picked, math.log(FLT_MIN))
        norm = normalizer(self.normalization, outer, inner, labels.count)
        loss = -labels.mask(picked).sum() / norm
        if self.num_tops >= 2:
            # Caffe's Backward ignores top 1's diff: the probabilities carry no gradient.
            return loss, _probs(logp, x.shape)
        return loss


@LAYERS.register()
class EuclideanLoss(_Loss):
    """Half the mean (over the first axis) squared distance between two blobs.

    Caffe: ``loss = sum (a - b)^2 / (2 N)``, ``N = a.shape[0]``; gradients
    ``+(a - b) / N`` to a and ``-(a - b) / N`` to b.

    Shape:
        a ``(N, ...)``, b ``(N, ...)`` with the same count per item -> loss ``()``.
    """

    type = "EuclideanLoss"

    def reshape(self, bottom_shapes):
        super().reshape(bottom_shapes)
        a, b = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        if count(a, 1) != count(b, 1):
            self.fail(f"inputs {fmt_shape(a)} and {fmt_shape(b)} must have the same count per item")
        return [()]

    def forward(self, a, b):
        diff = a - b.reshape(a.shape)
        return diff.pow(2).sum() / (2 * a.shape[0])


@LAYERS.register()
class SigmoidCrossEntropyLoss(_Loss):
    """Cross-entropy of sigmoid(x) against targets in [0, 1], computed stably from x.

    Caffe: ``loss = -sum_{i not ignored} [x t - max(x, 0) - log(1 + exp(-|x|))] /
    normalizer``; gradient ``(sigmoid(x) - t) / normalizer`` (zero where ignored).
    A target is ignored when ``int(t) == ignore_label``.

    Args:
        ignore_label: target value to skip (``loss_param.ignore_label``, default none).
        normalization: default BATCH_SIZE for this layer (Caffe uses BATCH_SIZE when neither
            ``normalization`` nor the legacy ``normalize`` is set).

    Shape:
        x ``(N, ...)``, targets with the same count -> loss ``()``.
    """

    type = "SigmoidCrossEntropyLoss"

    def __init__(self, ignore_label=None, normalization="BATCH_SIZE", name="", phase=TRAIN):
        super().__init__(name, phase)
        self._options(ignore_label, normalization)

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        lp = param.loss_param
        return cls(ignore_label_of(lp), _normalization(lp, "BATCH_SIZE"), param.name, phase)

    def reshape(self, bottom_shapes):
        super().reshape(bottom_shapes)
        a, b = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        if count(a) != count(b):
            self.fail(f"inputs {fmt_shape(a)} and {fmt_shape(b)} must have the same count")
        return [()]

    def forward(self, x, target):
        outer, inner = int(x.shape[0]), count(x.shape, 1)
        t = target.detach().reshape(x.shape).to(x.dtype)
        # torch's backward for this op is exactly sigmoid(x) - t, as Caffe's.
        per = F.binary_cross_entropy_with_logits(x, t, reduction="none")
        valid_count = outer * inner
        if self.ignore_label is not None:
            valid = t.to(torch.long) != self.ignore_label
            per = torch.where(valid, per, torch.zeros_like(per))
            valid_count = valid.sum()
        return per.sum() / normalizer(self.normalization, outer, inner, valid_count)


@LAYERS.register()
class HingeLoss(_Loss):
    """One-versus-all hinge loss for classification.

    Caffe: ``t_k = +1`` at the label, ``-1`` elsewhere; L1: ``loss = sum max(0, 1 - t x)
    / N``; L2: ``loss = sum max(0, 1 - t x)^2 / N``.

    Args:
        norm: ``"L1"`` (default) or ``"L2"`` (``hinge_loss_param.norm``).

    Shape:
        x ``(N, C)`` (or ``(N, C, 1, 1)``; the items are flattened to D values), labels
        ``(N,)`` or ``(N, 1, ...)`` with values in [0, D) -> loss ``()``.
    """

    type = "HingeLoss"

    def __init__(self, norm="L1", name="", phase=TRAIN):
        super().__init__(name, phase)
        if norm not in ("L1", "L2"):
            self.fail(f"hinge_loss_param.norm {norm!r} is not L1 or L2", ConfigError)
        self.norm = norm

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        norm = caffe_pb2.HingeLossParameter.Norm.Name(param.hinge_loss_param.norm)
        return cls(norm=norm, name=param.name, phase=phase)

    def reshape(self, bottom_shapes):
        super().reshape(bottom_shapes)
        lab = tuple(bottom_shapes[1])
        if count(lab, 1) != 1:
            self.fail(f"label {fmt_shape(lab)} must hold one value per item, e.g. (N,) or (N, 1)")
        return [()]

    def forward(self, x, label):
        n = int(x.shape[0])
        scores = x.reshape(n, -1)
        labels = Labels(self, label, n, 1, scores.shape[1], None)
        sign = torch.full_like(scores, -1.0).scatter_(1, labels.index, 1.0)
        margin = F.relu(1 - sign * scores)  # relu: zero gradient at the kink, like sign(0)
        return (margin.sum() if self.norm == "L1" else margin.pow(2).sum()) / n


@LAYERS.register()
class InfogainLoss(_Loss):
    """Softmax then an infogain-weighted log loss (BVLC master's version).

    Caffe: ``p = softmax(x)`` over ``axis``; ``loss = -sum_{i not ignored} sum_l
    H[label_i, l] log(max(p[i, l], 1e-20)) / normalizer``; gradient
    ``(p * rowsum(H)[label] - H[label, :]) / normalizer``. With H = identity this
    is SoftmaxWithLoss.

    Args:
        source: ``.binaryproto`` BlobProto holding H (C x C values), read at setup;
            needed unless H is the third bottom or ``matrix`` is given.
        axis: the class axis (``infogain_loss_param.axis``, default 1).
        ignore_label: label value to skip (``loss_param.ignore_label``).
        normalization: FULL, VALID (default), BATCH_SIZE or NONE. Caffe rejects the
            legacy ``normalize`` for this layer, and so does ``from_param``.
        matrix: H given directly (any shape with C * C values); overrides ``source``.

    Shape:
        x ``(N, C, ...)``, labels with ``outer * inner`` values, optional H bottom with
        C * C values -> loss ``()``; optional top 1 = p, shape of x.
    """

    type = "InfogainLoss"
    exact_bottoms = None
    min_bottoms = 2
    max_bottoms = 3
    exact_tops = None
    min_tops = 1
    max_tops = 2

    def __init__(
        self,
        source="",
        axis=1,
        ignore_label=None,
        normalization="VALID",
        matrix=None,
        name="",
        phase=TRAIN,
    ):
        super().__init__(name, phase)
        self.source = str(source)
        self.axis = int(axis)
        self._options(ignore_label, normalization)
        h = None if matrix is None else torch.as_tensor(matrix)
        self.register_buffer("infogain", h, persistent=False)  # not a learnable blob

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        if param.loss_param.HasField("normalize"):
            raise ConfigError(
                f"InfogainLoss layer '{param.name}': loss_param.normalize is deprecated for this "
                "layer; use loss_param.normalization"
            )
        p, lp = param.infogain_loss_param, param.loss_param
        mode = caffe_pb2.LossParameter.NormalizationMode.Name(lp.normalization)
        return cls(p.source, p.axis, ignore_label_of(lp), mode, name=param.name, phase=phase)

    def setup(self, bottom_shapes):
        if len(bottom_shapes) >= 3 or self.infogain is not None:
            return
        if not self.source:
            msg = "infogain_loss_param.source must name the H file when H is not bottom 2"
            self.fail(msg, ConfigError)
        try:
            arr = blobproto_to_array(read_blobproto(self.source), what=f"'{self.source}'")
        except ParseError as e:  # missing, unreadable or not a BlobProto
            raise ParseError(e.path, f"InfogainLoss layer '{self.name}': H matrix: {e.detail}") from None
        except PipelineError as e:
            self.fail(f"cannot read the H matrix: {e}", DataError)
        self.infogain = torch.from_numpy(arr.reshape(-1).copy())

    def reshape(self, bottom_shapes):
        super().reshape(bottom_shapes)
        classes = check_label_count(self, bottom_shapes, self.axis, "infogain_loss_param.axis")
        if len(bottom_shapes) >= 3:
            n, what = count(bottom_shapes[2]), f"bottom 2 {fmt_shape(bottom_shapes[2])}"
        elif self.infogain is not None:
            n, what = self.infogain.numel(), f"'{self.source}'" if self.source else "matrix"
        else:
            self.fail("the H matrix is not loaded (setup was not run)", ConfigError)
        if n != classes * classes:
            self.fail(f"H must be {classes}x{classes} ({classes**2} values); {what} holds {n}")
        return [(), tuple(bottom_shapes[0])] if self.num_tops >= 2 else [()]

    def forward(self, x, label, h=None):
        _, outer, classes, inner = class_dims(self, x.shape, self.axis, "infogain_loss_param.axis")
        h = (self.infogain if h is None else h).detach().to(x).reshape(classes, classes)
        labels = Labels(self, label, outer, inner, classes, self.ignore_label)
        logp = _log_softmax(x, outer, classes, inner)  # (outer, inner, classes)
        logp_c = _KeepGradClamp.apply(logp, math.log(LOG_THRESHOLD))
        per = (h[labels.index] * logp_c).sum(2)  # row H[label] . log p, (outer, inner)
        loss = -labels.mask(per).sum() / normalizer(self.normalization, outer, inner, labels.count)
        if self.num_tops >= 2:
            return loss, _probs(logp, x.shape)
        return loss


class _MarginSquared(torch.autograd.Function):
    """Per row: ``max(margin - ||d||, 0)^2`` with Caffe's backward.

    Caffe's gradient w.r.t. d is ``-2 (margin - ||d||) d / (||d|| + 1e-4)`` where the
    margin is not yet met, else 0: the 1e-4 keeps it finite when ``d = 0``.
    """

    @staticmethod
    def forward(ctx, diff, margin):
        dist = diff.pow(2).sum(1).sqrt()
        mdist = margin - dist
        ctx.save_for_backward(diff, dist, mdist)
        return mdist.clamp_min(0).pow(2)

    @staticmethod
    def backward(ctx, grad):
        diff, dist, mdist = ctx.saved_tensors
        scale = torch.where(mdist > 0, -2 * mdist / (dist + 1e-4), torch.zeros_like(mdist))
        return (grad * scale).unsqueeze(1) * diff, None


@LAYERS.register()
class ContrastiveLoss(_Loss):
    """Contrastive loss for pairs of embeddings (siamese networks).

    Caffe: ``d2_i = ||a_i - b_i||^2``; similar pairs (``int(y_i) != 0``) add ``d2_i``,
    dissimilar pairs add ``max(margin - sqrt(d2_i), 0)^2`` (legacy_version:
    ``max(margin - d2_i, 0)``); ``loss = sum / (2 N)``. Gradients to a and b have
    opposite signs; the dissimilar one divides by ``||a - b|| + 1e-4`` as Caffe does.

    Args:
        margin: ``contrastive_loss_param.margin`` (default 1.0).
        legacy_version: use the squared-distance margin (default False).

    Shape:
        a, b ``(N, C)`` or ``(N, C, 1, 1)``, y ``(N,)`` or ``(N, 1, 1, 1)`` -> loss ``()``.
    """

    type = "ContrastiveLoss"
    exact_bottoms = 3

    def __init__(self, margin=1.0, legacy_version=False, name="", phase=TRAIN):
        super().__init__(name, phase)
        self.margin = float(margin)
        self.legacy_version = bool(legacy_version)

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        p = param.contrastive_loss_param
        return cls(margin=p.margin, legacy_version=p.legacy_version, name=param.name, phase=phase)

    def reshape(self, bottom_shapes):
        super().reshape(bottom_shapes)
        a, b, y = (_legacy4(self, s, f"bottom {i}") for i, s in enumerate(bottom_shapes[:3]))
        sa, sb, sy = (fmt_shape(s) for s in bottom_shapes[:3])
        if a[1] != b[1]:
            self.fail(f"bottoms {sa} and {sb} must have the same channels")
        if a[2:] != (1, 1) or b[2:] != (1, 1):
            self.fail(f"bottoms {sa} and {sb} must be (N, C) or (N, C, 1, 1)")
        if y[0] != a[0] or y[1:] != (1, 1, 1):
            self.fail(f"bottom 2 (similarity) {sy} must be ({a[0]},)")
        return [()]

    def forward(self, a, b, y):
        n = int(a.shape[0])
        diff = a.reshape(n, -1) - b.reshape(n, -1)
        dist_sq = diff.pow(2).sum(1)
        similar = y.detach().reshape(n).to(torch.long) != 0
        if self.legacy_version:
            dissimilar = F.relu(self.margin - dist_sq)
        else:
            dissimilar = _MarginSquared.apply(diff, self.margin)
        return torch.where(similar, dist_sq, dissimilar).sum() / (2 * n)


@LAYERS.register()
class MultinomialLogisticLoss(_Loss):
    """Negative log-likelihood of given probabilities (pair with a Softmax layer).

    Caffe: ``loss = -sum_i log(max(p[i, label_i], 1e-20)) / N``; gradient
    ``-1 / (N max(p, 1e-20))`` at the label, 0 elsewhere.

    Shape:
        p ``(N, C)`` (items flattened to D values), labels ``(N,)`` or ``(N, 1, 1, 1)``
        -> loss ``()``.
    """

    type = "MultinomialLogisticLoss"

    def reshape(self, bottom_shapes):
        super().reshape(bottom_shapes)
        lab = tuple(bottom_shapes[1])
        if _legacy4(self, lab, "label")[1:] != (1, 1, 1):
            self.fail(f"label {fmt_shape(lab)} must hold one value per item: (N,) or (N, 1, 1, 1)")
        return [()]

    def forward(self, p, label):
        n = int(p.shape[0])
        probs = p.reshape(n, -1)
        labels = Labels(self, label, n, 1, probs.shape[1], None)
        picked = probs.gather(1, labels.index)
        # The clamp keeps its gradient, so d/dp = -1 / (N max(p, 1e-20)) as in Caffe.
        return -torch.log(_KeepGradClamp.apply(picked, LOG_THRESHOLD)).sum() / n
