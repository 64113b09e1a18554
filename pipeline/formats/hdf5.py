"""Weights and solver states in Caffe's HDF5 layout.

Weights (``Net::ToHDF5`` / ``CopyTrainedLayersFromHDF5``)::

    /data/<layer name>/<i>   float32 dataset, the layer's i-th blob in its shape
    /diff/<layer name>/<i>   (optional) the blob's gradient

A group exists for every layer, with or without blobs. Layer names containing
``/`` (GoogLeNet's ``inception_3a/1x1``) become nested groups, which Caffe's
``H5Lexists`` lookups resolve the same way.

Solver state (``SGDSolver::SnapshotSolverStateToHDF5``)::

    /iter  /learned_net  /current_step   scalars
    /history/<i>                          the update rule's history blobs
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from contextlib import contextmanager

import numpy as np

from ..errors import ParseError, PipelineError
from .atomic import atomic_path
from .blob import MAX_COUNT

# What h5py raises on a damaged file (truncated, bit-flipped): turned into ParseError.
_H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError, IndexError, OverflowError, AttributeError)


def _h5py():
    import h5py

    return h5py


def _open(path):
    h5py = _h5py()
    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise ParseError(path, "no such file") from None
    except IsADirectoryError:
        raise ParseError(path, "is a directory, expected an HDF5 file") from None
    except _H5_ERRORS as e:
        raise ParseError(path, f"not a readable HDF5 file ({e})") from None


@contextmanager
def _damage_is_parse_error(path, what: str):
    """h5py's errors on a damaged file become a ParseError naming the file and ``what``."""
    try:
        yield
    except PipelineError:
        raise
    except MemoryError:
        raise ParseError(path, f"{what}: not enough memory to read it (damaged size field?)") from None
    except _H5_ERRORS as e:
        raise ParseError(path, f"{what}: damaged or truncated HDF5 file ({type(e).__name__}: {e})") from None


def read_dataset(ds, path, what: str | None = None) -> np.ndarray:
    """A numeric dataset as float32, after checking its claimed size against Caffe's
    limit and (for uncompressed data) the file's size, so a damaged header cannot make
    us allocate terabytes."""
    what = what or f"dataset '{ds.name}'"
    with _damage_is_parse_error(path, what):
        shape = tuple(int(d) for d in ds.shape or ())
        count = math.prod(shape)
        if count > MAX_COUNT:
            raise ParseError(path, f"{what}: shape {shape} claims {count:,} elements, over Caffe's limit of "
                                   f"{MAX_COUNT:,}")
        if ds.dtype.kind not in "fiub":
            raise ParseError(path, f"{what}: holds {ds.dtype} values, expected numbers")
        nbytes = count * ds.dtype.itemsize
        size = os.path.getsize(ds.file.filename) if os.path.isfile(ds.file.filename) else None
        if size is not None and not ds.compression and nbytes > size:
            raise ParseError(path, f"{what}: shape {shape} needs {nbytes:,} bytes, the file has {size:,} "
                                   "(truncated or damaged?)")
        return np.asarray(ds[()], np.float32)


def write_weights(path, layers, diffs=None) -> None:
    """Write ``layers`` (iterable of (name, [arrays])) in Caffe's layout, atomically.

    ``diffs``: optional mapping name -> [arrays] written under /diff.
    """
    h5py = _h5py()
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            data = f.create_group("data")
            diff = f.create_group("diff") if diffs is not None else None
            for name, blobs in layers:
                g = data.require_group(name)
                for i, arr in enumerate(blobs):
                    g.create_dataset(str(i), data=np.asarray(arr, np.float32))
                if diff is not None:
                    gd = diff.require_group(name)
                    for i, arr in enumerate(diffs.get(name, [])):
                        gd.create_dataset(str(i), data=np.asarray(arr, np.float32))


def _collect(group, prefix, out):
    h5py = _h5py()
    blobs = {}
    for key, item in group.items():
        if isinstance(item, h5py.Dataset):
            if not key.isdigit():
                raise ParseError(group.file.filename, f"dataset '{item.name}' is not a blob index")
            blobs[int(key)] = item
        else:
            _collect(item, f"{prefix}{key}/", out)
    name = prefix[:-1]
    if name and (blobs or not len(group)):
        idx = sorted(blobs)
        if idx != list(range(len(idx))):
            raise ParseError(group.file.filename, f"layer '{name}' has blob indices {idx}, expected 0..{len(idx) - 1}")
        out[name] = [read_dataset(blobs[i], group.file.filename, f"layer '{name}' blob {i}") for i in idx]


def read_weights(path, section: str = "data") -> "OrderedDict[str, list[np.ndarray]]":
    """Read ``/data`` (or ``/diff``) as an ordered mapping layer name -> list of arrays."""
    with _open(path) as f, _damage_is_parse_error(path, f"'/{section}'"):
        if section not in f:
            raise ParseError(path, f"no '/{section}' group: not a Caffe HDF5 weights file")
        out: OrderedDict[str, list] = OrderedDict()
        _collect(f[section], "", out)
        return out


def write_solver_state(path, iter_: int, learned_net: str, history, current_step: int = 0) -> None:
    """Write a solver state in Caffe's HDF5 layout, atomically."""
    h5py = _h5py()
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("iter", data=np.int32(iter_))
            f.create_dataset("learned_net", data=np.bytes_(learned_net.encode("utf-8")))
            f.create_dataset("current_step", data=np.int32(current_step))
            h = f.create_group("history")
            for i, arr in enumerate(history):
                h.create_dataset(str(i), data=np.asarray(arr, np.float32))


def read_solver_state(path) -> dict:
    """Read an HDF5 solver state: dict with iter, learned_net, current_step, history (list)."""
    with _open(path) as f, _damage_is_parse_error(path, "solver state"):
        missing = [k for k in ("iter", "history") if k not in f]
        if missing:
            raise ParseError(path, f"missing {', '.join(missing)}: not a Caffe HDF5 solver state")
        hist = f["history"]
        n = len(hist)
        if sorted(hist.keys(), key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0)) != [
            str(i) for i in range(n)
        ]:
            raise ParseError(path, "history datasets must be named 0..N-1")
        learned = f["learned_net"][()] if "learned_net" in f else b""
        return {
            "iter": int(f["iter"][()]),
            "learned_net": learned.decode("utf-8") if isinstance(learned, bytes) else str(learned),
            "current_step": int(f["current_step"][()]) if "current_step" in f else 0,
            "history": [read_dataset(hist[str(i)], path, f"history/{i}") for i in range(n)],
        }
