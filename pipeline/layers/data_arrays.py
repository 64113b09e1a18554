"""Arrays in and out: MemoryData (``net.set_input_arrays``) and HDF5Output.

Differences from Caffe, on purpose:

- ``MemoryData.set_input_arrays`` converts arrays to float32 C order instead of
  refusing them, and copies each batch out of them (Caffe points the tops at the
  caller's memory).
- ``HDF5Output`` appends every forward's batch and rewrites the file atomically;
  Caffe's fails on the second forward (the datasets already exist).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ..errors import ConfigError, DataError, ShapeError
from ..registry import LAYERS
from .base import TRAIN, Layer


@LAYERS.register()
class MemoryData(Layer):
    """Batches cut from arrays given by ``net.set_input_arrays(data, labels)``.

    Args:
        batch_size, channels, height, width: the data top's shape (all positive).

    Shape: data (N, C, H, W), label (N, 1, 1, 1) (Caffe's shapes); successive
    forwards walk the arrays in steps of N and wrap around. No transformation is
    applied to arrays (Caffe warns the same).
    """

    type = "MemoryData"
    exact_bottoms = 0
    exact_tops = 2

    def __init__(self, batch_size=0, channels=0, height=0, width=0, name="", phase=TRAIN):
        super().__init__(name, phase)
        self.shape = (int(batch_size), int(channels), int(height), int(width))
        self._data = self._labels = None
        self.pos = 0

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        p = param.memory_data_param
        return cls(p.batch_size, p.channels, p.height, p.width, name=param.name, phase=phase)

    def reshape(self, bottom_shapes):
        if min(self.shape) <= 0:
            self.fail(
                "batch_size, channels, height, and width must be specified and positive in "
                f"memory_data_param (got {self.shape})",
                ConfigError,
            )
        return [self.shape, (self.shape[0], 1, 1, 1)]

    def set_input_arrays(self, data, labels) -> None:
        """pycaffe's ``Net.set_input_arrays``: data (n, C, H, W), labels (n,) or (n, 1, 1, 1); n % N == 0."""
        data = np.ascontiguousarray(data, dtype=np.float32)
        labels = np.ascontiguousarray(labels, dtype=np.float32)
        if labels.ndim == 1:
            labels = labels.reshape(-1, 1, 1, 1)
        n = data.shape[0] if data.ndim else 0
        if data.ndim != 4 or data.shape[1:] != self.shape[1:]:
            self.fail(
                f"data array has wrong dimensions {data.shape}; expected (n, {', '.join(map(str, self.shape[1:]))})"
            )
        if labels.ndim != 4 or labels.shape[1:] != (1, 1, 1):
            self.fail(f"labels must have shape (n,) or (n, 1, 1, 1), got {labels.shape}")
        if labels.shape[0] != n:
            self.fail(f"data has {n} items but labels have {labels.shape[0]}")
        if n == 0 or n % self.shape[0]:
            self.fail(f"n ({n}) must be a positive multiple of batch size ({self.shape[0]})")
        self._data, self._labels, self.pos = data, labels, 0

    def forward(self):
        if self._data is None:
            self.fail("MemoryData needs to be initialized by calling set_input_arrays", DataError)
        b = self.shape[0]
        data = torch.from_numpy(self._data[self.pos : self.pos + b].copy())
        labels = torch.from_numpy(self._labels[self.pos : self.pos + b].copy())
        self.pos = (self.pos + b) % self._data.shape[0]
        return data, labels

    def get_position(self) -> dict:
        return {"type": self.type, "pos": int(self.pos)}

    def set_position(self, position: dict) -> None:
        self.pos = int(position["pos"])


@LAYERS.register()
class HDF5Output(Layer):
    """Writes its two bottoms to ``hdf5_output_param.file_name`` as datasets ``data`` and ``label``.

    Each forward appends its batch (blobs of up to 4 axes are stored as Caffe's
    4-d num×channels×height×width) and rewrites the file atomically, so the file
    always holds everything seen so far.
    """

    type = "HDF5Output"
    exact_bottoms = 2
    exact_tops = 0

    def __init__(self, file_name="", name="", phase=TRAIN):
        super().__init__(name, phase)
        self.file_name = str(file_name)
        self._parts: list[tuple[np.ndarray, np.ndarray]] = []

    @classmethod
    def from_param(cls, param, phase=TRAIN):
        return cls(param.hdf5_output_param.file_name, name=param.name, phase=phase)

    def reshape(self, bottom_shapes):
        if not self.file_name:
            self.fail("hdf5_output_param.file_name is not set", ConfigError)
        a, b = (tuple(s) for s in bottom_shapes)
        if (a[0] if a else 1) != (b[0] if b else 1):
            self.fail(f"data and label must have the same num (first axis): {a} vs {b}")
        parent = os.path.dirname(self.file_name) or "."
        if not os.path.isdir(parent):
            self.fail(f"cannot write {self.file_name}: the folder {parent} does not exist", DataError)
        return []

    @staticmethod
    def _legacy4(arr):
        return arr.reshape(tuple(arr.shape) + (1,) * (4 - arr.ndim)) if arr.ndim <= 4 else arr

    def forward(self, data, label):
        import h5py

        from ..formats.atomic import atomic_path

        d = self._legacy4(data.detach().cpu().numpy().astype(np.float32))
        lab = self._legacy4(label.detach().cpu().numpy().astype(np.float32))
        if self._parts and (self._parts[0][0].shape[1:] != d.shape[1:] or self._parts[0][1].shape[1:] != lab.shape[1:]):
            raise ShapeError(
                f"{self.type} layer '{self.name}': bottoms changed shape from "
                f"{self._parts[0][0].shape[1:]}/{self._parts[0][1].shape[1:]} to {d.shape[1:]}/{lab.shape[1:]}"
            )
        self._parts.append((d, lab))
        with atomic_path(self.file_name) as tmp, h5py.File(tmp, "w") as f:
            f.create_dataset("data", data=np.concatenate([p[0] for p in self._parts]))
            f.create_dataset("label", data=np.concatenate([p[1] for p in self._parts]))
        return ()
