"""Datum records <-> numpy arrays, and images -> Datums the way convert_imageset stores them.

A ``caffe.Datum`` holds one item of a database (``src/caffe/util/io.cpp``):

- raw: ``data`` = uint8 bytes in C×H×W order (channels BGR for colour images, as
  OpenCV decodes), plus ``channels``, ``height``, ``width`` and ``label``;
- float: ``float_data`` = C·H·W floats (extract_features writes these);
- encoded: ``encoded: true`` and ``data`` = a whole image file (JPEG, PNG, ...).

Caffe leaves channels/height/width at 0 for encoded records it copies from the
file unchanged (NVIDIA/DIGITS#514); ``image_to_datum`` fills them in. Readers here
never rely on them for encoded records: they decode and take the decoded shape.
"""

from __future__ import annotations

import numpy as np
from google.protobuf.message import DecodeError

from ..errors import DataError, ShapeError
from ..proto import caffe_pb2
from .image import (
    ENCODE_TYPES,
    canonical_type,
    decode_image,
    decode_image_view,
    encode_image,
    image_type,
    native_channels,
    resize_bilinear,
)


def _what(key) -> str:
    if key is None:
        return "Datum"
    if isinstance(key, (bytes, bytearray)):
        key = bytes(key).decode("utf-8", "backslashreplace")
    return f"record '{key}'"


def parse_datum(value: bytes, key=None) -> caffe_pb2.Datum:
    """Parse a database value as a Datum; a corrupt record is a DataError naming ``key``."""
    datum = caffe_pb2.Datum()
    try:
        datum.ParseFromString(bytes(value))
    except (DecodeError, RuntimeError, ValueError) as e:
        raise DataError(f"{_what(key)}: not a Datum ({len(value)} bytes; {e})") from None
    return datum


def array_to_datum(arr, label=None) -> caffe_pb2.Datum:
    """pycaffe's ``caffe.io.array_to_datum``: a C×H×W array as a Datum.

    uint8 arrays go to ``data`` (raw bytes), any other dtype to ``float_data``
    (float32). ``label`` (an int) is set when given.
    """
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise ShapeError(f"array_to_datum: expected a C×H×W array, got shape {arr.shape}")
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = (int(d) for d in arr.shape)
    if arr.dtype == np.uint8:
        datum.data = np.ascontiguousarray(arr).tobytes()
    else:
        datum.float_data.extend(np.asarray(arr, np.float32).ravel().tolist())
    if label is not None:
        datum.label = int(label)
    return datum


def datum_to_array(datum, color: bool | None = None, key=None) -> np.ndarray:
    """The C×H×W array a Datum holds (pycaffe's ``caffe.io.datum_to_array``, plus encoded records).

    Args:
        datum: a ``caffe_pb2.Datum`` or its serialized bytes.
        color: for encoded records: True decodes colour (BGR, 3 channels), False
            gray (1 channel), None the file's own kind (Caffe's
            ``DecodeDatumToCVMatNative``; alpha is dropped).
        key: the record's database key, named in errors.

    Returns:
        A new, writable, C-contiguous array: uint8 (C, H, W) for ``data`` records;
        float32 (C, H, W) for ``float_data`` records (pycaffe returns float64 there;
        the values are the same).

    Raises:
        DataError naming ``key`` when the record is not a Datum, its size does not
        match channels×height×width, or its encoded image does not decode.
    """
    arr = datum_to_view(datum, color, key)
    # uint8 pixels are views of the record's bytes or of the decoder's image: copy them;
    # float_data was converted into a new array already.
    return np.array(arr, order="C") if arr.dtype == np.uint8 else arr


def datum_to_view(datum, color: bool | None = None, key=None) -> np.ndarray:
    """``datum_to_array`` without copies: a read-only (C, H, W) view of the record's pixels.

    Raw records give a view of ``datum.data`` (the bytes object keeps the memory
    alive); encoded ones a channel-first view of the decoded image
    (``image.decode_image_view``), strides and all. The data layers read items this
    way and copy each pixel once, into the transformed batch.
    """
    if isinstance(datum, (bytes, bytearray, memoryview)):
        datum = parse_datum(datum, key)
    if datum.encoded:
        img = decode_image_view(datum.data, color, what=f"{_what(key)} (encoded image)")
        return img.transpose(2, 0, 1)
    shape = (datum.channels, datum.height, datum.width)
    if min(shape) < 0:
        raise DataError(f"{_what(key)}: negative size channels×height×width = {shape[0]}×{shape[1]}×{shape[2]}")
    count = shape[0] * shape[1] * shape[2]
    data = datum.data
    if data:
        if len(data) != count:
            raise DataError(
                f"{_what(key)}: data holds {len(data)} bytes, channels×height×width = "
                f"{shape[0]}×{shape[1]}×{shape[2]} = {count}"
            )
        return np.frombuffer(data, np.uint8).reshape(shape)
    if len(datum.float_data) != count:
        raise DataError(
            f"{_what(key)}: float_data holds {len(datum.float_data)} values, channels×height×width = "
            f"{shape[0]}×{shape[1]}×{shape[2]} = {count}"
        )
    if count == 0:
        raise DataError(f"{_what(key)}: the Datum holds no data (channels×height×width = 0)")
    return np.asarray(datum.float_data, np.float32).reshape(shape)


_DATUM_FIELDS = frozenset((1, 2, 3, 4, 5, 7))  # Datum's fields but float_data (6)
_VARINT_FIELDS = frozenset((1, 2, 3, 5, 7))


def _varint(buf, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _int32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


def raw_datum_view(value) -> tuple[np.ndarray, int] | None:
    """The pixels and label of a *raw* Datum straight from its wire bytes, without parsing a message.

    Returns ``(uint8 (C, H, W) view into value, label)`` when ``value`` is a
    well-formed Datum with ``data`` of exactly channels×height×width bytes, not
    encoded and without ``float_data``; otherwise None, and the caller parses it
    with protobuf (which also words any error). Fields are read as protobuf
    reads them: the last occurrence of a field wins, unknown fields are skipped,
    int32 values are two's complement.

    This is the data layers' hot path for raw records: protobuf would copy the
    pixels twice (into the message, then into a new ``bytes`` for ``.data``), and
    those 200 KB allocations, made and freed on several worker threads at once,
    cost more in page faults than the transform itself.
    """
    n, pos = len(value), 0
    ints = [0] * 8  # the last value of varint fields 1 (channels), 2, 3, 5 (label), 7 (encoded)
    start = size = -1
    try:
        while pos < n:
            tag = value[pos]  # one-byte tags and values inline: the common case
            pos += 1
            if tag >= 0x80:
                tag, pos = _varint(value, pos - 1)
            field, wire = tag >> 3, tag & 7
            if wire == 0:
                v = value[pos]
                pos += 1
                if v >= 0x80:
                    v, pos = _varint(value, pos - 1)
                if field in _VARINT_FIELDS:
                    ints[field] = v
                elif field in _DATUM_FIELDS or field == 6 or field == 0:
                    return None
            elif wire == 2:
                if field in _VARINT_FIELDS or field == 6 or field == 0:
                    return None  # packed float_data, or a wire type protobuf would refuse or merge
                length, pos = _varint(value, pos)
                if field == 4:
                    start, size = pos, length
                pos += length
            elif field in _DATUM_FIELDS or field == 6 or field == 0:
                return None
            elif wire == 5:
                pos += 4
            elif wire == 1:
                pos += 8
            else:
                return None  # groups: leave them to protobuf
    except (IndexError, ValueError):
        return None
    if pos != n:
        return None
    c, h, w = _int32(ints[1]), _int32(ints[2]), _int32(ints[3])
    if ints[7] or size <= 0 or c <= 0 or h <= 0 or w <= 0 or c * h * w != size:
        return None
    return np.frombuffer(value, np.uint8, size, start).reshape(c, h, w), _int32(ints[5])


def image_to_datum(
    data: bytes,
    label: int = 0,
    color: bool = True,
    height: int = 0,
    width: int = 0,
    encoding: str = "",
    what: str = "image",
) -> tuple[caffe_pb2.Datum, tuple]:
    """Caffe's ``ReadImageToDatum`` on a file's bytes: decode, resize, store raw or encoded.

    Args:
        data: the image file's bytes.
        label: the Datum's label.
        color: decode as colour (3 channels, BGR) or gray (1 channel).
        height, width: resize to this size when both > 0 (``cv::resize`` bilinear).
        encoding: '' stores raw C×H×W pixels; otherwise an encoded record of this
            type ('jpg', 'png', ...; 'file' means the file's own type).
        what: names the image in errors.

    Returns:
        (datum, (C, H, W)) where (C, H, W) is the decoded (and resized) shape.

    Encoded records keep the file's bytes unchanged when no resize is asked, the
    file's real type (by its magic bytes, not its name) is the requested one and
    the file decodes natively to the requested channels with no EXIF rotation;
    otherwise the decoded image is re-encoded. Caffe's check for the channels
    compares the *decoded* image and is always true, so ``--gray --encoded`` in
    Caffe stores colour JPEGs that decode back to 3 channels; here they are
    re-encoded as gray. channels/height/width are filled in for encoded records.
    """
    img = decode_image(data, color, what=what)
    resized = height > 0 and width > 0
    if resized:
        img = resize_bilinear(img, height, width)
    datum = caffe_pb2.Datum()
    shape = (img.shape[2], img.shape[0], img.shape[1])
    datum.channels, datum.height, datum.width = shape
    datum.label = int(label)
    if encoding:
        kind = image_type(data)
        enc = kind if encoding == "file" else canonical_type(encoding)
        keep = not resized and kind == enc and native_channels(data, what) == (3 if color else 1)
        if not keep and enc not in ENCODE_TYPES:
            enc = "png"  # a file type we do not write (gif, unknown): re-encode losslessly
        datum.data = bytes(data) if keep else encode_image(img, enc)
        datum.encoded = True
    else:
        datum.data = np.ascontiguousarray(img.transpose(2, 0, 1)).tobytes()
    return datum, shape
