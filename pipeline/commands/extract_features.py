"""``extract_features``: run a net forward and store blobs per item, as tools/extract_features.cpp.

    extract_features WEIGHTS PROTOTXT BLOB1[,BLOB2...] DB1[,DB2...] NUM_BATCHES lmdb|leveldb|hdf5
                     [CPU|GPU] [DEVICE_ID]

The net is built for the TEST phase from PROTOTXT (its data layers supply the
inputs), WEIGHTS are copied in by layer name, and the net runs NUM_BATCHES forward
passes. After each pass, for every named blob (shape ``(N, ...)``), each of its N
items becomes one record in that blob's database:

- key: the item's running index for that blob, zero-padded to 10 digits
  (``caffe::format_int(i, 10)``: ``0000000000``, ``0000000001``, ...);
- value: a serialized ``Datum`` with ``channels``, ``height``, ``width`` = the blob's
  legacy dims (``Blob::channels()/height()/width()``: axes 1, 2, 3, or 1 where the
  blob has fewer axes) and ``float_data`` = the item's ``count / N`` values in
  C-order; ``data``, ``label`` and ``encoded`` are left unset.

Caffe refuses blobs of more than 4 axes (its legacy accessors CHECK-fail); so do we
for lmdb/leveldb, naming the blob. ``hdf5`` is our extension: each DB name is an HDF5
file holding one float32 dataset per blob, named after the blob, of shape
``(items, *blob.shape[1:])`` (several blobs may share a file). Every output is
written under a temporary name and renamed when complete, so a failed run leaves
no partial database; an existing output is an error (Caffe opens its databases
with ``db::NEW``). A progress bar goes to stderr when it is a terminal; log lines
(Caffe's, on stderr in glog's format) and a summary close the run.
"""

from __future__ import annotations

import logging
import sys
import time as _time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError, GraphError, ShapeError
from ..formats.atomic import atomic_path
from ..proto import caffe_pb2
from .common import glog_to_stderr
from .devices import parse_gpus
from .flags import Parser
from .progress import Progress

_LOG = logging.getLogger("pipeline.extract_features")

BACKENDS = ("lmdb", "leveldb", "hdf5")
KEY_DIGITS = 10  # caffe::format_int(image_indices[i], 10)
COMMIT_EVERY = 1000  # Caffe commits (and logs) every 1000 items per blob


def feature_key(index: int) -> bytes:
    """Caffe's key for the ``index``-th item of a blob: ``format_int(index, 10)``."""
    return f"{index:0{KEY_DIGITS}d}".encode()


def legacy_dims(shape, blob: str) -> tuple[int, int, int]:
    """``(channels, height, width)`` as Caffe's legacy accessors give them (1 past the last axis)."""
    if len(shape) > 4:
        raise ShapeError(
            f"blob '{blob}' has {len(shape)} axes (shape {tuple(shape)}); a Datum holds at most 4 "
            "(num, channels, height, width) - Caffe's legacy accessors refuse it too; use the hdf5 backend"
        )
    dims = tuple(shape) + (1,) * (4 - len(shape))
    return int(dims[1]), int(dims[2]), int(dims[3])


def feature_datum(item: np.ndarray, dims: tuple[int, int, int]) -> caffe_pb2.Datum:
    """One item's Datum: legacy dims and ``float_data`` (C-order)."""
    d = caffe_pb2.Datum()
    d.channels, d.height, d.width = dims
    d.float_data.extend(np.asarray(item, np.float32).ravel().tolist())
    return d


def _items(data: np.ndarray) -> np.ndarray:
    """The blob as (num, count/num): a 0-d blob (a loss) is one item (``num()`` is 1)."""
    data = np.asarray(data, np.float32)
    return data.reshape(1, -1) if data.ndim == 0 else data.reshape(data.shape[0], -1)


class DatumSink:
    """One blob's database of Datums (lmdb or leveldb), through ``pipeline.data.db``."""

    def __init__(self, stack: ExitStack, path: str, backend: str, blob: str):
        from ..data.db import open_writer

        self.blob, self.path, self.count = blob, path, 0
        self.writer = stack.enter_context(open_writer(path, backend=backend, overwrite=False))

    def add(self, data: np.ndarray, log) -> None:
        dims = legacy_dims(data.shape if data.ndim else (), self.blob)
        for item in _items(data):
            self.writer.put(feature_key(self.count), feature_datum(item, dims).SerializeToString())
            self.count += 1
            if self.count % COMMIT_EVERY == 0:
                log(f"Extracted features of {self.count} query images for feature blob {self.blob}")


class Hdf5Sink:
    """One HDF5 file holding a growing float32 dataset per blob (our extension)."""

    def __init__(self, stack: ExitStack, path: str):
        import h5py

        if Path(path).exists():
            raise DataError(f"{path}: already exists; extract_features does not overwrite an output")
        self.path = path
        tmp = stack.enter_context(atomic_path(path))
        self.file = stack.enter_context(h5py.File(tmp, "w"))  # closed before the rename
        self.counts: dict[str, int] = {}

    def add(self, blob: str, data: np.ndarray) -> None:
        data = np.asarray(data, np.float32)
        data = data.reshape(1) if data.ndim == 0 else data
        if blob not in self.counts:
            self.file.create_dataset(
                blob, shape=(0,) + data.shape[1:], maxshape=(None,) + data.shape[1:], dtype="float32", chunks=True
            )
            self.counts[blob] = 0
        ds = self.file[blob]
        if ds.shape[1:] != data.shape[1:]:
            raise ShapeError(
                f"blob '{blob}' changed shape from {(None,) + ds.shape[1:]} to {data.shape} between batches"
            )
        n = self.counts[blob]
        ds.resize(n + len(data), axis=0)
        ds[n:] = data
        self.counts[blob] = n + len(data)


def extract(net, blobs: list[str], dbs: list[str], num_batches: int, backend: str, log=None) -> dict:
    """Run ``num_batches`` forward passes of ``net`` and store ``blobs`` into ``dbs``.

    Returns {blob: number of items written}. Raises before any forward pass for an
    unknown blob, a DB named twice (lmdb/leveldb), a blob of over 4 axes
    (lmdb/leveldb) or an output that already exists.
    """
    log = log or _LOG.info
    if backend not in BACKENDS:
        raise ConfigError(f"unknown db type '{backend}'; expected one of {', '.join(BACKENDS)}")
    if len(blobs) != len(dbs):
        raise ConfigError(f"the number of blob names ({len(blobs)}) and dataset names ({len(dbs)}) must be equal")
    for b in blobs:
        if b not in net.blobs:
            raise GraphError(f"Unknown feature blob name {b} in the network {net.source}")
    if backend != "hdf5":
        for i, d in enumerate(dbs):
            if d in dbs[:i]:
                raise ConfigError(f"dataset '{d}' is named twice; each blob needs its own {backend} database")
        for b in blobs:
            legacy_dims(net.blobs[b].shape, b)
    with ExitStack() as stack:
        if backend == "hdf5":
            files = {d: None for d in dbs}
            for d in files:
                log(f"Opening dataset {d}")
                files[d] = Hdf5Sink(stack, d)
        else:
            sinks = []
            for b, d in zip(blobs, dbs):
                log(f"Opening dataset {d}")
                sinks.append(DatumSink(stack, d, backend, b))
        log("Extracting Features")
        progress = Progress(num_batches, unit="batches", label="extract_features")
        counts = dict.fromkeys(blobs, 0)
        for batch in range(num_batches):
            net.forward()
            for i, (b, d) in enumerate(zip(blobs, dbs)):
                data = net.blobs[b].data
                if backend == "hdf5":
                    files[d].add(b, data)
                    counts[b] = files[d].counts[b]
                else:
                    sinks[i].add(data, log)
                    counts[b] = sinks[i].count
            progress.update(batch + 1, f"{sum(counts.values())} items")
        progress.finish()
    for b in blobs:
        log(f"Extracted features of {counts[b]} query images for feature blob {b}")
    log("Successfully extracted the features!")
    return counts


def extract_features(argv) -> int:
    """``extract_features``: returns 0 after writing every database."""
    p = Parser(
        prog="extract_features",
        description="Run a trained net forward over its data layer and store the named blobs, one record per item.",
    )
    p.add_argument("weights", help="pretrained net parameters (.caffemodel or .h5)")
    p.add_argument("prototxt", help="the feature extraction net (with a data layer)")
    p.add_argument("blobs", help="blob names separated by ','")
    p.add_argument("dbs", help="output database names separated by ',' (one per blob)")
    p.add_argument("num_batches", type=int, help="number of mini-batches (forward passes)")
    p.add_argument("db_type", choices=BACKENDS, help="output format")
    p.add_argument("mode", nargs="?", default="CPU", choices=("CPU", "GPU"), help="CPU (default) or GPU")
    p.add_argument("device_id", nargs="?", type=int, default=0, help="GPU id (default 0)")
    a = p.parse_args(argv)
    if a.num_batches < 0:
        raise ConfigError(f"NUM_BATCHES {a.num_batches}: must be 0 or more")
    blobs, dbs = a.blobs.split(","), a.dbs.split(",")
    with glog_to_stderr():
        if a.mode == "GPU":
            (gpu,) = parse_gpus(str(a.device_id), flag="DEVICE_ID")
            _LOG.info("Using GPU")
            _LOG.info(f"Using Device_id={gpu}")
            device = f"cuda:{gpu}"
        else:
            _LOG.info("Using CPU")
            device = "cpu"
        from ..net import Net

        t0 = _time.perf_counter()
        net = Net(a.prototxt, caffe_pb2.TEST, device=device)
        net.copy_from(a.weights)
        counts = extract(net, blobs, dbs, a.num_batches, a.db_type, _LOG.info)
        seconds = _time.perf_counter() - t0
    print(f"extract_features: {a.num_batches} batches in {seconds:.2f} s on {device}", file=sys.stderr)
    for b, d in zip(blobs, dbs):
        shape = tuple(net.blobs[b].shape)
        per_item = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        print(
            f"  {b}: {counts[b]} items x {per_item} floats (blob shape {shape}) -> {d} ({a.db_type})", file=sys.stderr
        )
    return 0
