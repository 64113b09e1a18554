"""BlobProto <-> numpy, with Caffe's shape rules.

A BlobProto's shape is ``shape.dim`` when present, else the legacy 4-d
``num, channels, height, width``. Values come from ``data`` (float32) or
``double_data`` (float64).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ShapeError
from ..proto import caffe_pb2

MAX_AXES = 32  # Caffe's kMaxBlobAxes
MAX_COUNT = 2**31 - 1  # Caffe's Blob::Reshape: count must fit an int (CHECK_LE(count_, INT_MAX))


def blob_shape(blob: caffe_pb2.BlobProto) -> tuple:
    """The blob's shape: ``shape.dim`` or the legacy (num, channels, height, width)."""
    if blob.HasField("shape"):
        return tuple(int(d) for d in blob.shape.dim)
    if blob.HasField("num") or blob.HasField("channels") or blob.HasField("height") or blob.HasField("width"):
        return (blob.num, blob.channels, blob.height, blob.width)
    n = len(blob.data) or len(blob.double_data)
    return (n,) if n else (0,)


def _varint(buf, pos):
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _packed_values(blob: caffe_pb2.BlobProto, number: int, dtype) -> np.ndarray:
    """Field ``number`` of ``blob`` as a numpy array, read straight from the wire.

    Iterating a protobuf repeated field element by element is slow for the tens of
    millions of values in a real model; the packed bytes are already little-endian
    floats, so they are viewed directly (unpacked encodings are handled too).
    """
    buf = blob.SerializeToString()
    chunks = []
    pos, end = 0, len(buf)
    itemsize = np.dtype(dtype).itemsize
    while pos < end:
        tag, pos = _varint(buf, pos)
        num, wire = tag >> 3, tag & 7
        if wire == 2:
            length, pos = _varint(buf, pos)
            if num == number:
                chunks.append(np.frombuffer(buf, dtype, length // itemsize, pos))
            pos += length
        elif wire == 0:
            _, pos = _varint(buf, pos)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if num == number:
                chunks.append(np.frombuffer(buf, dtype, 1, pos))
            pos += size
        else:
            break
    if not chunks:
        return np.zeros(0, dtype)
    return chunks[0].copy() if len(chunks) == 1 else np.concatenate(chunks)


def check_shape(shape, what: str = "blob") -> int:
    """The element count of ``shape`` after Caffe's ``Blob::Reshape`` checks, computed
    exactly (Python ints: a shape claiming 10^12 x 10^12 elements cannot wrap around).

    Raises ShapeError for a negative dimension, more than 32 axes or more than
    INT_MAX elements, before anything is allocated from the claimed shape.
    """
    if len(shape) > MAX_AXES:
        raise ShapeError(f"{what}: shape has {len(shape)} axes, Caffe's limit is {MAX_AXES}")
    if any(d < 0 for d in shape):
        raise ShapeError(f"{what}: shape {tuple(shape)} has a negative dimension")
    count = math.prod(shape)
    if count > MAX_COUNT:
        raise ShapeError(f"{what}: shape {tuple(shape)} claims {count:,} elements, over Caffe's limit of {MAX_COUNT:,}")
    return count


def blobproto_to_array(blob: caffe_pb2.BlobProto, return_diff: bool = False, what: str = "blob") -> np.ndarray:
    """The values (or diffs) of ``blob`` as an array of its shape (float32 or float64)."""
    shape = blob_shape(blob)
    expected = check_shape(shape, what)
    f32, f64 = (6, 9) if return_diff else (5, 8)
    doubles = len(blob.double_diff if return_diff else blob.double_data)
    vals = _packed_values(blob, f64, "<f8") if doubles else _packed_values(blob, f32, "<f4")
    if vals.size != expected:
        raise ShapeError(f"{what}: shape {shape} needs {expected} values, the file holds {vals.size}")
    return vals.reshape(shape)


def array_to_blobproto(arr, diff=None, legacy_4d: bool = False) -> caffe_pb2.BlobProto:
    """A BlobProto holding ``arr`` (float32) and optionally ``diff``.

    ``legacy_4d=True`` writes num/channels/height/width instead of ``shape``
    (4-d arrays only), as old tools such as compute_image_mean once did.
    """
    arr = np.asarray(arr)
    blob = caffe_pb2.BlobProto()
    if legacy_4d:
        if arr.ndim != 4:
            raise ShapeError(f"legacy 4-d BlobProto needs a 4-d array, got shape {arr.shape}")
        blob.num, blob.channels, blob.height, blob.width = (int(d) for d in arr.shape)
    else:
        blob.shape.dim.extend(int(d) for d in arr.shape)
    # Packed floats are encoded by hand (one memory copy) instead of element by element.
    parts = []
    for number, values in ((5, arr), (6, diff)):
        if values is None:
            continue
        raw = np.ascontiguousarray(values, dtype="<f4").tobytes()
        if raw:
            parts += [_encode_varint(number << 3 | 2), _encode_varint(len(raw)), raw]
    blob.MergeFromString(b"".join(parts))
    return blob
