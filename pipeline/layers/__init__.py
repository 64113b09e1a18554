"""Every layer family, imported here so the LAYERS registry is always complete.

One module per family; each class is registered under Caffe's type string.
"""

from . import (  # noqa: F401  (imported for registration)
    accuracy,
    affine,
    arith,
    conv,
    data,
    data_arrays,
    data_sources,
    fork_detection,
    fork_misc,
    fork_multibox,
    fork_ssd,
    loss,
    neuron,
    normalization,
    pooling,
    python,
    recurrent,
    shape,
)
from .base import TEST, TRAIN, Layer

__all__ = ["Layer", "TRAIN", "TEST"]


def __getattr__(name):
    """``from pipeline import layers as L; L.Convolution(...)``: pycaffe's ``caffe.layers``.

    Names this package does not define (the family modules are lower case) are
    NetSpec layer builders for Caffe's layer types (``pipeline.netspec``); an
    unknown type raises AttributeError with the close matches.
    """
    if name.startswith("_"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from ..netspec import layer_builder

    return layer_builder(name)
