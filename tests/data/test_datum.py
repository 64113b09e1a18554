"""Datum <-> numpy, and images stored as Datums (raw and encoded) the way convert_imageset does."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.data.datum import array_to_datum, datum_to_array, image_to_datum, parse_datum
from pipeline.data.image import decode_image, image_type
from pipeline.errors import DataError, ShapeError
from pipeline.proto import caffe_pb2


def png(arr_rgb) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr_rgb).save(buf, "PNG")
    return buf.getvalue()


def test_uint8_and_float_arrays_round_trip():
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    d = array_to_datum(a, label=7)
    assert (d.channels, d.height, d.width, d.label) == (2, 3, 4, 7)
    assert d.data == a.tobytes() and not d.float_data
    assert np.array_equal(datum_to_array(d), a)
    f = np.linspace(-1, 1, 24, dtype=np.float64).reshape(2, 3, 4)
    d = array_to_datum(f)
    assert not d.data and d.label == 0
    back = datum_to_array(d.SerializeToString())
    assert back.dtype == np.float32 and np.array_equal(back, f.astype(np.float32))
    with pytest.raises(ShapeError, match="C×H×W"):
        array_to_datum(np.zeros((3, 4)))


def test_corrupt_and_inconsistent_records_name_the_key():
    with pytest.raises(DataError, match="record '00000003_x.jpg': not a Datum"):
        parse_datum(b"\xff\xff\xff\xff", key=b"00000003_x.jpg")
    d = caffe_pb2.Datum(channels=3, height=2, width=2, data=b"\x00" * 11)
    with pytest.raises(DataError, match="record 'k1': data holds 11 bytes.*= 12"):
        datum_to_array(d, key="k1")
    d = caffe_pb2.Datum(channels=1, height=2, width=2)
    d.float_data.extend([1.0, 2.0])
    with pytest.raises(DataError, match="record 'k2': float_data holds 2 values"):
        datum_to_array(d, key="k2")
    d = caffe_pb2.Datum(encoded=True, data=b"garbage")
    with pytest.raises(DataError, match="record 'k3' \\(encoded image\\): not a decodable image"):
        datum_to_array(d, key="k3")


def test_raw_image_datum_is_bgr_channel_first():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    d, shape = image_to_datum(png(rgb), label=4)
    assert shape == (3, 5, 7) and (d.channels, d.height, d.width, d.label) == (3, 5, 7, 4)
    assert not d.encoded
    expected = rgb[:, :, ::-1].transpose(2, 0, 1)  # BGR, C×H×W
    assert d.data == expected.tobytes()


def test_encoded_keeps_file_bytes_only_when_nothing_changes():
    rgb = np.random.default_rng(1).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    data = png(rgb)
    d, _ = image_to_datum(data, 1, encoding="png")
    assert d.encoded and d.data == data and (d.channels, d.height, d.width) == (3, 6, 8)
    d, _ = image_to_datum(data, 1, encoding="file")
    assert d.data == data
    # resize -> re-encoded at the new size
    d, shape = image_to_datum(data, 1, height=3, width=4, encoding="png")
    assert d.data != data and shape == (3, 3, 4) and decode_image(d.data).shape == (3, 4, 3)
    # another type -> re-encoded, same pixels (PNG is lossless)
    d, _ = image_to_datum(data, 1, encoding="bmp")
    assert image_type(d.data) == "bmp" and np.array_equal(datum_to_array(d), rgb[:, :, ::-1].transpose(2, 0, 1))
    # gray from a colour file -> re-encoded as gray (Caffe would keep the colour file)
    d, shape = image_to_datum(data, 1, color=False, encoding="png")
    assert d.data != data and shape == (1, 6, 8) and datum_to_array(d).shape == (1, 6, 8)
    # a gray file stored for a gray run is kept as is
    gray = png(rgb[:, :, 0])
    d, _ = image_to_datum(gray, 1, color=False, encoding="png")
    assert d.data == gray and d.channels == 1
    # RGBA -> its alpha would come back under a native decode: re-encoded
    rgba = io.BytesIO()
    Image.fromarray(np.dstack([rgb, rgb[:, :, :1]]), "RGBA").save(rgba, "PNG")
    d, _ = image_to_datum(rgba.getvalue(), 1, encoding="png")
    assert d.data != rgba.getvalue() and datum_to_array(d).shape == (3, 6, 8)


def test_encoded_decode_honours_color_flag():
    rgb = np.random.default_rng(2).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    d, _ = image_to_datum(png(rgb), 0, encoding="png")
    assert datum_to_array(d).shape == (3, 4, 5)
    assert datum_to_array(d, color=False).shape == (1, 4, 5)
    g, _ = image_to_datum(png(rgb[:, :, 0]), 0, color=False, encoding="png")
    assert datum_to_array(g).shape == (1, 4, 5)  # native: the file is gray
    assert datum_to_array(g, color=True).shape == (3, 4, 5)


def _protobuf_pixels(wire: bytes):
    d = caffe_pb2.Datum.FromString(wire)
    return np.frombuffer(d.data, np.uint8).reshape(d.channels, d.height, d.width), d.label


def test_raw_wire_fast_path_reads_what_protobuf_reads():
    from pipeline.data.datum import datum_to_view, raw_datum_view

    r = np.random.default_rng(1)
    a, b = (r.integers(0, 256, (3, 4, 5), dtype=np.uint8) for _ in range(2))
    plain = array_to_datum(a, label=-3).SerializeToString()
    unknown = caffe_pb2.Datum()
    unknown.ParseFromString(b"\xa8\x06\x07" + b"\xb2\x06\x02hi" + b"\xbd\x06\x00\x00\x80\x3f")  # fields 101, 102, 103
    cases = [
        plain,
        plain + unknown.SerializeToString(),  # unknown varint, bytes and fixed32 fields are skipped
        plain + caffe_pb2.Datum(label=2**31 - 1).SerializeToString(),  # the last label wins
        plain + array_to_datum(b, label=5).SerializeToString(),  # the last data wins
        array_to_datum(a[:1]).SerializeToString(),
    ]
    for wire in cases:
        view, label = raw_datum_view(wire)
        want, want_label = _protobuf_pixels(wire)
        assert view.shape == want.shape and np.array_equal(view, want) and label == want_label
        assert not view.flags.writeable and np.shares_memory(view, np.frombuffer(wire, np.uint8))
        assert np.array_equal(datum_to_view(wire), want)
    assert np.array_equal(datum_to_array(plain), a) and datum_to_array(plain).flags.writeable
    floats = array_to_datum(a.astype(np.float32)).SerializeToString()
    encoded = caffe_pb2.Datum(encoded=True, data=png(a.transpose(1, 2, 0)[:, :, :3])).SerializeToString()
    short = caffe_pb2.Datum(channels=3, height=2, width=2, data=b"\x00" * 11).SerializeToString()
    empty = caffe_pb2.Datum(label=1).SerializeToString()
    for wire in (floats, encoded, short, plain[:-5], b"\xff\xff\xff", b"", empty):
        assert raw_datum_view(wire) is None  # left to protobuf, which parses or words the error
