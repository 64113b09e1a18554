"""Data source layers against independent references: plain lmdb + caffe_pb2 reads, cv2 decodes,
h5py files, and Caffe's Transform loops with a pure-Python mt19937 (tests/data_reference.py)."""

from __future__ import annotations

import json

import cv2
import h5py
import numpy as np
import pytest
import torch
from data_reference import MT19937, TEST, TRAIN, caffe_transform, raw_datum, write_lmdb
from layer_harness import make_layer, run

import pipeline as caffe
from pipeline.errors import ConfigError, DataError, ShapeError
from pipeline.formats.blob import array_to_blobproto
from pipeline.layers.data_sources import Data, HDF5Data
from pipeline.proto import caffe_pb2

N_REC, SHAPE = 7, (3, 6, 7)


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """An LMDB of 7 raw uint8 Datums (labels 10..16) and a matching mean file."""
    d = tmp_path_factory.mktemp("db")
    r = np.random.default_rng(0)
    arrays = [r.integers(0, 256, SHAPE, dtype=np.uint8) for _ in range(N_REC)]
    path = write_lmdb(d / "train_lmdb", [raw_datum(a, 10 + i) for i, a in enumerate(arrays)])
    mean = r.uniform(0, 255, (1,) + SHAPE).astype(np.float32)
    (d / "mean.binaryproto").write_bytes(array_to_blobproto(mean).SerializeToString())
    return {"path": path, "arrays": arrays, "mean": mean[0], "mean_file": str(d / "mean.binaryproto")}


def _data(db, phase=TRAIN, batch=3, extra="", transform="", prefetch=None):
    pf = f" prefetch: {prefetch}" if prefetch is not None else ""
    snippet = (
        f'name: "d" type: "Data" top: "data" top: "label" data_param {{ source: "{db["path"]}" '
        f"batch_size: {batch} backend: LMDB{pf} {extra} }} transform_param {{ {transform} }}"
    )
    return make_layer(snippet, [], phase=phase)


def _stream(db, rng, n, start=0, phase=TRAIN, step=1, **kw):
    """Reference: records start, start+step, ... (wrapping), transformed with Caffe's loops."""
    idx = [(start + step * i) % N_REC for i in range(n)]
    data = np.stack([caffe_transform(db["arrays"][i], rng, phase=phase, **kw) for i in idx])
    return data, np.array([10 + i for i in idx], np.float32)


@pytest.mark.parametrize("phase", [TRAIN, TEST])
def test_data_layer_matches_caffe_with_wrap_around(db, phase):
    transform = f'crop_size: 4 mirror: true scale: 0.5 mean_file: "{db["mean_file"]}"'
    layer, tops = _data(db, phase, transform=transform)
    assert tops == [(3, 3, 4, 4), (3,)]
    rng = MT19937(layer.seed)
    for b in range(4):  # 12 items over 7 records: wraps once
        data, label = run(layer)
        ref_d, ref_l = _stream(db, rng, 3, start=3 * b, phase=phase, crop=4, mirror=True, scale=0.5, mean=db["mean"])
        assert data.dtype == torch.float32 and label.dtype == torch.float32
        np.testing.assert_array_equal(data.numpy(), ref_d)
        np.testing.assert_array_equal(label.numpy(), ref_l)
    layer.close()


def test_data_layer_seeded_from_torch_and_prefetch_does_not_change_batches(db):
    caffe.set_random_seed(1701)
    a, _ = _data(db, transform="crop_size: 3 mirror: true", prefetch=0)
    caffe.set_random_seed(1701)
    b, _ = _data(db, transform="crop_size: 3 mirror: true", prefetch=4)
    caffe.set_random_seed(1702)
    c, _ = _data(db, transform="crop_size: 3 mirror: true")
    assert a.seed == b.seed != c.seed
    for _ in range(3):
        np.testing.assert_array_equal(run(a)[0].numpy(), run(b)[0].numpy())
    b.close()
    c.close()


def test_disjoint_shards_cover_the_stream(db):
    snippet = (
        f'name: "d" type: "Data" top: "data" top: "label" data_param {{ source: "{db["path"]}" '
        f"batch_size: 2 backend: LMDB }}"
    )
    seen = []
    for rank in range(3):
        layer = Data.from_param(_param(snippet), TRAIN)
        layer.rank, layer.world_size, layer.num_tops = rank, 3, 2
        layer.setup([])
        labels = np.concatenate([run(layer)[1].numpy() for _ in range(3)])  # 6 items
        ref = [10 + (rank + 3 * i) % N_REC for i in range(6)]  # offsets rank, rank+3, ... across epochs
        np.testing.assert_array_equal(labels, ref)
        seen.append([rank + 3 * i for i in range(6)])
        layer.close()
    offsets = sorted(o for part in seen for o in part)
    assert offsets == list(range(18))  # disjoint, and together the sequential stream
    test_layer = Data.from_param(_param(snippet), TEST)
    test_layer.rank, test_layer.world_size, test_layer.num_tops = 1, 3, 2
    test_layer.setup([])
    np.testing.assert_array_equal(run(test_layer)[1].numpy(), [10, 11])  # TEST reads everything
    test_layer.close()


def _param(snippet):
    from google.protobuf import text_format

    return text_format.Parse(snippet, caffe_pb2.LayerParameter())


def test_position_resumes_exactly_with_prefetched_batches(db):
    transform = "crop_size: 5 mirror: true"
    layer, _ = _data(db, transform=transform, prefetch=4)
    for _ in range(2):
        run(layer)
    pos = json.loads(json.dumps(layer.get_position()))
    assert pos["type"] == "Data" and pos["offset"] == 6
    expected = [run(layer) for _ in range(4)]
    other, _ = _data(db, transform=transform)  # another seed, another process
    other.set_position(pos)
    for want in expected:
        got = run(other)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g.numpy(), w.numpy())
    with pytest.raises(ConfigError, match="cannot take the position of a MemoryData layer"):
        other.set_position({"type": "MemoryData", "pos": 0})
    layer.close()
    other.close()


def test_rand_skip_starts_at_a_seeded_offset(db):
    layer, _ = _data(db, extra="rand_skip: 5")
    skip = MT19937(layer.seed, stream=1)() % 5
    np.testing.assert_array_equal(run(layer)[1].numpy(), [10 + (skip + i) % N_REC for i in range(3)])
    layer.close()


def test_float_and_encoded_datums_and_single_top(tmp_path):
    r = np.random.default_rng(3)
    floats = [r.normal(0, 1, (2, 3, 3)).astype(np.float32) for _ in range(2)]
    fpath = write_lmdb(tmp_path / "f_lmdb", [raw_datum(a, i) for i, a in enumerate(floats)])
    layer, tops = make_layer(
        f'type: "Data" top: "x" data_param {{ source: "{fpath}" batch_size: 2 }} transform_param {{ scale: 2 }}', []
    )  # no backend: the LMDB is detected
    assert tops == [(2, 2, 3, 3)]
    np.testing.assert_array_equal(run(layer)[0].numpy(), np.stack(floats) * np.float32(2))
    layer.close()
    imgs = [r.integers(0, 256, (5, 4, 3), dtype=np.uint8) for _ in range(2)]
    datums = []
    for img in imgs:
        d = caffe_pb2.Datum(encoded=True, label=1, data=cv2.imencode(".png", img)[1].tobytes())
        datums.append(d)
    epath = write_lmdb(tmp_path / "e_lmdb", datums)
    for force, flag in (("", cv2.IMREAD_UNCHANGED), ("force_gray: true", cv2.IMREAD_GRAYSCALE)):
        layer, tops = make_layer(
            f'type: "Data" top: "x" top: "y" data_param {{ source: "{epath}" batch_size: 2 '
            f"backend: LMDB }} transform_param {{ {force} }}",
            [],
        )
        ref = [cv2.imdecode(np.frombuffer(d.data, np.uint8), flag) for d in datums]
        ref = np.stack([im.reshape(im.shape[:2] + (-1,)).transpose(2, 0, 1) for im in ref]).astype(np.float32)
        assert tops[0] == ref.shape
        np.testing.assert_array_equal(run(layer)[0].numpy(), ref)
        layer.close()


def test_data_layer_errors(db, tmp_path):
    with pytest.raises(DataError, match="Data layer 'd': .*no such database"):
        make_layer(
            f'name: "d" type: "Data" top: "x" data_param {{ source: "{tmp_path}/nope" batch_size: 1 backend: LMDB }}',
            [],
        )
    with pytest.raises(ConfigError, match="batch_size=0: a positive batch size"):
        _data(db, batch=0)
    with pytest.raises(ShapeError, match="crop_size 8 is larger than the first record"):
        _data(db, transform="crop_size: 8")
    bad = write_lmdb(tmp_path / "bad_lmdb", [raw_datum(db["arrays"][0], 0)])
    import lmdb

    env = lmdb.open(bad)
    with env.begin(write=True) as txn:
        txn.put(b"00000001", b"\xff\xff\xff")
    env.close()
    layer, _ = make_layer(
        f'name: "d" type: "Data" top: "x" data_param {{ source: "{bad}" batch_size: 2 backend: LMDB }}', []
    )
    with pytest.raises(DataError, match="record '00000001'.*not a Datum"):
        run(layer)  # raised on the prefetch thread, re-raised here
    layer.close()


def test_data_layer_in_a_net(db):
    net_text = f"""
    layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TEST }}
      data_param {{ source: "{db["path"]}" batch_size: 4 backend: LMDB }}
      transform_param {{ crop_size: 4 mean_value: 100 }} }}
    layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param {{ num_output: 20 }} }}
    layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}"""
    from pipeline.formats.prototxt import parse_text

    net = caffe.Net(parse_text(net_text, caffe_pb2.NetParameter()), caffe.TEST)
    assert net.blobs["data"].shape == (4, 3, 4, 4) and net.blobs["label"].shape == (4,)
    net.forward()
    layer = net.layer_dict["data"]
    ref, labels = _stream(db, lambda: 0, 4, phase=TEST, crop=4, mean_values=[100])
    np.testing.assert_array_equal(net.blobs["data"].data, ref)
    np.testing.assert_array_equal(net.blobs["label"].data, labels)
    assert layer.type == "Data"


# ---------------------------------------------------------------------- ImageData
@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("img")
    r = np.random.default_rng(5)
    names = []
    for i in range(5):
        img = r.integers(0, 256, (6 + i, 8, 3), dtype=np.uint8)
        name = f"im {i}.png"  # a space in the path: the label is after the last space
        cv2.imwrite(str(d / name), img)
        names.append(name)
    (d / "list.txt").write_text("".join(f"{n} {i * 2}\n" for i, n in enumerate(names)))
    return {"root": str(d) + "/", "names": names, "list": str(d / "list.txt")}


def _image_layer(images, extra="", transform="", batch=2, phase=TRAIN):
    return make_layer(
        f'name: "img" type: "ImageData" top: "data" top: "label" image_data_param {{ '
        f'source: "{images["list"]}" root_folder: "{images["root"]}" batch_size: {batch} {extra} }} '
        f"transform_param {{ {transform} }}",
        [],
        phase=phase,
    )


def test_image_data_resize_color_and_gray_match_opencv(images):
    for is_color, flag in ((True, cv2.IMREAD_COLOR), (False, cv2.IMREAD_GRAYSCALE)):
        extra = f"new_height: 5 new_width: 6 is_color: {'true' if is_color else 'false'}"
        layer, tops = _image_layer(images, extra, "crop_size: 4 mirror: true")
        c = 3 if is_color else 1
        assert tops == [(2, c, 4, 4), (2,)]
        rng = MT19937(layer.seed)
        for b in range(3):  # 6 images over 5 lines: wraps
            data, label = run(layer)
            idx = [(2 * b + i) % 5 for i in range(2)]
            ref = []
            for i in idx:
                im = cv2.resize(
                    cv2.imread(images["root"] + images["names"][i], flag), (6, 5), interpolation=cv2.INTER_LINEAR
                )
                im = im.reshape(5, 6, c).transpose(2, 0, 1)
                ref.append(caffe_transform(im, rng, crop=4, mirror=True))
            np.testing.assert_array_equal(data.numpy(), np.stack(ref))
            np.testing.assert_array_equal(label.numpy(), [2 * i for i in idx])
        layer.close()


def test_image_data_shuffle_each_epoch_and_resume(images):
    layer, _ = _image_layer(images, "shuffle: true new_height: 4 new_width: 4", batch=5, phase=TRAIN)
    epochs = [tuple(run(layer)[1].numpy().tolist()) for _ in range(3)]
    assert all(sorted(e) == [0, 2, 4, 6, 8] for e in epochs)  # each epoch is a permutation
    pos = layer.get_position()
    nxt = [run(layer) for _ in range(2)]
    other, _ = _image_layer(images, "shuffle: true new_height: 4 new_width: 4", batch=5)
    other.set_position(json.loads(json.dumps(pos)))
    for want in nxt:
        np.testing.assert_array_equal(run(other)[1].numpy(), want[1].numpy())
    assert len(set(epochs + [tuple(w[1].numpy().tolist()) for w in nxt])) > 1  # orders differ between epochs
    layer.close()
    other.close()


def test_image_data_errors(images, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{images['names'][0]} 1\n\nno_label_here\n")
    with pytest.raises(DataError, match=r"bad.txt:3: expected 'path label'"):
        make_layer(f'type: "ImageData" top: "d" top: "l" image_data_param {{ source: "{bad}" }}', [])
    with pytest.raises(ConfigError, match="new_height and new_width must be set together"):
        _image_layer(images, "new_height: 4")
    bad.write_text("missing.png 3\n")
    with pytest.raises(DataError, match=r"bad.txt:1: Could not load missing.png"):
        make_layer(f'type: "ImageData" top: "d" top: "l" image_data_param {{ source: "{bad}" }}', [])
    layer, _ = _image_layer(images)  # sizes differ (6..10 rows) without resize or crop
    with pytest.raises(DataError, match=r"list.txt:2 \(im 1.png\) has shape"):
        run(layer)
    layer.close()


# ----------------------------------------------------------------------- HDF5Data
@pytest.fixture(scope="module")
def h5files(tmp_path_factory):
    d = tmp_path_factory.mktemp("h5")
    r = np.random.default_rng(7)
    rows = []
    for i, n in enumerate((3, 4)):
        data = r.normal(0, 1, (n, 2, 2, 2)).astype(np.float32)
        label = r.normal(0, 1, (n, 4)).astype(np.float64)  # float multi-labels
        with h5py.File(d / f"part{i}.h5", "w") as f:
            f["data"] = data
            f["label"] = label
        rows += [(data[j], label[j]) for j in range(n)]
    (d / "list.txt").write_text(f"part0.h5\n{d}/part1.h5\n")  # relative: found beside the list
    return {"list": str(d / "list.txt"), "rows": rows, "dir": d}


def _h5_layer(h5files, batch=3, extra="", phase=TRAIN):
    return make_layer(
        f'name: "h" type: "HDF5Data" top: "data" top: "label" hdf5_data_param {{ '
        f'source: "{h5files["list"]}" batch_size: {batch} {extra} }}',
        [],
        phase=phase,
    )


def test_hdf5_data_reads_rows_across_files_with_wrap(h5files):
    layer, tops = _h5_layer(h5files)
    assert tops == [(3, 2, 2, 2), (3, 4)]
    for b in range(4):  # 12 rows over 7: wraps across both files
        data, label = run(layer)
        idx = [(3 * b + i) % 7 for i in range(3)]
        np.testing.assert_array_equal(data.numpy(), np.stack([h5files["rows"][i][0] for i in idx]))
        np.testing.assert_array_equal(label.numpy(), np.stack([h5files["rows"][i][1] for i in idx]).astype(np.float32))


def test_hdf5_data_shuffle_covers_every_row_and_resumes(h5files):
    layer, _ = _h5_layer(h5files, batch=7, extra="shuffle: true")
    key = lambda lab: tuple(np.round(lab, 5))
    all_rows = sorted(key(r[1].astype(np.float32)) for r in h5files["rows"])
    first = run(layer)[1].numpy()
    assert sorted(key(x) for x in first) == all_rows
    pos = layer.get_position()
    want = [run(layer)[1].numpy() for _ in range(3)]
    other, _ = _h5_layer(h5files, batch=7, extra="shuffle: true")
    other.set_position(json.loads(json.dumps(pos)))
    for w in want:
        np.testing.assert_array_equal(run(other)[1].numpy(), w)


def test_hdf5_data_shards_and_errors(h5files, tmp_path):
    layer = HDF5Data(h5files["list"], 2, tops=["data", "label"], rank=1, world_size=2, name="h")
    layer.num_tops = 2
    layer.setup([])
    labels = np.concatenate([run(layer)[1].numpy() for _ in range(2)])
    np.testing.assert_array_equal(labels, np.stack([h5files["rows"][i][1] for i in (1, 3, 5, 0)]).astype(np.float32))
    with pytest.raises(ConfigError, match="HDF5Data does not transform data"):
        make_layer(
            f'type: "HDF5Data" top: "data" hdf5_data_param {{ source: "{h5files["list"]}" batch_size: 1 }} '
            "transform_param { scale: 2 }",
            [],
        )
    with pytest.raises(DataError, match="Failed to find HDF5 dataset 'nope'"):
        make_layer(f'type: "HDF5Data" top: "nope" hdf5_data_param {{ source: "{h5files["list"]}" batch_size: 1 }}', [])


def test_copied_layer_continues_from_the_same_position(db):
    import copy

    layer, _ = _data(db, transform="crop_size: 4 mirror: true")
    run(layer)
    twin = copy.deepcopy(layer)  # no thread is copied; the position is
    for _ in range(3):
        for a, b in zip(run(layer), run(twin)):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    layer.close()
    twin.close()


def test_solver_snapshot_resumes_data_exactly(db, tmp_path):
    net = f"""layer {{ name: "data" type: "Data" top: "data" top: "label"
      data_param {{ source: "{db["path"]}" batch_size: 3 backend: LMDB }}
      transform_param {{ crop_size: 4 mirror: true scale: 0.004 }} }}
    layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
      inner_product_param {{ num_output: 17 weight_filler {{ type: "xavier" }} }} }}
    layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}"""
    (tmp_path / "net.prototxt").write_text(net)
    (tmp_path / "solver.prototxt").write_text(
        f'net: "{tmp_path}/net.prototxt" base_lr: 0.1 momentum: 0.9 lr_policy: "fixed" max_iter: 10 '
        f'snapshot_prefix: "{tmp_path}/snap" random_seed: 3 display: 0\n'
    )

    def steps(solver, n):
        out = []
        for _ in range(n):
            solver.step(1)
            out.append((solver.net.blobs["label"].data.copy(), float(solver.net.blobs["loss"].data)))
        return out

    s = caffe.get_solver(str(tmp_path / "solver.prototxt"))
    steps(s, 2)  # 6 of 7 records, with batches prefetched beyond
    s.snapshot()
    want = steps(s, 3)  # wraps around the database
    s2 = caffe.get_solver(str(tmp_path / "solver.prototxt"))
    s2.restore(str(tmp_path / "snap_iter_2.solverstate"))
    got = steps(s2, 3)
    for (wl, wloss), (gl, gloss) in zip(want, got):
        np.testing.assert_array_equal(gl, wl)
        assert gloss == wloss
