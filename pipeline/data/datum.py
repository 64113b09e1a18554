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
        uint8 (C, H, W) for ``data`` records; float32 (C, H, W) for ``float_data``
        records (pycaffe returns float64 there; the values are the same).

    Raises:
        DataError naming ``key`` when the record is not a Datum, its size does not
        match channels×height×width, or its encoded image does not decode.
    """
    if isinstance(datum, (bytes, bytearray, memoryview)):
        datum = parse_datum(datum, key)
    if datum.encoded:
        img = decode_image(datum.data, color, what=f"{_what(key)} (encoded image)")
        return np.ascontiguousarray(img.transpose(2, 0, 1))
    shape = (datum.channels, datum.height, datum.width)
    count = shape[0] * shape[1] * shape[2]
    if datum.data:
        if len(datum.data) != count:
            raise DataError(
                f"{_what(key)}: data holds {len(datum.data)} bytes, channels×height×width = "
                f"{shape[0]}×{shape[1]}×{shape[2]} = {count}"
            )
        return np.frombuffer(datum.data, np.uint8).reshape(shape).copy()
    if len(datum.float_data) != count:
        raise DataError(
            f"{_what(key)}: float_data holds {len(datum.float_data)} values, channels×height×width = "
            f"{shape[0]}×{shape[1]}×{shape[2]} = {count}"
        )
    if count == 0:
        raise DataError(f"{_what(key)}: the Datum holds no data (channels×height×width = 0)")
    return np.asarray(datum.float_data, np.float32).reshape(shape)


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
