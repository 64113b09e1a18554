"""Fuzzing the readers: every failure is a typed error naming the file (or record key).

CI runs 300 mutated/random cases per target with fixed seeds (fuzzing.py) and a few
hundred hypothesis examples (derandomized); ``-m slow`` runs 20,000 per target over
every zoo prototxt. Explicit cases pin the size checks made before allocating.
"""

from __future__ import annotations

import time

import pytest
from conftest import caffe_zoo_dir
from fuzzing import TARGETS, Seeds, run_target
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.data.datum import datum_to_array
from pipeline.data.imageset import read_list
from pipeline.errors import DataError, ParseError, ShapeError
from pipeline.formats import binary, hdf5, prototxt
from pipeline.formats.blob import blobproto_to_array
from pipeline.proto import caffe_pb2

HYPO = settings(max_examples=150, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return Seeds(tmp_path_factory.mktemp("fuzz"), caffe_zoo_dir())


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_mutated_and_random_inputs_fail_only_with_typed_errors(seeds, target):
    stats = run_target(target, 300, seed=0, seeds=seeds)
    assert stats.cases == 300
    assert stats.failures == [], stats.failures[:5]
    assert stats.typed_errors > 100  # the mutations really break files
    assert stats.rss_growth_mb < 100


@pytest.mark.slow
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_long_fuzz(tmp_path, target):
    seeds = Seeds(tmp_path, caffe_zoo_dir(), all_zoo=True)
    for seed in range(4):
        stats = run_target(target, 5000, seed=seed, seeds=seeds)
        assert stats.failures == [], stats.failures[:5]
        assert stats.rss_growth_mb < 300


# ------------------------------------------------------------- hypothesis
@HYPO
@given(st.text(max_size=300))
def test_random_prototxt_text(text):
    for msg in (caffe_pb2.NetParameter(), caffe_pb2.SolverParameter()):
        try:
            prototxt.parse_text(text, msg, "r.prototxt")
        except ParseError as e:
            assert e.path == "r.prototxt" and e.line is not None


@HYPO
@given(st.binary(max_size=400), st.sampled_from(["NetParameter", "BlobProto", "SolverState", "Datum"]))
def test_random_binary_messages(data, name):
    try:
        msg = binary.parse_binary(data, getattr(caffe_pb2, name)(), "r.bin")
    except ParseError as e:
        assert str(e).startswith("r.bin: ")
        return
    if name == "BlobProto":
        with _maybe(ShapeError):
            blobproto_to_array(msg, what="r.bin")


@HYPO
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40), max_size=8))
def test_random_list_files(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("lists") / "l.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    for floats in (False, True):
        try:
            entries, _ = read_list(path, float_labels=floats)
        except DataError as e:
            assert str(path) in str(e)
            continue
        assert all(e.path is None or isinstance(e.path, str) for e in entries)


class _maybe:
    """``with _maybe(E):`` lets E through silently (the value may be valid or not)."""

    def __init__(self, exc):
        self.exc = exc

    def __enter__(self):
        return self

    def __exit__(self, et, e, tb):
        return et is not None and issubclass(et, self.exc)


# ------------------------------------------------- size checks before allocating
def test_blobproto_claiming_1e12_elements_fails_fast(tmp_path):
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend([10**6, 10**6])
    blob.data.extend([1.0, 2.0])
    path = tmp_path / "huge.binaryproto"
    binary.write_blobproto(blob, path)
    t0 = time.perf_counter()
    with pytest.raises(ShapeError, match=r"claims 1,000,000,000,000 elements"):
        blobproto_to_array(binary.read_blobproto(path), what=str(path))
    assert time.perf_counter() - t0 < 1.0


def test_blob_shapes_whose_int64_product_wraps_are_refused():
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend([2**32, 2**32])  # np.prod in int64 wraps to 0 and would match an empty blob
    with pytest.raises(ShapeError, match="over Caffe's limit"):
        blobproto_to_array(blob)
    blob.shape.ClearField("dim")
    blob.shape.dim.extend([-2, -3])
    blob.data.extend([0.0] * 6)
    with pytest.raises(ShapeError, match="negative"):
        blobproto_to_array(blob)


def test_datum_with_negative_sizes_is_a_data_error():
    d = caffe_pb2.Datum(channels=-1, height=-1, width=6, data=b"\0" * 6)
    with pytest.raises(DataError, match="record 'k7'.*negative"):
        datum_to_array(d, key=b"k7")


def test_hdf5_dataset_claiming_more_than_the_file_holds(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as f:  # a huge sparse dataset: the header claims 4 GB, the file is tiny
        f.create_dataset("data/ip/0", shape=(2**30,), dtype="f4")
    t0 = time.perf_counter()
    with pytest.raises(ParseError, match=r"layer 'ip' blob 0: shape \(1073741824,\) needs 4,294,967,296 bytes"):
        hdf5.read_weights(path)
    assert time.perf_counter() - t0 < 1.0


def test_truncated_hdf5_weights_name_the_file(seeds, tmp_path):
    data = seeds.bytes["hdf5"][0]
    for cut in (len(data) // 3, len(data) - 100, 600):
        path = tmp_path / f"t{cut}.h5"
        path.write_bytes(data[:cut])
        with pytest.raises(ParseError) as e:
            hdf5.read_weights(path)
        assert str(e.value).startswith(str(path))


def test_non_utf8_name_in_a_binary_model_is_a_parse_error_naming_the_field(tmp_path):
    net = caffe_pb2.NetParameter(name="n")
    net.layer.add(name="ip", type="InnerProduct", bottom=["data"])
    raw = net.SerializeToString().replace(b"data", b"da\xf4a")
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(raw)
    with pytest.raises(ParseError, match=r"layer\[0\]\.bottom\[0\]: .* is not UTF-8"):
        binary.read_caffemodel(path)
