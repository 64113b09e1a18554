"""Binary files: byte-stable round trips, big models, and errors that say where."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import ParseError, ShapeError
from pipeline.formats import binary
from pipeline.formats.blob import array_to_blobproto, blob_shape, blobproto_to_array
from pipeline.proto import caffe_pb2


def _model(rng, sizes=((20, 1, 5, 5), (20,), (10, 20), (10,))):
    net = caffe_pb2.NetParameter(name="tiny")
    names = ["conv1", "conv1", "fc", "fc"]
    layers = {}
    for name, shape in zip(names, sizes):
        if name not in layers:
            layers[name] = net.layer.add(name=name, type="Convolution" if name == "conv1" else "InnerProduct")
        layers[name].blobs.append(array_to_blobproto(rng.standard_normal(shape).astype(np.float32)))
    return net


def test_caffemodel_round_trip_is_byte_stable(tmp_path):
    net = _model(np.random.default_rng(0))
    p1, p2 = tmp_path / "a.caffemodel", tmp_path / "b.caffemodel"
    binary.write_caffemodel(net, p1)
    back = binary.read_caffemodel(p1)
    assert back == net
    binary.write_caffemodel(back, p2)
    assert p1.read_bytes() == p2.read_bytes()


def test_binaryproto_round_trip_is_byte_stable_and_values_exact(tmp_path):
    mean = np.random.default_rng(1).uniform(0, 255, (1, 3, 8, 6)).astype(np.float32)
    for legacy in (False, True):
        p = tmp_path / f"mean{legacy}.binaryproto"
        binary.write_blobproto(array_to_blobproto(mean, legacy_4d=legacy), p)
        blob = binary.read_blobproto(p)
        assert blob_shape(blob) == (1, 3, 8, 6)
        assert np.array_equal(blobproto_to_array(blob), mean)
        q = tmp_path / "again.binaryproto"
        binary.write_blobproto(blob, q)
        assert q.read_bytes() == p.read_bytes()


def test_solverstate_round_trip_is_byte_stable(tmp_path):
    rng = np.random.default_rng(2)
    st = caffe_pb2.SolverState(iter=1234, learned_net="snap_iter_1234.caffemodel", current_step=2)
    for shape in ((20, 1, 5, 5), (20,)):
        st.history.append(array_to_blobproto(rng.standard_normal(shape)))
    p, q = tmp_path / "s.solverstate", tmp_path / "t.solverstate"
    binary.write_solverstate(st, p)
    back = binary.read_solverstate(p)
    assert back.iter == 1234 and back.current_step == 2 and len(back.history) == 2
    binary.write_solverstate(back, q)
    assert p.read_bytes() == q.read_bytes()


def test_blob_values_from_doubles_and_unpacked_wire():
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend([2, 2])
    blob.double_data.extend([1.0, 2.5, -3.0, 4.0])
    arr = blobproto_to_array(blob)
    assert arr.dtype == np.float64 and arr.tolist() == [[1.0, 2.5], [-3.0, 4.0]]
    # An old writer may have used the unpacked encoding: tag 5 (wire 5) per float.
    raw = b"".join(b"\x2d" + np.float32(v).tobytes() for v in (1.0, 2.0, 3.0))
    b2 = caffe_pb2.BlobProto()
    b2.MergeFromString(raw)
    assert blobproto_to_array(b2).tolist() == [1.0, 2.0, 3.0]


def test_blob_count_mismatch_is_a_shape_error():
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend([2, 3])
    blob.data.extend([1.0, 2.0])
    with pytest.raises(ShapeError, match=r"\(2, 3\) needs 6 values, the file holds 2"):
        blobproto_to_array(blob)


def test_big_caffemodel_over_100mb_loads(tmp_path):
    # 27M floats = 108 MB: over protobuf's old 64 MB default limit.
    w = np.arange(27_000_000, dtype=np.float32).reshape(27_000, 1_000)
    net = caffe_pb2.NetParameter(name="big")
    net.layer.add(name="fc", type="InnerProduct").blobs.append(array_to_blobproto(w))
    p = tmp_path / "big.caffemodel"
    binary.write_caffemodel(net, p)
    del net
    assert p.stat().st_size > 100 * 2**20
    back = binary.read_caffemodel(p)
    arr = blobproto_to_array(back.layer[0].blobs[0])
    assert arr.shape == w.shape and arr[-1, -1] == w[-1, -1] and np.array_equal(arr[::997], w[::997])


def test_truncated_caffemodel_names_file_field_and_offset(tmp_path):
    net = _model(np.random.default_rng(3))
    data = net.SerializeToString()
    p = tmp_path / "cut.caffemodel"
    p.write_bytes(data[: len(data) - 100])
    with pytest.raises(ParseError) as ei:
        binary.read_caffemodel(p)
    msg = str(ei.value)
    assert str(p) in msg
    assert "layer[1]" in msg and "truncated" in msg and "byte" in msg


def test_garbage_and_empty_files(tmp_path):
    g = tmp_path / "garbage.binaryproto"
    g.write_bytes(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff")
    with pytest.raises(ParseError, match="garbage.binaryproto: not a valid binary BlobProto"):
        binary.read_blobproto(g)
    e = tmp_path / "empty.caffemodel"
    e.write_bytes(b"")
    with pytest.raises(ParseError, match="empty file"):
        binary.read_caffemodel(e)
    with pytest.raises(ParseError, match="no such file"):
        binary.read_solverstate(tmp_path / "missing.solverstate")


def test_wire_walker_reports_wrong_wire_types():
    # Field 1 of NetParameter (name, a string) written as a varint: protobuf keeps it as
    # an unknown field, the walker that explains failures still points at it.
    where = binary.locate_wire_error(b"\x08\x05", caffe_pb2.NetParameter.DESCRIPTOR)
    assert where == "name at byte 0: wire type varint, expected length-delimited for a name field"
    assert binary.locate_wire_error(_model(np.random.default_rng(4)).SerializeToString(),
                                    caffe_pb2.NetParameter.DESCRIPTOR) is None


def test_write_is_atomic_on_failure(tmp_path):
    p = tmp_path / "keep.caffemodel"
    p.write_bytes(b"old")

    class Boom:
        def SerializeToString(self):
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        binary.write_binary(Boom(), p)
    assert p.read_bytes() == b"old"
    assert [x.name for x in tmp_path.iterdir()] == ["keep.caffemodel"]
