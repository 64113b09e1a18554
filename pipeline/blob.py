"""pycaffe's Blob: numpy views of a net's tensors, like Caffe's SyncedMemory.

``blob.data`` / ``blob.diff`` are writable numpy arrays. On the CPU they share
memory with the tensors, so a write is seen at once. On a GPU they are host
copies that the net uploads before it next runs (``Net._sync_host``), so
``net.blobs['data'].data[...] = x; net.forward()`` works the same everywhere.
"""

from __future__ import annotations

import numpy as np
import torch


class _HostMirror:
    """Host arrays handed out for device tensors, uploaded on the next sync."""

    def __init__(self):
        # key -> (device tensor, host array handed out, its contents when handed out)
        self._arrays: dict[tuple, tuple[torch.Tensor, np.ndarray, np.ndarray]] = {}

    def view(self, key, tensor: torch.Tensor) -> np.ndarray:
        if tensor.device.type == "cpu":
            return tensor.detach().numpy()
        hit = self._arrays.get(key)
        if hit is not None and hit[0].data_ptr() == tensor.data_ptr() and hit[0].shape == tensor.shape:
            return hit[1]
        arr = tensor.detach().cpu().numpy()
        self._arrays[key] = (tensor, arr, arr.copy())
        return arr

    def upload(self) -> None:
        """Copy each handed-out host array that was written to back into its device tensor.

        Arrays only read are left alone: writing them back would bump the tensor's
        version and invalidate a recorded graph that saved it (a Softmax's output)."""
        with torch.no_grad():
            for tensor, arr, seen in self._arrays.values():
                if not np.array_equal(arr, seen, equal_nan=arr.dtype.kind == "f"):
                    tensor.copy_(torch.from_numpy(arr), non_blocking=False)
        self._arrays.clear()

    def forget(self) -> None:
        self._arrays.clear()


class _ShapeMixin:
    @property
    def count(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    def _legacy(self, i):
        s = self.shape
        return s[i] if len(s) > i else 1

    @property
    def num(self):
        return self._legacy(0)

    @property
    def channels(self):
        return self._legacy(1)

    @property
    def height(self):
        return self._legacy(2)

    @property
    def width(self):
        return self._legacy(3)


class Blob(_ShapeMixin):
    """A named blob of a net: ``data``, ``diff``, ``shape``, ``reshape``."""

    def __init__(self, net, name: str):
        self._net = net
        self.name = name

    @property
    def shape(self) -> tuple:
        return tuple(self._net._blob_shapes[self.name])

    @property
    def data(self) -> np.ndarray:
        return self._net._host.view((self.name, "data"), self._net._value(self.name))

    @property
    def diff(self) -> np.ndarray:
        return self._net._host.view((self.name, "diff"), self._net._diff(self.name))

    def reshape(self, *shape) -> None:
        """Give the blob a new shape (inputs: the next ``net.reshape()``/``forward`` propagates it)."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        self._net._reshape_blob(self.name, tuple(int(d) for d in shape))

    def __repr__(self):
        return f"Blob({self.name!r}, shape={self.shape})"


class ParamBlob(_ShapeMixin):
    """A learnable parameter seen as a pycaffe Blob (``net.params[layer][i]``)."""

    def __init__(self, net, layer, index: int):
        self._net = net
        self._layer = layer
        self._index = index
        self._key = (layer.name, index)

    @property
    def _param(self) -> torch.nn.Parameter:
        # Looked up on every use: sharing (share_with) may have replaced the tensor.
        return self._layer.blobs[self._index]

    @property
    def shape(self) -> tuple:
        return tuple(self._param.shape)

    @property
    def data(self) -> np.ndarray:
        return self._net._host.view((self._key, "data"), self._param.data)

    @property
    def diff(self) -> np.ndarray:
        p = self._param
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        return self._net._host.view((self._key, "diff"), p.grad)

    def reshape(self, *shape) -> None:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        p = self._param
        with torch.no_grad():
            p.data = p.data.new_zeros(tuple(int(d) for d in shape))
        p.grad = None

    def __repr__(self):
        return f"ParamBlob({self._key!r}, shape={self.shape})"


class LayerView:
    """``net.layers[i]``: the layer's ``type``, ``name`` and ``blobs`` as pycaffe Blobs.

    ``module`` is the underlying torch module.
    """

    def __init__(self, net, module):
        self._net = net
        self.module = module

    @property
    def type(self) -> str:
        return self.module.type

    @property
    def name(self) -> str:
        return self.module.name

    @property
    def blobs(self) -> list:
        return [ParamBlob(self._net, self.module, i) for i in range(len(self.module.blobs))]

    def __repr__(self):
        return f"<{self.type} layer '{self.name}'>"
