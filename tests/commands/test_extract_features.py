"""``extract_features``: Caffe's keys and Datums, read back with plain ``lmdb`` + ``caffe_pb2``."""

from __future__ import annotations

import gc
import io

import h5py
import lmdb
import numpy as np
import pytest
from source_nets import classifier_net, glog_messages

import pipeline as caffe
from pipeline.commands import cli
from pipeline.commands import extract_features as ef
from pipeline.commands.progress import Progress
from pipeline.proto import caffe_pb2

ITEMS, BATCH, C, H, W, CLASSES = 10, 4, 2, 3, 3, 5


def _source_lmdb(path, rng):
    """ITEMS raw uint8 Datums (C x H x W) with labels, keys as convert_imageset writes them."""
    images = rng.integers(0, 256, size=(ITEMS, C, H, W), dtype=np.uint8)
    labels = rng.integers(0, CLASSES, size=ITEMS)
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i in range(ITEMS):
            d = caffe_pb2.Datum(channels=C, height=H, width=W, data=images[i].tobytes(), label=int(labels[i]))
            txn.put(f"{i:08d}_img{i}.png".encode(), d.SerializeToString())
    env.close()
    return images, labels


@pytest.fixture
def feature_net(tmp_path):
    """A Data layer over a real LMDB -> conv (2x2) -> pool -> ip; weights saved to a .caffemodel."""
    rng = np.random.default_rng(7)
    images, labels = _source_lmdb(tmp_path / "src_lmdb", rng)
    model, source = tmp_path / "features.prototxt", tmp_path / "src_lmdb"
    model.write_text(f"""
name: "features"
layer {{ name: "data" type: "Data" top: "data" top: "label"
  transform_param {{ scale: 0.00390625 }}
  data_param {{ source: "{source}" batch_size: {BATCH} backend: LMDB }} }}
layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param {{ num_output: 3 kernel_size: 2 weight_filler {{ type: "gaussian" std: 0.5 }}
    bias_filler {{ type: "gaussian" std: 0.5 }} }} }}
layer {{ name: "relu" type: "ReLU" bottom: "conv" top: "conv" }}
layer {{ name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
  inner_product_param {{ num_output: {CLASSES} weight_filler {{ type: "gaussian" std: 0.5 }} }} }}
layer {{ name: "prob" type: "Softmax" bottom: "ip" top: "prob" }}
""")
    # the weights come from the same net fed by an Input layer (two live nets cannot open one LMDB)
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(
        model.read_text().split("layer {", 2)[0]
        + f"""
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: {BATCH} dim: {C} dim: {H} dim: {W} }} }} }}
layer {{"""
        + model.read_text().split("layer {", 2)[2]
    )
    caffe.set_random_seed(1)
    net = caffe.Net(str(deploy), caffe.TEST)
    weights = tmp_path / "features.caffemodel"
    net.save(str(weights))
    return model, weights, images, labels


def _log_lines(stderr: str) -> str:
    """The glog lines of ``stderr`` (the summary after them is plain text)."""
    return "\n".join(s for s in stderr.splitlines() if not s.startswith(("extract_features:", "  ")))


def _read_lmdb(path):
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        records = [(k.decode(), caffe_pb2.Datum.FromString(v)) for k, v in txn.cursor()]
    env.close()
    return records


def _forward_batches(model, weights, batches, blobs):
    gc.collect()  # the command's net (and its open LMDB) must be gone first
    net = caffe.Net(str(model), str(weights), caffe.TEST)
    out = {b: [] for b in blobs}
    for _ in range(batches):
        net.forward()
        for b in blobs:
            out[b].append(np.array(net.blobs[b].data, copy=True))
    return {b: np.concatenate(v) for b, v in out.items()}


def test_lmdb_records_equal_the_blobs_of_forward(tmp_path, feature_net, capsys):
    model, weights, images, labels = feature_net
    batches = 4  # 16 items: the Data layer wraps around the 10 records
    dbs = [tmp_path / "conv_lmdb", tmp_path / "ip_lmdb", tmp_path / "label_lmdb"]
    argv = [str(weights), str(model), "conv,ip,label", ",".join(map(str, dbs)), str(batches), "lmdb"]
    assert cli.main(["extract_features"] + argv) == 0
    err = capsys.readouterr().err
    msgs = glog_messages(_log_lines(err))
    assert msgs[0] == "Using CPU" and "Extracting Features" in msgs
    for b in ("conv", "ip", "label"):
        assert f"Extracted features of {batches * BATCH} query images for feature blob {b}" in msgs
    assert msgs[-1] == "Successfully extracted the features!"
    assert "extract_features: 4 batches" in err and "ip: 16 items x 5 floats" in err

    want = _forward_batches(model, weights, batches, ["conv", "ip", "label"])
    n = batches * BATCH
    for blob, db in zip(("conv", "ip", "label"), dbs):
        records = _read_lmdb(db)
        assert [k for k, _ in records] == [f"{i:010d}" for i in range(n)]  # caffe::format_int(i, 10)
        shape = want[blob].shape[1:] + (1,) * (4 - len(want[blob].shape))
        for i, (_, d) in enumerate(records):
            assert (d.channels, d.height, d.width) == shape  # Caffe's legacy dims of the blob
            assert not d.data and not d.HasField("label") and not d.encoded
            got = np.array(d.float_data, np.float32)
            np.testing.assert_array_equal(got, want[blob][i].ravel())  # bit-exact float32

    # independent of the net: the labels and the first layer's output from the source records
    label_records = _read_lmdb(dbs[2])
    order = np.arange(n) % ITEMS
    assert [int(d.float_data[0]) for _, d in label_records] == labels[order].tolist()
    del want
    gc.collect()
    net = caffe.Net(str(model), str(weights), caffe.TEST)
    k, b = (np.array(p.data, np.float64) for p in net.params["conv"])
    x = images[order].astype(np.float64) * 0.00390625
    conv = np.zeros((n, 3, H - 1, W - 1))
    for i in range(H - 1):
        for j in range(W - 1):
            conv[:, :, i, j] = np.einsum("nchw,ochw->no", x[:, :, i : i + 2, j : j + 2], k) + b
    got = np.stack([np.array(d.float_data) for _, d in _read_lmdb(dbs[0])]).reshape(conv.shape)
    np.testing.assert_allclose(got, np.maximum(conv, 0), rtol=1e-5, atol=1e-6)


def test_hdf5_extension_holds_one_dataset_per_blob(tmp_path, feature_net, capsys):
    model, weights, _, _ = feature_net
    out = tmp_path / "features.h5"
    argv = [str(weights), str(model), "conv,prob", f"{out},{out}", "3", "hdf5", "CPU"]
    assert cli.main(["extract_features"] + argv) == 0
    want = _forward_batches(model, weights, 3, ["conv", "prob"])
    with h5py.File(out, "r") as f:
        assert sorted(f) == ["conv", "prob"]
        for b in ("conv", "prob"):
            assert f[b].dtype == np.float32 and f[b].shape == want[b].shape
            np.testing.assert_array_equal(f[b][...], want[b])


def test_failures_leave_no_output_behind(tmp_path, feature_net, capsys):
    model, weights, _, _ = feature_net
    base = [str(weights), str(model)]
    cases = [
        (["ip,nope", f"{tmp_path}/a,{tmp_path}/b", "1", "lmdb"], "Unknown feature blob name nope in the network"),
        (["ip,conv", f"{tmp_path}/a", "1", "lmdb"], "the number of blob names (2) and dataset names (1) must be equal"),
        (["ip,conv", f"{tmp_path}/a,{tmp_path}/a", "1", "lmdb"], "named twice"),
        (["ip", f"{tmp_path}/a", "1", "lmdb", "GPU", "99"], "DEVICE_ID 99"),
        (["ip", f"{tmp_path}/a", "-1", "lmdb"], "NUM_BATCHES -1"),
        (["ip", f"{tmp_path}/taken", "1", "lmdb"], "already exists"),
        (["ip", f"{tmp_path}/taken", "1", "hdf5"], "already exists"),
    ]
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep").write_text("x")
    before = sorted(p.name for p in tmp_path.iterdir())
    for args, message in cases:
        assert cli.main(["extract_features"] + base + args) == 1, args
        lines = [s for s in capsys.readouterr().err.splitlines() if "extract_features: error:" in s]
        assert len(lines) == 1 and message in lines[0], (args, lines)
        assert sorted(p.name for p in tmp_path.iterdir()) == before  # not even a temporary folder
    assert (tmp_path / "taken" / "keep").read_text() == "x"


def test_an_error_mid_run_discards_every_database(tmp_path, feature_net):
    model, weights, _, _ = feature_net
    net = caffe.Net(str(model), str(weights), caffe.TEST)
    calls = {"n": 0}
    forward = net.forward

    def failing_forward(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk on fire")
        return forward(*a, **k)

    net.forward = failing_forward
    with pytest.raises(RuntimeError, match="disk on fire"):
        ef.extract(net, ["ip", "conv"], [str(tmp_path / "ip_db"), str(tmp_path / "conv_db")], 5, "lmdb", lambda s: None)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert not [n for n in left if "ip_db" in n or "conv_db" in n], left


def test_keys_dims_and_a_progress_bar_on_a_terminal():
    assert ef.feature_key(0) == b"0000000000" and ef.feature_key(1234) == b"0000001234"
    assert ef.legacy_dims((8, 4096), "fc7") == (4096, 1, 1)
    assert ef.legacy_dims((8, 3, 5), "x") == (3, 5, 1)
    assert ef.legacy_dims((), "loss") == (1, 1, 1)
    with pytest.raises(Exception, match="blob 'v' has 5 axes"):
        ef.legacy_dims((2, 3, 4, 5, 6), "v")
    d = caffe_pb2.Datum.FromString(
        ef.feature_datum(np.arange(6, dtype=np.float32).reshape(2, 3), (2, 3, 1)).SerializeToString()
    )
    assert list(d.float_data) == [0, 1, 2, 3, 4, 5] and (d.channels, d.height, d.width) == (2, 3, 1)

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    bar = Progress(4, unit="batches", label="extract_features", stream=tty, width=8)
    bar.update(2, "8 items", force=True)
    bar.finish()
    text = tty.getvalue()
    assert text.startswith("\rextract_features 2/4 [####....]") and "batches/s 8 items" in text
    assert text.endswith("\n")
    plain = io.StringIO()
    bar = Progress(4, stream=plain)
    bar.update(2, force=True)
    bar.finish()
    assert plain.getvalue() == ""


def test_logs_every_thousand_items_as_caffe_commits(tmp_path, capsys):
    cn = classifier_net(tmp_path, items=500, batch=250)
    db = tmp_path / "scaled_lmdb"
    argv = [str(cn.weights), str(cn.model), "scaled", str(db), "5", "lmdb"]
    assert cli.main(["extract_features"] + argv) == 0
    msgs = [m for m in glog_messages(_log_lines(capsys.readouterr().err)) if m.startswith("Extracted")]
    assert msgs == [
        "Extracted features of 1000 query images for feature blob scaled",
        "Extracted features of 1250 query images for feature blob scaled",
    ]
    records = _read_lmdb(db)
    assert len(records) == 1250 and records[-1][0] == "0000001249"
    x, _ = cn.batch_items(4)  # the last batch: 2 x (x W^T + b), one Datum per item
    want = 2 * (x @ cn.w.T + cn.b)
    got = np.array([list(d.float_data) for _, d in records[-250:]])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert (records[0][1].channels, records[0][1].height, records[0][1].width) == (4, 1, 1)


def test_leveldb_needs_plyvel_or_writes_one(tmp_path, feature_net, capsys):
    model, weights, _, _ = feature_net
    db = tmp_path / "ip_leveldb"
    rc = cli.main(["extract_features", str(weights), str(model), "ip", str(db), "2", "leveldb"])
    try:
        import plyvel
    except ImportError:
        assert rc == 1
        err = [s for s in capsys.readouterr().err.splitlines() if "error:" in s]
        assert len(err) == 1 and "plyvel" in err[0]
        assert not db.exists()
        return
    assert rc == 0
    want = _forward_batches(model, weights, 2, ["ip"])["ip"]
    ldb = plyvel.DB(str(db))
    records = list(ldb)
    ldb.close()
    assert [k for k, _ in records] == [f"{i:010d}".encode() for i in range(2 * BATCH)]
    for i, (_, v) in enumerate(records):
        np.testing.assert_array_equal(np.array(caffe_pb2.Datum.FromString(v).float_data, np.float32), want[i])
