"""Accuracy: top-k classification accuracy, Caffe's tie rule (``accuracy_layer.cpp``)."""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..registry import LAYERS
from .base import TRAIN, Layer
from .labels import Labels, check_label_count, class_dims, fmt_shape, ignore_label_of, normalizer


@LAYERS.register()
class Accuracy(Layer):
    """Top-k classification accuracy (no gradient).

    Caffe: a position counts as correct iff fewer than ``top_k`` other classes score
    ``>=`` the true class (ties count against it); accuracy = correct / positions
    whose label is not ``ignore_label`` (0 when there are none). Optional top 1:
    per-class accuracy, 0 for classes with no positions.

    Args:
        top_k: default 1 (``accuracy_param.top_k``).
        axis: the class axis (default 1).
        ignore_label: label value to skip (``accuracy_param.ignore_label``).

    Shape:
        x ``(N, C, ...)``, labels with ``outer * inner`` values -> ``()``; top 1 ``(C,)``.
    """

    type = "Accuracy"
    exact_bottoms = 2
    min_tops = 1
    max_tops = 2

    def __init__(self, top_k=1, axis=1, ignore_label=None, name="", phase=TRAIN):
        super().__init__(name, phase)
        self.top_k = int(top_k)
        self.axis = int(axis)
        self.ignore_label = None if ignore_label is None else int(ignore_label)
        if self.top_k < 1:  # Caffe accepts 0 and then reports 0 accuracy
            self.fail(f"accuracy_param.top_k={self.top_k} must be at least 1", ConfigError)

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        p = param.accuracy_param
        return cls(p.top_k, p.axis, ignore_label_of(p), param.name, phase)

    def reshape(self, bottom_shapes):
        classes = check_label_count(self, bottom_shapes, self.axis, "accuracy_param.axis")
        if self.top_k > classes:
            shape = fmt_shape(bottom_shapes[0])
            self.fail(f"top_k={self.top_k} exceeds the {classes} classes of {shape}", ConfigError)
        return [(), (int(classes),)] if self.num_tops >= 2 else [()]

    @torch.no_grad()
    def forward(self, x, label):
        _, outer, classes, inner = class_dims(self, x.shape, self.axis, "accuracy_param.axis")
        labels = Labels(self, label, outer, inner, classes, self.ignore_label)
        scores = x.detach().reshape(outer, classes, inner)
        true = scores.gather(1, labels.index.unsqueeze(1))  # (outer, 1, inner)
        better = (scores >= true).sum(1) - 1  # the true class counts itself once
        correct = labels.mask((better < self.top_k).to(x.dtype))
        # 0 / 1 = 0 when every label is ignored, as Caffe's (count == 0) ? 0 branch.
        acc = correct.sum() / normalizer("VALID", outer, inner, labels.count)
        if self.num_tops < 2:
            return acc
        flat, zeros = labels.index.reshape(-1), torch.zeros(classes, dtype=x.dtype, device=x.device)
        nums = zeros.index_add(0, flat, labels.mask(torch.ones_like(correct)).reshape(-1))
        hits = zeros.index_add(0, flat, correct.reshape(-1))
        return acc, hits / nums.clamp_min(1)  # hits = 0 where nums = 0: Caffe's 0
