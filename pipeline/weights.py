"""Net weights in and out, by layer name, exactly as Caffe copies them.

``copy_from`` follows ``Net::CopyTrainedLayersFrom``: for every source layer with
the name of one of ours, the blob counts must agree and every blob's shape must
equal ours (a legacy 4-d num/channels/height/width blob matches a shape that pads
to it with leading 1s); source layers we do not have are ignored. A shape
mismatch says to rename the layer to learn it from scratch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import ShapeError
from .formats import binary, hdf5
from .formats.blob import array_to_blobproto, blobproto_to_array
from .proto import caffe_pb2


def _is_hdf5(path) -> bool:
    p = str(path)
    if p.endswith((".h5", ".hdf5")):
        return True
    try:
        with open(p, "rb") as f:
            return f.read(8) == b"\x89HDF\r\n\x1a\n"
    except OSError:
        return False


def _legacy_shape(blob: caffe_pb2.BlobProto):
    if not blob.HasField("shape") and any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        return (blob.num, blob.channels, blob.height, blob.width)
    return None


def _matches(target: tuple, source: tuple, legacy: bool) -> bool:
    if target == source:
        return True
    if legacy and len(target) <= 4:
        return (1,) * (4 - len(target)) + target == source
    return False


def _fmt(shape) -> str:
    return " ".join(str(d) for d in shape) + f" ({int(np.prod(shape)) if shape else 1})"


def _source_layers(path, force_hdf5: bool):
    """name -> list of (array, legacy?) from a .caffemodel or HDF5 file."""
    if force_hdf5 or _is_hdf5(path):
        return {name: [(a, False) for a in arrays] for name, arrays in hdf5.read_weights(path).items()}
    net = binary.read_caffemodel(path)
    out = {}
    for lp in net.layer:
        if lp.blobs:
            out[lp.name] = [
                (blobproto_to_array(b, what=f"{path}: layer '{lp.name}' blob {j}"), _legacy_shape(b) is not None)
                for j, b in enumerate(lp.blobs)
            ]
    return out


def copy_from(net, path, hdf5: bool = False) -> list[str]:
    """Copy weights into ``net`` by layer name; returns the names copied."""
    source = _source_layers(path, hdf5)
    modules = dict(zip(net._layer_names, net.module))
    copied = []
    with torch.no_grad():
        for name, blobs in source.items():
            layer = modules.get(name)
            if layer is None:
                continue  # Caffe: "Ignoring source layer"
            target = list(layer.blobs)
            if len(target) != len(blobs):
                raise ShapeError(
                    f"{path}: Incompatible number of blobs for layer '{name}': the file has {len(blobs)}, "
                    f"the net's layer has {len(target)}"
                )
            for j, ((arr, legacy), p) in enumerate(zip(blobs, target)):
                tshape = tuple(p.shape)
                if not _matches(tshape, tuple(arr.shape), legacy):
                    raise ShapeError(
                        f"{path}: Cannot copy param {j} weights from layer '{name}'; shape mismatch. "
                        f"Source param shape is {_fmt(arr.shape)}; target param shape is {_fmt(tshape)}. "
                        "To learn this layer's parameters from scratch rather than copying from a saved net, "
                        "rename the layer."
                    )
                p.copy_(torch.from_numpy(np.ascontiguousarray(arr, np.float32)).reshape(tshape))
            copied.append(name)
    net._host.forget()
    return copied


def to_proto(net, write_diff: bool = False) -> caffe_pb2.NetParameter:
    """The net's definition with every layer's blobs (Net::ToProto)."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net.param)
    for lp, layer in zip(out.layer, net.module):
        del lp.blobs[:]
        for p in layer.blobs:
            diff = None
            if write_diff:
                diff = p.grad.detach().cpu().numpy() if p.grad is not None else np.zeros(tuple(p.shape), np.float32)
            lp.blobs.append(array_to_blobproto(p.detach().cpu().numpy(), diff=diff))
    return out


def save(net, path, write_diff: bool = False) -> None:
    """Binary .caffemodel (atomic write)."""
    binary.write_caffemodel(to_proto(net, write_diff), Path(path))


def _owned_blobs(net):
    """Per layer, the blobs it owns (shared ones are saved by their owner only)."""
    seen = set()
    for name, layer in zip(net._layer_names, net.module):
        arrays = []
        for p in layer.blobs:
            if id(p) in seen:
                continue
            seen.add(id(p))
            arrays.append(p)
        yield name, arrays


def save_hdf5(net, path, write_diff: bool = False) -> None:
    """Caffe's HDF5 layout: /data/<layer>/<i> (and /diff with ``write_diff``)."""
    layers = [(n, [p.detach().cpu().numpy() for p in ps]) for n, ps in _owned_blobs(net)]
    diffs = None
    if write_diff:
        diffs = {
            n: [p.grad.detach().cpu().numpy() if p.grad is not None else np.zeros(tuple(p.shape), np.float32) for p in ps]
            for n, ps in _owned_blobs(net)
        }
    hdf5.write_weights(path, layers, diffs)


def share_with(net, other) -> None:
    """Use ``other``'s parameter tensors for every same-named layer of ``net``."""
    theirs = dict(zip(other._layer_names, other.module))
    replaced = {}
    for name, layer in zip(net._layer_names, net.module):
        src = theirs.get(name)
        if src is None or not len(layer.blobs):
            continue
        if len(src.blobs) != len(layer.blobs):
            raise ShapeError(f"Incompatible number of blobs for layer '{name}' when sharing weights")
        for j in range(len(layer.blobs)):
            if tuple(src.blobs[j].shape) != tuple(layer.blobs[j].shape):
                raise ShapeError(
                    f"Cannot share param {j} weights from layer '{name}'; shape mismatch. Source param shape is "
                    f"{_fmt(tuple(src.blobs[j].shape))}; target param shape is {_fmt(tuple(layer.blobs[j].shape))}"
                )
            replaced[id(layer.blobs[j])] = src.blobs[j]
            layer.blobs[j] = src.blobs[j]
    # Keep the solver-facing list pointing at the tensors now in use.
    net.learnable_params = [replaced.get(id(p), p) for p in net.learnable_params]
    net._host.forget()
