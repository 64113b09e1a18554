"""A Caffe-compatible training pipeline on PyTorch.

``import pipeline as caffe`` gives pycaffe's names (see README). Importing the
package is cheap: torch and the layer registry load on first use of a name that
needs them, so the file tools (upgrades, converters) start quickly.
"""

from __future__ import annotations

import importlib

from .proto import caffe_pb2

TRAIN = caffe_pb2.TRAIN
TEST = caffe_pb2.TEST

__version__ = "0.1.0"

# name -> (module, attribute); resolved lazily by __getattr__.
_LAZY = {
    "layers": ("pipeline.layers", None),
    "params": ("pipeline.params", None),
    "NetSpec": ("pipeline.netspec", "NetSpec"),
    "to_proto": ("pipeline.netspec", "to_proto"),
    "Net": ("pipeline.net", "Net"),
    "Layer": ("pipeline.layers.python", "Layer"),
    "set_mode_cpu": ("pipeline.mode", "set_mode_cpu"),
    "set_mode_gpu": ("pipeline.mode", "set_mode_gpu"),
    "set_device": ("pipeline.mode", "set_device"),
    "set_random_seed": ("pipeline.mode", "set_random_seed"),
    "proto": ("pipeline.proto", None),
    "io": ("pipeline.io", None),
    "get_solver": ("pipeline.solvers", "get_solver"),
    "SGDSolver": ("pipeline.solvers", "SGDSolver"),
    "NesterovSolver": ("pipeline.solvers", "NesterovSolver"),
    "AdaGradSolver": ("pipeline.solvers", "AdaGradSolver"),
    "RMSPropSolver": ("pipeline.solvers", "RMSPropSolver"),
    "AdaDeltaSolver": ("pipeline.solvers", "AdaDeltaSolver"),
    "AdamSolver": ("pipeline.solvers", "AdamSolver"),
    "Classifier": ("pipeline.classifier", "Classifier"),
}


def __getattr__(name):
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}") from None
    mod = importlib.import_module(module)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
