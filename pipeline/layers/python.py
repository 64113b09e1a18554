"""``type: "Python"`` layers: user classes written against pycaffe's ``caffe.Layer``.

The user's class (``python_param { module: "m" layer: "Cls" param_str: "..." }``)
subclasses ``caffe.Layer`` and works on numpy arrays exactly as under pycaffe::

    class EuclideanLoss(caffe.Layer):
        def setup(self, bottom, top): ...
        def reshape(self, bottom, top): top[0].reshape(1)
        def forward(self, bottom, top): top[0].data[...] = ...
        def backward(self, top, propagate_down, bottom): bottom[0].diff[...] = ...

``self.param_str``, ``self.phase`` and ``self.blobs`` (learnable, ``self.blobs.add_blob(*shape)``)
are set as in Caffe. The layer takes part in autograd: its ``backward`` is called
with the top diffs autograd brings (a loss top's diff is its loss weight, as in
Caffe) and its bottom diffs flow on. Data crosses to the host and back, so a
Python layer also runs inside a net that lives on a GPU.
"""

from __future__ import annotations

import importlib

import numpy as np
import torch

from ..errors import ConfigError
from ..registry import LAYERS
from .base import TRAIN
from .base import Layer as _ModuleLayer


class Layer:
    """pycaffe's ``caffe.Layer``: subclass it and override what you need."""

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        pass


class NumpyBlob:
    """A Blob as a Python layer sees it: ``data``/``diff`` numpy arrays, ``reshape``."""

    def __init__(self, shape=(), data=None):
        self.data = np.zeros(shape, np.float32) if data is None else data
        self.diff = np.zeros_like(self.data)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        shape = tuple(int(d) for d in shape)
        if self.data.shape != shape:
            self.data = np.zeros(shape, np.float32)
            self.diff = np.zeros(shape, np.float32)

    @property
    def shape(self):
        return self.data.shape

    @property
    def count(self):
        return int(self.data.size)

    def _legacy(self, i):
        return self.data.shape[i] if self.data.ndim > i else 1

    num = property(lambda self: self._legacy(0))
    channels = property(lambda self: self._legacy(1))
    height = property(lambda self: self._legacy(2))
    width = property(lambda self: self._legacy(3))


class BlobVec(list):
    """``self.blobs`` of a Python layer: a list of NumpyBlob with ``add_blob(*shape)``."""

    def __init__(self, owner):
        super().__init__()
        self._owner = owner

    def add_blob(self, *shape):
        blob = NumpyBlob(tuple(int(d) for d in shape))
        self.append(blob)
        self._owner._on_add_blob(blob)
        return blob


class _PythonFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, layer, *tensors):
        nb = layer.num_bottoms
        bottoms, params = tensors[:nb], tensors[nb:]
        ctx.layer = layer
        ctx.devices = [b.device for b in bottoms]
        ctx.dtypes = [b.dtype for b in bottoms]
        layer._load_params(params)
        for blob, t in zip(layer._bottom, bottoms):
            blob.data = t.detach().to("cpu", torch.float32).numpy().copy()
            blob.diff = np.zeros_like(blob.data)
        layer.user.reshape(layer._bottom, layer._top)
        layer.user.forward(layer._bottom, layer._top)
        dev = bottoms[0].device if bottoms else (params[0].device if params else torch.device("cpu"))
        outs = tuple(torch.from_numpy(np.array(t.data, np.float32)).to(dev) for t in layer._top)
        return outs if len(outs) != 1 else outs[0]

    @staticmethod
    def backward(ctx, *grads):
        layer = ctx.layer
        for blob, g in zip(layer._top, grads):
            blob.diff = np.zeros_like(blob.data) if g is None else g.detach().to("cpu", torch.float32).numpy().copy()
        for blob in layer._bottom:
            blob.diff = np.zeros_like(blob.data)
        for blob in layer.user.blobs:
            blob.diff = np.zeros_like(blob.data)
        need = list(ctx.needs_input_grad[1:])
        nb = layer.num_bottoms
        layer.user.backward(layer._top, need[:nb], layer._bottom)
        out = [None]
        for i, blob in enumerate(layer._bottom):
            out.append(
                torch.from_numpy(np.array(blob.diff, np.float32)).to(ctx.devices[i], ctx.dtypes[i]) if need[i] else None
            )
        for j, blob in enumerate(layer.user.blobs):
            p = layer.blobs[j]
            out.append(torch.from_numpy(np.array(blob.diff, np.float32)).to(p.device, p.dtype) if need[nb + j] else None)
        return tuple(out)


@LAYERS.register()
class PythonLayer(_ModuleLayer):
    """Runs a user's pycaffe-style layer class (``python_param``).

    Args:
        user: an instance of a ``caffe.Layer`` subclass.
        param_str: handed to the instance as ``self.param_str``.

    Shape: whatever the user's ``reshape`` sets on the tops.
    """

    type = "Python"

    def __init__(self, user, param_str: str = "", name: str = "", phase: int = TRAIN):
        super().__init__(name, phase)
        self.user = user
        user.param_str = param_str
        user.phase = phase
        user.blobs = BlobVec(self)
        self._bottom: list[NumpyBlob] = []
        self._top: list[NumpyBlob] = []

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        pp = param.python_param
        where = f"Python layer '{param.name}'"
        if not pp.module or not pp.layer:
            raise ConfigError(f"{where}: python_param needs both module and layer")
        try:
            mod = importlib.import_module(pp.module)
        except ImportError as e:
            raise ConfigError(f"{where}: cannot import module '{pp.module}' ({e}); is it on PYTHONPATH?") from None
        klass = getattr(mod, pp.layer, None)
        if klass is None:
            raise ConfigError(f"{where}: module '{pp.module}' has no class '{pp.layer}'")
        try:
            user = klass()
        except Exception as e:  # user code
            raise ConfigError(f"{where}: {pp.module}.{pp.layer}() failed: {e}") from e
        return cls(user, pp.param_str, name=param.name, phase=phase)

    def _on_add_blob(self, blob: NumpyBlob) -> None:
        self.add_blob(torch.from_numpy(blob.data.copy()))

    def _load_params(self, params) -> None:
        for blob, p in zip(self.user.blobs, params):
            blob.data = p.detach().to("cpu", torch.float32).numpy().copy()

    def setup(self, bottom_shapes):
        self._bottom = [NumpyBlob(s) for s in bottom_shapes]
        self._top = [NumpyBlob((0,)) for _ in range(self.num_tops)]
        try:
            self.user.setup(self._bottom, self._top)
        except Exception as e:
            raise ConfigError(f"Python layer '{self.name}': setup failed: {type(e).__name__}: {e}") from e
        with torch.no_grad():  # values the user's setup wrote into its blobs
            for blob, p in zip(self.user.blobs, self.blobs):
                p.copy_(torch.from_numpy(np.asarray(blob.data, np.float32)).reshape(p.shape))

    def reshape(self, bottom_shapes):
        for blob, s in zip(self._bottom, bottom_shapes):
            blob.reshape(s)
        try:
            self.user.reshape(self._bottom, self._top)
        except Exception as e:
            raise ConfigError(f"Python layer '{self.name}': reshape failed: {type(e).__name__}: {e}") from e
        return [t.data.shape for t in self._top]

    def forward(self, *bottoms):
        return _PythonFunction.apply(self, *bottoms, *self.blobs)
