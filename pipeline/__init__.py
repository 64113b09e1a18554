"""A Caffe-compatible training pipeline on PyTorch.

``import pipeline as caffe`` gives pycaffe's names (see README).
"""

from .proto import caffe_pb2
from . import layers  # noqa: F401  (fills the LAYERS registry)

TRAIN = caffe_pb2.TRAIN
TEST = caffe_pb2.TEST

__version__ = "0.1.0"
