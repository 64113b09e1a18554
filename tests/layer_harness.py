"""Build a single layer from a prototxt snippet, as the net would, for layer tests."""

from __future__ import annotations

import torch
from google.protobuf import text_format

from pipeline.layers.base import TEST, TRAIN  # noqa: F401  (re-exported for tests)
from pipeline.proto import caffe_pb2
from pipeline.registry import LAYERS


def layer_param(snippet: str) -> caffe_pb2.LayerParameter:
    """Parse a LayerParameter from prototxt text (the inside of ``layer { }``)."""
    return text_format.Parse(snippet, caffe_pb2.LayerParameter())


def make_layer(snippet: str, bottom_shapes, phase=TRAIN, num_tops=None):
    """Build, wire, set up and reshape a layer like the net does.

    Returns ``(layer, top_shapes)``. ``num_tops`` defaults to the number of
    ``top:`` entries in the snippet (or 1 when none are given).
    """
    lp = layer_param(snippet)
    cls = LAYERS.get(lp.type)
    layer = cls.from_param(lp, phase)
    layer.num_bottoms = len(bottom_shapes)
    layer.num_tops = num_tops if num_tops is not None else max(len(lp.top), 1)
    layer.check_arity()
    shapes = [tuple(s) for s in bottom_shapes]
    layer.setup(shapes)
    tops = layer.reshape(shapes)
    return layer, [tuple(t) for t in tops]


def run(layer, *bottoms):
    """Forward and always return a list of tops."""
    out = layer(*bottoms)
    return list(out) if isinstance(out, (tuple, list)) else [out]


def rand(*shape, seed=0, low=-1.0, high=1.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=dtype) * (high - low) + low
