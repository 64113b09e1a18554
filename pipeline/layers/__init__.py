"""Every layer family, imported here so the LAYERS registry is always complete.

One module per family; each class is registered under Caffe's type string.
"""

from . import (  # noqa: F401  (imported for registration)
    accuracy,
    affine,
    arith,
    conv,
    data,
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
