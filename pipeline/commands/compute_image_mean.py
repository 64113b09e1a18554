"""compute_image_mean [--backend lmdb|leveldb] INPUT_DB [OUTPUT_FILE] — the mean image of a database.

Caffe's ``tools/compute_image_mean.cpp``: the per-pixel mean over every Datum of
the database (raw uint8, float_data, or encoded images decoded natively), written
as a BlobProto of shape 1×C×H×W (legacy num/channels/height/width fields, as
Caffe writes them) and summarised per channel::

    compute_image_mean: Number of channels: 3
    compute_image_mean: mean_value channel [0]: 104.0069

Differences from Caffe: the sums are float64 (Caffe's float32 sums drift once a
pixel's sum passes 2^24, i.e. beyond ~65,000 images); a record of another size
is an error naming its key (Caffe: a CHECK failure); an existing OUTPUT_FILE is
replaced atomically, with a note.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from ..data.datum import datum_to_array, parse_datum
from ..data.db import open_reader
from ..errors import DataError
from ..formats.binary import write_binary
from ..formats.blob import array_to_blobproto
from .flags import Parser

PROG = "compute_image_mean"


def mean_image(path, backend: str = "lmdb") -> tuple[np.ndarray, int]:
    """(mean C×H×W float64, number of records) of the Datums in a database."""
    total, shape, count = None, None, 0
    with open_reader(path, backend) as db:
        for key, value in db.items():
            arr = datum_to_array(parse_datum(value, key), color=None, key=key)
            if total is None:
                shape, total = arr.shape, np.zeros(arr.shape, np.float64)
            elif arr.shape != shape:
                k = key.decode("utf-8", "backslashreplace")
                raise DataError(
                    f"{path}: record '{k}' is {'x'.join(map(str, arr.shape))} (C×H×W), "
                    f"the first record was {'x'.join(map(str, shape))}"
                )
            total += arr
            count += 1
            if count % 10000 == 0:
                print(f"{PROG}: Processed {count} files.", file=sys.stderr)
    if count == 0:
        raise DataError(f"{path}: the database is empty")
    return total / count, count


def compute_image_mean(argv) -> int:
    p = Parser(prog=PROG, description="Compute the mean_image of a set of images given by a leveldb/lmdb.")
    p.add_argument("input", metavar="INPUT_DB")
    p.add_argument("output", metavar="OUTPUT_FILE", nargs="?", default="")
    p.add_argument("--backend", default="lmdb", help="The backend {leveldb, lmdb} containing the images")
    a = p.parse_args(argv)
    mean, count = mean_image(a.input, a.backend)
    print(f"{PROG}: Processed {count} files.", file=sys.stderr)
    if a.output:
        if os.path.exists(a.output):
            print(f"{PROG}: note: replacing the existing {a.output}", file=sys.stderr)
        print(f"{PROG}: Write to {a.output}", file=sys.stderr)
        write_binary(array_to_blobproto(mean[None].astype(np.float32), legacy_4d=True), a.output)
    print(f"{PROG}: Number of channels: {mean.shape[0]}", file=sys.stderr)
    for c, v in enumerate(mean.reshape(mean.shape[0], -1).mean(axis=1)):
        print(f"{PROG}: mean_value channel [{c}]: {v:.6g}", file=sys.stderr)
    return 0
