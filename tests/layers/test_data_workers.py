"""Data and ImageData with several decode/transform workers: the batches, positions and errors of one worker,
checked against Caffe's Transform loops with a pure-Python mt19937 (tests/data_reference.py) and cv2 decodes."""

from __future__ import annotations

import json
import threading

import cv2
import numpy as np
import pytest
from data_reference import MT19937, caffe_transform, raw_datum, write_lmdb
from layer_harness import make_layer, run

from pipeline.data.transform import DataTransformer
from pipeline.errors import ConfigError, DataError
from pipeline.formats.blob import array_to_blobproto
from pipeline.layers.data_sources import Data
from pipeline.proto import caffe_pb2

N_REC, SHAPE, CROP = 11, (3, 12, 14), 9


@pytest.fixture(scope="module")
def dbs(tmp_path_factory):
    """A raw LMDB and a JPEG-encoded LMDB of the same 11 images (labels 20..30), and a mean file."""
    d = tmp_path_factory.mktemp("workers")
    r = np.random.default_rng(7)
    arrays = [r.integers(0, 256, SHAPE, dtype=np.uint8) for _ in range(N_REC)]
    raw = write_lmdb(d / "raw_lmdb", [raw_datum(a, 20 + i) for i, a in enumerate(arrays)])
    jpegs = [cv2.imencode(".jpg", a.transpose(1, 2, 0))[1].tobytes() for a in arrays]
    enc = write_lmdb(
        d / "jpeg_lmdb", [caffe_pb2.Datum(encoded=True, label=20 + i, data=j) for i, j in enumerate(jpegs)]
    )
    decoded = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR).transpose(2, 0, 1) for j in jpegs]
    mean = r.uniform(0, 255, (1,) + SHAPE).astype(np.float32)
    (d / "mean.binaryproto").write_bytes(array_to_blobproto(mean).SerializeToString())
    return {
        "raw": (raw, arrays),
        "jpeg": (enc, decoded),
        "mean": mean[0],
        "mean_file": str(d / "mean.binaryproto"),
    }


def _layer(dbs, fmt, workers, batch=4, prefetch=4, extra=""):
    transform = f'crop_size: {CROP} mirror: true scale: 0.25 mean_file: "{dbs["mean_file"]}"'
    layer, _ = make_layer(
        f'name: "d" type: "Data" top: "data" top: "label" data_param {{ source: "{dbs[fmt][0]}" '
        f"batch_size: {batch} backend: LMDB prefetch: {prefetch} {extra} }} transform_param {{ {transform} }}",
        [],
    )
    layer.workers = workers
    return layer


def _reference(dbs, fmt, seed, n, start=0):
    rng, arrays = MT19937(seed), dbs[fmt][1]
    idx = [(start + i) % N_REC for i in range(n)]
    data = [caffe_transform(arrays[i], rng, crop=CROP, mirror=True, scale=0.25, mean=dbs["mean"]) for i in idx]
    return np.stack(data), np.array([20 + i for i in idx], np.float32)


@pytest.mark.parametrize("fmt", ["raw", "jpeg"])
@pytest.mark.parametrize("prefetch", [4, 0])
def test_workers_give_caffes_batches_and_the_same_positions(dbs, fmt, prefetch):
    layers = [_layer(dbs, fmt, k, prefetch=prefetch) for k in (1, 2, 3)]
    seed = layers[0].seed = layers[1].seed = layers[2].seed = 4242  # before the source is rebuilt
    for layer in layers:
        layer.setup([])
    ref_data, ref_label = _reference(dbs, fmt, seed, 4 * 4)  # 16 items over 11 records: wraps
    for b in range(4):
        outs = [run(layer) for layer in layers]
        positions = [layer.get_position() for layer in layers]
        for data, label in outs:
            np.testing.assert_array_equal(data.numpy(), ref_data[4 * b : 4 * b + 4])
            np.testing.assert_array_equal(label.numpy(), ref_label[4 * b : 4 * b + 4])
        assert positions[0] == positions[1] == positions[2]
        assert positions[0]["offset"] == 4 * (b + 1)
    for layer in layers:
        layer.close()


def test_items_are_filled_on_the_worker_threads(dbs, monkeypatch):
    seen = set()
    original = DataTransformer.transform_item

    def spy(self, *args, **kwargs):
        seen.add(threading.current_thread().name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DataTransformer, "transform_item", spy)
    layer = _layer(dbs, "jpeg", 2, batch=8)
    for _ in range(3):
        run(layer)
    layer.close()
    assert seen and all(name.startswith("Data:d:worker") for name in seen), seen
    seen.clear()
    single = _layer(dbs, "jpeg", 1, batch=8)
    run(single)
    single.close()
    assert seen == {"Data:d"}  # one worker: the prefetch thread fills the items itself


def test_resume_with_workers_is_exact(dbs):
    a = _layer(dbs, "jpeg", 2)
    for _ in range(3):
        run(a)
    pos = json.loads(json.dumps(a.get_position()))
    assert pos["offset"] == 12
    expected = [run(a) for _ in range(3)]
    b = _layer(dbs, "jpeg", 3)  # another seed, another worker count
    b.set_position(pos)
    got = [run(b)]
    b.workers = 1  # changing the count mid-stream keeps the stream
    got += [run(b) for _ in range(2)]
    for g, w in zip(got, expected):
        for x, y in zip(g, w):
            np.testing.assert_array_equal(x.numpy(), y.numpy())
    ref_data, _ = _reference(dbs, "jpeg", a.seed, 6 * 4)
    np.testing.assert_array_equal(np.concatenate([g[0].numpy() for g in got]), ref_data[12:24])
    a.close()
    b.close()


def test_workers_from_the_environment_and_bad_values(dbs, monkeypatch):
    monkeypatch.setenv("PIPELINE_DATA_WORKERS", "3")
    layer = Data(dbs["raw"][0], 2, "lmdb", name="d")
    assert layer.workers == 3
    assert Data(dbs["raw"][0], 2, "lmdb", name="d", workers=2).workers == 2  # the keyword wins
    monkeypatch.setenv("PIPELINE_DATA_WORKERS", "many")
    with pytest.raises(ConfigError, match="Data layer 'd': PIPELINE_DATA_WORKERS='many': expected a positive"):
        Data(dbs["raw"][0], 2, "lmdb", name="d")
    monkeypatch.delenv("PIPELINE_DATA_WORKERS")
    assert Data(dbs["raw"][0], 2, "lmdb", name="d").workers == 1
    with pytest.raises(ConfigError, match="workers=0: expected a positive integer"):
        Data(dbs["raw"][0], 2, "lmdb", name="d", workers=0)
    with pytest.raises(ConfigError, match="workers=1.5"):
        layer.workers = 1.5


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_the_first_failing_item_is_reported_and_the_position_kept(dbs, tmp_path, workers):
    datums = [raw_datum(a, i) for i, a in enumerate(dbs["raw"][1][:8])]
    path = write_lmdb(tmp_path / "bad_lmdb", datums)
    import lmdb

    env = lmdb.open(path)
    with env.begin(write=True) as txn:  # records 5 and 6 of the first batch are broken
        txn.put(b"00000005", b"\xff\xff\xff")
        txn.put(b"00000006", raw_datum(np.zeros((3, 2, 2), np.uint8), 6).SerializeToString())
    env.close()
    layer, _ = make_layer(
        f'name: "d" type: "Data" top: "data" top: "label" data_param {{ source: "{path}" batch_size: 8 '
        f"backend: LMDB }} transform_param {{ crop_size: {CROP} }}",
        [],
    )
    layer.workers = workers
    for _ in range(2):  # the retry reads the same batch again
        with pytest.raises(DataError, match="Data layer 'd': record '00000005' of .*not a Datum"):
            run(layer)
        assert layer.get_position()["offset"] == 0
    layer.close()


def test_image_data_with_workers(tmp_path):
    r = np.random.default_rng(11)
    imgs = [r.integers(0, 256, (10 + i % 3, 12, 3), dtype=np.uint8) for i in range(7)]
    for i, img in enumerate(imgs):
        cv2.imwrite(str(tmp_path / f"{i}.png"), img)
    (tmp_path / "list.txt").write_text("".join(f"{i}.png {i}\n" for i in range(7)))
    snippet = (
        f'name: "img" type: "ImageData" top: "data" top: "label" image_data_param {{ source: "{tmp_path}/list.txt" '
        f'root_folder: "{tmp_path}/" batch_size: 3 }} transform_param {{ crop_size: 8 mirror: true mean_value: 9 }}'
    )
    one, _ = make_layer(snippet, [])
    two, _ = make_layer(snippet, [])
    two.workers, two.seed = 2, one.seed
    two.setup([])
    rng = MT19937(one.seed)
    for b in range(3):  # 9 images over 7 lines: wraps
        a, c = run(one), run(two)
        idx = [(3 * b + i) % 7 for i in range(3)]
        ref = np.stack(
            [caffe_transform(imgs[i].transpose(2, 0, 1), rng, crop=8, mirror=True, mean_values=[9]) for i in idx]
        )
        for x in (a, c):
            np.testing.assert_array_equal(x[0].numpy(), ref)
            np.testing.assert_array_equal(x[1].numpy(), idx)
    assert one.get_position() == two.get_position()
    one.close()
    two.close()


def test_a_net_holding_a_batch_is_never_overwritten(dbs):
    """Batch arrays are recycled only once nothing references them (here: tops kept by the caller)."""
    layer = _layer(dbs, "raw", 2, batch=3)
    kept = [run(layer)[0] for _ in range(12)]  # more than the recycler keeps, all still referenced
    ref_data, _ = _reference(dbs, "raw", layer.seed, 36)
    np.testing.assert_array_equal(np.concatenate([k.numpy() for k in kept]), ref_data)
    assert len({k.data_ptr() for k in kept}) == 12
    del kept
    for b in range(12, 16):  # recycled arrays from here on; the values still Caffe's
        ref_data, _ = _reference(dbs, "raw", layer.seed, 3 * (b + 1))
        np.testing.assert_array_equal(run(layer)[0].numpy(), ref_data[3 * b :])
    layer.close()
